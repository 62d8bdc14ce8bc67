//! Corruption and recovery tests (fjall style): what opening a damaged partition directory
//! must do.
//!
//! - After any cut or bit flip in the active segment, recovery keeps exactly the longest
//!   valid prefix (property), and appends continue from there.
//! - The last batch cut at every byte, in memory and on real files (glommio DMA): the log
//!   ends at the previous batch, takes new appends, and they survive another reopen.
//! - Damage in sealed segments is never served: reads of the damaged batch fail with
//!   `CorruptBatch` naming the segment and byte position, and a rebuild of its index
//!   (index deleted) refuses to open instead of silently cutting.
//! - Missing or zeroed index files are rebuilt byte-identical.
//! - Bytes cut by a truncation never come back after a crash.
//! - Leftover temporary files and orphan index files are removed on open.

mod common;

use std::path::PathBuf;

use bytes::BytesMut;
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::checkpoint::CHECKPOINT_FILE;
use shardlog_engine::offset_index::OffsetIndex;
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, segment_path};
use shardlog_engine::{
    DmaStorage, EngineConfig, Error, LeaderEpoch, Offset, PartitionLog, SegmentId, SimStorage,
    Storage, TimestampMs,
};

const DIR: &str = "/data/topic/0";

type Batches = Vec<(Offset, Vec<u8>)>;

fn config() -> EngineConfig {
    EngineConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 512,
        tail_cache_bytes: 0,
        retention_age: None,
        segment_age: None,
        ..EngineConfig::default()
    }
}

/// Batch `n`: 1 to 3 records whose values and last bytes are non-zero (so zeroing any
/// suffix of it changes it: a record without headers would end in a zero byte).
fn make_batch(n: u64, value_size: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for r in 0..=n % 3 {
        let key = format!("key-{n}-{r}");
        let value: Vec<u8> = (0..value_size)
            .map(|j| u8::try_from((usize::try_from(n).expect("fits") + j) % 251 + 1).expect("byte"))
            .collect();
        let ts = 1000 + i64::try_from(n * 10 + r).expect("fits");
        builder.push(
            TimestampMs(ts),
            Some(key.as_bytes()),
            Some(&value),
            &[(b"h", Some(b"v"))],
        );
    }
    builder.finish()
}

/// Appends batches `first..first + count` under `epoch_of(n)`; returns what the log stores.
async fn append_batches<S: Storage>(
    log: &PartitionLog<S>,
    first: u64,
    count: u64,
    value_size: usize,
    epoch_of: impl Fn(u64) -> i32,
) -> Batches {
    let mut out = Vec::new();
    for n in first..first + count {
        let mut bytes = make_batch(n, value_size);
        let epoch = epoch_of(n);
        let appended = log
            .append(BytesMut::from(&bytes[..]), LeaderEpoch(epoch))
            .await
            .expect("append");
        batch::patch_base(&mut bytes, appended.base_offset, LeaderEpoch(epoch));
        out.push((appended.base_offset, bytes));
    }
    out
}

/// Every batch of the log, read from its start.
async fn read_all<S: Storage>(log: &PartitionLog<S>) -> Result<Batches, Error> {
    let mut out = Vec::new();
    let mut from = log.log_start();
    while from < log.log_end() {
        let read = log.read(from, 7000).await?;
        for (header, bytes) in read.batches() {
            out.push((header.base_offset, bytes.to_vec()));
        }
        assert!(read.next_offset > from, "read at {from} made no progress");
        from = read.next_offset;
    }
    Ok(out)
}

fn end_of(batches: &[(Offset, Vec<u8>)], start: Offset) -> Offset {
    batches.last().map_or(start, |(_, b)| {
        BatchHeader::parse(b).expect("header").next_offset()
    })
}

/// Byte position of each batch of `batches` that lies in the segment starting at `base`.
fn positions(batches: &[(Offset, Vec<u8>)], base: Offset, next: Offset) -> Vec<(u64, usize)> {
    let mut at = 0u64;
    let mut out = Vec::new();
    for (i, (offset, bytes)) in batches.iter().enumerate() {
        if *offset >= base && *offset < next {
            out.push((at, i));
            at += bytes.len() as u64;
        }
    }
    out
}

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

fn path_of(base: u64, suffix: &str) -> PathBuf {
    segment_path(&dir(), Offset(base), suffix)
}

