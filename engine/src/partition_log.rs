//! `PartitionLog`: one partition's ordered segments. Appends, group commit, reads.
//! Opening and recovery live in `log_open.rs`; roll, truncation, retention and close in
//! `log_maintenance.rs`.
//!
//! Owned by one shard and `!Send`: every method takes `&self` and the state sits in a
//! `RefCell` that is never borrowed across an `.await`.
//!
//! Writes: an append copies its batch into the pending buffer of the active segment
//! (positions `[pending_start, data_len)`, `pending_start` block-aligned, so the buffer
//! starts with the already-written part of the last block). Whoever needs a flush and finds
//! none running becomes the flusher: it takes the whole buffer, writes it as whole blocks
//! (re-writing the partial last block), fdatasyncs if the policy says so, and wakes every
//! waiter. Batches appended meanwhile ride the next flush: one write and one sync serve
//! them all (group commit). Under `interval` and `never` flushes overlap: one taken while
//! others are under way leaves the partial last block to the next (`flush_extent`), and
//! batches count as written in flush order.
//!
//! Invariants (checked by [`PartitionLog::invariants`] after every change):
//! `log_start <= high_watermark <= log_end`, `durable_end <= written_end <= log_end`,
//! segments are contiguous or leave gaps only upward, only the last is unsealed, and
//! `pending_start + pending.len() == active.data_len`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader};
use crate::checkpoint::Checkpoint;
use crate::config::{EngineConfig, FlushPolicy};
use crate::error::{Error, Result};
use crate::flush_buffers::{self, FlushBuffer};
use crate::ids::{LeaderEpoch, Offset, SegmentId, TimestampMs};
use crate::record::RecordIter;
use crate::segment::{self, BLOCK_SIZE, LOG_SUFFIX, Segment};
use crate::signal::Signal;
use crate::storage::{Storage, StorageFile};
use crate::sync_observer::SyncKind;
use crate::tail_cache::TailCache;

/// Flushes under way at once under `interval` and `never`: enough to keep the device
/// busy while the next flush's bytes are prepared (8 appenders of 1 MiB under `never`
/// wrote 2 to 4% more with 8 than with 4, in 3 pairs).
pub(crate) const FLUSHES_IN_FLIGHT_MAX: usize = 8;

/// A flush that would take less than this waits for more batches: while another flush is
/// under way (`interval`, `never`), for one to end; else once, for the tasks woken with
/// its caller to append. Taking a free flush slot at once, 256 appenders of one record
/// each wrote mostly single blocks under `never` (11,118 of 11,874 writes a second) and
/// 878 of 2,362 under `always`. A larger flush goes at once: 8 appenders of 1 MiB that
/// gathered into one flush waited for it together, the device idle while they appended
/// again (README, "Issue 15, a fifteenth sitting").
const FLUSH_GATHER_BELOW: u64 = 64 << 10;

/// Under `interval` and `never`, `tick` syncs once this much is appended but not synced.
/// An fdatasync after O_DIRECT writes commits their metadata and flushes the device's
/// cache; its cost hardly grows with the bytes behind it, while each one slows the writes
/// around it. 1 MiB appends under `never` wrote 1,114 to 1,303 MiB/s syncing every
/// 32 MiB and 1,293 to 1,678 every 128 MiB (3 pairs), with the same longest append
/// (19 to 24 ms against 19 to 21), a roll's sync included.
const UNSYNCED_BYTES_MAX: u64 = 128 << 20;

/// The largest flush buffer a log keeps as its own spare, and the largest pending buffer
/// an idle one keeps (a larger one goes back to the shard's pool, `flush_buffers.rs`): a
/// node holds thousands of partitions, and one burst must not pin its size in each.
pub(crate) const SPARE_BYTES_MAX: usize = 1 << 20;

/// Disk reads ask for at least this much, so one read serves a few batches.
const READ_SIZE_MIN: usize = 64 << 10;

/// Offsets given to an appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// The offset after its last record (the log end right after it).
    pub next_offset: Offset,
}

/// A batch given its offsets by [`PartitionLog::append_start`], not yet acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "await PartitionLog::append_wait: the waiter drives the flush"]
pub struct PendingAppend {
    /// Its offsets.
    pub appended: Appended,
    /// Bytes appended up to and including it (see `flush_to`).
    ticket: u64,
}

/// Why a log stopped (see [`PartitionLog::stop_cause`]): the first failure, as text for
/// operators and clients, and whether it was the disk being full (ENOSPC or EDQUOT), which
/// freeing space cures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopCause {
    /// The failure, naming the file.
    pub message: String,
    /// The device (or the quota) had no space left.
    pub disk_full: bool,
}

impl StopCause {
    pub(crate) fn of_io(path: &Path, source: &std::io::Error) -> StopCause {
        StopCause {
            message: format!("{}: {source}", path.display()),
            disk_full: is_disk_full(source),
        }
    }

    pub(crate) fn of(error: &Error) -> StopCause {
        let disk_full = match error {
            Error::Io { source, .. } | Error::SyncFailed { source, .. } => is_disk_full(source),
            _ => false,
        };
        StopCause {
            message: error.to_string(),
            disk_full,
        }
    }
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.disk_full {
            write!(f, "the disk is full ({})", self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

/// ENOSPC or EDQUOT: the failure freeing space (or raising the quota) cures.
#[must_use]
pub fn is_disk_full(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
        || error.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(
            error.raw_os_error(),
            Some(libc_codes::ENOSPC | libc_codes::EDQUOT)
        )
}

/// The two errno values of a full disk on Linux (the engine does not depend on `libc`).
mod libc_codes {
    pub(super) const ENOSPC: i32 = 28;
    pub(super) const EDQUOT: i32 = 122;
}

/// Whole batches returned by a read.
#[derive(Clone, Debug, Default)]
pub struct ReadBatches {
    /// Byte runs, each one or more whole batches, in offset order.
    pub chunks: Vec<Bytes>,
    /// The offset to read next.
    pub next_offset: Offset,
}

impl ReadBatches {
    /// Total bytes.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// Iterates the batches: each item is one whole batch, already validated.
    pub fn batches(&self) -> impl Iterator<Item = (BatchHeader, &[u8])> {
        self.chunks.iter().flat_map(|chunk| {
            let mut rest: &[u8] = chunk;
            std::iter::from_fn(move || {
                let header = BatchHeader::parse(rest).ok()?;
                let (bytes, tail) = rest.split_at((header.size as usize).min(rest.len()));
                rest = tail;
                Some((header, bytes))
            })
        })
    }
}

/// Counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches appended.
    pub batches_appended: u64,
    /// Flushes that wrote data (each may be several concurrent block writes).
    pub flushes: u64,
    /// fdatasync calls on segment files.
    pub syncs: u64,
    /// Bytes written to segment files, padding and rewritten blocks included.
    pub bytes_written: u64,
    /// Segments rolled.
    pub rolls: u64,
}

/// A summary of one segment, for tools and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment.
    pub id: SegmentId,
    /// Offset after its last batch.
    pub next_offset: Offset,
    /// Bytes of batches.
    pub data_len: u64,
    /// Batches.
    pub batch_count: u64,
    /// Records.
    pub record_count: u64,
    /// Newest timestamp.
    pub max_timestamp: Option<TimestampMs>,
    /// Read-only.
    pub sealed: bool,
}

/// A flush between `take_flush` and `finish_flush`. Its bytes left the pending buffer, so
/// if its future is dropped before it finishes nobody writes them: later flushes would
/// leave a hole in the file, and waiters would wait forever for the flush slot. Dropped
/// unfinished, it stops the log instead (reopening recovers what is on disk).
struct FlushInFlight<'a, S: Storage> {
    log: &'a PartitionLog<S>,
    job: Option<FlushJob<S::File>>,
}

