//! Sparse offset index of one segment: an entry every `index_interval_bytes` of log, from
//! the offset of a batch (relative to the segment base) to its byte position. Lookup is a
//! pure binary search; the active segment's index lives in memory and reaches disk when
//! the segment is sealed or the log closes cleanly.
//!
//! On disk (`<base>.index`, container in `index_file.rs`): meta words are
//! `[data_len, next_offset, batch_count, record_count, 0]`, entries are
//! `relative_offset: u32 LE, position: u32 LE`.
#![deny(clippy::indexing_slicing)]

use crate::index_file::{self, IndexError};

const MAGIC: [u8; 4] = *b"SLIX";
const ENTRY_SIZE: usize = 8;

/// One index entry: the batch starting at `relative_offset` begins at byte `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Batch base offset minus the segment base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// What a sealed segment's index records about the data it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealedMeta {
    /// Bytes of valid batches in the `.log` file.
    pub data_len: u64,
    /// Offset after the segment's last batch.
    pub next_offset: u64,
    /// Batches in the segment.
    pub batch_count: u64,
    /// Records in the segment.
    pub record_count: u64,
}

/// The sparse offset index of one segment, ascending in both fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<IndexEntry>,
}

impl OffsetIndex {
    /// Adds an entry after every existing one.
    pub fn push(&mut self, entry: IndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                last.relative_offset < entry.relative_offset,
                "{last:?} then {entry:?}"
            );
            assert!(last.position < entry.position, "{last:?} then {entry:?}");
        }
        self.entries.push(entry);
    }

    /// The last entry at or before `relative_offset`: where a scan for it starts.
    #[must_use]
    pub fn lookup(&self, relative_offset: u32) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .copied()
    }

    /// The last entry.
    #[must_use]
    pub fn last(&self) -> Option<IndexEntry> {
        self.entries.last().copied()
    }

    /// Drops entries at or after byte `position`.
    pub fn truncate_to_position(&mut self, position: u64) {
        self.entries.retain(|e| u64::from(e.position) < position);
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, ascending.
    #[must_use]
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The index file for a segment with `meta`.
    #[must_use]
    pub fn encode(&self, meta: &SealedMeta) -> Vec<u8> {
        let mut entries = Vec::with_capacity(self.entries.len() * ENTRY_SIZE);
        for entry in &self.entries {
            entries.extend_from_slice(&entry.relative_offset.to_le_bytes());
            entries.extend_from_slice(&entry.position.to_le_bytes());
        }
        let words = [
            meta.data_len,
            meta.next_offset,
            meta.batch_count,
            meta.record_count,
            0,
        ];
        index_file::encode(MAGIC, words, ENTRY_SIZE, &entries)
    }

    /// Decodes an index file, checking order and that every entry lies inside the data.
    pub fn decode(bytes: &[u8]) -> Result<(OffsetIndex, SealedMeta), IndexError> {
        let (words, raw) = index_file::decode(MAGIC, ENTRY_SIZE, bytes)?;
        let meta = SealedMeta {
            data_len: words[0],
            next_offset: words[1],
            batch_count: words[2],
            record_count: words[3],
        };
        let mut index = OffsetIndex::default();
        for chunk in raw.chunks_exact(ENTRY_SIZE) {
            let word = |at: usize| {
                chunk
                    .get(at..at + 4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes)
            };
            let entry = IndexEntry {
                relative_offset: word(0).ok_or(IndexError::Truncated)?,
                position: word(4).ok_or(IndexError::Truncated)?,
            };
            let ordered = index.last().is_none_or(|last| {
                last.relative_offset < entry.relative_offset && last.position < entry.position
            });
            if !ordered || u64::from(entry.position) >= meta.data_len {
                return Err(IndexError::Inconsistent);
            }
            index.entries.push(entry);
        }
        Ok((index, meta))
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
    use proptest::prelude::*;

    proptest! {
        /// Lookup equals a linear scan for the last entry at or before the target.
        #[test]
        fn lookup_matches_linear_scan(gaps in proptest::collection::vec((1u32..50, 1u32..5000), 0..60), target in 0u32..3000) {
            let mut index = OffsetIndex::default();
            let (mut rel, mut pos) = (0u32, 0u32);
            for (dr, dp) in gaps {
                index.push(IndexEntry { relative_offset: rel, position: pos });
                rel += dr;
                pos += dp;
            }
            let linear = index.entries().iter().rev().find(|e| e.relative_offset <= target).copied();
            prop_assert_eq!(index.lookup(target), linear);
            let meta = SealedMeta { data_len: u64::from(pos) + 1, next_offset: 9, batch_count: 3, record_count: 4 };
            let (back, back_meta) = OffsetIndex::decode(&index.encode(&meta)).unwrap();
            prop_assert_eq!(back, index);
            prop_assert_eq!(back_meta, meta);
        }
    }

    #[test]
    fn decode_rejects_entries_past_data() {
        let mut index = OffsetIndex::default();
        index.push(IndexEntry {
            relative_offset: 0,
            position: 0,
        });
        index.push(IndexEntry {
            relative_offset: 5,
            position: 9000,
        });
        let meta = SealedMeta {
            data_len: 9000,
            ..SealedMeta::default()
        };
        assert_eq!(
            OffsetIndex::decode(&index.encode(&meta)),
            Err(IndexError::Inconsistent)
        );
    }
}
