//! Opening a partition log: list the directory, load sealed segments from their index
//! files (or rebuild them), scan the tail segment batch by batch and cut it at the first
//! torn or corrupt batch. Nothing past the last verified batch is ever served.
//!
//! The active segment has no index on disk (it gets one when sealed), so the tail scan
//! covers the whole active segment: at most `segment_bytes`, 128 MiB by default. Sealed
//! segments are trusted through their checksummed index files; a missing or damaged one
//! is rebuilt by a full scan, and damage found there stops the open with
//! [`Error::CorruptBatch`] (`shardlog repair` sets such a segment aside).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::ids::Offset;
use crate::offset_index::OffsetIndex;
use crate::partition_log::{BatchEnd, FLUSHES_IN_FLIGHT_MAX, LogState, LogStats, PartitionLog};
use crate::recovery::{self, Scanner, Step, StopKind};
use crate::segment::{self, BLOCK_SIZE, INDEX_SUFFIX, LOG_SUFFIX, Segment, TIME_INDEX_SUFFIX};
use crate::signal::Signal;
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::tail_cache::{TailCache, TailCacheBudget};
use crate::time_index::TimeIndex;

/// Bytes read per step of a scan.
const SCAN_CHUNK: usize = 4 << 20;
/// Bytes after a stop that recovery inspects to tell a torn tail from damage.
const CLASSIFY_WINDOW: usize = 1 << 20;

/// Where the scan of a segment stopped.
struct ScanStop {
    position: u64,
    kind: StopKind,
    reason: Option<crate::batch::Corruption>,
}

impl<S: Storage> PartitionLog<S> {
    /// Opens (creating if needed) the partition log in `dir`, recovering from whatever a
    /// crash left: see the module docs. Its tail cache keeps to its own bound
    /// (`tail_cache_bytes`) alone.
    pub async fn open(
        storage: S,
        dir: impl Into<PathBuf>,
        config: EngineConfig,
    ) -> Result<PartitionLog<S>> {
        PartitionLog::open_within(storage, dir, config, TailCacheBudget::unlimited()).await
    }

    /// [`PartitionLog::open`], with a tail cache that also shares `budget` with the other
    /// logs opened within it (those of one shard).
    pub async fn open_within(
        storage: S,
        dir: impl Into<PathBuf>,
        config: EngineConfig,
        budget: Rc<TailCacheBudget>,
    ) -> Result<PartitionLog<S>> {
        config.validate()?;
        let dir = dir.into();
        storage
            .create_dir_all(&dir)
            .await
            .map_err(Error::io(&dir))?;
        let bases = clean_directory(&storage, &dir).await?;
        let mut checkpoint = read_checkpoint(&storage, &dir).await?;
        let mut segments = BTreeMap::new();
        for (i, base) in bases.iter().enumerate() {
            let path = segment::segment_path(&dir, *base, LOG_SUFFIX);
            let file = storage
                .open(&path, OpenMode::ReadWrite)
                .await
                .map_err(Error::io(&path))?;
            let mut segment = Segment::new(*base, Rc::new(file));
            if i + 1 < bases.len() {
                load_sealed(&storage, &dir, &config, &mut segment).await?;
            } else {
                recover_tail(&dir, &config, &mut segment, &mut checkpoint).await?;
            }
            segments.insert(*base, segment);
        }
        if segments.is_empty() {
            let segment = create_segment(&storage, &dir, &config, Offset(0)).await?;
            segments.insert(Offset(0), segment);
        }
        check_sequence(&segments)?;
        let cache = TailCache::new(budget);
        let log = PartitionLog::assemble(storage, dir, config, segments, checkpoint, cache).await?;
        log.load_snapshot_list().await?;
        Ok(log)
    }

