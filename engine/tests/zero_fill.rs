//! Zeros written ahead of the appends, on real files: after the upkeep, the blocks just
//! past the data are written extents (FIEMAP shows no `UNWRITTEN` flag there), only up to
//! `zero_fill_ahead_bytes` past the data, and a log reopened without a clean close (the
//! zeroed blocks in place) ends at its last batch with every batch intact.
#![cfg(test)]
#![allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod common;
use common::{append_stored, on_fresh_log};

use std::os::fd::AsRawFd;
use std::path::Path;

use shardlog_engine::record::BatchBuilder;
use shardlog_engine::segment::{LOG_SUFFIX, align_up, segment_path};
use shardlog_engine::{DmaStorage, EngineConfig, Offset, PartitionLog, TimestampMs};

const STEP: u64 = 4 << 20;
const AHEAD: u64 = 1 << 20;

fn config() -> EngineConfig {
    EngineConfig {
        segment_bytes: 16 << 20,
        preallocation_step_bytes: STEP,
        zero_fill_ahead_bytes: AHEAD,
        segment_age: None,
        retention_age: None,
        ..EngineConfig::default()
    }
}

async fn append(log: &PartitionLog<DmaStorage>, n: u64) -> (Offset, Vec<u8>) {
    let mut builder = BatchBuilder::new();
    builder.push(
        TimestampMs(1000 + n as i64),
        Some(format!("key-{n}").as_bytes()),
        Some(&[b'a' + (n % 26) as u8; 1000]),
        &[],
    );
    append_stored(log, builder.finish()).await
}

async fn read_all(log: &PartitionLog<DmaStorage>) -> Vec<(Offset, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = log.log_start();
    while from < log.log_end() {
        let read = log.read(from, 1 << 20).await.expect("read");
        for (header, bytes) in read.batches() {
            out.push((header.base_offset, bytes.to_vec()));
        }
        from = read.next_offset;
    }
    out
}

/// `struct fiemap` with room for `EXTENTS_MAX` extents (linux/fiemap.h). Some fields
/// are only read by the kernel.
#[repr(C)]
#[allow(dead_code)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS_MAX],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
#[allow(dead_code)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

const EXTENTS_MAX: usize = 256;
/// `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 1;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

/// The file's extents: `(start, end, unwritten)`.
fn extents(path: &Path) -> Vec<(u64, u64, bool)> {
    let file = std::fs::File::open(path).expect("open for FIEMAP");
    let mut map = Fiemap {
        start: 0,
        length: u64::MAX,
        flags: FIEMAP_FLAG_SYNC,
        mapped_extents: 0,
        extent_count: EXTENTS_MAX as u32,
        reserved: 0,
        extents: [FiemapExtent::default(); EXTENTS_MAX],
    };
    // SAFETY: FS_IOC_FIEMAP reads and fills `map`, whose layout is the kernel's struct
    // fiemap followed by `extent_count` extents, and which outlives the call.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &raw mut map) };
    assert_eq!(
        result,
        0,
        "FIEMAP on {} failed ({}): the test needs a filesystem that maps extents, e.g. ext4",
        path.display(),
        std::io::Error::last_os_error()
    );
    map.extents[..map.mapped_extents as usize]
        .iter()
        .map(|e| {
            (
                e.logical,
                e.logical + e.length,
                e.flags & FIEMAP_EXTENT_UNWRITTEN != 0,
            )
        })
        .collect()
}

/// Whether every byte of `[from, to)` lies in extents of the given kind.
fn all_in(extents: &[(u64, u64, bool)], (from, to): (u64, u64), unwritten: bool) -> bool {
    let mut at = from;
    for &(start, end, kind) in extents {
        if end <= at || start >= to {
            continue;
        }
        if start > at || kind != unwritten {
            return false;
        }
        at = end;
        if at >= to {
            return true;
        }
    }
    at >= to
}

#[test]
fn the_upkeep_writes_zeros_just_ahead_of_the_appends() {
    on_fresh_log(config(), |pdir, log| async move {
        let path = segment_path(&pdir, Offset(0), LOG_SUFFIX);
        let mut written = Vec::new();
        for n in 0..20 {
            written.push(append(&log, n).await);
        }
        let data_end = align_up(log.segments()[0].data_len);
        let before = extents(&path);
        assert!(
            all_in(&before, (data_end, STEP), true),
            "preallocated blocks past the data start unwritten: {before:?}"
        );
        log.tick(TimestampMs::now()).await.expect("tick");
        let after = extents(&path);
        assert!(
            all_in(&after, (0, data_end + AHEAD), false),
            "written up to {} after the upkeep: {after:?}",
            data_end + AHEAD
        );
        assert!(
            all_in(&after, (data_end + AHEAD, STEP), true),
            "nothing zeroed further than {AHEAD} past the data: {after:?}"
        );
        // Appends go on over the zeros; the next upkeep zeroes the blocks after them.
        for n in 20..40 {
            written.push(append(&log, n).await);
        }
        log.tick(TimestampMs::now()).await.expect("tick");
        let data_end = align_up(log.segments()[0].data_len);
        assert!(all_in(&extents(&path), (0, data_end + AHEAD), false));
        assert!(read_all(&log).await == written);
        // Reopened as a crash leaves it (no close): the zeros read as the end of the log.
        drop(log);
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("reopen");
        assert_eq!(log.log_end(), Offset(40));
        assert!(read_all(&log).await == written);
        log.close().await.expect("close");
    });
}