impl<S: Storage> Drop for FlushInFlight<'_, S> {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            let cancelled = std::io::Error::other("a flush was cancelled before it finished");
            let _ = self.log.finish_flush(job, Err(cancelled));
        }
    }
}

/// One flush's share of the pending bytes.
struct FlushJob<F> {
    file: Rc<F>,
    /// The segment's base offset: its file's name, made into a path only for an error.
    base: Offset,
    /// Block-aligned file position of `data`.
    start: u64,
    data: FlushBuffer,
    /// What the flush completes: the offset after its last batch, and that batch's ticket.
    target: (Offset, u64),
    /// Bytes of the active segment on disk once the write lands.
    written_len: u64,
    sync: bool,
    /// Numbers the flush, for `LogState::tail_writes`.
    seq: u64,
    /// The flush whose write of this flush's first block (its partial last block then)
    /// must land before this one writes the block again.
    after: Option<u64>,
    /// This flush writes a partial last block, which the next flush writes again.
    partial_tail: bool,
}

/// Where a batch ends: its byte position in the active segment, the offset after it, and
/// its flush ticket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchEnd {
    pub(crate) pos: u64,
    pub(crate) next_offset: Offset,
    pub(crate) ticket: u64,
}

pub(crate) struct LogState<F> {
    pub(crate) segments: BTreeMap<Offset, Segment<F>>,
    pub(crate) log_end: Offset,
    pub(crate) written_end: Offset,
    /// Bytes of batches appended since open: an append's flush ticket. Monotonic.
    pub(crate) appended_bytes: u64,
    /// Bytes of batches written since open. Monotonic.
    pub(crate) written_bytes: u64,
    /// Bytes of batches synced since open. Monotonic.
    pub(crate) durable_bytes: u64,
    pub(crate) durable_end: Offset,
    /// Bytes of the active segment in the file: reads from disk stop here.
    pub(crate) written_pos: u64,
    pub(crate) pending: FlushBuffer,
    pub(crate) pending_start: u64,
    /// A flush buffer of at most `SPARE_BYTES_MAX` kept by the log for its next flush
    /// (larger ones go back to the shard's pool, `flush_buffers.rs`).
    pub(crate) spare: FlushBuffer,
    /// Flushes under way. `always` runs one at a time (group commit); `interval` and
    /// `never` pipeline up to `FLUSHES_IN_FLIGHT_MAX`.
    pub(crate) flushes_in_flight: usize,
    /// Bytes appended that some flush has taken (written or being written).
    pub(crate) reserved_bytes: u64,
    /// The largest ticket an fdatasync under way will cover.
    pub(crate) syncing_to: u64,
    /// The end of the last batch that ends at or before the active segment's last block
    /// boundary: as far as a flush that leaves the partial last block completes batches.
    /// Its ticket tells a stale one (at most `reserved_bytes`) from a live one.
    pub(crate) settled: BatchEnd,
    /// The flush that last wrote (or is writing) the partial block `pending` starts with.
    pub(crate) tail_writer: Option<u64>,
    /// Flushes whose write of their partial last block has not landed. The next flush
    /// writes that block again, and two writes of one block in flight may land in either
    /// order: it waits for that write alone. (It used to wait for every earlier flush's
    /// writes, which chained each flush behind the one before: 1 MiB appends under
    /// `never` reached 0.51 and 0.53 of fio's sequential speed in `disk-limit.sh`'s shape,
    /// against 0.69 and 0.56 with this and the tail left to the next flush.)
    pub(crate) tail_writes: Vec<u64>,
    /// The next flush's number.
    pub(crate) flush_seq: u64,
    /// Flushes whose writes finished before an earlier flush's did, by number:
    /// `(log end, end ticket, written_len)`. Merged into `written_*` in flush order, once
    /// every earlier flush's writes are done: a flush that leaves its partial last block
    /// completes the batch that ends there only with the next flush's writes.
    pub(crate) written_ahead: BTreeMap<u64, (Offset, u64, u64)>,
    /// The number of the oldest flush not yet merged into `written_*`.
    pub(crate) written_seq: u64,
    /// A roll, truncation, retention pass or close is running: appends wait.
    pub(crate) exclusive: bool,
    pub(crate) stopped: bool,
    /// Why the log stopped: the first failure, kept for the owner (`stop_cause`).
    pub(crate) stop_cause: Option<StopCause>,
    pub(crate) last_sync: Instant,
    pub(crate) cache: TailCache,
    pub(crate) checkpoint: Checkpoint,
    /// The epochs of the checkpoint file as last written by this process (`None` before
    /// the first write): a roll rewrites the checkpoint only when they changed.
    pub(crate) persisted_epochs: Option<Vec<crate::checkpoint::EpochEntry>>,
    /// The next segment's file, created and preallocated ahead of the roll by `tick` under
    /// a temporary name, so a roll only renames it.
    pub(crate) next_segment: Option<NextSegment<F>>,
    pub(crate) next_segment_creating: bool,
    /// `tick` is preallocating the next step of the active segment, or writing zeros
    /// ahead of the appends: exclusive operations wait for it (they may cut or replace
    /// the file); appends do not.
    pub(crate) extending: bool,
    /// Where a zero write under way in the active segment starts (`zero_fill.rs`): a
    /// flush whose blocks reach it waits for it.
    pub(crate) zero_filling: Option<u64>,
    /// The active segment's base and data length when the upkeep last looked, to tell
    /// how fast the appends move.
    pub(crate) zero_fill_seen: Option<(Offset, u64)>,
    /// When a preallocation step last failed (the disk is full?): the next is tried a
    /// while later, and only the first failure of a run is logged.
    pub(crate) extend_failed_at: Option<Instant>,
    /// The preallocation step, following the append rate (`segment::preallocation_step`).
    pub(crate) preallocation_step: u64,
    /// When (by the upkeep's clock) it last measured the append rate, and
    /// `appended_bytes` then.
    pub(crate) rate_seen: Option<(TimestampMs, u64)>,
    pub(crate) stats: LogStats,
    /// Offsets of the snapshot files that may exist (`log_snapshot.rs`).
    pub(crate) snapshots: std::collections::BTreeSet<Offset>,
}