    async fn assemble(
        storage: S,
        dir: PathBuf,
        config: EngineConfig,
        segments: BTreeMap<Offset, Segment<S::File>>,
        mut checkpoint: Checkpoint,
        cache: TailCache,
    ) -> Result<PartitionLog<S>> {
        let active = segments.values().next_back().expect("at least one segment");
        let log_start = segments.values().next().map_or(active.base, |s| s.base);
        let log_end = active.next_offset;
        let pending_start = segment::align_down(active.data_len);
        let tail_len = usize::try_from(active.data_len - pending_start).unwrap_or(0);
        let path = segment::segment_path(&dir, active.base, LOG_SUFFIX);
        let tail = active
            .file
            .read_at(pending_start, tail_len)
            .await
            .map_err(Error::io(&path))?;
        // `durable_end` starts at the log end, but what a crashed run wrote may still sit
        // in the device's write cache; under `flush=always` no later flush fdatasyncs the
        // active segment (its writes are O_DSYNC), so sync it once here.
        active.file.sync_data().await.map_err(Error::io(&path))?;
        checkpoint.truncate(log_end);
        checkpoint.high_watermark = checkpoint.high_watermark.max(log_start);
        let data_len = active.data_len;
        let state = LogState {
            written_pos: data_len,
            segments,
            log_end,
            written_end: log_end,
            appended_bytes: 0,
            written_bytes: 0,
            durable_bytes: 0,
            durable_end: log_end,
            pending: crate::flush_buffers::copy_of(&tail),
            spare: crate::flush_buffers::empty(),
            pending_start,
            flushes_in_flight: 0,
            reserved_bytes: 0,
            syncing_to: 0,
            written_ahead: BTreeMap::new(),
            written_seq: 0,
            settled: BatchEnd {
                pos: data_len,
                next_offset: log_end,
                ticket: 0,
            },
            tail_writer: None,
            tail_writes: Vec::with_capacity(FLUSHES_IN_FLIGHT_MAX),
            flush_seq: 0,
            exclusive: false,
            stopped: false,
            stop_cause: None,
            last_sync: Instant::now(),
            cache,
            checkpoint,
            persisted_epochs: None,
            next_segment: None,
            next_segment_creating: false,
            extending: false,
            zero_filling: None,
            zero_fill_seen: None,
            extend_failed_at: None,
            preallocation_step: config.preallocation_step_bytes,
            rate_seen: None,
            stats: LogStats::default(),
            snapshots: std::collections::BTreeSet::new(),
        };
        let log = PartitionLog {
            storage,
            dir,
            config,
            state: RefCell::new(state),
            changed: Signal::default(),
        };
        log.invariants(&log.state.borrow());
        Ok(log)
    }
}

/// Removes what an interrupted operation left (temporary files, indexes without a log) and
/// returns the segment base offsets, ascending.
async fn clean_directory<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<Offset>> {
    let names = storage.list_dir(dir).await.map_err(Error::io(dir))?;
    let mut bases: Vec<Offset> = names
        .iter()
        .filter_map(|n| segment::parse_segment_name(n))
        .collect();
    bases.sort();
    let mut removed = false;
    for name in &names {
        let orphan_index = [INDEX_SUFFIX, TIME_INDEX_SUFFIX].iter().any(|suffix| {
            name.strip_suffix(&format!(".{suffix}"))
                .and_then(|stem| segment::parse_segment_name(&format!("{stem}.{LOG_SUFFIX}")))
                .is_some_and(|base| bases.binary_search(&base).is_err())
        });
        if name.ends_with(".tmp") || orphan_index {
            let path = dir.join(name);
            tracing::info!(path = %path.display(), "removing leftover file");
            storage.remove_file(&path).await.map_err(Error::io(&path))?;
            removed = true;
        }
    }
    if removed {
        storage.sync_dir(dir).await.map_err(Error::io(dir))?;
    }
    Ok(bases)
}

async fn read_checkpoint<S: Storage>(storage: &S, dir: &Path) -> Result<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let file = match storage.open(&path, OpenMode::ReadWrite).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    let bytes = read_whole(&file, &path).await?;
    file.close().await.map_err(Error::io(&path))?;
    Ok(Checkpoint::decode(&bytes).unwrap_or_else(|| {
        tracing::warn!(path = %path.display(), "checkpoint unreadable; high watermark restarts at the log start");
        Checkpoint::default()
    }))
}

pub(crate) async fn read_whole<F: StorageFile>(file: &F, path: &Path) -> Result<bytes::Bytes> {
    let size = file.size().await.map_err(Error::io(path))?;
    let size = usize::try_from(size)
        .map_err(|_| Error::io(path)(std::io::Error::other("file too large")))?;
    file.read_at(0, size).await.map_err(Error::io(path))
}

