//! Sparse time index of one segment, for lookup by timestamp (Kafka's ListOffsets by time).
//! An entry `(max_timestamp_before, relative_offset, position)` says that every batch before
//! that position has timestamps at or below `max_timestamp_before`; so the first record
//! with a timestamp at or after `t` lies at or after the last entry whose
//! `max_timestamp_before < t`. Entries are added where offset-index entries are, and only
//! when the running maximum grows.
//!
//! On disk (`<base>.timeindex`, container in `index_file.rs`): meta words are
//! `[max_timestamp as u64, 0, 0, 0, 0]`, entries are `max_timestamp_before: i64 LE,
//! relative_offset: u32 LE, position: u32 LE`.
#![deny(clippy::indexing_slicing)]

use crate::ids::TimestampMs;
use crate::index_file::{self, IndexError};
use crate::offset_index::IndexEntry;

const MAGIC: [u8; 4] = *b"SLTI";
const ENTRY_SIZE: usize = 16;

/// One time-index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp of every batch before `at`.
    pub max_timestamp_before: TimestampMs,
    /// The batch this entry points at.
    pub at: IndexEntry,
}

/// The sparse time index of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Adds an entry if the running maximum grew since the last one.
    pub fn maybe_push(&mut self, entry: TimeEntry) {
        if let Some(last) = self.entries.last() {
            if entry.max_timestamp_before <= last.max_timestamp_before {
                return;
            }
            assert!(
                last.at.position < entry.at.position,
                "{last:?} then {entry:?}"
            );
        }
        self.entries.push(entry);
    }

    /// Where a scan for the first record with timestamp `>= target` starts; `None`
    /// means the start of the segment.
    #[must_use]
    pub fn lookup(&self, target: TimestampMs) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|e| e.max_timestamp_before < target);
        after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map(|e| e.at)
    }

    /// Drops entries at or after byte `position`.
    pub fn truncate_to_position(&mut self, position: u64) {
        self.entries.retain(|e| u64::from(e.at.position) < position);
    }

    /// The time index file for a segment whose largest timestamp is `max_timestamp`.
    #[must_use]
    pub fn encode(&self, max_timestamp: TimestampMs) -> Vec<u8> {
        let mut entries = Vec::with_capacity(self.entries.len() * ENTRY_SIZE);
        for entry in &self.entries {
            entries.extend_from_slice(&entry.max_timestamp_before.0.to_le_bytes());
            entries.extend_from_slice(&entry.at.relative_offset.to_le_bytes());
            entries.extend_from_slice(&entry.at.position.to_le_bytes());
        }
        #[allow(clippy::cast_sign_loss)]
        let words = [max_timestamp.0 as u64, 0, 0, 0, 0];
        index_file::encode(MAGIC, words, ENTRY_SIZE, &entries)
    }

    /// Decodes a time index file; returns the index and the segment's largest timestamp.
    pub fn decode(bytes: &[u8], data_len: u64) -> Result<(TimeIndex, TimestampMs), IndexError> {
        let (words, raw) = index_file::decode(MAGIC, ENTRY_SIZE, bytes)?;
        let mut index = TimeIndex::default();
        for chunk in raw.chunks_exact(ENTRY_SIZE) {
            let le = |at: usize, n: usize| chunk.get(at..at + n).ok_or(IndexError::Truncated);
            let ts = i64::from_le_bytes(le(0, 8)?.try_into().map_err(|_| IndexError::Truncated)?);
            let rel = u32::from_le_bytes(le(8, 4)?.try_into().map_err(|_| IndexError::Truncated)?);
            let pos = u32::from_le_bytes(le(12, 4)?.try_into().map_err(|_| IndexError::Truncated)?);
            let entry = TimeEntry {
                max_timestamp_before: TimestampMs(ts),
                at: IndexEntry {
                    relative_offset: rel,
                    position: pos,
                },
            };
            let ordered = index.entries.last().is_none_or(|last| {
                last.max_timestamp_before < entry.max_timestamp_before
                    && last.at.position < entry.at.position
            });
            if !ordered || u64::from(pos) >= data_len {
                return Err(IndexError::Inconsistent);
            }
            index.entries.push(entry);
        }
        #[allow(clippy::cast_possible_wrap)]
        let max_timestamp = TimestampMs(words[0] as i64);
        Ok((index, max_timestamp))
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

    #[test]
    fn lookup_finds_last_entry_below_target() {
        let mut index = TimeIndex::default();
        for (ts, pos) in [(10, 100), (10, 150), (20, 200), (35, 300)] {
            let at = IndexEntry {
                relative_offset: pos,
                position: pos,
            };
            index.maybe_push(TimeEntry {
                max_timestamp_before: TimestampMs(ts),
                at,
            });
        }
        assert_eq!(index.lookup(TimestampMs(5)), None);
        assert_eq!(index.lookup(TimestampMs(10)), None);
        assert_eq!(index.lookup(TimestampMs(11)).map(|e| e.position), Some(100));
        assert_eq!(index.lookup(TimestampMs(36)).map(|e| e.position), Some(300));
        let (back, max) = TimeIndex::decode(&index.encode(TimestampMs(40)), 301).unwrap();
        assert_eq!(back, index);
        assert_eq!(max, TimestampMs(40));
    }
}