async fn open_sim(storage: &SimStorage) -> Result<PartitionLog<SimStorage>, Error> {
    PartitionLog::open(storage.clone(), DIR, config()).await
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

// ---------------------------------------------------------------------------------------
// Property: any cut or flip in the active segment -> exactly the longest valid prefix.

/// How the active segment is damaged.
#[derive(Clone, Debug)]
enum Damage {
    /// Zero every byte from `at` (a fraction of the data length) on, keeping the length.
    Cut { at: u64 },
    /// Flip bit `bit` of byte `at` (a fraction of the data length).
    Flip { at: u64, bit: u8 },
}

/// Builds a closed log of `sizes.len()` batches (with an epoch change at `epoch_change`)
/// in one segment, damages it, reopens, and checks the longest valid prefix.
fn run_damage(sizes: &[usize], epoch_change: usize, damage: &Damage) -> Result<(), TestCaseError> {
    block_on(async {
        let storage = SimStorage::new();
        let log = PartitionLog::open(storage.clone(), DIR, config())
            .await
            .map_err(fail)?;
        let mut written = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let epoch = if i < epoch_change { 1 } else { 2 };
            written.extend(append_batches(&log, i as u64, 1, *size, |_| epoch).await);
        }
        log.close().await.map_err(fail)?;
        let path = path_of(0, LOG_SUFFIX);
        let original = storage.contents(&path).map_err(fail)?;
        let data_len: u64 = written.iter().map(|(_, b)| b.len() as u64).sum();
        let mut damaged = original.clone();
        match damage {
            Damage::Cut { at } => {
                let at = usize::try_from(at % (data_len + 1)).expect("fits");
                damaged[at..].fill(0);
            }
            Damage::Flip { at, bit } => {
                let at = usize::try_from(at % data_len).expect("fits");
                damaged[at] ^= 1 << (bit % 8);
            }
        }
        storage.set_contents(&path, damaged.clone()).map_err(fail)?;
        let expected = longest_valid_prefix(&written, &original, &damaged);
        let log = PartitionLog::open(storage.clone(), DIR, config())
            .await
            .map_err(|e| fail(format!("open after {damage:?}: {e}")))?;
        let got = read_all(&log)
            .await
            .map_err(|e| fail(format!("read after {damage:?}: {e}")))?;
        prop_assert_eq!(got.len(), expected.len(), "batches kept after {:?}", damage);
        prop_assert!(got == expected, "bytes differ after {:?}", damage);
        let end = end_of(&expected, Offset(0));
        prop_assert_eq!(log.log_end(), end);
        // Appends continue right after the prefix and survive a crash.
        let more = append_batches(&log, 500, 2, 50, |_| 3).await;
        prop_assert_eq!(more[0].0, end);
        drop(log);
        storage.crash(7);
        let log = PartitionLog::open(storage.clone(), DIR, config())
            .await
            .map_err(fail)?;
        let mut want = expected;
        want.extend(more);
        prop_assert!(
            read_all(&log).await.map_err(fail)? == want,
            "appends after recovery lost"
        );
        Ok(())
    })
}

/// The whole batches of `written` (stored from byte 0 of a segment that read `original`)
/// before the first byte `damaged` changed. A change confined to one batch's leader epoch
/// (bytes 12..16, outside Kafka's CRC) cannot be seen: every batch is kept, that one as it
/// now reads.
fn longest_valid_prefix(written: &[(Offset, Vec<u8>)], original: &[u8], damaged: &[u8]) -> Batches {
    let changed: Vec<u64> = original
        .iter()
        .zip(damaged)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(p, _)| p as u64)
        .collect();
    let mut expected = Vec::new();
    for (position, i) in positions(written, Offset(0), Offset(u64::MAX)) {
        let (offset, bytes) = &written[i];
        let epoch = position + 12..position + 16;
        let hit = changed
            .iter()
            .any(|p| (position..position + bytes.len() as u64).contains(p));
        if !hit {
            expected.push((*offset, bytes.clone()));
        } else if changed.iter().all(|p| epoch.contains(p)) {
            let start = usize::try_from(position).expect("fits");
            expected.push((*offset, damaged[start..start + bytes.len()].to_vec()));
        } else {
            break;
        }
    }
    expected
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<u64>().prop_map(|at| Damage::Cut { at }),
        (any::<u64>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Recovery after any cut or bit flip in the active segment keeps exactly the longest
    /// valid prefix. Replay: `run_damage(&sizes, epoch_change, &damage)` from the printed input.
    #[test]
    fn damage_keeps_longest_valid_prefix(
        sizes in proptest::collection::vec(0usize..700, 1..12),
        epoch_change in 0usize..12,
        damage in damage_strategy(),
    ) {
        run_damage(&sizes, epoch_change, &damage)?;
    }
}