/// Restores a sealed segment from its index files, or rebuilds them by a full scan.
async fn load_sealed<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &EngineConfig,
    segment: &mut Segment<S::File>,
) -> Result<()> {
    let size = segment.file.size().await.map_err(Error::io(dir))?;
    match read_indexes(storage, dir, segment.base, size).await {
        Ok((index, time_index, meta, max_timestamp)) => {
            segment.restore(index, time_index, &meta, max_timestamp);
            return Ok(());
        }
        Err(reason) => {
            tracing::warn!(segment = %segment.id(), reason, "rebuilding segment index");
        }
    }
    let mut ignored = Checkpoint::default();
    let stop = scan_segment(dir, config, segment, &mut ignored).await?;
    if stop.kind != StopKind::End {
        return Err(Error::CorruptBatch {
            segment: segment.id(),
            position: stop.position,
            reason: stop.reason.unwrap_or(crate::batch::Corruption::Truncated {
                needed: 0,
                available: 0,
            }),
        });
    }
    segment.sealed = true;
    crate::log_maintenance::write_indexes(storage, dir, segment).await
}

async fn read_indexes<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
    file_size: u64,
) -> std::result::Result<
    (
        OffsetIndex,
        TimeIndex,
        crate::offset_index::SealedMeta,
        crate::ids::TimestampMs,
    ),
    &'static str,
> {
    let read = |suffix: &'static str| async move {
        let path = segment::segment_path(dir, base, suffix);
        let file = storage
            .open(&path, OpenMode::ReadWrite)
            .await
            .map_err(|_| "index file missing")?;
        let bytes = read_whole(&file, &path)
            .await
            .map_err(|_| "index file unreadable")?;
        let _ = file.close().await;
        Ok::<_, &'static str>(bytes)
    };
    let (index, meta) =
        OffsetIndex::decode(&read(INDEX_SUFFIX).await?).map_err(|_| "offset index damaged")?;
    if meta.data_len > file_size || meta.next_offset < base.0 {
        return Err("offset index disagrees with the log file");
    }
    let (time_index, max_timestamp) =
        TimeIndex::decode(&read(TIME_INDEX_SUFFIX).await?, meta.data_len)
            .map_err(|_| "time index damaged")?;
    Ok((index, time_index, meta, max_timestamp))
}

/// Scans the active segment and cuts it after its last valid batch.
async fn recover_tail<F: StorageFile>(
    dir: &Path,
    config: &EngineConfig,
    segment: &mut Segment<F>,
    checkpoint: &mut Checkpoint,
) -> Result<()> {
    let path = segment::segment_path(dir, segment.base, LOG_SUFFIX);
    // The scan re-derives every epoch that starts in this segment. Entries the checkpoint
    // holds from its base on may describe batches a cut or an unfinished truncation
    // removed (the checkpoint is rewritten only by exclusive operations), and keeping
    // them would put an epoch after one that starts later.
    checkpoint.epochs.retain(|e| e.start_offset < segment.base);
    let stop = scan_segment(dir, config, segment, checkpoint).await?;
    if stop.kind != StopKind::End {
        tracing::warn!(
            segment = %segment.id(),
            position = stop.position,
            offset = %segment.next_offset,
            kind = ?stop.kind,
            reason = ?stop.reason,
            "recovery cut the log after its last valid batch"
        );
    }
    // Zero everything after the cut (stale bytes past it must never look like batches),
    // preallocate one step past the data (a file of an earlier release, preallocated to
    // the whole segment, gives the rest back), and make the cut durable before serving
    // anything.
    let keep = segment::align_down(stop.position);
    let allocated = step_past(config, stop.position);
    let block_len = usize::try_from(stop.position - keep).unwrap_or(0);
    let block = segment
        .file
        .read_at(keep, block_len)
        .await
        .map_err(Error::io(&path))?;
    let file = &segment.file;
    let io = Error::io(&path);
    async {
        file.truncate(keep).await?;
        if !block.is_empty() {
            let mut padded = block.to_vec();
            padded.resize(BLOCK_SIZE, 0);
            file.write_at(keep, &padded).await?;
        }
        file.preallocate(allocated).await?;
        file.sync_data().await
    }
    .await
    .map_err(io)?;
    segment.allocated_len = allocated;
    // The blocks up to the cut hold batches (or the rewritten last block); past it lie
    // fresh, unwritten preallocated blocks.
    segment.zeroed_len = segment::align_up(stop.position);
    Ok(())
}

