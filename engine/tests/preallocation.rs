//! Preallocation in steps, on real files: the active segment's file grows a step at a
//! time from `tick`, ahead of the data, never past `segment_bytes`; appends that outrun
//! it extend the file themselves; sealing gives the rest back; and a SIGKILL after some
//! steps leaves a file longer than its data that reopens with every acknowledged batch.
#![cfg(test)]
#![allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod common;
use common::{append_stored, on_executor, on_fresh_log, test_root};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardlog_engine::batch;
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::segment::{LOG_SUFFIX, align_up, segment_path};
use shardlog_engine::{
    DmaStorage, EngineConfig, FlushPolicy, LeaderEpoch, Offset, PartitionLog, TimestampMs,
};

const STEP: u64 = 64 << 10;
const SEGMENT_BYTES: u64 = 1 << 20;
/// Names the child's partition directory; without it `preallocation_child` does nothing.
const CHILD_ENV: &str = "SHARDLOG_PREALLOCATION_CHILD";
/// Set: the child runs under `never`, its upkeep 10 ms apart by its clock (300 KB/s: a
/// step of about 300 KB, more than `STEP`).
const CHILD_NEVER_ENV: &str = "SHARDLOG_PREALLOCATION_CHILD_NEVER";
const CHILD_TEST: &str = "preallocation_child";

fn config() -> EngineConfig {
    EngineConfig {
        segment_bytes: SEGMENT_BYTES,
        preallocation_step_bytes: STEP,
        segment_age: None,
        retention_age: None,
        ..EngineConfig::default()
    }
}

/// Batch `n`: one record of `value_size` bytes that name `n`.
fn make_batch(n: u64, value_size: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    let value: Vec<u8> = (0..value_size)
        .map(|j| u8::try_from((n as usize + j) % 251 + 1).expect("byte"))
        .collect();
    builder.push(
        TimestampMs(1000 + i64::try_from(n).expect("fits")),
        Some(format!("key-{n}").as_bytes()),
        Some(&value),
        &[],
    );
    builder.finish()
}

async fn append(log: &PartitionLog<DmaStorage>, n: u64, value_size: usize) -> (Offset, Vec<u8>) {
    append_stored(log, make_batch(n, value_size)).await
}

async fn read_all(log: &PartitionLog<DmaStorage>) -> Vec<(Offset, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = log.log_start();
    while from < log.log_end() {
        let read = log.read(from, 1 << 20).await.expect("read");
        for (header, bytes) in read.batches() {
            out.push((header.base_offset, bytes.to_vec()));
        }
        assert!(read.next_offset > from, "read at {from} made no progress");
        from = read.next_offset;
    }
    out
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("segment file").len()
}

fn active_data_len(log: &PartitionLog<DmaStorage>) -> u64 {
    log.segments().last().expect("active segment").data_len
}

/// The file is one step long when created, grows by steps from `tick` while appends
/// go on, is extended by the writes themselves when they outrun it, never exceeds the
/// segment size, and is cut back to its data when sealed.
#[test]
fn the_active_segment_grows_in_steps() {
    on_fresh_log(config(), |pdir, log| async move {
        let first = segment_path(&pdir, Offset(0), LOG_SUFFIX);
        assert_eq!(file_len(&first), STEP, "a new segment holds one step");
        // No upkeep: 200 KiB of appends run past the step and extend the file themselves.
        let mut written = Vec::new();
        for n in 0..50 {
            written.push(append(&log, n, 4000).await);
        }
        let data = active_data_len(&log);
        assert!(data > 3 * STEP, "{data}");
        assert_eq!(file_len(&first), align_up(data), "writes extended the file");
        // The upkeep preallocates one step past the data. Its clock says 100 ms pass
        // between upkeeps: the appends below run far slower than a step a second by it,
        // so the step stays the configured one.
        let mut now = TimestampMs(1_000_000);
        log.tick(now).await.expect("tick");
        assert_eq!(file_len(&first), align_up(data) + STEP);
        // With the upkeep after every append, the file stays ahead of the data by at most
        // a step and a half, grows only in steps, and never exceeds the segment.
        let mut lengths = vec![file_len(&first)];
        let mut n = 50;
        while log.segments().len() == 1 {
            written.push(append(&log, n, 4000).await);
            n += 1;
            now.0 += 100;
            log.tick(now).await.expect("tick");
            if log.segments().len() > 1 {
                break;
            }
            let len = file_len(&first);
            let data = active_data_len(&log);
            assert!(len <= SEGMENT_BYTES, "{len} past the segment size");
            assert!(len >= data, "{len} < data {data}");
            assert!(
                len <= align_up(data) + STEP + STEP / 2,
                "{len} for data {data}"
            );
            if len != *lengths.last().expect("a length") {
                lengths.push(len);
            }
        }
        assert!(lengths.len() >= 5, "grew in too few steps: {lengths:?}");
        for pair in lengths.windows(2) {
            assert!(
                pair[1] - pair[0] <= STEP + STEP / 2 || pair[1] == SEGMENT_BYTES,
                "{lengths:?}"
            );
        }
        // Sealed: cut back to its data. The new active segment starts with one step.
        let segments = log.segments();
        assert_eq!(file_len(&first), align_up(segments[0].data_len));
        let second = segment_path(&pdir, segments[1].id.0, LOG_SUFFIX);
        assert_eq!(file_len(&second), STEP);
        assert!(read_all(&log).await == written);
        log.close().await.expect("close");
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("reopen");
        assert!(read_all(&log).await == written);
        log.close().await.expect("close");
    });
}

