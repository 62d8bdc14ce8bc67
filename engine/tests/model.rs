//! Model tests of the partition log (sled `fuzz_model`, Redpanda `opfuzz`): random sequences
//! of appends, reads, rolls, truncations, retention passes, clean reopens, crashes and
//! failed syncs run against [`SimStorage`] and against a model, a `Vec` of
//! `(offset, batch bytes)` plus the log start and the leader-epoch history. After every
//! operation the log must agree with the model exactly: its ends, every batch byte for byte
//! (read from every batch start and from inside batches), lookups by time against a linear
//! scan, `OffsetOutOfRange` outside `[log_start, log_end]`, and the epoch history. With
//! `FlushPolicy::Always` an acknowledged append survives any crash.
//!
//! A second property drives concurrent appenders, readers, rolls and the upkeep (preallocation
//! steps, zeros written ahead of the appends) through a storage that
//! yields at every call, stops them after a random number of polls, crashes, and reopens:
//! every acknowledged batch must be there, intact, at its offset, and nothing else may be.
//!
//! Replay: a failing case prints its minimal `Vec<Op>` (or `Concurrent`); paste it into
//! `run_ops(config_of(cache), ops)` / `run_concurrent(case)` in a named `#[test]`.
//! `PROPTEST_CASES` overrides the number of cases.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::record::{BatchBuilder, RecordIter};
use shardlog_engine::retention::{self, SegmentSummary};
use shardlog_engine::{
    EngineConfig, Error, FlushPolicy, LeaderEpoch, Offset, OpenMode, PartitionLog, SimFile,
    SimStorage, Storage, StorageFile, TimestampMs,
};

const DIR: &str = "/data/topic/0";

/// One step of a model run.
#[derive(Clone, Debug)]
enum Op {
    /// Append a batch of records `(value size, timestamp)`, bumping the epoch first if set.
    Append {
        records: Vec<(usize, i64)>,
        bump_epoch: bool,
    },
    /// Read from an offset picked in `[log_start - 1, log_end + 1]`.
    Read { from: u64, bytes_max: usize },
    /// Seal the active segment.
    Roll,
    /// Create the next segment's file ahead of the roll.
    PrepareNext,
    /// Truncate to an offset picked in `[log_start - 2, log_end + 2]`.
    Truncate { to: u64 },
    /// Set the high watermark to an offset picked in `[log_start, log_end]`, then apply
    /// retention at time `now`.
    Retention { now: i64, committed: u64 },
    /// Close and open again.
    Reopen,
    /// Drop the log without closing, crash the storage, open again.
    Crash { seed: u64 },
    /// Make syncs fail: the next append must fail and the log refuse further appends; then
    /// crash, heal the storage and open again.
    SyncFailure { seed: u64 },
}

/// The model: what the log must hold.
#[derive(Clone, Debug, Default)]
struct Model {
    start: Offset,
    batches: Vec<(Offset, Vec<u8>)>,
    /// `(epoch, start offset)` as the checkpoint should record them.
    epochs: Vec<(i32, u64)>,
    epoch: i32,
    appended: u64,
}

impl Model {
    fn end(&self) -> Offset {
        self.batches
            .last()
            .map_or(self.start, |(_, bytes)| header(bytes).next_offset())
    }

    fn push(&mut self, bytes: Vec<u8>) {
        let header = header(&bytes);
        assert_eq!(header.base_offset, self.end(), "model batch out of order");
        let epoch = header.leader_epoch.0;
        if epoch >= 0 && self.epochs.last().is_none_or(|(last, _)| *last < epoch) {
            self.epochs.push((epoch, header.base_offset.0));
        }
        self.batches.push((header.base_offset, bytes));
    }

    /// Index of the batch holding `offset`.
    fn holding(&self, offset: Offset) -> Option<usize> {
        self.batches
            .iter()
            .position(|(_, bytes)| header(bytes).next_offset() > offset)
    }

    fn truncate(&mut self, to: Offset) -> Offset {
        if to >= self.end() {
            return self.end();
        }
        if to <= self.start {
            self.batches.clear();
            self.epochs.clear();
            self.start = to;
            return to;
        }
        let at = self.holding(to).expect("to is inside the log");
        let new_end = self.batches[at].0;
        self.batches.truncate(at);
        self.epochs.retain(|(_, start)| *start < new_end.0);
        new_end
    }

    /// The first offset whose record timestamp is at or after `target`, by linear scan.
    fn offset_for_timestamp(&self, target: i64) -> Option<Offset> {
        self.batches.iter().find_map(|(_, bytes)| {
            let header = header(bytes);
            RecordIter::new(&header, bytes)
                .map(|r| r.expect("model record"))
                .find(|r| r.timestamp(&header).0 >= target)
                .map(|r| r.offset(&header))
        })
    }