/// The next segment's file, prepared ahead of the roll, and how far it is preallocated.
pub(crate) struct NextSegment<F> {
    pub(crate) file: F,
    pub(crate) allocated_len: u64,
}

impl<F> LogState<F> {
    pub(crate) fn active(&self) -> &Segment<F> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub(crate) fn active_mut(&mut self) -> &mut Segment<F> {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub(crate) fn log_start(&self) -> Offset {
        self.segments
            .values()
            .next()
            .map_or(self.log_end, |s| s.base)
    }
}

/// One partition's log. See the module docs.
pub struct PartitionLog<S: Storage> {
    pub(crate) storage: S,
    pub(crate) dir: PathBuf,
    pub(crate) config: EngineConfig,
    pub(crate) state: RefCell<LogState<S::File>>,
    pub(crate) changed: Signal,
}

impl<S: Storage> PartitionLog<S> {
    /// Appends a batch as the leader: validates it (CRC and every record), gives it the
    /// next offsets and `epoch`, and resolves once the flush policy's promise holds: with
    /// `always`, the batch and the file's length are on disk.
    pub async fn append(&self, batch: BytesMut, epoch: LeaderEpoch) -> Result<Appended> {
        let pending = self.append_start(batch, epoch).await?;
        self.append_wait(&pending).await
    }

    /// The first half of [`PartitionLog::append`]: validates the batch and gives it its
    /// offsets, waiting only for room in the write buffer. Batches get offsets in the
    /// order their `append_start` calls resolve, so a server that awaits these in request
    /// order and [`PartitionLog::append_wait`] concurrently keeps a connection's batches in
    /// order while one flush serves them all.
    pub async fn append_start(
        &self,
        mut batch: BytesMut,
        epoch: LeaderEpoch,
    ) -> Result<PendingAppend> {
        let header = batch::validate_produced(&batch).map_err(Error::InvalidBatch)?;
        self.admit(&header).await?;
        let mut state = self.state.borrow_mut();
        let base = state.log_end;
        batch::patch_base(&mut batch, base, epoch);
        let header = BatchHeader {
            base_offset: base,
            leader_epoch: epoch,
            ..header
        };
        let (appended, ticket) = self.insert(&mut state, batch.freeze(), &header);
        Ok(PendingAppend { appended, ticket })
    }

    /// The second half of [`PartitionLog::append`]: resolves once the flush policy's
    /// promise holds for `pending`. Someone must await it: the waiter drives the flush.
    pub async fn append_wait(&self, pending: &PendingAppend) -> Result<Appended> {
        self.wait_acked(pending.ticket).await?;
        Ok(pending.appended)
    }

    /// Appends a batch that already carries its offsets (a follower copying its leader,
    /// or an import): it must start exactly at the log end.
    pub async fn append_replicated(&self, batch: Bytes) -> Result<Appended> {
        let pending = self.append_replicated_start(batch).await?;
        self.append_wait(&pending).await
    }

    /// The first half of [`PartitionLog::append_replicated`], as [`PartitionLog::append_start`]
    /// is of `append`: batches are inserted in the order these calls resolve, and one
    /// flush serves every batch whose [`PartitionLog::append_wait`] runs meanwhile.
    pub async fn append_replicated_start(&self, batch: Bytes) -> Result<PendingAppend> {
        let header = batch::validate(&batch).map_err(Error::InvalidBatch)?;
        self.insert_at_end(batch, &header).await
    }

    /// [`PartitionLog::append_replicated_start`] for one batch its caller has validated
    /// already (CRC included): a leader's replica checks a producer's batch once, a
    /// follower checks each shipped batch, and computing the CRC again here would only
    /// cost time. The header is parsed again, never trusted blindly.
    pub async fn append_validated_start(&self, batch: Bytes) -> Result<PendingAppend> {
        let header = BatchHeader::parse(&batch).map_err(Error::InvalidBatch)?;
        if batch.len() != header.size as usize {
            return Err(Error::InvalidBatch(batch::Corruption::Truncated {
                needed: u64::from(header.size),
                available: batch.len() as u64,
            }));
        }
        self.insert_at_end(batch, &header).await
    }

    /// Inserts a batch that carries its offsets at the log end.
    async fn insert_at_end(&self, batch: Bytes, header: &BatchHeader) -> Result<PendingAppend> {
        self.admit(header).await?;
        let mut state = self.state.borrow_mut();
        if header.base_offset != state.log_end {
            return Err(Error::NotContiguous {
                log_end: state.log_end,
                found: header.base_offset,
            });
        }
        let (appended, ticket) = self.insert(&mut state, batch, header);
        Ok(PendingAppend { appended, ticket })
    }