/// The file length that preallocates one step past `data_len` (block-aligned), never past
/// `segment_bytes` unless the data already is.
pub(crate) fn step_past(config: &EngineConfig, data_len: u64) -> u64 {
    let data_end = segment::align_up(data_len);
    (data_end + config.preallocation_step_bytes)
        .min(config.segment_bytes)
        .max(data_end)
}

/// Scans a whole segment from byte 0, tracking every valid batch into `segment`.
async fn scan_segment<F: StorageFile>(
    dir: &Path,
    config: &EngineConfig,
    segment: &mut Segment<F>,
    checkpoint: &mut Checkpoint,
) -> Result<ScanStop> {
    let path = segment::segment_path(dir, segment.base, LOG_SUFFIX);
    let size = segment.file.size().await.map_err(Error::io(&path))?;
    let mut scanner = Scanner::new(0, segment.base);
    let mut carry: Vec<u8> = Vec::new();
    let mut read_at = 0u64;
    let interval = config.index_interval_bytes;
    let reason = loop {
        let chunk = segment
            .file
            .read_at(read_at, SCAN_CHUNK)
            .await
            .map_err(Error::io(&path))?;
        let at_end = chunk.is_empty();
        read_at += chunk.len() as u64;
        carry.extend_from_slice(&chunk);
        let carry_start = scanner.position();
        let step = scanner.feed(&carry, |position, header| {
            segment.track_batch(position, header, interval);
            checkpoint.observe_epoch(header.leader_epoch, header.base_offset);
        });
        let consumed = usize::try_from(scanner.position() - carry_start).unwrap_or(0);
        carry.drain(..consumed.min(carry.len()));
        match step {
            Step::Invalid(reason) => break Some(reason),
            Step::NeedMore if at_end || read_at >= size => break None,
            Step::NeedMore => {}
        }
    };
    let position = scanner.position();
    let window = segment
        .file
        .read_at(position, CLASSIFY_WINDOW)
        .await
        .map_err(Error::io(&path))?;
    let kind = recovery::classify_stop(&window, reason);
    Ok(ScanStop {
        position,
        kind,
        reason,
    })
}

/// Creates an empty segment at `base`, preallocated one step, and makes its entry durable.
pub(crate) async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &EngineConfig,
    base: Offset,
) -> Result<Segment<S::File>> {
    let path = segment::segment_path(dir, base, LOG_SUFFIX);
    let file = storage
        .open(&path, OpenMode::CreateNew)
        .await
        .map_err(Error::io(&path))?;
    let allocated = config.first_preallocation();
    file.preallocate(allocated)
        .await
        .map_err(Error::io(&path))?;
    file.sync_data().await.map_err(Error::io(&path))?;
    storage.sync_dir(dir).await.map_err(Error::io(dir))?;
    let mut segment = Segment::new(base, Rc::new(file));
    segment.allocated_len = allocated;
    Ok(segment)
}

/// Segments must not overlap; a gap (left by repair setting a segment aside) is allowed.
fn check_sequence<F>(segments: &BTreeMap<Offset, Segment<F>>) -> Result<()> {
    let mut previous: Option<&Segment<F>> = None;
    for segment in segments.values() {
        if let Some(prev) = previous {
            if prev.next_offset > segment.base {
                return Err(Error::CorruptBatch {
                    segment: segment.id(),
                    position: 0,
                    reason: crate::batch::Corruption::OffsetMismatch {
                        expected: prev.next_offset,
                        found: segment.base,
                    },
                });
            }
            if prev.next_offset < segment.base {
                tracing::warn!(from = %prev.next_offset, to = %segment.base, "offset gap between segments");
            }
        }
        previous = Some(segment);
    }
    Ok(())
}