    fn timestamps(&self) -> Vec<i64> {
        self.batches
            .iter()
            .flat_map(|(_, bytes)| {
                let header = header(bytes);
                RecordIter::new(&header, bytes)
                    .map(move |r| r.expect("model record").timestamp(&header).0)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn header(bytes: &[u8]) -> BatchHeader {
    BatchHeader::parse(bytes).expect("model batch header")
}

/// A batch whose every value byte is non-zero (so a zeroed tail always changes it) and
/// whose keys name the batch.
fn make_batch(seed: u64, records: &[(usize, i64)]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (i, (size, ts)) in records.iter().enumerate() {
        let key = format!("b{seed}-r{i}");
        let value: Vec<u8> = (0..*size)
            .map(|j| {
                u8::try_from((usize::try_from(seed).expect("fits") * 31 + j * 7 + i) % 255 + 1)
                    .expect("byte")
            })
            .collect();
        let headers: &[(&[u8], Option<&[u8]>)] = if i % 3 == 1 {
            &[(b"h", Some(b"v"))]
        } else {
            &[]
        };
        builder.push(
            TimestampMs(*ts),
            Some(key.as_bytes()),
            Some(&value),
            headers,
        );
    }
    builder.finish()
}

/// The bytes the log stores for `bytes` appended at `base` under `epoch`.
fn patched(bytes: &[u8], base: Offset, epoch: i32) -> Vec<u8> {
    let mut out = bytes.to_vec();
    batch::patch_base(&mut out, base, LeaderEpoch(epoch));
    out
}

/// The engine config of a model run; `cache` picks the tail cache size so that reads go to
/// disk (0), mostly to disk, or mostly to memory.
fn config_of(cache: usize) -> EngineConfig {
    EngineConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 512,
        tail_cache_bytes: [0, 4096, 1 << 20][cache % 3],
        write_buffer_bytes: 64 << 10,
        write_chunk_bytes: 4096,
        retention_bytes: Some(96 << 10),
        retention_age: Some(Duration::from_secs(10)),
        segment_age: None,
        ..EngineConfig::default()
    }
}

/// `low + choice mod (high - low + 1)`: shrinks toward `low`.
fn pick(choice: u64, low: u64, high: u64) -> Offset {
    Offset(low + choice % (high - low + 1))
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// Reads `[model.start, model.end)` in steps of `bytes_max` and compares every batch.
async fn check_scan<S: Storage>(
    log: &PartitionLog<S>,
    model: &Model,
    bytes_max: usize,
) -> Result<(), TestCaseError> {
    let mut from = model.start;
    let mut got = Vec::new();
    while from < model.end() {
        let read = log
            .read(from, bytes_max)
            .await
            .map_err(|e| fail(format!("read {from}: {e}")))?;
        prop_assert!(
            !read.chunks.is_empty(),
            "empty read at {} below log end {}",
            from,
            model.end()
        );
        let mut bytes = 0;
        for (header, batch) in read.batches() {
            bytes += batch.len();
            got.push((header.base_offset, batch.to_vec()));
        }
        prop_assert_eq!(
            bytes,
            read.bytes(),
            "read {} returned partial batches",
            from
        );
        prop_assert!(read.next_offset > from);
        from = read.next_offset;
    }
    prop_assert_eq!(from, model.end());
    prop_assert_eq!(got.len(), model.batches.len());
    for (i, ((go, gb), (mo, mb))) in got.iter().zip(&model.batches).enumerate() {
        prop_assert_eq!(go, mo, "batch {} offset", i);
        prop_assert!(gb == mb, "batch {} at offset {} differs", i, mo);
    }
    Ok(())
}

/// One read from `from`, checked against the model.
async fn check_read<S: Storage>(
    log: &PartitionLog<S>,
    model: &Model,
    from: Offset,
    bytes_max: usize,
) -> Result<(), TestCaseError> {
    let result = log.read(from, bytes_max).await;
    if from < model.start || from > model.end() {
        match result {
            Err(Error::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            }) => {
                prop_assert_eq!(
                    (offset, log_start, log_end),
                    (from, model.start, model.end())
                );
            }
            other => return Err(fail(format!("read {from} outside the log: {other:?}"))),
        }
        return Ok(());
    }
    let read = result.map_err(|e| fail(format!("read {from}: {e}")))?;
    if from == model.end() {
        prop_assert!(read.chunks.is_empty());
        prop_assert_eq!(read.next_offset, from);
        return Ok(());
    }
    let first = model.holding(from).expect("from below the end");
    let batches: Vec<_> = read
        .batches()
        .map(|(h, b)| (h.base_offset, b.to_vec()))
        .collect();
    prop_assert!(!batches.is_empty(), "read {} returned nothing", from);
    prop_assert_eq!(
        batches.iter().map(|(_, b)| b.len()).sum::<usize>(),
        read.bytes()
    );
    if batches.len() > 1 {
        prop_assert!(
            read.bytes() <= bytes_max,
            "{} bytes for bytes_max {}",
            read.bytes(),
            bytes_max
        );
    }
    for (i, (offset, bytes)) in batches.iter().enumerate() {
        let Some((mo, mb)) = model.batches.get(first + i) else {
            return Err(fail(format!(
                "read {from} returned a batch past the log end: {offset}"
            )));
        };
        prop_assert_eq!(offset, mo);
        prop_assert!(bytes == mb, "read {} batch {} differs", from, offset);
    }
    let last = &batches[batches.len() - 1].1;
    prop_assert_eq!(read.next_offset, header(last).next_offset());
    Ok(())
}

/// Everything the log must agree on after any operation.
async fn check<S: Storage>(
    log: &PartitionLog<S>,
    model: &Model,
    probe: u64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start(), model.start, "log start");
    prop_assert_eq!(log.log_end(), model.end(), "log end");
    check_scan(
        log,
        model,
        [1, 3000, 1 << 20][usize::try_from(probe % 3).expect("small")],
    )
    .await?;
    for from in [
        model.start.0.checked_sub(1),
        Some(model.end().0),
        Some(model.end().0 + 1),
    ]
    .into_iter()
    .flatten()
    {
        check_read(log, model, Offset(from), 4096).await?;
    }
    // From inside a batch: the holding batch comes back whole.
    if let Some((base, bytes)) = model
        .batches
        .get(usize::try_from(probe).expect("fits") % model.batches.len().max(1))
    {
        let inside = Offset(header(bytes).last_offset().0.min(base.0 + 1));
        check_read(log, model, inside, 1).await?;
    }
    let stamps = model.timestamps();
    let mut targets = vec![i64::MIN, -1, 6000];
    if !stamps.is_empty() {
        let at = usize::try_from(probe).expect("fits") % stamps.len();
        targets.extend([stamps[at], stamps[at] + 1, stamps[at] - 1]);
    }
    for target in targets {
        let got = log
            .offset_for_timestamp(TimestampMs(target))
            .await
            .map_err(|e| fail(format!("by time: {e}")))?;
        prop_assert_eq!(
            got,
            model.offset_for_timestamp(target),
            "offset_for_timestamp({})",
            target
        );
    }
    let epochs: Vec<(i32, u64)> = log
        .checkpoint()
        .epochs
        .iter()
        .map(|e| (e.epoch.0, e.start_offset.0))
        .collect();
    prop_assert_eq!(epochs, model.epochs.clone(), "leader-epoch history");
    prop_assert!(log.high_watermark() <= log.log_end());
    Ok(())
}

async fn open(
    storage: &SimStorage,
    config: &EngineConfig,
) -> Result<PartitionLog<SimStorage>, TestCaseError> {
    PartitionLog::open(storage.clone(), DIR, config.clone())
        .await
        .map_err(|e| fail(format!("open: {e}")))
}

/// Runs `ops` against a fresh log and the model, checking after each.
fn run_ops(config: EngineConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    block_on(async {
        let storage = SimStorage::new();
        let mut log = open(&storage, &config).await?;
        let mut model = Model {
            epoch: 1,
            ..Model::default()
        };
        for (step, op) in ops.iter().enumerate() {
            log = apply(&storage, &config, log, &mut model, op)
                .await
                .map_err(|e| fail(format!("step {step} {op:?}: {e}")))?;
            check(&log, &model, step as u64)
                .await
                .map_err(|e| fail(format!("after step {step} {op:?}: {e}")))?;
        }
        Ok(())
    })
}

async fn append(
    log: &PartitionLog<SimStorage>,
    model: &mut Model,
    records: &[(usize, i64)],
) -> Result<(), TestCaseError> {
    model.appended += 1;
    let bytes = make_batch(model.appended, records);
    let appended = log
        .append(BytesMut::from(&bytes[..]), LeaderEpoch(model.epoch))
        .await
        .map_err(|e| fail(format!("append: {e}")))?;
    prop_assert_eq!(appended.base_offset, model.end());
    let stored = patched(&bytes, appended.base_offset, model.epoch);
    model.push(stored);
    prop_assert_eq!(appended.next_offset, model.end());
    Ok(())
}

async fn apply(
    storage: &SimStorage,
    config: &EngineConfig,
    log: PartitionLog<SimStorage>,
    model: &mut Model,
    op: &Op,
) -> Result<PartitionLog<SimStorage>, TestCaseError> {
    match op {
        Op::Append {
            records,
            bump_epoch,
        } => {
            if *bump_epoch {
                model.epoch += 1;
            }
            append(&log, model, records).await?;
        }
        Op::Read { from, bytes_max } => {
            let from = pick(*from, model.start.0.saturating_sub(1), model.end().0 + 1);
            check_read(&log, model, from, *bytes_max).await?;
        }
        Op::Roll => log.roll().await.map_err(|e| fail(format!("roll: {e}")))?,
        Op::PrepareNext => log.prepare_next_segment().await,
        Op::Truncate { to } => {
            let to = pick(*to, model.start.0.saturating_sub(2), model.end().0 + 2);
            let got = log
                .truncate(to)
                .await
                .map_err(|e| fail(format!("truncate {to}: {e}")))?;
            prop_assert_eq!(got, model.truncate(to), "truncate({}) result", to);
        }
        Op::Retention { now, committed } => {
            let high_watermark = pick(*committed, model.start.0, model.end().0);
            log.set_high_watermark(high_watermark);
            retention(&log, config, model, *now).await?;
        }
        Op::Reopen => {
            log.close().await.map_err(|e| fail(format!("close: {e}")))?;
            return open(storage, config).await;
        }
        Op::Crash { seed } => {
            drop(log);
            storage.crash(*seed);
            return open(storage, config).await;
        }
        Op::SyncFailure { seed } => {
            return sync_failure(storage, config, log, model, *seed).await;
        }
    }
    Ok(log)
}

/// Applies retention at `now`; the deleted segments follow the pure decision over the
/// log's own segment summaries.
async fn retention(
    log: &PartitionLog<SimStorage>,
    config: &EngineConfig,
    model: &mut Model,
    now: i64,
) -> Result<(), TestCaseError> {
    let segments = log.segments();
    let summaries: Vec<SegmentSummary> = segments
        .iter()
        .map(|s| SegmentSummary {
            bytes: s.data_len,
            max_timestamp: s.max_timestamp,
            next_offset: s.next_offset,
        })
        .collect();
    let high_watermark = log.high_watermark();
    let count = retention::segments_to_delete(
        &summaries,
        config.retention_bytes,
        config.retention_age,
        TimestampMs(now),
        high_watermark,
    );
    let deleted = log
        .apply_retention(TimestampMs(now))
        .await
        .map_err(|e| fail(format!("retention: {e}")))?;
    prop_assert_eq!(deleted, count);
    if count > 0 {
        let start = segments[count].id.0;
        prop_assert!(
            start == model.end() || model.batches.iter().any(|(o, _)| *o == start),
            "segment base {} is not a batch start",
            start
        );
        model.batches.retain(|(o, _)| *o >= start);
        model.start = start;
    }
    // Retention never passes the high watermark: nothing uncommitted is deleted.
    prop_assert!(
        log.log_start() <= high_watermark,
        "log start {} past the high watermark {}",
        log.log_start(),
        high_watermark
    );
    Ok(())
}

/// Syncs fail: the next append must fail and the log refuse further appends; then crash,
/// heal the storage and open again.
async fn sync_failure(
    storage: &SimStorage,
    config: &EngineConfig,
    log: PartitionLog<SimStorage>,
    model: &mut Model,
    seed: u64,
) -> Result<PartitionLog<SimStorage>, TestCaseError> {
    storage.fail_syncs(true);
    model.appended += 1;
    let bytes = make_batch(model.appended, &[(100, 1)]);
    let first = log
        .append(BytesMut::from(&bytes[..]), LeaderEpoch(model.epoch))
        .await;
    prop_assert!(
        first.is_err(),
        "append with failing syncs resolved {:?}",
        first
    );
    let again = log
        .append(BytesMut::from(&bytes[..]), LeaderEpoch(model.epoch))
        .await;
    prop_assert!(
        again.is_err(),
        "append after a failed sync resolved {:?}",
        again
    );
    drop(log);
    storage.fail_syncs(false);
    storage.crash(seed);
    let log = open(storage, config).await?;
    // The failed batch was never acknowledged: it may be there or not, but whole.
    if log.log_end() != model.end() {
        model.push(patched(&bytes, model.end(), model.epoch));
    }
    Ok(log)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let records = proptest::collection::vec((0usize..1500, 0i64..5000), 1..5);
    prop_oneof![
        14 => (records, prop::bool::weighted(0.1)).prop_map(|(records, bump_epoch)| Op::Append { records, bump_epoch }),
        3 => (any::<u64>(), prop_oneof![Just(1usize), 1usize..20_000]).prop_map(|(from, bytes_max)| Op::Read { from, bytes_max }),
        2 => Just(Op::Roll),
        2 => Just(Op::PrepareNext),
        2 => any::<u64>().prop_map(|to| Op::Truncate { to }),
        1 => (0i64..20_000, any::<u64>())
            .prop_map(|(now, committed)| Op::Retention { now, committed }),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        1 => any::<u64>().prop_map(|seed| Op::SyncFailure { seed }),
    ]
}

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(96))]

    /// Random operations agree with the model after every step.
    #[test]
    fn log_matches_model(cache in 0usize..3, ops in proptest::collection::vec(op_strategy(), 1..80)) {
        run_ops(config_of(cache), &ops)?;
    }
}