    /// Waits until a batch may be inserted: no exclusive operation running, room in the
    /// active segment (rolling it if not) and in the write buffer. Room means bytes, and
    /// offsets too: the segment's index stores offsets relative to its base as u32.
    async fn admit(&self, header: &BatchHeader) -> Result<()> {
        let size = header.size;
        let span = u64::from(header.last_offset_delta) + 1;
        loop {
            let (roll, flush_to) = {
                let state = self.state.borrow();
                if state.stopped {
                    return Err(Error::Stopped);
                }
                if state.exclusive {
                    (None, None)
                } else {
                    let active = state.active();
                    let full = active.data_len > 0
                        && (active.data_len + u64::from(size) > self.config.segment_bytes
                            || state.log_end.distance_from(active.base) + span
                                > u64::from(u32::MAX));
                    if !full && state.pending.len() <= self.config.write_buffer_bytes {
                        return Ok(());
                    }
                    (full.then_some(active.base), Some(state.appended_bytes))
                }
            };
            match (roll, flush_to) {
                (Some(base), _) => self.roll_segment(base).await?,
                (None, Some(end)) => self.flush_to(end, false).await?,
                (None, None) => self.changed.changed().await,
            }
        }
    }

    /// Adds a batch to the active segment; returns its offsets and its flush ticket.
    fn insert(
        &self,
        state: &mut LogState<S::File>,
        bytes: Bytes,
        header: &BatchHeader,
    ) -> (Appended, u64) {
        let base = header.base_offset;
        let next = header.next_offset();
        let interval = self.config.index_interval_bytes;
        let active = state.active_mut();
        let position = active.data_len;
        active.track_batch(position, header, interval);
        let end = position + u64::from(header.size);
        if end % BLOCK_SIZE as u64 == 0 {
            state.settled = BatchEnd {
                pos: end,
                next_offset: next,
                ticket: state.appended_bytes + u64::from(header.size),
            };
        } else if position <= segment::align_down(end) {
            state.settled = BatchEnd {
                pos: position,
                next_offset: base,
                ticket: state.appended_bytes,
            };
        }
        state.pending.extend_from_slice(&bytes);
        state.cache.push(base, next, bytes);
        let written_end = state.written_end;
        state.cache.evict(self.config.tail_cache_bytes, written_end);
        state.checkpoint.observe_epoch(header.leader_epoch, base);
        state.log_end = next;
        state.appended_bytes += u64::from(header.size);
        state.stats.batches_appended += 1;
        self.invariants(state);
        (
            Appended {
                base_offset: base,
                next_offset: next,
            },
            state.appended_bytes,
        )
    }

    /// Resolves once the batch with `ticket` is acknowledged under the flush policy.
    async fn wait_acked(&self, ticket: u64) -> Result<()> {
        let sync = self.config.flush == FlushPolicy::Always;
        self.flush_to(ticket, sync).await
    }

    /// Resolves once the first `ticket` bytes ever appended are written and, if `sync`,
    /// synced. Tickets count bytes, not offsets, because a truncation moves offsets back
    /// while a waiter's batch (made durable before the cut) must still resolve.
    pub(crate) async fn flush_to(&self, ticket: u64, sync: bool) -> Result<()> {
        enum Step {
            /// Let the tasks woken with this one append first (`FLUSH_GATHER_BELOW`).
            YieldFirst,
            Flush,
            SyncWritten,
            Wait,
        }
        let mut yielded = false;
        loop {
            let step = {
                let state = self.state.borrow();
                if state.stopped {
                    return Err(Error::Stopped);
                }
                let done = if sync {
                    state.durable_bytes >= ticket
                } else {
                    state.written_bytes >= ticket
                };
                if done {
                    return Ok(());
                }
                let room = state.flushes_in_flight < self.flushes_in_flight_max();
                // Only for a batch no flush has taken: one under way that holds it will
                // write it, and a flush of what came later would only race that one.
                let unwritten = state.reserved_bytes < ticket;
                let unsynced = sync && state.syncing_to < ticket;
                // A flush too small to use the device well waits for more batches: for a
                // flush under way to end, if one is and only writing is asked, else for
                // the tasks woken with this one (`FLUSH_GATHER_BELOW`).
                let small = state.appended_bytes - state.reserved_bytes < FLUSH_GATHER_BELOW;
                let gather = room && (unwritten || unsynced) && small;
                if gather && !sync && state.flushes_in_flight > 0 {
                    Step::Wait
                } else if gather && !yielded {
                    Step::YieldFirst
                } else if room && (unwritten || unsynced) {
                    Step::Flush
                } else if unsynced && state.reserved_bytes >= ticket {
                    // Every byte to sync is in a flush under way. (Not under `always`,
                    // whose one flush at a time syncs all it took.)
                    Step::SyncWritten
                } else {
                    Step::Wait
                }
            };
            match step {
                Step::YieldFirst => {
                    yielded = true;
                    // Pending once, waking itself (`futures_lite`'s): any executor.
                    glommio::executor().yield_now().await;
                }
                Step::Flush => self.flush_once(sync).await?,
                Step::SyncWritten => self.sync_written(ticket).await?,
                Step::Wait => self.changed.changed().await,
            }
        }
    }

    /// Syncs the first `ticket` bytes, all taken by flushes under way, once they are
    /// written: an fdatasync without a flush, so without a flush slot. Waiting for a slot,
    /// a background sync under load lost every one that freed to an appender woken
    /// before it, and an `interval=5` log synced about every 130 ms.
    async fn sync_written(&self, ticket: u64) -> Result<()> {
        self.wait_written(ticket)
            .await
            .map_err(|_| Error::Stopped)?;
        // What fdatasync makes durable is what was written when it was called.
        let (covered, file, base) = {
            let state = self.state.borrow();
            let active = state.active();
            (
                (state.written_end, state.written_bytes),
                active.file.clone(),
                active.base,
            )
        };
        if let Err(source) = observed_fdatasync(&*file).await {
            return Err(self.stop_on_io_failure(base, source));
        }
        self.mark_synced(covered);
        self.changed.notify_all();
        Ok(())
    }

    fn flushes_in_flight_max(&self) -> usize {
        match self.config.flush {
            FlushPolicy::Always => 1,
            FlushPolicy::Interval(_) | FlushPolicy::Never => FLUSHES_IN_FLIGHT_MAX,
        }
    }