// ---------------------------------------------------------------------------------------
// The last batch cut at every byte.

/// A closed log: one sealed segment, then batches in the active one. Returns the batches
/// and the active segment's base.
async fn build_two_segments(storage: &SimStorage) -> (Batches, u64) {
    let log = PartitionLog::open(storage.clone(), DIR, config())
        .await
        .expect("open");
    let mut batches = append_batches(&log, 0, 6, 200, |_| 1).await;
    log.roll().await.expect("roll");
    let active = log.log_end().0;
    batches.extend(append_batches(&log, 6, 5, 120, |n| if n < 9 { 1 } else { 2 }).await);
    log.close().await.expect("close");
    (batches, active)
}

#[test]
fn last_batch_cut_at_every_byte() {
    block_on(async {
        let storage = SimStorage::new();
        let (batches, active) = build_two_segments(&storage).await;
        let path = path_of(active, LOG_SUFFIX);
        let original = storage.contents(&path).expect("segment");
        let tail = positions(&batches, Offset(active), Offset(u64::MAX));
        let (last_at, last) = *tail.last().expect("batches");
        let last_end = last_at + batches[last].1.len() as u64;
        for shorten in [false, true] {
            for cut in last_at..last_end {
                let at = usize::try_from(cut).expect("fits");
                let mut bytes = original.clone();
                if shorten {
                    bytes.truncate(at);
                } else {
                    bytes[at..].fill(0);
                }
                storage.set_contents(&path, bytes).expect("set");
                let log = PartitionLog::open(storage.clone(), DIR, config())
                    .await
                    .expect("open after cut");
                assert_eq!(
                    log.log_end(),
                    batches[last].0,
                    "cut at {cut} (shortened: {shorten})"
                );
                assert!(
                    read_all(&log).await.expect("read") == batches[..last],
                    "cut at {cut}"
                );
                let more = append_batches(&log, 900, 2, 30, |_| 4).await;
                assert_eq!(more[0].0, batches[last].0, "append after cut at {cut}");
                log.close().await.expect("close");
                let log = PartitionLog::open(storage.clone(), DIR, config())
                    .await
                    .expect("reopen");
                let mut want = batches[..last].to_vec();
                want.extend(more);
                assert!(
                    read_all(&log).await.expect("read") == want,
                    "cut at {cut}: appends after it lost"
                );
                let epochs: Vec<_> = log
                    .checkpoint()
                    .epochs
                    .iter()
                    .map(|e| (e.epoch.0, e.start_offset.0))
                    .collect();
                assert_eq!(
                    epochs.last().map(|e| e.0),
                    Some(4),
                    "cut at {cut}: {epochs:?}"
                );
                drop(log);
            }
        }
        // With the whole last batch gone and nothing else changed, the original is intact.
        storage.set_contents(&path, original).expect("restore");
        let log = PartitionLog::open(storage.clone(), DIR, config())
            .await
            .expect("open");
        assert!(read_all(&log).await.expect("read") == batches);
    });
}

// ---------------------------------------------------------------------------------------
// Real files.

/// Runs `test` on a glommio executor in a fresh directory under the test root; fails
/// with the fix when io_uring, the memlock limit or O_DIRECT are missing.
fn with_dma<F, Fut>(test: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let root = common::test_root();
    std::fs::create_dir_all(&root).expect("test root");
    let tmp = tempfile::tempdir_in(&root).expect("temp dir");
    common::on_executor(tmp.path().to_path_buf(), test);
    drop(tmp);
}