/// Rolls, truncations to segment boundaries and across segments, retention and reopen, in
/// one fixed sequence (a readable smoke of the model).
#[test]
fn fixed_sequence_across_segment_boundaries() {
    let big = |n| Op::Append {
        records: vec![(1400, n); 3],
        bump_epoch: n % 7 == 0,
    };
    let mut ops: Vec<Op> = (0..40).map(big).collect();
    ops.extend([
        Op::PrepareNext,
        Op::Roll,
        Op::Reopen,
        Op::PrepareNext,
        Op::Truncate { to: 250 },
        Op::Crash { seed: 3 },
    ]);
    ops.extend((40..60).map(big));
    ops.extend([
        Op::Retention {
            now: 0,
            committed: u64::MAX,
        },
        Op::Reopen,
        Op::Truncate { to: 290 },
        Op::Crash { seed: 9 },
    ]);
    run_ops(config_of(0), &ops).unwrap();
}

// ---------------------------------------------------------------------------------------
// Concurrency: a storage whose every call may yield, partial polling, crash.

/// splitmix64, so a run is replayed by its seed.
fn splitmix(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Returns `Pending` `n` times (waking itself), then `Ready`.
struct YieldTimes(u64);

impl Future for YieldTimes {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// [`SimStorage`] whose every call first yields 0..=2 times, chosen by a seeded PRNG, so
/// that concurrent tasks interleave (group commit, appends during a flush or a roll).
/// A write is in flight across a second such pause before it lands, as on a device:
/// writes issued together land in any order, and a write issued while another one of the
/// same file's blocks is in flight is recorded in `overlaps` (on a device either could
/// land last). While `fail_fdatasync` is set, fdatasyncs fail and writes do not.
#[derive(Clone, Debug)]
struct Yielding {
    inner: SimStorage,
    rng: Rc<Cell<u64>>,
    fail_fdatasync: Rc<Cell<bool>>,
    overlaps: Rc<RefCell<Vec<String>>>,
}

impl Yielding {
    fn new(inner: SimStorage, seed: u64) -> Yielding {
        Yielding {
            inner,
            rng: Rc::new(Cell::new(seed)),
            fail_fdatasync: Rc::new(Cell::new(false)),
            overlaps: Rc::new(RefCell::new(Vec::new())),
        }
    }
}

#[derive(Debug)]
struct YieldingFile {
    inner: SimFile,
    rng: Rc<Cell<u64>>,
    fail_fdatasync: Rc<Cell<bool>>,
    overlaps: Rc<RefCell<Vec<String>>>,
    /// Writes in flight: `(start, end)` byte ranges.
    in_flight: RefCell<Vec<(u64, u64)>>,
}

async fn pause(rng: &Cell<u64>) {
    YieldTimes(splitmix(rng) % 3).await;
}

impl Storage for Yielding {
    type File = YieldingFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<YieldingFile> {
        pause(&self.rng).await;
        let inner = self.inner.open(path, mode).await?;
        Ok(YieldingFile {
            inner,
            rng: self.rng.clone(),
            fail_fdatasync: self.fail_fdatasync.clone(),
            overlaps: self.overlaps.clone(),
            in_flight: RefCell::new(Vec::new()),
        })
    }
    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        pause(&self.rng).await;
        self.inner.create_dir_all(path).await
    }
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        pause(&self.rng).await;
        self.inner.list_dir(path).await
    }
    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        pause(&self.rng).await;
        self.inner.remove_file(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        pause(&self.rng).await;
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        pause(&self.rng).await;
        self.inner.sync_dir(path).await
    }
}