    /// One flush: writes what is pending as whole blocks, then syncs if `sync` or the
    /// policy is `always`. Flushes may overlap (see `flushes_in_flight`): a flush whose
    /// first block is the previous flush's partial last block writes that block once the
    /// previous write of it has landed (`tail_writes`); the rest goes at once.
    async fn flush_once(&self, sync: bool) -> Result<()> {
        let mut in_flight = FlushInFlight {
            log: self,
            job: Some(self.take_flush(sync)),
        };
        let job = in_flight.job.as_mut().expect("taken just now");
        // Under `always` every flush syncs and flushes run one at a time, so every write
        // is made durable by itself (O_DSYNC; see `write_durable_at`) and no fdatasync
        // follows: the written prefix is the durable one.
        let durable_writes = job.sync && self.config.flush == FlushPolicy::Always;
        debug_assert!(!durable_writes || self.flushes_in_flight_max() == 1);
        let result = async {
            if !job.data.is_empty() {
                flush_buffers::pad_to_block(&mut job.data);
                self.wait_zero_fill(job.start + job.data.len() as u64).await;
                let started = std::time::Instant::now();
                // Shared with the writes: a storage may write from it without a copy.
                let data = Rc::new(std::mem::replace(&mut job.data, flush_buffers::empty()));
                let written = self.write_flush(job, &data, durable_writes).await;
                // Still shared only if a write failed and another was dropped before it
                // landed (the log stops); that buffer is not kept for reuse.
                match Rc::try_unwrap(data) {
                    Ok(data) => job.data = data,
                    Err(_) => debug_assert!(written.is_err(), "a landed write kept its buffer"),
                }
                written?;
                if durable_writes {
                    crate::sync_observer::observe(SyncKind::DurableWrites, started.elapsed());
                }
            }
            // Even a flush with nothing to write takes its turn in the written order.
            self.mark_written(job);
            if job.sync {
                // What fdatasync makes durable is what was written when it was called: the
                // written prefix, once it reaches this flush's data.
                self.wait_written(job.target.1).await?;
                let covered = {
                    let state = self.state.borrow();
                    (state.written_end, state.written_bytes)
                };
                if !durable_writes {
                    observed_fdatasync(&*job.file).await?;
                }
                self.mark_synced(covered);
            }
            Ok(())
        }
        .await;
        let job = in_flight.job.take().expect("finished once");
        self.finish_flush(job, result)
    }

    /// Writes a flush's blocks, in chunks of `write_chunk_bytes` issued together. A first
    /// block that an earlier flush's write still in flight covers (`job.after`) waits for
    /// that write and goes alone; otherwise the flush is one run of chunks (a flush of up
    /// to a chunk is one write: under `always`, one O_DSYNC write and one device flush).
    async fn write_flush(
        &self,
        job: &FlushJob<S::File>,
        data: &Rc<FlushBuffer>,
        durable: bool,
    ) -> std::io::Result<()> {
        // The first block goes alone after an earlier flush's write of it.
        let rest_from = if job.after.is_some() { BLOCK_SIZE } else { 0 };
        let rest_len = data.len() - rest_from;
        let chunk = self.config.write_chunk_bytes;
        let file: &S::File = &job.file;
        let (seq, partial_tail) = (job.seq, job.partial_tail);
        let last = rest_len.saturating_sub(1) / chunk;
        let mut rest_writes =
            (rest_from..data.len())
                .step_by(chunk)
                .enumerate()
                .map(|(i, from)| {
                    let part = from..(from + chunk).min(data.len());
                    async move {
                        file.write_shared_at(job.start + from as u64, data, part, durable)
                            .await?;
                        if i == last && partial_tail {
                            self.tail_landed(seq);
                        }
                        Ok::<(), std::io::Error>(())
                    }
                });
        let Some(after) = job.after else {
            if rest_len <= chunk {
                // One write (most flushes): no list of writes to build.
                return match rest_writes.next() {
                    Some(write) => write.await,
                    None => Ok(()),
                };
            }
            return futures::future::try_join_all(rest_writes).await.map(drop);
        };
        let first_write = async {
            self.wait_tail_landed(after).await?;
            file.write_shared_at(job.start, data, 0..BLOCK_SIZE, durable)
                .await?;
            if rest_len == 0 && partial_tail {
                self.tail_landed(seq);
            }
            Ok(())
        };
        futures::future::try_join(first_write, futures::future::try_join_all(rest_writes))
            .await
            .map(drop)
    }

    /// Waits until flush `seq`'s write of its partial last block has landed.
    async fn wait_tail_landed(&self, seq: u64) -> std::io::Result<()> {
        self.wait_unless_stopped(|state| !state.tail_writes.contains(&seq))
            .await
    }

    /// Flush `seq`'s partial last block is on the device: the next flush may write it again.
    fn tail_landed(&self, seq: u64) {
        self.state.borrow_mut().tail_writes.retain(|&s| s != seq);
        self.changed.notify_all();
    }

    /// Waits until every byte before `ticket` is written (by this or earlier flushes).
    async fn wait_written(&self, ticket: u64) -> std::io::Result<()> {
        self.wait_unless_stopped(|state| state.written_bytes >= ticket)
            .await
    }

    /// Waits until `ready` holds; an error once the log stopped.
    async fn wait_unless_stopped(
        &self,
        ready: impl Fn(&LogState<S::File>) -> bool,
    ) -> std::io::Result<()> {
        loop {
            {
                let state = self.state.borrow();
                if state.stopped {
                    return Err(std::io::Error::other("log stopped by an earlier failure"));
                }
                if ready(&state) {
                    return Ok(());
                }
            }
            self.changed.changed().await;
        }
    }

    /// What a flush taken now completes: `(target, written_len, leave_tail)`. While
    /// other flushes are under way (`interval`, `never`), it leaves the partial last
    /// block to the next flush and completes only the batches that end before it: had it
    /// written the block, the next flush would write it again, and only once this write
    /// landed (see `LogState::tail_writes`), one device round trip after another.
    fn flush_extent(
        state: &LogState<S::File>,
        sync: bool,
        others_in_flight: bool,
    ) -> ((Offset, u64), u64, bool) {
        let start = state.pending_start;
        let end = start + state.pending.len() as u64;
        let last_block = segment::align_down(end);
        let settled = state.settled;
        let leave_tail = !sync
            && others_in_flight
            && end != last_block
            && last_block > start
            && settled.ticket >= state.reserved_bytes
            && settled.pos <= last_block;
        if leave_tail {
            // `settled` may be where pending starts (a batch ended on that block
            // boundary): then the flush completes no batch, and the next one does.
            debug_assert!(settled.pos >= start);
            ((settled.next_offset, settled.ticket), settled.pos, true)
        } else {
            ((state.log_end, state.appended_bytes), end, false)
        }
    }