#[test]
fn dma_last_batch_cut_at_every_byte() {
    with_dma(|dir| async move {
        let pdir = dir.join("topic/0");
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("open");
        let mut batches = append_batches(&log, 0, 4, 300, |_| 1).await;
        log.roll().await.expect("roll");
        let active = log.log_end();
        batches.extend(append_batches(&log, 4, 4, 90, |_| 2).await);
        log.close().await.expect("close");
        let path = segment_path(&pdir, active, LOG_SUFFIX);
        let original = std::fs::read(&path).expect("segment");
        let (last_at, last) = *positions(&batches, active, Offset(u64::MAX))
            .last()
            .expect("batches");
        let last_end = last_at + batches[last].1.len() as u64;
        for cut in last_at..last_end {
            let at = usize::try_from(cut).expect("fits");
            let mut bytes = original.clone();
            bytes[at..].fill(0);
            std::fs::write(&path, &bytes).expect("write cut");
            let log = PartitionLog::open(DmaStorage, &pdir, config())
                .await
                .expect("open after cut");
            assert_eq!(log.log_end(), batches[last].0, "cut at {cut}");
            assert!(
                read_all(&log).await.expect("read") == batches[..last],
                "cut at {cut}"
            );
            let more = append_batches(&log, 900, 2, 40, |_| 3).await;
            assert_eq!(more[0].0, batches[last].0);
            log.close().await.expect("close");
            let log = PartitionLog::open(DmaStorage, &pdir, config())
                .await
                .expect("reopen");
            let mut want = batches[..last].to_vec();
            want.extend(more);
            assert!(
                read_all(&log).await.expect("read") == want,
                "cut at {cut}: appends lost"
            );
            log.close().await.expect("close");
        }
    });
}

/// Concurrent appends on real files share writes and syncs (group commit), and all of
/// them are there, in order and intact, after a reopen.
#[test]
fn dma_concurrent_appends_group_commit_and_reopen() {
    with_dma(|dir| async move {
        let pdir = dir.join("topic/0");
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("open");
        let tasks = (0..8u64).map(|t| {
            let log = &log;
            async move { append_batches(log, t * 1000, 40, 200, |_| 1).await }
        });
        let mut written: Batches = futures::future::join_all(tasks)
            .await
            .into_iter()
            .flatten()
            .collect();
        written.sort_by_key(|(o, _)| *o);
        let stats = log.stats();
        assert!(
            stats.syncs < stats.batches_appended,
            "no group commit: {stats:?}"
        );
        assert!(stats.rolls > 0, "{stats:?}");
        assert!(read_all(&log).await.expect("read") == written);
        log.close().await.expect("close");
        let log = PartitionLog::open(DmaStorage, &pdir, config())
            .await
            .expect("reopen");
        assert!(read_all(&log).await.expect("read after reopen") == written);
        log.close().await.expect("close");
    });
}

// ---------------------------------------------------------------------------------------
// Sealed segments.

/// A closed log of three segments; returns the batches and the segment bases.
async fn build_three_segments(storage: &SimStorage) -> (Batches, Vec<u64>) {
    let log = PartitionLog::open(storage.clone(), DIR, config())
        .await
        .expect("open");
    let mut batches = Vec::new();
    let mut bases = vec![0];
    for round in 0..3u64 {
        batches.extend(
            append_batches(&log, round * 20, 20, 150, |n| {
                i32::try_from(n / 15).expect("fits")
            })
            .await,
        );
        if round < 2 {
            log.roll().await.expect("roll");
            bases.push(log.log_end().0);
        }
    }
    log.close().await.expect("close");
    (batches, bases)
}

/// Byte positions, in the batch at `position`, that a flip must be caught at: every header
/// byte but the leader epoch (12..16, outside Kafka's CRC), and a spread of record bytes.
fn flip_targets(len: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..61).filter(|p| !(12..16).contains(p)).collect();
    out.extend((61..len).step_by(37));
    out.push(len - 1);
    out
}

/// With its index deleted, a sealed segment with damage at `position` is rebuilt by a
/// scan, which must refuse to open naming the damage; the index is put back afterwards.
async fn assert_rebuild_refuses(storage: &SimStorage, segment: u64, position: u64, what: &str) {
    // Without its index the segment is rebuilt by a scan, which must refuse.
    let index = storage
        .contents(&path_of(segment, INDEX_SUFFIX))
        .expect("index");
    storage.delete(&path_of(segment, INDEX_SUFFIX));
    match open_sim(storage).await {
        Err(Error::CorruptBatch {
            segment: s,
            position: p,
            ..
        }) => {
            assert_eq!(
                (s, p),
                (SegmentId(Offset(segment)), position),
                "{what}: rebuild"
            );
        }
        Err(e) => panic!("{what}: rebuild failed with {e}"),
        Ok(_) => panic!("{what}: rebuild opened a damaged sealed segment"),
    }
    // Put everything back.
    storage
        .open(
            &path_of(segment, INDEX_SUFFIX),
            shardlog_engine::OpenMode::CreateNew,
        )
        .await
        .expect("recreate index");
    storage.sync_dir(&dir()).await.expect("sync dir");
    storage
        .set_contents(&path_of(segment, INDEX_SUFFIX), index)
        .expect("index back");
}