impl StorageFile for YieldingFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        pause(&self.rng).await;
        self.inner.read_at(pos, len).await
    }
    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        pause(&self.rng).await;
        let range = (pos, pos + data.len() as u64);
        {
            let mut in_flight = self.in_flight.borrow_mut();
            if let Some(other) = in_flight.iter().find(|o| o.0 < range.1 && range.0 < o.1) {
                self.overlaps
                    .borrow_mut()
                    .push(format!("write {range:?} while {other:?} is in flight"));
            }
            in_flight.push(range);
        }
        pause(&self.rng).await;
        self.in_flight.borrow_mut().retain(|&r| r != range);
        self.inner.write_at(pos, data).await
    }
    async fn sync_data(&self) -> io::Result<()> {
        pause(&self.rng).await;
        if self.fail_fdatasync.get() {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        self.inner.sync_data().await
    }
    async fn size(&self) -> io::Result<u64> {
        pause(&self.rng).await;
        self.inner.size().await
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        pause(&self.rng).await;
        self.inner.truncate(len).await
    }
    async fn preallocate(&self, len: u64) -> io::Result<()> {
        pause(&self.rng).await;
        self.inner.preallocate(len).await
    }
    async fn close(self) -> io::Result<()> {
        pause(&self.rng).await;
        self.inner.close().await
    }
}