    /// Takes the pending bytes for one flush, keeping the partial last block pending
    /// (and leaving it unwritten, see [`PartitionLog::flush_extent`]).
    fn take_flush(&self, sync: bool) -> FlushJob<S::File> {
        let mut state = self.state.borrow_mut();
        assert!(
            state.flushes_in_flight < self.flushes_in_flight_max(),
            "too many flushes"
        );
        let others_in_flight = state.flushes_in_flight > 0;
        state.flushes_in_flight += 1;
        let sync = sync || self.config.flush == FlushPolicy::Always;
        let start_ticket = state.reserved_bytes;
        let start = state.pending_start;
        let last_block = segment::align_down(start + state.pending.len() as u64);
        // `pending` starts with the partial block an earlier flush wrote, if any.
        let overlaps = state.pending.len() as u64 > state.appended_bytes - start_ticket;
        let (target, written_len, leave_tail) = Self::flush_extent(&state, sync, others_in_flight);
        state.reserved_bytes = target.1;
        if sync {
            state.syncing_to = state.syncing_to.max(target.1);
        }
        // The next flush likely takes as much as this one: a buffer with room for it
        // (the log's own spare if that is enough, else one from the shard's pool), not
        // one grown by doublings.
        let mut data = if state.spare.capacity() >= state.pending.len() {
            std::mem::replace(&mut state.spare, flush_buffers::empty())
        } else {
            flush_buffers::take(state.pending.len())
        };
        std::mem::swap(&mut data, &mut state.pending);
        let kept = usize::try_from(last_block - start).expect("pending fits in memory");
        state.pending.extend_from_slice(&data[kept..]);
        state.pending_start = last_block;
        if leave_tail {
            data.truncate(kept);
        }
        let seq = state.flush_seq;
        state.flush_seq += 1;
        let nothing_new = start_ticket == state.appended_bytes;
        // Only a write still in flight is waited for: one that landed is on the device.
        let after = if overlaps && !nothing_new {
            state
                .tail_writer
                .filter(|writer| state.tail_writes.contains(writer))
        } else {
            None
        };
        let partial_tail = data.len() > kept && !nothing_new;
        if nothing_new {
            data.clear(); // Only the already-written partial block: nothing to write.
        } else {
            state.tail_writer = partial_tail.then_some(seq);
            if partial_tail {
                state.tail_writes.push(seq);
            }
        }
        let active = state.active();
        FlushJob {
            file: active.file.clone(),
            base: active.base,
            start,
            data,
            target,
            written_len,
            sync,
            seq,
            after,
            partial_tail,
        }
    }

    /// Records that a flush's writes are done, advancing the written prefix over it and
    /// over any later flush that finished first.
    fn mark_written(&self, job: &FlushJob<S::File>) {
        let mut state = self.state.borrow_mut();
        if !job.data.is_empty() {
            state.stats.flushes += 1;
            state.stats.bytes_written += job.data.len() as u64;
        }
        let (end, end_ticket) = job.target;
        state
            .written_ahead
            .insert(job.seq, (end, end_ticket, job.written_len));
        loop {
            let next = state.written_seq;
            let Some((end, end_ticket, written_len)) = state.written_ahead.remove(&next) else {
                break;
            };
            state.written_seq += 1;
            debug_assert!(end_ticket >= state.written_bytes && written_len >= state.written_pos);
            state.written_end = end;
            state.written_bytes = end_ticket;
            state.written_pos = written_len;
        }
        let written_end = state.written_end;
        state.cache.evict(self.config.tail_cache_bytes, written_end);
        drop(state);
        self.changed.notify_all();
    }

    fn mark_synced(&self, (end, ticket): (Offset, u64)) {
        let mut state = self.state.borrow_mut();
        state.stats.syncs += 1;
        if ticket > state.durable_bytes {
            state.durable_end = end;
            state.durable_bytes = ticket;
        }
        state.last_sync = Instant::now();
    }

    /// Ends a flush and wakes every waiter; a failure stops the log.
    fn finish_flush(&self, mut job: FlushJob<S::File>, result: std::io::Result<()>) -> Result<()> {
        let mut state = self.state.borrow_mut();
        state.flushes_in_flight -= 1;
        // Landed, or failed and the log stops: nothing waits on it either way.
        state.tail_writes.retain(|&s| s != job.seq);
        if let Err(source) = result {
            drop(state);
            return Err(self.stop_on_io_failure(job.base, source));
        }
        let mut data = std::mem::replace(&mut job.data, flush_buffers::empty());
        data.clear();
        if data.capacity() <= SPARE_BYTES_MAX && data.capacity() > state.spare.capacity() {
            std::mem::swap(&mut data, &mut state.spare);
        }
        flush_buffers::give_back(data);
        self.invariants(&state);
        drop(state);
        self.shrink_idle_buffers();
        self.changed.notify_all();
        Ok(())
    }

    /// Stops the log after a write or an fdatasync of segment `base` failed (what reached
    /// the disk is unknown, and an fdatasync is not retried); the error for the caller.
    fn stop_on_io_failure(&self, base: Offset, source: std::io::Error) -> Error {
        let path = segment::segment_path(&self.dir, base, LOG_SUFFIX);
        let first = {
            let mut state = self.state.borrow_mut();
            let first = !state.stopped;
            state.stopped = true;
            if first {
                state.stop_cause = Some(StopCause::of_io(&path, &source));
            }
            first
        };
        self.changed.notify_all();
        if !first {
            return Error::Stopped;
        }
        tracing::error!(path = %path.display(), %source, "log write or sync failed; stopping the log");
        Error::SyncFailed { path, source }
    }

    /// Whether `tick` should sync in the background: the interval is up, or so much is
    /// written but unsynced that a roll's sync (which appends wait for) would be long.
    pub(crate) fn background_sync_due(&self) -> bool {
        let state = self.state.borrow();
        let backlog = state.appended_bytes - state.syncing_to.max(state.durable_bytes);
        match self.config.flush {
            FlushPolicy::Always => false,
            FlushPolicy::Interval(every) => {
                backlog > 0 && (state.last_sync.elapsed() >= every || backlog >= UNSYNCED_BYTES_MAX)
            }
            FlushPolicy::Never => backlog >= UNSYNCED_BYTES_MAX,
        }
    }

    /// Writes and fdatasyncs everything appended so far, whatever the policy.
    pub async fn sync(&self) -> Result<()> {
        let ticket = self.state.borrow().appended_bytes;
        self.flush_to(ticket, true).await
    }