#[test]
fn sealed_flips_are_reported_never_served() {
    block_on(async {
        let storage = SimStorage::new();
        let (batches, bases) = build_three_segments(&storage).await;
        let segment = bases[1];
        let path = path_of(segment, LOG_SUFFIX);
        let original = storage.contents(&path).expect("segment");
        let in_segment = positions(&batches, Offset(segment), Offset(bases[2]));
        for &(position, i) in [
            in_segment[0],
            in_segment[7],
            in_segment[in_segment.len() - 1],
        ]
        .iter()
        {
            let (offset, bytes) = &batches[i];
            for at in flip_targets(bytes.len()) {
                for bit in [0u8, 5] {
                    let what = format!(
                        "flip bit {bit} of byte {at} of the batch at {offset} (position {position})"
                    );
                    storage
                        .flip_bit(&path, position + at as u64, bit)
                        .expect("flip");
                    let log = open_sim(&storage)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: open with index: {e}"));
                    // Every read that reaches the batch fails, naming it; none serves it.
                    for from in [*offset, BatchHeader::parse(bytes).expect("h").last_offset()] {
                        match log.read(from, 100_000).await {
                            Err(Error::CorruptBatch {
                                segment: s,
                                position: p,
                                ..
                            }) => {
                                assert_eq!(
                                    (s, p),
                                    (SegmentId(Offset(segment)), position),
                                    "{what}: read {from}"
                                );
                            }
                            other => panic!("{what}: read {from} returned {other:?}"),
                        }
                    }
                    if i > 0 {
                        let before = &batches[i - 1];
                        let read = log
                            .read(before.0, 1)
                            .await
                            .unwrap_or_else(|e| panic!("{what}: read before: {e}"));
                        assert_eq!(
                            read.batches().map(|(_, b)| b.to_vec()).collect::<Vec<_>>(),
                            vec![before.1.clone()]
                        );
                    }
                    drop(log);
                    assert_rebuild_refuses(&storage, segment, position, &what).await;
                    storage
                        .set_contents(&path, original.clone())
                        .expect("segment back");
                }
            }
        }
        let log = open_sim(&storage).await.expect("open restored");
        assert!(read_all(&log).await.expect("read") == batches);
    });
}