/// A concurrent run: `tasks` appenders of `per_task` batches each, a reader and a roller,
/// polled `polls` times (then dropped mid-flight) before a crash with `crash_seed`.
#[derive(Clone, Debug)]
struct Concurrent {
    /// Seeds the yields.
    seed: u64,
    /// Appending tasks.
    tasks: u64,
    /// Batches per task.
    per_task: u64,
    /// Polls of the whole workload before it is dropped.
    polls: u64,
    /// Seed of the crash.
    crash_seed: u64,
    /// Value size of every record.
    value_size: usize,
    /// Flush policy: `always` runs one flush at a time, `interval` and `never` pipeline
    /// several (overlapping partial blocks, out-of-order completions).
    flush: FlushPolicy,
}

/// The epoch of a task's `i`th batch: tasks move through epochs at their own pace, so the
/// log's epochs interleave and the history keeps each epoch's first appearance.
fn task_epoch(i: u64) -> i32 {
    1 + i32::try_from(i / 8).expect("fits")
}

/// The batch appended by `task` as its `i`th, named by its first key.
fn task_batch(task: u64, i: u64, value_size: usize) -> Vec<u8> {
    make_batch(
        task * 1_000_000 + i,
        &[
            (value_size, 10 + i64::try_from(i).expect("fits")),
            (value_size / 2, 5),
        ],
    )
}

fn batch_id(header: &BatchHeader, bytes: &[u8]) -> String {
    let first = RecordIter::new(header, bytes)
        .next()
        .expect("a record")
        .expect("valid record");
    String::from_utf8_lossy(first.key.expect("key")).into_owned()
}

/// Polls `future` up to `polls` times with a no-op waker; `true` if it finished.
fn poll_up_to<F: Future>(future: F, polls: u64) -> bool {
    let mut future = std::pin::pin!(future);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..polls {
        if future.as_mut().poll(&mut cx).is_ready() {
            return true;
        }
    }
    false
}

/// Appenders, a reader and a roller on `log`, polled at most `case.polls` times; `true` if
/// they all finished.
fn run_workload(
    log: &PartitionLog<Yielding>,
    case: &Concurrent,
    acked: &RefCell<Vec<(Offset, Vec<u8>)>>,
    errors: &RefCell<Vec<String>>,
) -> bool {
    let done = Cell::new(false);
    let appenders = (0..case.tasks).map(|task| {
        let (log, acked, errors) = (&log, &acked, &errors);
        async move {
            for i in 0..case.per_task {
                let bytes = task_batch(task, i, case.value_size);
                let epoch = task_epoch(i);
                match log
                    .append(BytesMut::from(&bytes[..]), LeaderEpoch(epoch))
                    .await
                {
                    Ok(a) => acked
                        .borrow_mut()
                        .push((a.base_offset, patched(&bytes, a.base_offset, epoch))),
                    Err(e) => errors
                        .borrow_mut()
                        .push(format!("task {task} batch {i}: {e}")),
                }
            }
        }
    });
    let reader = async {
        // Reads race the flushes: whatever comes back must be whole, valid batches.
        let mut from = Offset(0);
        while !done.get() {
            match log.read(from, 5000).await {
                Ok(read) => {
                    for (header, bytes) in read.batches() {
                        if let Err(e) = batch::validate(bytes) {
                            errors.borrow_mut().push(format!(
                                "read {from}: batch {} invalid: {e}",
                                header.base_offset
                            ));
                        }
                    }
                    from = if read.chunks.is_empty() {
                        Offset(0)
                    } else {
                        read.next_offset
                    };
                }
                Err(e) => errors.borrow_mut().push(format!("read {from}: {e}")),
            }
            YieldTimes(1).await;
        }
    };
    let roller = async {
        for round in 0..3 {
            YieldTimes(10 + round * 40).await;
            log.prepare_next_segment().await;
            YieldTimes(10).await;
            if let Err(e) = log.roll().await {
                errors.borrow_mut().push(format!("roll: {e}"));
            }
        }
    };
    let upkeep = async {
        // Zeros written ahead of the appends race their flushes: a zero write landing on
        // appended blocks would lose acknowledged batches.
        while !done.get() {
            log.extend_active(TimestampMs::now()).await;
            log.zero_fill_ahead().await;
            YieldTimes(2).await;
        }
    };
    let work = async {
        futures::future::join(futures::future::join_all(appenders), roller).await;
        done.set(true);
    };
    poll_up_to(futures::future::join3(work, reader, upkeep), case.polls)
}