    /// Whole batches from the one holding `from`, up to about `bytes_max` (always at
    /// least one batch), below the log end. Batches read from disk are CRC-checked.
    /// Reading at the log end returns nothing; outside `[log_start, log_end]` is an error.
    pub async fn read(&self, from: Offset, bytes_max: usize) -> Result<ReadBatches> {
        let (file, segment, limit, position, from) = {
            let state = self.state.borrow();
            let (log_start, log_end) = (state.log_start(), state.log_end);
            if from < log_start || from > log_end {
                return Err(Error::OffsetOutOfRange {
                    offset: from,
                    log_start,
                    log_end,
                });
            }
            let mut out = ReadBatches {
                chunks: Vec::new(),
                next_offset: from,
            };
            if from == log_end {
                return Ok(out);
            }
            if let Some(next) = state.cache.read(from, bytes_max, &mut out.chunks) {
                out.next_offset = next;
                return Ok(out);
            }
            // The segment holding `from`, or the first after a gap left by repair.
            let holding = state.segments.range(..=from).next_back().map(|(_, s)| s);
            let segment = match holding {
                Some(s) if from < s.next_offset => s,
                _ => state.segments.range(from..).next().map(|(_, s)| s).ok_or(
                    Error::OffsetOutOfRange {
                        offset: from,
                        log_start,
                        log_end,
                    },
                )?,
            };
            let from = from.max(segment.base);
            let limit = if segment.sealed {
                segment.data_len
            } else {
                state.written_pos
            };
            let start = segment.scan_start(from);
            let expected = segment.base.advance(u64::from(start.relative_offset));
            (
                segment.file.clone(),
                segment.id(),
                limit,
                (u64::from(start.position), expected),
                from,
            )
        };
        read_segment(&*file, segment, position, limit, from, bytes_max).await
    }

    /// The first offset whose record timestamp is at or after `target` (Kafka's
    /// ListOffsets by time), or `None` if every record is older.
    pub async fn offset_for_timestamp(&self, target: TimestampMs) -> Result<Option<Offset>> {
        let mut from = {
            let state = self.state.borrow();
            let found = state
                .segments
                .values()
                .find(|s| s.max_timestamp.is_some_and(|t| t >= target));
            let Some(segment) = found else {
                return Ok(None);
            };
            let start = segment
                .time_index
                .lookup(target)
                .map_or(0, |e| e.relative_offset);
            segment.base.advance(u64::from(start))
        };
        loop {
            let read = self.read(from, 1 << 20).await?;
            if read.chunks.is_empty() {
                return Ok(None);
            }
            for (header, bytes) in read.batches() {
                if header.max_timestamp < target {
                    continue;
                }
                if header.compression() != batch::Compression::None {
                    return Ok(Some(header.base_offset));
                }
                for record in RecordIter::new(&header, bytes).flatten() {
                    if record.timestamp(&header) >= target {
                        return Ok(Some(record.offset(&header)));
                    }
                }
            }
            from = read.next_offset;
        }
    }

    /// The first offset held.
    #[must_use]
    pub fn log_start(&self) -> Offset {
        self.state.borrow().log_start()
    }

    /// The offset the next appended record gets.
    #[must_use]
    pub fn log_end(&self) -> Offset {
        self.state.borrow().log_end
    }

    /// Everything below it is written to the device.
    #[must_use]
    pub fn written_end(&self) -> Offset {
        self.state.borrow().written_end
    }

    /// Why the log stopped, if it did: after a failed write, sync, roll, truncation or
    /// retention pass it refuses all further work (reads excepted), and only reopening
    /// it (recovery reads the truth from disk) brings it back.
    #[must_use]
    pub fn stop_cause(&self) -> Option<StopCause> {
        let state = self.state.borrow();
        if !state.stopped {
            return None;
        }
        Some(state.stop_cause.clone().unwrap_or_else(|| StopCause {
            message: Error::Stopped.to_string(),
            disk_full: false,
        }))
    }

    /// Everything below it is fdatasync'ed.
    #[must_use]
    pub fn durable_end(&self) -> Offset {
        self.state.borrow().durable_end
    }

    /// Everything below it is acknowledged under the flush policy: synced under
    /// `always`, written otherwise. A single replica's high watermark.
    #[must_use]
    pub fn acked_end(&self) -> Offset {
        let state = self.state.borrow();
        match self.config.flush {
            FlushPolicy::Always => state.durable_end,
            FlushPolicy::Interval(_) | FlushPolicy::Never => state.written_end,
        }
    }

    /// Resolves after the log's state next changes (a flush finished, a roll, a
    /// truncation): long-polling readers check their condition, then await this.
    pub fn changed(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.changed.changed()
    }

    /// The high watermark as last set (replication owns it; see `set_high_watermark`).
    #[must_use]
    pub fn high_watermark(&self) -> Offset {
        self.state.borrow().checkpoint.high_watermark
    }

    /// Sets the high watermark; it reaches disk with the next checkpoint write. Raising it
    /// wakes [`PartitionLog::changed`] waiters.
    pub fn set_high_watermark(&self, high_watermark: Offset) {
        let mut state = self.state.borrow_mut();
        assert!(
            high_watermark <= state.log_end,
            "{high_watermark} > {}",
            state.log_end
        );
        let high_watermark = high_watermark.max(state.log_start());
        let raised = high_watermark > state.checkpoint.high_watermark;
        state.checkpoint.high_watermark = high_watermark;
        drop(state);
        if raised {
            // Readers waiting at the committed end (long polls) may go on.
            self.changed.notify_all();
        }
    }

    /// The high watermark and leader-epoch history.
    #[must_use]
    pub fn checkpoint(&self) -> Checkpoint {
        self.state.borrow().checkpoint.clone()
    }

    /// Counters since open.
    #[must_use]
    pub fn stats(&self) -> LogStats {
        self.state.borrow().stats
    }

    /// Bytes of memory held by the buffer appends fill: an idle log (its last flush done,
    /// or at `tick`) holds at most `SPARE_BYTES_MAX` of it.
    #[must_use]
    pub fn pending_buffer_bytes(&self) -> usize {
        self.state.borrow().pending.capacity()
    }

    /// The base offset of the active segment: it moves when the log rolls.
    #[must_use]
    pub fn active_base(&self) -> Offset {
        self.state.borrow().active().base
    }

