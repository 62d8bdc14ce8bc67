//! One segment: a `.log` file of batches named by its base offset, with its sparse offset
//! and time indexes and what the log knows about it. The active (last) segment is written;
//! sealed segments are only read, deleted by retention or cut by truncation.
//!
//! Invariants: `data_len` bytes of the file hold valid batches covering offsets
//! `[base, next_offset)`; every index entry points at a batch start below `data_len`.
//!
//! The active segment's file is longer than its data: zeros preallocated ahead of the
//! write position a step at a time ([`preallocation_target`]; a fast partition's step
//! follows its append rate, [`preallocation_step`]), so a write rarely has to
//! allocate blocks, and a crash leaves zeros (never stale batches) after the last batch.
//! A write past the preallocated end extends the file itself. Sealing gives the rest back.
//! The upkeep also writes zeros into the preallocated blocks just ahead of the writes
//! (`zero_fill.rs`): they read as zeros either way, so recovery sees the same end.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::batch::BatchHeader;
use crate::ids::{Offset, SegmentId, TimestampMs};
use crate::offset_index::{IndexEntry, OffsetIndex, SealedMeta};
use crate::time_index::{TimeEntry, TimeIndex};

/// The block size of every write: O_DIRECT needs 512; 4 KiB matches pages and ext4 blocks.
pub const BLOCK_SIZE: usize = 4096;

/// Extension of segment data files.
pub const LOG_SUFFIX: &str = "log";
/// Extension of offset index files.
pub const INDEX_SUFFIX: &str = "index";
/// Extension of time index files.
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// The file name of segment `base` with `suffix`: 20 zero-padded digits, as Kafka's.
#[must_use]
pub fn segment_file_name(base: Offset, suffix: &str) -> String {
    format!("{:020}.{suffix}", base.0)
}

/// The path of a segment file in partition directory `dir`.
#[must_use]
pub fn segment_path(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(segment_file_name(base, suffix))
}

/// The base offset named by a `.log` file name, if it is one.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok().map(Offset))
        .flatten()
}

/// Rounds `n` down to a block boundary.
#[must_use]
pub fn align_down(n: u64) -> u64 {
    n - n % BLOCK_SIZE as u64
}

/// Rounds `n` up to a block boundary.
#[must_use]
pub fn align_up(n: u64) -> u64 {
    n.next_multiple_of(BLOCK_SIZE as u64)
}

/// How far ahead a fast partition preallocates: about this long of its appends.
pub const PREALLOCATION_HORIZON: Duration = Duration::from_secs(1);

/// The preallocation step of a log that appended `advanced` bytes in `elapsed`: about
/// [`PREALLOCATION_HORIZON`] of appends at that rate, never less than the configured
/// `step` nor more than `segment_bytes`, in whole blocks.
///
/// Why: a write past the preallocated end extends the file, and ext4 takes the inode
/// lock exclusively for an extending O_DIRECT write; each fallocate also waits for every
/// O_DIRECT write in flight (ext4's source; not measured apart here). With a fixed
/// 16 MiB step, 1 MiB appends under `never` at 1.2 GB/s (the bench's upkeep every
/// 10 ms) wrote 40% of their flushes past the end, and the device queue held a quarter
/// of what fio keeps in it; the server's upkeep, every 100 ms, stays ahead only up to
/// 160 MB/s.
#[must_use]
pub fn preallocation_step(advanced: u64, elapsed: Duration, step: u64, segment_bytes: u64) -> u64 {
    let per_horizon =
        u128::from(advanced) * PREALLOCATION_HORIZON.as_nanos() / elapsed.as_nanos().max(1);
    let per_horizon = u64::try_from(per_horizon).unwrap_or(u64::MAX);
    align_up(per_horizon.min(segment_bytes)).clamp(step, segment_bytes.max(step))
}

/// The length to preallocate the active segment's file to, if it is due a step: when
/// less than half a step lies preallocated ahead of `data_len` (bytes appended, written or
/// not), one more step past the larger of the preallocated end and the data, never past
/// `segment_bytes`. Half a step of headroom lets the upkeep, which runs every 100 ms,
/// stay ahead of a partition written at up to `step / 2` per upkeep period without an
/// append ever waiting for an fallocate.
#[must_use]
pub fn preallocation_target(
    data_len: u64,
    allocated_len: u64,
    step: u64,
    segment_bytes: u64,
) -> Option<u64> {
    let headroom = allocated_len.saturating_sub(data_len);
    if allocated_len >= segment_bytes || headroom >= step / 2 {
        return None;
    }
    let target = (allocated_len.max(align_up(data_len)) + step).min(segment_bytes);
    (target > allocated_len).then_some(target)
}