/// Runs a concurrent case; see [`Concurrent`].
fn run_concurrent(case: &Concurrent) -> Result<(), TestCaseError> {
    let sim = SimStorage::new();
    let storage = Yielding::new(sim.clone(), case.seed);
    let config = EngineConfig {
        tail_cache_bytes: 2048,
        flush: case.flush,
        // Steps and zeros of a few blocks, so the upkeep works right at the appends' edge.
        preallocation_step_bytes: 16 << 10,
        zero_fill_ahead_bytes: 8 << 10,
        ..config_of(0)
    };
    let log = block_on(PartitionLog::open(storage.clone(), DIR, config.clone()))
        .map_err(|e| fail(format!("open: {e}")))?;
    let acked: RefCell<Vec<(Offset, Vec<u8>)>> = RefCell::new(Vec::new());
    let errors: RefCell<Vec<String>> = RefCell::new(Vec::new());
    let finished = run_workload(&log, case, &acked, &errors);
    prop_assert!(errors.borrow().is_empty(), "errors: {:?}", errors.borrow());
    prop_assert!(
        storage.overlaps.borrow().is_empty(),
        "overlapping writes in flight: {:?}",
        storage.overlaps.borrow()
    );
    // Killed here, the process leaves every write it issued to the OS: whatever the flush
    // policy, every batch acknowledged so far must be read back.
    let killed = sim.after_process_kill();
    let reopened = block_on(PartitionLog::open(killed, DIR, config.clone()))
        .map_err(|e| fail(format!("reopen after a kill: {e}")))?;
    block_on(check_after_crash(&reopened, &acked.borrow(), case))?;
    drop(reopened);
    if !finished {
        // Dropped mid-flight (a flush among them, perhaps): the log must not wedge. A sync
        // ends, in success or, if a flush was cut short, with the log stopped.
        let synced = RefCell::new(None);
        let settled = poll_up_to(
            async { *synced.borrow_mut() = Some(log.sync().await) },
            10_000,
        );
        prop_assert!(settled, "sync after a dropped workload never ended");
        if let Some(Err(e)) = synced.into_inner() {
            prop_assert!(
                matches!(e, Error::SyncFailed { .. } | Error::Stopped),
                "sync after a dropped workload: {}",
                e
            );
        }
    }
    let mut acked = acked.into_inner();
    if case.flush != FlushPolicy::Always {
        if finished {
            // Acknowledged under `interval`/`never` means written: a sync makes it durable.
            block_on(log.sync()).map_err(|e| fail(format!("sync: {e}")))?;
        } else {
            acked.clear(); // Written, not promised durable: the crash may take any suffix.
        }
    }
    if finished && case.flush == FlushPolicy::Always {
        prop_assert_eq!(log.log_end().0, case.tasks * case.per_task * 2);
        // Group commit: with several appenders some syncs serve more than one batch.
        let stats = log.stats();
        prop_assert!(
            case.polls != u64::MAX || stats.syncs < stats.batches_appended,
            "{:?}",
            stats
        );
    }
    drop(log);
    sim.crash(case.crash_seed);
    let log = block_on(PartitionLog::open(sim.clone(), DIR, config.clone()))
        .map_err(|e| fail(format!("reopen: {e}")))?;
    block_on(check_after_crash(&log, &acked, case))
}

async fn check_after_crash(
    log: &PartitionLog<SimStorage>,
    acked: &[(Offset, Vec<u8>)],
    case: &Concurrent,
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut from = Offset(0);
    let mut seen = std::collections::HashSet::new();
    while from < log.log_end() {
        let read = log
            .read(from, 1 << 20)
            .await
            .map_err(|e| fail(format!("read {from}: {e}")))?;
        for (header, bytes) in read.batches() {
            let id = batch_id(&header, bytes);
            prop_assert!(seen.insert(id.clone()), "batch {} twice", id);
            let (task, i) = id
                .trim_start_matches('b')
                .split_once("-r")
                .map(|(n, _)| n)
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| (n / 1_000_000, n % 1_000_000))
                .ok_or_else(|| fail(format!("unknown batch {id}")))?;
            prop_assert!(
                task < case.tasks && i < case.per_task,
                "unknown batch {}",
                id
            );
            let epoch = header.leader_epoch.0;
            let expected = patched(
                &task_batch(task, i, case.value_size),
                header.base_offset,
                epoch,
            );
            // Runs that append everything under epoch 1 share this check.
            prop_assert!(
                epoch == task_epoch(i) || epoch == 1,
                "batch {} epoch {}",
                id,
                epoch
            );
            prop_assert!(
                bytes == &expected[..],
                "batch {} at {} differs",
                id,
                header.base_offset
            );
            model.push(bytes.to_vec());
        }
        from = read.next_offset;
    }
    prop_assert_eq!(model.end(), log.log_end());
    let epochs: Vec<(i32, u64)> = log
        .checkpoint()
        .epochs
        .iter()
        .map(|e| (e.epoch.0, e.start_offset.0))
        .collect();
    prop_assert_eq!(
        epochs,
        model.epochs.clone(),
        "leader-epoch history after the crash"
    );
    for (offset, bytes) in acked {
        let found = model.batches.iter().find(|(o, _)| o == offset);
        prop_assert!(
            found.is_some_and(|(_, b)| b == bytes),
            "acknowledged batch at {} lost or changed",
            offset
        );
    }
    Ok(())
}