#[test]
fn missing_or_zeroed_indexes_are_rebuilt_identically() {
    block_on(async {
        let storage = SimStorage::new();
        let (batches, bases) = build_three_segments(&storage).await;
        for base in &bases[..2] {
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let path = path_of(*base, suffix);
                let original = storage.contents(&path).expect("index");
                for damage in ["delete", "zero", "truncate", "flip"] {
                    match damage {
                        "delete" => storage.delete(&path),
                        "zero" => storage
                            .set_contents(&path, vec![0; original.len()])
                            .expect("zero"),
                        "truncate" => storage
                            .set_contents(&path, original[..20].to_vec())
                            .expect("cut"),
                        _ => storage.flip_bit(&path, 40, 3).expect("flip"),
                    }
                    let log = open_sim(&storage)
                        .await
                        .unwrap_or_else(|e| panic!("{damage} {}: {e}", path.display()));
                    assert!(
                        read_all(&log).await.expect("read") == batches,
                        "{damage} {}",
                        path.display()
                    );
                    assert_eq!(
                        log.offset_for_timestamp(TimestampMs(1205))
                            .await
                            .expect("time"),
                        Some(Offset(42))
                    );
                    let rebuilt = storage
                        .contents(&path)
                        .unwrap_or_else(|e| panic!("{damage}: not rewritten: {e}"));
                    assert!(
                        rebuilt == original,
                        "{damage} {}: rebuilt index differs",
                        path.display()
                    );
                    if suffix == INDEX_SUFFIX {
                        let (_, meta) = OffsetIndex::decode(&rebuilt).expect("decodes");
                        assert_eq!(
                            meta.next_offset,
                            bases[bases.iter().position(|b| b == base).expect("base") + 1]
                        );
                    }
                    log.close().await.expect("close");
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Truncation.

/// Truncates to `to`, appends `count` short batches, crashes with every seed in `seeds`
/// and checks that exactly the kept prefix plus the new batches come back.
fn truncate_then_crash(to_of: impl Fn(&[(Offset, Vec<u8>)], &[u64]) -> Offset, count: u64) {
    for seed in 0..8 {
        block_on(async {
            let storage = SimStorage::new();
            let (batches, bases) = build_three_segments(&storage).await;
            let log = open_sim(&storage).await.expect("open");
            let to = to_of(&batches, &bases);
            let end = log.truncate(to).await.expect("truncate");
            let kept: Batches = batches.iter().filter(|(o, _)| *o < end).cloned().collect();
            assert_eq!(end_of(&kept, Offset(0)), end, "truncate({to})");
            let mut want = kept;
            want.extend(append_batches(&log, 700, count, 10, |_| 9).await);
            drop(log);
            storage.crash(seed);
            let log = open_sim(&storage).await.expect("open after crash");
            let got = read_all(&log).await.expect("read");
            assert!(
                got == want,
                "truncate({to}), seed {seed}: got {} batches, want {}",
                got.len(),
                want.len()
            );
            let epochs: Vec<_> = log
                .checkpoint()
                .epochs
                .iter()
                .map(|e| (e.epoch.0, e.start_offset.0))
                .collect();
            assert_eq!(
                epochs.last().map(|e| e.0),
                Some(if count > 0 {
                    9
                } else {
                    epochs.last().map_or(0, |e| e.0)
                })
            );
            drop(log);
            storage.crash(seed + 100);
            let log = open_sim(&storage).await.expect("second open");
            assert!(
                read_all(&log).await.expect("read") == want,
                "truncate({to}), seed {seed}, second crash"
            );
        });
    }
}

#[test]
fn stale_bytes_after_truncation_in_the_active_segment_never_return() {
    truncate_then_crash(
        |batches, bases| batches[batches.len() - 5].0.max(Offset(bases[2])),
        2,
    );
}

#[test]
fn stale_bytes_after_truncation_inside_a_batch_never_return() {
    truncate_then_crash(|batches, _| batches[50].0.advance(1), 3);
}

#[test]
fn stale_bytes_after_truncation_across_segments_never_return() {
    truncate_then_crash(|batches, _| batches[25].0, 4);
}

#[test]
fn stale_bytes_after_truncation_to_a_segment_end_never_return() {
    truncate_then_crash(|_, bases| Offset(bases[1]), 1);
    truncate_then_crash(|_, bases| Offset(bases[2]), 2);
}

#[test]
fn truncation_to_a_segment_end_without_appends_survives_crash() {
    truncate_then_crash(|_, bases| Offset(bases[2]), 0);
}

// ---------------------------------------------------------------------------------------
// Leftovers.

#[test]
fn leftover_temporary_and_orphan_files_are_removed_on_open() {
    block_on(async {
        let storage = SimStorage::new();
        let (batches, bases) = build_three_segments(&storage).await;
        let leftovers = [
            dir().join(format!("{CHECKPOINT_FILE}.tmp")),
            dir().join("00000000000000000000.index.tmp"),
            path_of(99_999, INDEX_SUFFIX),
            path_of(99_999, TIME_INDEX_SUFFIX),
            path_of(bases[2] + 1, INDEX_SUFFIX),
        ];
        for path in &leftovers {
            storage
                .open(path, shardlog_engine::OpenMode::CreateNew)
                .await
                .expect("create leftover");
            storage.set_contents(path, vec![7; 4096]).expect("fill");
        }
        storage.sync_dir(&dir()).await.expect("sync dir");
        let log = open_sim(&storage).await.expect("open");
        let paths = storage.paths();
        for path in &leftovers {
            assert!(!paths.contains(path), "{} survived open", path.display());
        }
        assert!(read_all(&log).await.expect("read") == batches);
        drop(log);
        // Removed durably: a crash does not bring them back.
        storage.crash(5);
        let paths = storage.paths();
        for path in &leftovers {
            assert!(
                !paths.contains(path),
                "{} back after a crash",
                path.display()
            );
        }
        // The segments' own files are all still there.
        for base in &bases[..2] {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                assert!(
                    paths.contains(&path_of(*base, suffix)),
                    "{base}.{suffix} removed"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Regressions.

/// Regression: the checkpoint on disk still listed an epoch starting past a recovery cut
/// (nothing rewrites it until the next roll, truncation or close); after new appends under
/// a newer epoch and a crash, open re-observed that epoch before the stale entry and
/// panicked (`observe_epoch`'s order assertion). The same happens after a crash between a
/// truncation's cut and its checkpoint write. Fixed: the tail scan re-derives every epoch
/// from the tail segment's base on.
#[test]
fn regression_stale_checkpoint_epochs_after_a_recovery_cut() {
    block_on(async {
        let storage = SimStorage::new();
        let log = open_sim(&storage).await.expect("open");
        let batches = append_batches(&log, 0, 8, 100, |n| if n < 5 { 1 } else { 2 }).await;
        log.close().await.expect("close");
        let epochs: Vec<_> = log_epochs(&open_sim(&storage).await.expect("open"));
        assert_eq!(epochs, vec![(1, 0), (2, batches[5].0.0)]);
        // Damage batch 2: recovery cuts there, below epoch 2's start.
        let position: usize = batches[..2].iter().map(|(_, b)| b.len()).sum();
        storage
            .flip_bit(&path_of(0, LOG_SUFFIX), position as u64 + 40, 1)
            .expect("flip");
        let log = open_sim(&storage).await.expect("open after damage");
        assert_eq!(log.log_end(), batches[2].0);
        let more = append_batches(&log, 100, 2, 10, |_| 3).await;
        drop(log);
        storage.crash(1);
        let log = open_sim(&storage).await.expect("open after crash");
        assert_eq!(log_epochs(&log), vec![(1, 0), (3, more[0].0.0)]);
        let mut want = batches[..2].to_vec();
        want.extend(more);
        assert!(read_all(&log).await.expect("read") == want);
    });
}

fn log_epochs<S: Storage>(log: &PartitionLog<S>) -> Vec<(i32, u64)> {
    log.checkpoint()
        .epochs
        .iter()
        .map(|e| (e.epoch.0, e.start_offset.0))
        .collect()
}

/// Regression: a flipped bit in the base offset of a batch in a sealed segment (outside the
/// CRC) was served: the batch came back with a wrong offset, or was skipped silently. Reads
/// now check offset continuity from the index entry they start at.
#[test]
fn regression_sealed_base_offset_flip_is_reported_not_served() {
    block_on(async {
        let storage = SimStorage::new();
        let (batches, bases) = build_three_segments(&storage).await;
        let in_segment = positions(&batches, Offset(bases[1]), Offset(bases[2]));
        let (position, i) = in_segment[4];
        let (offset, _) = &batches[i];
        for (byte, bit) in [(7u64, 0u8), (7, 3), (0, 0), (5, 2)] {
            storage
                .flip_bit(&path_of(bases[1], LOG_SUFFIX), position + byte, bit)
                .expect("flip");
            let log = open_sim(&storage).await.expect("open");
            for from in [*offset, batches[i - 1].0, Offset(bases[1])] {
                let read = log.read(from, 1 << 20).await;
                if from == *offset {
                    assert!(
                        matches!(read, Err(Error::CorruptBatch { segment, position: p, .. }) if segment == SegmentId(Offset(bases[1])) && p == position),
                        "byte {byte} bit {bit}: read {from}: {read:?}"
                    );
                } else {
                    // Reads from before it stop short of it, with only good batches.
                    let read = read.unwrap_or_else(|e| panic!("read {from}: {e}"));
                    let got: Vec<_> = read
                        .batches()
                        .map(|(h, b)| (h.base_offset, b.to_vec()))
                        .collect();
                    let first = batches
                        .iter()
                        .position(|(o, _)| *o == from)
                        .expect("a batch start");
                    assert!(
                        got == batches[first..first + got.len()],
                        "byte {byte} bit {bit}: read {from}"
                    );
                    assert!(read.next_offset <= *offset);
                }
            }
            drop(log);
            storage
                .flip_bit(&path_of(bases[1], LOG_SUFFIX), position + byte, bit)
                .expect("flip back");
        }
    });
}