/// One segment of a partition log. Owned by the shard that owns the log (`!Send`).
#[derive(Debug)]
pub struct Segment<F> {
    /// Offset of the first batch (the file name).
    pub base: Offset,
    /// The `.log` file.
    pub file: Rc<F>,
    /// Bytes of batches in the file (for the active segment: appended, written or not).
    pub data_len: u64,
    /// The offset after the last batch.
    pub next_offset: Offset,
    /// Sparse offset index.
    pub index: OffsetIndex,
    /// Sparse time index.
    pub time_index: TimeIndex,
    /// First batch's base timestamp, for roll by age.
    pub first_timestamp: Option<TimestampMs>,
    /// Largest batch timestamp, for retention by age and lookup by time.
    pub max_timestamp: Option<TimestampMs>,
    /// Batches in the segment.
    pub batch_count: u64,
    /// Records in the segment.
    pub record_count: u64,
    /// Whether the segment is read-only (all but the last).
    pub sealed: bool,
    /// The file's length as last preallocated or cut by this log: where the next
    /// preallocation step starts. Writes past it extend the file without one.
    pub allocated_len: u64,
    /// Every block of the file below it has been written (batches, or zeros by the
    /// upkeep: `zero_fill.rs`), so writes there need no conversion of unwritten extents.
    pub zeroed_len: u64,
    bytes_since_index: u64,
}

impl<F> Segment<F> {
    /// An empty segment starting at `base`.
    pub fn new(base: Offset, file: Rc<F>) -> Segment<F> {
        Segment {
            base,
            file,
            data_len: 0,
            next_offset: base,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            first_timestamp: None,
            max_timestamp: None,
            batch_count: 0,
            record_count: 0,
            sealed: false,
            allocated_len: 0,
            zeroed_len: 0,
            bytes_since_index: 0,
        }
    }

    /// This segment's id.
    #[must_use]
    pub fn id(&self) -> SegmentId {
        SegmentId(self.base)
    }