fn concurrent_strategy() -> impl Strategy<Value = Concurrent> {
    (
        any::<u64>(),
        1u64..6,
        1u64..40,
        1u64..4000,
        any::<u64>(),
        prop_oneof![10usize..200, 1000usize..3000],
        prop_oneof![
            Just(FlushPolicy::Always),
            Just(FlushPolicy::Never),
            Just(FlushPolicy::Interval(Duration::from_millis(1))),
        ],
    )
        .prop_map(
            |(seed, tasks, per_task, polls, crash_seed, value_size, flush)| Concurrent {
                seed,
                tasks,
                per_task,
                polls,
                crash_seed,
                value_size,
                flush,
            },
        )
}

proptest! {
    #![proptest_config(cases(64))]

    /// Concurrent appends, reads and rolls, cut off at any point by a crash: every
    /// acknowledged batch survives intact at its offset; nothing unknown appears.
    #[test]
    fn concurrent_appends_survive_crash(case in concurrent_strategy()) {
        run_concurrent(&case)?;
    }
}

/// The same workload run to completion: every batch is there and group commit worked.
#[test]
fn concurrent_appends_to_completion() {
    let case = Concurrent {
        seed: 11,
        tasks: 5,
        per_task: 30,
        polls: u64::MAX,
        crash_seed: 1,
        value_size: 800,
        flush: FlushPolicy::Always,
    };
    run_concurrent(&case).unwrap();
}

/// The same, with pipelined flushes (`never`): every batch is there after a sync.
#[test]
fn pipelined_appends_to_completion() {
    for seed in 0..50 {
        let case = Concurrent {
            seed,
            tasks: 6,
            per_task: 30,
            polls: u64::MAX,
            crash_seed: seed,
            value_size: 700 + usize::try_from(seed).expect("small") * 37,
            flush: FlushPolicy::Never,
        };
        run_concurrent(&case).unwrap();
    }
}

/// Regression: a crash after a roll created the next segment but before it rewrote the
/// checkpoint lost the epochs that started in the sealed segment (sealed segments are not
/// scanned on open). Fixed by writing the checkpoint before creating the next segment.
#[test]
fn regression_crash_during_roll_keeps_epoch_history() {
    let case = Concurrent {
        seed: 6_928_059_791_111_725_367,
        tasks: 3,
        per_task: 33,
        polls: 247,
        crash_seed: 0,
        value_size: 2663,
        flush: FlushPolicy::Always,
    };
    run_concurrent(&case).unwrap();
}

