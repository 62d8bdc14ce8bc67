//! Zero-fill ahead: the upkeep writes zeros into the active segment's preallocated blocks
//! just past the write position, so that appends land on blocks already written.
//!
//! Why: preallocated (fallocated) blocks are *unwritten* extents. The first write into one
//! converts it, and that conversion is metadata the next fdatasync must commit to the
//! filesystem journal; on the development machine an fdatasync after a 4 KiB write into
//! unwritten space costs about twice one into written space (issue 15). Under `always`,
//! where every acknowledgement waits for an fdatasync, that is most of a produce's latency.
//!
//! Safety: zeros are what unwritten blocks read as, so a crash at any point leaves bytes
//! recovery already reads as "the log ends here" (`recovery::classify_stop`). The zeros
//! never land on appended data: a zero write starts at or past the block after the
//! appended bytes (written or not), and a flush whose blocks would reach a zero write
//! under way waits for it first (`PartitionLog::wait_zero_fill`); exclusive operations
//! (roll, truncation) wait for it too, through `LogState::extending`.
//!
//! Cost: at most `zero_fill_ahead_bytes` per upkeep, in writes of 64 KiB to 1 MiB.
//! When the appends moved further than that since the last upkeep, the zeros would be
//! overtaken within one period and only double the writes: the upkeep skips. Such a
//! partition writes large flushes, where the conversion's cost is spread thin anyway.

use crate::partition_log::PartitionLog;
use crate::segment::{self, LOG_SUFFIX, align_down, align_up};
use crate::storage::{Storage, StorageFile};

/// The largest single zero write: one DMA buffer.
pub const ZERO_FILL_CHUNK_BYTES: u64 = 1 << 20;
/// The smallest. A zero write is as long as the distance from the appended bytes to its
/// start (within these bounds): the write a flush may have to wait for, the one right
/// next to the appends, is short, and the ones further ahead are long.
pub const ZERO_FILL_CHUNK_BYTES_MIN: u64 = 64 << 10;

/// The active segment as the upkeep sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZeroFillView {
    /// Bytes of batches appended to the segment (written or not).
    pub data_len: u64,
    /// Blocks below it are written (`Segment::zeroed_len`).
    pub zeroed_len: u64,
    /// The preallocated length of the file.
    pub allocated_len: u64,
    /// Bytes appended since the last upkeep looked.
    pub advanced: u64,
}

/// The byte range `[start, end)` to write zeros into next, if any: from the first block
/// past both the appended bytes and the zeros already written, up to `ahead` bytes past
/// the appended bytes, never past the preallocated length, one chunk as long as its
/// distance from the appended bytes (see `ZERO_FILL_CHUNK_BYTES_MIN`). `None` when there
/// is nothing to do or the appends outran `ahead` since the last upkeep.
#[must_use]
pub fn zero_fill_range(view: ZeroFillView, ahead: u64) -> Option<(u64, u64)> {
    if ahead == 0 || view.advanced > ahead {
        return None;
    }
    let data_end = align_up(view.data_len);
    let start = view.zeroed_len.max(data_end);
    let chunk = (start - data_end).clamp(ZERO_FILL_CHUNK_BYTES_MIN, ZERO_FILL_CHUNK_BYTES);
    let end = align_down(data_end + ahead)
        .min(align_down(view.allocated_len))
        .min(start + chunk);
    (start < end).then_some((start, end))
}

impl<S: Storage> PartitionLog<S> {
    /// Writes zeros ahead of the appends in the active segment, a chunk at a time, up to
    /// `zero_fill_ahead_bytes` past them (see the module docs). Called by `tick` after
    /// the preallocation step. A failed write only warns (once per run of failures, like
    /// a failed preallocation) and is retried a second later: appends still work without
    /// the zeros, and report a failing disk themselves.
    pub async fn zero_fill_ahead(&self) {
        let ahead = self.config.zero_fill_ahead_bytes;
        if ahead == 0 {
            return;
        }
        let advanced = {
            let mut state = self.state.borrow_mut();
            // A reset or truncation may have the segments out across its awaits.
            if state.exclusive || state.stopped {
                return;
            }
            let active = state.active();
            let (base, data_len) = (active.base, active.data_len);
            let advanced = match state.zero_fill_seen {
                Some((seen_base, seen_len)) if seen_base == base => {
                    data_len.saturating_sub(seen_len)
                }
                _ => data_len,
            };
            state.zero_fill_seen = Some((base, data_len));
            advanced
        };
        // At most this many chunks: a partition appended to meanwhile cannot keep the
        // upkeep here.
        let chunks_max = ahead.div_ceil(ZERO_FILL_CHUNK_BYTES_MIN);
        for _ in 0..chunks_max {
            if !self.zero_fill_chunk(advanced).await {
                break;
            }
        }
    }