    /// Accounts for a batch stored at byte `position`, adding index entries every
    /// `index_interval_bytes`. Batches arrive in order.
    pub fn track_batch(&mut self, position: u64, header: &BatchHeader, index_interval_bytes: u32) {
        assert!(
            position == self.data_len,
            "batch at {position}, segment ends at {}",
            self.data_len
        );
        assert!(
            header.base_offset == self.next_offset,
            "{} != {}",
            header.base_offset,
            self.next_offset
        );
        let at = IndexEntry {
            relative_offset: u32::try_from(header.base_offset.distance_from(self.base))
                .expect("segment offset span fits u32"),
            position: u32::try_from(position).expect("segment size fits u32"),
        };
        if self.index.is_empty() || self.bytes_since_index >= u64::from(index_interval_bytes) {
            self.index.push(at);
            let before = self.max_timestamp.unwrap_or(TimestampMs(i64::MIN));
            self.time_index.maybe_push(TimeEntry {
                max_timestamp_before: before,
                at,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += u64::from(header.size);
        self.data_len += u64::from(header.size);
        self.next_offset = header.next_offset();
        self.first_timestamp.get_or_insert(header.base_timestamp);
        self.max_timestamp = Some(
            self.max_timestamp
                .map_or(header.max_timestamp, |t| t.max(header.max_timestamp)),
        );
        self.batch_count += 1;
        self.record_count += u64::from(header.record_count);
    }

    /// Byte position to start scanning from for `offset` (an indexed batch start at or
    /// before it).
    #[must_use]
    pub fn scan_start(&self, offset: Offset) -> IndexEntry {
        let relative = u32::try_from(offset.0.saturating_sub(self.base.0)).unwrap_or(u32::MAX);
        self.index.lookup(relative).unwrap_or(IndexEntry {
            relative_offset: 0,
            position: 0,
        })
    }

    /// What the offset index file records about this segment.
    #[must_use]
    pub fn sealed_meta(&self) -> SealedMeta {
        SealedMeta {
            data_len: self.data_len,
            next_offset: self.next_offset.0,
            batch_count: self.batch_count,
            record_count: self.record_count,
        }
    }

    /// Restores a sealed segment's accounting from its index files.
    pub fn restore(
        &mut self,
        index: OffsetIndex,
        time_index: TimeIndex,
        meta: &SealedMeta,
        max_timestamp: TimestampMs,
    ) {
        self.index = index;
        self.time_index = time_index;
        self.data_len = meta.data_len;
        self.next_offset = Offset(meta.next_offset);
        self.batch_count = meta.batch_count;
        self.record_count = meta.record_count;
        self.max_timestamp = (meta.batch_count > 0).then_some(max_timestamp);
        self.sealed = true;
    }

    /// Forgets the batches at and after byte `position` (a truncation), which were
    /// `removed = (batches, records)`; the segment becomes the active one again. The
    /// largest timestamp stays as it was: an over-estimate only makes a lookup by time
    /// scan further and retention keep the segment longer.
    pub fn truncate_to(&mut self, position: u64, next_offset: Offset, removed: (u64, u64)) {
        assert!(position <= self.data_len, "{position} > {}", self.data_len);
        assert!(
            next_offset <= self.next_offset,
            "{next_offset} > {}",
            self.next_offset
        );
        self.index.truncate_to_position(position);
        self.time_index.truncate_to_position(position);
        self.data_len = position;
        self.next_offset = next_offset;
        self.batch_count -= removed.0;
        self.record_count -= removed.1;
        self.bytes_since_index = position - self.index.last().map_or(0, |e| u64::from(e.position));
        if self.batch_count == 0 {
            self.first_timestamp = None;
            self.max_timestamp = None;
        }
        self.sealed = false;
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;

    /// (data_len, allocated_len) -> target, with a 64 KiB step and 256 KiB segments.
    #[test]
    fn preallocation_steps_ahead_of_the_data() {
        const K: u64 = 1024;
        let cases = [
            // A fresh segment one step long, nothing written: half a step ahead is enough.
            ((0, 64 * K), None),
            ((31 * K, 64 * K), None),
            // Less than half a step ahead: one more step.
            ((33 * K, 64 * K), Some(128 * K)),
            // The data outran the preallocation (writes extended the file): a step past it.
            ((100 * K + 1, 64 * K), Some(104 * K + 64 * K)),
            // Never past the segment size, and nothing once it is reached.
            ((200 * K, 224 * K), Some(256 * K)),
            ((250 * K, 256 * K), None),
            ((300 * K, 256 * K), None),
        ];
        for ((data_len, allocated_len), want) in cases {
            assert_eq!(
                preallocation_target(data_len, allocated_len, 64 * K, 256 * K),
                want,
                "data {data_len} allocated {allocated_len}"
            );
        }
    }

    #[test]
    fn the_step_covers_a_horizon_of_appends() {
        const K: u64 = 1024;
        let step = |advanced, ms| {
            preallocation_step(advanced, Duration::from_millis(ms), 64 * K, 1024 * K)
        };
        // Slow or idle: the configured step.
        assert_eq!(step(0, 100), 64 * K);
        assert_eq!(step(6 * K, 100), 64 * K);
        // 100 KiB in 100 ms: a second of it is 1000 KiB, whole blocks.
        assert_eq!(step(100 * K, 100), 1000 * K);
        assert_eq!(step(100 * K + 1, 1000), 104 * K);
        // Faster than a segment per horizon: the segment.
        assert_eq!(step(10 * 1024 * K, 100), 1024 * K);
        assert_eq!(step(u64::MAX, 0), 1024 * K);
        // A configured step above the segment size stays (as `first_preallocation` caps it).
        assert_eq!(
            preallocation_step(0, Duration::from_millis(100), 2048 * K, 1024 * K),
            2048 * K
        );
    }

    #[test]
    fn names_roundtrip() {
        let name = segment_file_name(Offset(1234), LOG_SUFFIX);
        assert_eq!(name, "00000000000000001234.log");
        assert_eq!(parse_segment_name(&name), Some(Offset(1234)));
        for bad in [
            "1234.log",
            "00000000000000001234.index",
            "0000000000000000123x.log",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