    /// The partition directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One summary per segment, oldest first.
    #[must_use]
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let state = self.state.borrow();
        state
            .segments
            .values()
            .map(|s| SegmentInfo {
                id: s.id(),
                next_offset: s.next_offset,
                data_len: s.data_len,
                batch_count: s.batch_count,
                record_count: s.record_count,
                max_timestamp: s.max_timestamp,
                sealed: s.sealed,
            })
            .collect()
    }

    /// Checks the log's invariants: always in tests, under feature `verify` in release.
    pub(crate) fn invariants(&self, state: &LogState<S::File>) {
        if !cfg!(any(test, debug_assertions, feature = "verify")) {
            return;
        }
        let hw = state.checkpoint.high_watermark;
        assert!(
            state.log_start() <= hw || hw == Offset(0),
            "{} > {hw}",
            state.log_start()
        );
        assert!(hw <= state.log_end, "{hw} > {}", state.log_end);
        assert!(
            state.durable_end <= state.written_end,
            "{} > {}",
            state.durable_end,
            state.written_end
        );
        assert!(
            state.written_end <= state.log_end,
            "{} > {}",
            state.written_end,
            state.log_end
        );
        assert!(
            state.durable_bytes <= state.written_bytes,
            "{} > {}",
            state.durable_bytes,
            state.written_bytes
        );
        assert!(
            state.written_bytes <= state.appended_bytes,
            "{} > {}",
            state.written_bytes,
            state.appended_bytes
        );
        let active = state.active();
        assert!(!active.sealed, "active segment sealed");
        assert!(
            active.next_offset == state.log_end,
            "{} != {}",
            active.next_offset,
            state.log_end
        );
        assert!(
            state.pending_start + state.pending.len() as u64 == active.data_len,
            "{} + {} != {}",
            state.pending_start,
            state.pending.len(),
            active.data_len
        );
        assert!(
            state.pending_start % BLOCK_SIZE as u64 == 0,
            "{}",
            state.pending_start
        );
        Self::segment_invariants(state);
    }

    fn segment_invariants(state: &LogState<S::File>) {
        let mut previous: Option<&Segment<S::File>> = None;
        for segment in state.segments.values() {
            if let Some(prev) = previous {
                assert!(
                    prev.sealed,
                    "segment {} before the active one is not sealed",
                    prev.base
                );
                assert!(
                    prev.next_offset <= segment.base,
                    "{} > {}",
                    prev.next_offset,
                    segment.base
                );
            }
            previous = Some(segment);
        }
    }
}

/// Reads whole batches of one segment from `start = (position, offset)` (a batch start at
/// or before `from`, and the offset that batch must carry) up to byte `limit`, checking
/// each batch returned and the offset continuity of every batch passed (the base offset is
/// outside the CRC).
async fn read_segment<F: StorageFile>(
    file: &F,
    segment: SegmentId,
    start: (u64, Offset),
    limit: u64,
    from: Offset,
    bytes_max: usize,
) -> Result<ReadBatches> {
    let (mut position, mut expected) = start;
    let mut want = bytes_max.max(READ_SIZE_MIN);
    let corrupt = |position, reason| Error::CorruptBatch {
        segment,
        position,
        reason,
    };
    loop {
        let len = usize::try_from(limit.saturating_sub(position))
            .unwrap_or(usize::MAX)
            .min(want);
        if len == 0 {
            return Ok(ReadBatches {
                chunks: Vec::new(),
                next_offset: from,
            });
        }
        let io_path = PathBuf::from(segment.to_string());
        let buffer = file
            .read_at(position, len)
            .await
            .map_err(Error::io(io_path))?;
        let (taken, at) = take_batches(&buffer, position, &mut expected, from, bytes_max)
            .map_err(|(at, reason)| corrupt(at, reason))?;
        if let Some((first, end, next_offset)) = taken {
            return Ok(ReadBatches {
                chunks: vec![buffer.slice(first..end)],
                next_offset,
            });
        }
        if at == 0 {
            // The batch at `position` is bigger than the read: read exactly it.
            let header = BatchHeader::parse(&buffer).map_err(|r| corrupt(position, r))?;
            if position + u64::from(header.size) > limit {
                let available = limit - position;
                let reason = batch::Corruption::Truncated {
                    needed: header.size.into(),
                    available,
                };
                return Err(corrupt(position, reason));
            }
            want = header.size as usize;
        } else {
            position += at as u64;
        }
    }
}

/// A run of whole batches in a read buffer: `[first, end)` and the offset after it.
type BatchRun = (usize, usize, Offset);

/// Walks the batches of `buffer` (read at byte `position`; its first batch must carry
/// `expected`) and returns the run holding offsets from `from` on, at most `bytes_max`
/// bytes but at least one batch, and how many bytes it walked. A bad batch after good
/// ones ends the run (the next read reports it); a bad first batch is the error
/// `(its position, reason)`.
fn take_batches(
    buffer: &[u8],
    position: u64,
    expected: &mut Offset,
    from: Offset,
    bytes_max: usize,
) -> std::result::Result<(Option<BatchRun>, usize), (u64, batch::Corruption)> {
    let mut at = 0usize;
    let mut taken: Option<BatchRun> = None;
    while at < buffer.len() {
        let rest = buffer.get(at..).unwrap_or_default();
        let checked = BatchHeader::parse(rest).and_then(|header| match header.base_offset {
            found if found == *expected => Ok(header),
            found => Err(batch::Corruption::OffsetMismatch {
                expected: *expected,
                found,
            }),
        });
        let header = match checked {
            Ok(header) => header,
            Err(batch::Corruption::Truncated { .. }) => break,
            Err(_) if taken.is_some() => break,
            Err(reason) => return Err((position + at as u64, reason)),
        };
        let size = header.size as usize;
        let Some(bytes) = rest.get(..size) else { break };
        if header.next_offset() > from {
            if taken.is_some_and(|(first, end, _)| end - first + size > bytes_max) {
                break;
            }
            match batch::validate(bytes) {
                Ok(_) => {}
                Err(_) if taken.is_some() => break,
                Err(reason) => return Err((position + at as u64, reason)),
            }
            let first = taken.map_or(at, |(first, _, _)| first);
            taken = Some((first, at + size, header.next_offset()));
        }
        *expected = header.next_offset();
        at += size;
    }
    Ok((taken, at))
}

/// An fdatasync of a segment file, its time handed to the thread's sync observer.
async fn observed_fdatasync<F: StorageFile>(file: &F) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    file.sync_data().await?;
    crate::sync_observer::observe(SyncKind::Fdatasync, started.elapsed());
    Ok(())
}