/// Appends `batches` batches of 4000 bytes, numbered from `n` on.
async fn appends(
    log: &PartitionLog<DmaStorage>,
    written: &mut Vec<(Offset, Vec<u8>)>,
    n: &mut u64,
    batches: u64,
) {
    for _ in 0..batches {
        written.push(append(log, *n, 4000).await);
        *n += 1;
    }
}

/// Under `never` (and `interval`), a partition appended faster than a step a second
/// preallocates about a second of its appends (here the whole segment), the next segment
/// is prepared as long, and once the appends slow down the step is the configured one
/// again. (Under `always`, the default of `config()`, the step never changes: the test
/// above.)
#[test]
fn a_fast_partition_preallocates_a_second_of_its_appends() {
    let config = EngineConfig {
        flush: FlushPolicy::Never,
        ..config()
    };
    on_fresh_log(config.clone(), |pdir, log| async move {
        let first = segment_path(&pdir, Offset(0), LOG_SUFFIX);
        let mut now = TimestampMs(1_000_000);
        log.tick(now).await.expect("tick");
        assert_eq!(file_len(&first), STEP);
        // 200 KB in 100 ms by the upkeep's clock: 2 MB a second, more than the segment.
        let mut written = Vec::new();
        let mut n = 0;
        appends(&log, &mut written, &mut n, 50).await;
        now.0 += 100;
        log.tick(now).await.expect("tick");
        assert_eq!(
            file_len(&first),
            SEGMENT_BYTES,
            "a second of appends is the segment"
        );
        // The segment fills at that rate, and the next one is prepared as long.
        while log.segments().len() == 1 {
            appends(&log, &mut written, &mut n, 50).await;
            now.0 += 100;
            log.tick(now).await.expect("tick");
        }
        let second = segment_path(&pdir, log.segments()[1].id.0, LOG_SUFFIX);
        assert_eq!(
            file_len(&second),
            SEGMENT_BYTES,
            "prepared at the fast rate"
        );
        assert_eq!(file_len(&first), align_up(log.segments()[0].data_len));
        // Slow (one 4 KB batch per 100 ms): the step falls back, and the segment after
        // the next roll starts with one step.
        while log.segments().len() == 2 {
            appends(&log, &mut written, &mut n, 1).await;
            now.0 += 100;
            log.tick(now).await.expect("tick");
            assert!(file_len(&second) <= SEGMENT_BYTES);
        }
        let third = segment_path(&pdir, log.segments()[2].id.0, LOG_SUFFIX);
        assert_eq!(file_len(&third), STEP, "prepared at the configured step");
        assert!(read_all(&log).await == written);
        log.close().await.expect("close");
        let log = PartitionLog::open(DmaStorage, &pdir, config)
            .await
            .expect("reopen");
        assert!(read_all(&log).await == written);
        log.close().await.expect("close");
    });
}

/// Under `always` the same burst leaves the step as configured: one flush at a time, and
/// an O_DSYNC write past the end cost less than one into preallocated blocks.
#[test]
fn under_always_the_step_stays_as_configured() {
    on_fresh_log(config(), |pdir, log| async move {
        let first = segment_path(&pdir, Offset(0), LOG_SUFFIX);
        let mut now = TimestampMs(1_000_000);
        log.tick(now).await.expect("tick");
        let (mut written, mut n) = (Vec::new(), 0);
        appends(&log, &mut written, &mut n, 50).await;
        now.0 += 100;
        log.tick(now).await.expect("tick");
        assert_eq!(file_len(&first), align_up(active_data_len(&log)) + STEP);
        log.close().await.expect("close");
    });
}