/// Appends racing a truncation: every append resolves (acknowledged, or failed because the
/// truncation removed its batch before it was durable), none waits forever, and the log
/// stays a valid, contiguous run of known batches.
#[test]
fn appends_racing_a_truncation_all_resolve() {
    for seed in 0..300u64 {
        let sim = SimStorage::new();
        let storage = Yielding::new(sim.clone(), seed);
        let config = EngineConfig {
            tail_cache_bytes: 2048,
            ..config_of(0)
        };
        let log = block_on(PartitionLog::open(storage.clone(), DIR, config.clone())).expect("open");
        let outcomes: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let appenders = (0..3u64).map(|task| {
            let (log, outcomes) = (&log, &outcomes);
            async move {
                for i in 0..10 {
                    let bytes = task_batch(task, i, 300);
                    let result = log.append(BytesMut::from(&bytes[..]), LeaderEpoch(1)).await;
                    outcomes
                        .borrow_mut()
                        .push(format!("{task}/{i}: {result:?}"));
                }
            }
        });
        let truncater = async {
            YieldTimes(seed % 40).await;
            let to = Offset(log.log_end().0 / 2);
            log.truncate(to).await.expect("truncate");
        };
        let finished = poll_up_to(
            futures::future::join(futures::future::join_all(appenders), truncater),
            1_000_000,
        );
        assert!(
            finished,
            "seed {seed}: appends still waiting after 1e6 polls: {:?}",
            outcomes.borrow()
        );
        assert_eq!(outcomes.borrow().len(), 30, "seed {seed}");
        drop(log);
        let log = block_on(PartitionLog::open(sim.clone(), DIR, config)).expect("reopen");
        let case = Concurrent {
            seed,
            tasks: 3,
            per_task: 10,
            polls: 0,
            crash_seed: 0,
            value_size: 300,
            flush: FlushPolicy::Always,
        };
        block_on(check_after_crash(&log, &[], &case))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// The policies that run several flushes at once (an interval too long to come up).
const PIPELINED: [FlushPolicy; 2] = [
    FlushPolicy::Interval(Duration::from_secs(3600)),
    FlushPolicy::Never,
];

/// Six appenders keep every flush slot of a log under `flush` busy; once 50 batches are
/// in, a sync is asked for (with fdatasyncs failing from then on if `fail_fdatasync`). The
/// syncer is polled after the appenders, as a task woken after them would run. Returns the
/// sync's result and how many batches were appended while it waited.
fn a_sync_among_appends(flush: FlushPolicy, fail_fdatasync: bool) -> (Result<(), Error>, u64) {
    const APPENDERS: u64 = 6;
    const BATCHES_MAX: u64 = 3000;
    let storage = Yielding::new(SimStorage::new(), 5);
    let failing = storage.fail_fdatasync.clone();
    let config = EngineConfig {
        flush,
        segment_bytes: 64 << 20,
        write_buffer_bytes: 1 << 20,
        ..config_of(0)
    };
    let log = block_on(PartitionLog::open(storage, DIR, config)).expect("open");
    let appended = Cell::new(0u64);
    let done = Cell::new(false);
    let appenders = (0..APPENDERS).map(|task| {
        let (log, appended, done) = (&log, &appended, &done);
        async move {
            let mut i = 0;
            while !done.get() && appended.get() < BATCHES_MAX {
                let batch = BytesMut::from(&task_batch(task, i, 700)[..]);
                if log.append(batch, LeaderEpoch(1)).await.is_err() {
                    break; // The log stopped.
                }
                appended.set(appended.get() + 1);
                i += 1;
            }
        }
    });
    let syncer = async {
        while appended.get() < 50 {
            YieldTimes(1).await;
        }
        failing.set(fail_fdatasync);
        let asked_at = appended.get();
        let synced = log.sync().await;
        done.set(true);
        (synced, appended.get() - asked_at)
    };
    let (_, outcome) = block_on(futures::future::join(
        futures::future::join_all(appenders),
        syncer,
    ));
    outcome
}

/// Under `interval` and `never`, a sync (the background sync of `tick`, a roll's) asked for
/// while appenders keep every flush slot busy is done once the writes under way are: it
/// needs no slot of its own. It used to wait for one, and the appenders woken before it
/// took each slot that freed: in `shardlog-bench engine --flush interval=5` a 5 ms
/// interval synced about every 130 ms, and here the sync waited out 2,952 appends.
#[test]
fn a_sync_is_not_starved_by_appends_that_keep_the_flush_slots_busy() {
    for flush in PIPELINED {
        let (synced, appended_meanwhile) = a_sync_among_appends(flush, false);
        synced.expect("sync");
        assert!(
            appended_meanwhile < 60,
            "{flush}: {appended_meanwhile} batches were appended while one sync waited"
        );
    }
}

/// A sync done without a flush of its own whose fdatasync fails stops the log, as a
/// failed flush does: the sync reports `SyncFailed` (returned only by the failure that
/// stops the log).
#[test]
fn a_failed_fdatasync_stops_the_log_whether_or_not_a_flush_made_it() {
    for flush in PIPELINED {
        let (synced, _) = a_sync_among_appends(flush, true);
        assert!(
            matches!(synced, Err(Error::SyncFailed { .. })),
            "{flush}: {synced:?}"
        );
    }
}

/// A one-record batch exactly `len` bytes long.
fn batch_of_len(seed: u64, len: usize) -> Vec<u8> {
    let overhead = make_batch(seed, &[(0, 1)]).len();
    (len.saturating_sub(overhead + 8)..len)
        .map(|size| make_batch(seed, &[(size, 1)]))
        .find(|batch| batch.len() == len)
        .expect("some value size makes a batch of that length")
}

/// Regression (a debug assertion): under `never`, a flush taken while another writes,
/// whose pending bytes start on the block boundary where the batch before it ended, leaves
/// its partial last block to the next flush and so completes no batch at all. The next
/// flush completes it, in order, and a killed process keeps both batches.
#[test]
fn a_flush_that_completes_no_batch_keeps_the_written_order() {
    let aligned = batch_of_len(1, 4096);
    let long = batch_of_len(2, 3 * 4096 + 100);
    for seed in 0..32 {
        let sim = SimStorage::new();
        let storage = Yielding::new(sim.clone(), seed);
        let config = EngineConfig {
            flush: FlushPolicy::Never,
            ..config_of(0)
        };
        let log = block_on(PartitionLog::open(storage.clone(), DIR, config.clone())).unwrap();
        let (first, second) = block_on(futures::future::join(
            log.append(BytesMut::from(&aligned[..]), LeaderEpoch(1)),
            async {
                YieldTimes(1).await;
                log.append(BytesMut::from(&long[..]), LeaderEpoch(1)).await
            },
        ));
        assert_eq!(first.unwrap().base_offset, Offset(0), "seed {seed}");
        assert_eq!(second.unwrap().base_offset, Offset(1), "seed {seed}");
        assert_eq!(log.written_end(), Offset(2), "seed {seed}");
        assert!(storage.overlaps.borrow().is_empty(), "seed {seed}");
        drop(log);
        let reopened = block_on(PartitionLog::open(sim.after_process_kill(), DIR, config)).unwrap();
        let read = block_on(reopened.read(Offset(0), 1 << 20)).unwrap();
        let stored: Vec<Vec<u8>> = read.batches().map(|(_, bytes)| bytes.to_vec()).collect();
        assert_eq!(
            stored,
            vec![
                patched(&aligned, Offset(0), 1),
                patched(&long, Offset(1), 1)
            ],
            "seed {seed}"
        );
    }
}