    /// Writes one chunk of zeros if one is due and nothing else works on the file's
    /// length; `true` if it wrote one.
    async fn zero_fill_chunk(&self, advanced: u64) -> bool {
        let (file, base, (start, end)) = {
            let mut state = self.state.borrow_mut();
            if state.stopped || state.exclusive || state.extending {
                return false;
            }
            if state
                .extend_failed_at
                .is_some_and(|at| at.elapsed() < crate::log_maintenance::EXTEND_RETRY_AFTER)
            {
                return false;
            }
            let active = state.active();
            let view = ZeroFillView {
                data_len: active.data_len,
                zeroed_len: active.zeroed_len,
                allocated_len: active.allocated_len,
                advanced,
            };
            let Some(range) = zero_fill_range(view, self.config.zero_fill_ahead_bytes) else {
                return false;
            };
            let found = (active.file.clone(), active.base, range);
            state.extending = true;
            state.zero_filling = Some(range.0);
            found
        };
        let len = usize::try_from(end - start).expect("a chunk fits usize");
        let result = file.write_zeros(start, len).await;
        let mut state = self.state.borrow_mut();
        state.extending = false;
        state.zero_filling = None;
        let wrote = match result {
            Ok(()) => {
                state.extend_failed_at = None;
                // Exclusive operations waited for this write: the active segment is the same.
                let active = state.active_mut();
                if active.base == base {
                    active.zeroed_len = active.zeroed_len.max(end);
                }
                true
            }
            Err(error) => {
                if state.extend_failed_at.is_none() {
                    let path = segment::segment_path(&self.dir, base, LOG_SUFFIX);
                    tracing::warn!(path = %path.display(), start, end, %error, "writing zeros ahead of the appends failed");
                }
                state.extend_failed_at = Some(std::time::Instant::now());
                false
            }
        };
        drop(state);
        self.changed.notify_all();
        wrote
    }

    /// Waits until no zero write under way reaches below `end` (a flush's block-aligned
    /// end), so a flush never races zeros onto its own blocks.
    pub(crate) async fn wait_zero_fill(&self, end: u64) {
        loop {
            let clear = self
                .state
                .borrow()
                .zero_filling
                .is_none_or(|start| end <= start);
            if clear {
                return;
            }
            self.changed.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const M: u64 = 1 << 20;

    /// (data_len, zeroed_len, allocated_len, advanced) -> range, 4 MiB ahead.
    #[test]
    fn zeros_go_just_ahead_of_the_data() {
        let cases = [
            // A fresh segment: a short first chunk from block 0.
            ((0, 0, 16 * M, 0), Some((0, 64 * K))),
            // Never on the block holding the last appended byte, nor below it.
            ((5 * K, 0, 16 * M, 5 * K), Some((8 * K, 72 * K))),
            // Continues where the zeros stopped, in chunks as long as the distance.
            ((5 * K, 72 * K, 16 * M, 0), Some((72 * K, 136 * K))),
            ((5 * K, 264 * K, 16 * M, 0), Some((264 * K, 520 * K))),
            ((5 * K, 2 * M, 16 * M, 0), Some((2 * M, 3 * M))),
            // Up to 4 MiB past the data, block-aligned.
            ((5 * K, 4 * M, 16 * M, 0), Some((4 * M, 4 * M + 8 * K))),
            ((5 * K, 4 * M + 8 * K, 16 * M, 0), None),
            // Never past the preallocated length.
            ((0, 448 * K, 512 * K, 0), Some((448 * K, 512 * K))),
            ((0, 512 * K, 512 * K, 0), None),
            // The appends outran the zeros: start past the data again.
            ((3 * M, M, 16 * M, 2 * M), Some((3 * M, 3 * M + 64 * K))),
            // Appends faster than the zeros could follow: skip.
            ((10 * M, 0, 16 * M, 5 * M), None),
        ];
        for ((data_len, zeroed_len, allocated_len, advanced), want) in cases {
            let view = ZeroFillView {
                data_len,
                zeroed_len,
                allocated_len,
                advanced,
            };
            assert_eq!(zero_fill_range(view, 4 * M), want, "{view:?}");
        }
        let view = ZeroFillView {
            data_len: 0,
            zeroed_len: 0,
            allocated_len: 16 * M,
            advanced: 0,
        };
        assert_eq!(zero_fill_range(view, 0), None, "off");
    }
}