/// The child: appends batch after batch with the upkeep after each, printing `ACK <n>
/// <base>` once each is acknowledged (`flush = always`, or `never` with
/// `CHILD_NEVER_ENV`: written, not synced), until killed.
#[test]
#[ignore = "the child process of sigkill_after_a_step; does nothing unless SHARDLOG_PREALLOCATION_CHILD is set"]
fn preallocation_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let never = std::env::var_os(CHILD_NEVER_ENV).is_some_and(|v| v == "1");
    let probe = dir.parent().expect("a parent").to_path_buf();
    on_executor(probe, move |_| async move {
        let config = if never {
            EngineConfig {
                flush: FlushPolicy::Never,
                ..config()
            }
        } else {
            config()
        };
        let log = PartitionLog::open(DmaStorage, &dir, config)
            .await
            .expect("child open");
        let mut out = std::io::stdout().lock();
        writeln!(out).expect("stdout");
        // 100 ms between upkeeps by their clock: 30 KB/s, under a step a second (10 ms
        // under `never`).
        let tick_ms = if never { 10 } else { 100 };
        let mut now = TimestampMs(1_000_000);
        for n in 0.. {
            let (base, _) = append(&log, n, 3000).await;
            writeln!(out, "ACK {n} {}", base.0).expect("stdout");
            out.flush().expect("stdout");
            now.0 += tick_ms;
            log.tick(now).await.expect("tick");
        }
    });
}

/// SIGKILL once the upkeep has taken several steps: the file is longer than its data
/// (zeros past it), and the reopened log holds every acknowledged batch, preallocates
/// one step past its data (no more), and appends and reopens again.
#[test]
fn sigkill_after_a_step() {
    sigkill_after_steps(false);
}

/// The same under `never`, whose steps follow the append rate (larger than `STEP` here):
/// every batch acknowledged as written is there after the SIGKILL.
#[test]
fn sigkill_under_never_after_steps_that_follow_the_rate() {
    sigkill_after_steps(true);
}

/// The child's acknowledgements, `(n, base)`, read until its file holds at least four
/// steps (then at a point well inside the segment); fails if its output ends first.
fn acks_until_four_steps(child: &mut std::process::Child, first: &Path) -> Vec<(u64, u64)> {
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let lines = BufReader::new(child.stdout.take().expect("child stdout")).lines();
    for line in lines {
        let line = line.expect("child line");
        let mut words = line.split_whitespace();
        if words.next() != Some("ACK") {
            continue;
        }
        let n: u64 = words.next().and_then(|w| w.parse().ok()).expect("n");
        let base: u64 = words.next().and_then(|w| w.parse().ok()).expect("base");
        acked.push((n, base));
        if file_len(first) >= 4 * STEP && acked.len() % 7 == 3 {
            return acked;
        }
        assert!(Instant::now() < deadline, "the child never grew its file");
    }
    panic!(
        "the child's output ended at {} bytes of file, under four steps",
        file_len(first)
    );
}

fn sigkill_after_steps(never: bool) {
    std::fs::create_dir_all(test_root()).expect("test root");
    let tmp = tempfile::tempdir_in(test_root()).expect("temp dir");
    let pdir = tmp.path().join("topic/0");
    std::fs::create_dir_all(&pdir).expect("partition dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &pdir)
        .env(CHILD_NEVER_ENV, if never { "1" } else { "" })
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let first = segment_path(&pdir, Offset(0), LOG_SUFFIX);
    let acked = acks_until_four_steps(&mut child, &first);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let killed_len = file_len(&first);
    assert!(killed_len < SEGMENT_BYTES, "preallocated the whole segment");
    on_executor(tmp.path().to_path_buf(), move |_| async move {
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("reopen after SIGKILL");
        let stored = read_all(&log).await;
        for (n, base) in &acked {
            let mut want = make_batch(*n, 3000);
            batch::patch_base(&mut want, Offset(*base), LeaderEpoch(1));
            let found = stored.iter().find(|(o, _)| o.0 == *base);
            assert!(
                found.is_some_and(|(_, bytes)| *bytes == want),
                "acknowledged batch {n} at {base} lost"
            );
        }
        let data = active_data_len(&log);
        if never {
            // Steps that followed the rate: more ahead of the data than a fixed one keeps.
            assert!(
                killed_len > align_up(data) + STEP + STEP / 2,
                "killed at {killed_len} with {data} bytes of data"
            );
        }
        let len = file_len(&first);
        assert_eq!(len, align_up(data) + STEP, "killed at {killed_len}");
        let (more, bytes) = append(&log, 10_000, 3000).await;
        assert_eq!(
            more,
            stored.last().map_or(Offset(0), |(o, _)| Offset(o.0 + 1))
        );
        log.close().await.expect("close");
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("reopen");
        let again = read_all(&log).await;
        assert_eq!(again.len(), stored.len() + 1);
        assert!(again.last() == Some(&(more, bytes)));
        log.close().await.expect("close");
    });
}
