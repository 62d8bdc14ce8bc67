//! Durable writes under `flush=always`, on real files: the active segment is written
//! through a second descriptor opened O_DSYNC; sealing a segment closes that descriptor
//! (and a truncation that makes a sealed segment active again opens one again); where no
//! second descriptor can be opened (here: the process is out of descriptors), flushes
//! write and fdatasync instead until the segment is sealed, and every acknowledged batch
//! reads back after a reopen.
#![cfg(test)]
#![allow(clippy::indexing_slicing)]

mod common;
use common::{append_stored, on_fresh_log};

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use shardlog_engine::record::BatchBuilder;
use shardlog_engine::segment::{LOG_SUFFIX, segment_path};
use shardlog_engine::{DmaStorage, EngineConfig, FlushPolicy, Offset, PartitionLog, TimestampMs};

/// One test at a time under `cargo test` (threads of one process): the fallback test
/// lowers the process's descriptor limit.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn config() -> EngineConfig {
    EngineConfig {
        flush: FlushPolicy::Always,
        segment_bytes: 1 << 20,
        preallocation_step_bytes: 64 << 10,
        segment_age: None,
        retention_age: None,
        ..EngineConfig::default()
    }
}

/// Appends batch `n` (one 1000-byte record naming `n`); returns its bytes as stored.
async fn append(log: &PartitionLog<DmaStorage>, n: u8) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(TimestampMs(1000), None, Some(&[n; 1000]), &[]);
    append_stored(log, builder.finish()).await.1
}

async fn read_all(log: &PartitionLog<DmaStorage>) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut from = log.log_start();
    while from < log.log_end() {
        let read = log.read(from, 8 << 20).await.expect("read");
        assert!(read.next_offset > from, "a read at {from} made no progress");
        batches.extend(read.batches().map(|(_, bytes)| bytes.to_vec()));
        from = read.next_offset;
    }
    batches
}

/// How many of this process's descriptors are open on `path`.
fn descriptors_on(path: &Path) -> usize {
    let path = path.canonicalize().expect("segment path");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| *target == path)
        .count()
}

#[test]
fn sealing_closes_the_o_dsync_descriptor_and_a_truncation_reopens_it() {
    let _one = one_at_a_time();
    on_fresh_log(config(), |pdir, log| async move {
        let first = segment_path(&pdir, Offset(0), LOG_SUFFIX);
        let mut stored = Vec::new();
        for n in 0..3 {
            stored.push(append(&log, n).await);
        }
        assert_eq!(
            descriptors_on(&first),
            2,
            "the active segment writes O_DSYNC"
        );

        log.roll().await.expect("roll");
        assert_eq!(
            descriptors_on(&first),
            1,
            "a sealed segment keeps one descriptor"
        );
        let second = segment_path(&pdir, Offset(3), LOG_SUFFIX);
        for n in 3..5 {
            stored.push(append(&log, n).await);
        }
        assert_eq!(descriptors_on(&second), 2);

        // The cut deletes the second segment and makes the first active again.
        assert_eq!(log.truncate(Offset(2)).await.expect("truncate"), Offset(2));
        stored.truncate(2);
        assert!(!second.exists());
        stored.push(append(&log, 9).await);
        assert_eq!(descriptors_on(&first), 2, "active again: O_DSYNC again");
        assert_eq!(read_all(&log).await, stored);

        log.close().await.expect("close");
        assert_eq!(descriptors_on(&first), 0);
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("reopen");
        assert_eq!(read_all(&log).await, stored);
        log.close().await.expect("close");
    });
}

#[test]
fn without_a_second_descriptor_appends_are_still_written_and_synced() {
    let _one = one_at_a_time();
    on_fresh_log(config(), |pdir, log| async move {
        let first = segment_path(&pdir, Offset(0), LOG_SUFFIX);
        let mut stored = Vec::new();
        let limit = NoMoreDescriptors::new();
        for n in 0..20 {
            stored.push(append(&log, n).await);
        }
        drop(limit);
        assert_eq!(
            descriptors_on(&first),
            1,
            "no O_DSYNC descriptor could open"
        );
        // This segment does without one to the end; the next one, after the roll, has one.
        stored.push(append(&log, 20).await);
        assert_eq!(descriptors_on(&first), 1);
        log.roll().await.expect("roll");
        stored.push(append(&log, 21).await);
        assert_eq!(
            descriptors_on(&segment_path(&pdir, Offset(21), LOG_SUFFIX)),
            2
        );
        log.close().await.expect("close");
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("reopen");
        assert_eq!(read_all(&log).await, stored);
        log.close().await.expect("close");
    });
}

/// Lowers RLIMIT_NOFILE so that the next open fails with EMFILE; restores it on drop.
struct NoMoreDescriptors {
    saved: libc::rlimit,
}

impl NoMoreDescriptors {
    fn new() -> Self {
        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on a local struct and descriptor.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut saved), 0);
            // The lowest free descriptor is the one the next open would get.
            let lowest_free = libc::dup(0);
            assert!(lowest_free >= 0, "dup");
            libc::close(lowest_free);
            let lowered = libc::rlimit {
                rlim_cur: libc::rlim_t::try_from(lowest_free).expect("non-negative"),
                rlim_max: saved.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lowered), 0);
        }
        NoMoreDescriptors { saved }
    }
}

impl Drop for NoMoreDescriptors {
    fn drop(&mut self) {
        // SAFETY: restores the limit read in `new`.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const self.saved);
        }
    }
}
