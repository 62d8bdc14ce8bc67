//! The partition checkpoint: high watermark and leader-epoch history, replaced atomically
//! (write `checkpoint.tmp`, fdatasync, rename over `checkpoint`, fsync the directory).
//!
//! ```text
//! 0  4  magic "SLCP"     4  4  version 1        8  8  high_watermark
//! 16 4  epoch count      20 4  crc32c of bytes 24..end
//! 24 -  entries: leader_epoch i32, start_offset u64 (little-endian, 12 bytes each)
//! ```
#![deny(clippy::indexing_slicing)]

use crate::ids::{LeaderEpoch, Offset};
use crate::segment::BLOCK_SIZE;

/// File name of the checkpoint in a partition directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
const MAGIC: &[u8; 4] = b"SLCP";
const HEADER_SIZE: usize = 24;
const ENTRY_SIZE: usize = 12;
/// More epochs than this in one partition is corruption, not history.
const EPOCHS_MAX: usize = 1 << 20;

/// An epoch and the first offset its leader appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: LeaderEpoch,
    /// First offset appended under it.
    pub start_offset: Offset,
}

/// High watermark and leader-epoch history (Kafka's leader-epoch-checkpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offsets below it are committed.
    pub high_watermark: Offset,
    /// Epochs in increasing order of both fields.
    pub epochs: Vec<EpochEntry>,
}

impl Checkpoint {
    /// Records that `epoch` appended starting at `start_offset`, if it is newer than the
    /// last known epoch.
    pub fn observe_epoch(&mut self, epoch: LeaderEpoch, start_offset: Offset) {
        if epoch == LeaderEpoch::NONE || self.epochs.last().is_some_and(|e| e.epoch >= epoch) {
            return;
        }
        if let Some(last) = self.epochs.last() {
            assert!(
                last.start_offset <= start_offset,
                "{last:?} then {epoch} at {start_offset}"
            );
        }
        self.epochs.push(EpochEntry {
            epoch,
            start_offset,
        });
    }

    /// Drops what a truncation to `log_end` removed.
    pub fn truncate(&mut self, log_end: Offset) {
        self.epochs.retain(|e| e.start_offset < log_end);
        self.high_watermark = self.high_watermark.min(log_end);
    }

    /// KIP-101's OffsetsForLeaderEpoch: the largest epoch at or below `epoch`, and the
    /// offset where it ended (the start of the next epoch, or `log_end`).
    #[must_use]
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch, log_end: Offset) -> Option<EpochEntry> {
        let after = self.epochs.partition_point(|e| e.epoch <= epoch);
        let found = after.checked_sub(1).and_then(|i| self.epochs.get(i))?;
        let end = self
            .epochs
            .get(after)
            .map_or(log_end, |next| next.start_offset);
        Some(EpochEntry {
            epoch: found.epoch,
            start_offset: end,
        })
    }

    /// The file bytes, padded to a block.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_SIZE + self.epochs.len() * ENTRY_SIZE);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&self.high_watermark.0.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.epochs.len())
                .expect("epoch count")
                .to_le_bytes(),
        );
        out.extend_from_slice(&[0; 4]);
        for entry in &self.epochs {
            out.extend_from_slice(&entry.epoch.0.to_le_bytes());
            out.extend_from_slice(&entry.start_offset.0.to_le_bytes());
        }
        let crc = crc32c::crc32c(out.get(HEADER_SIZE..).unwrap_or_default());
        if let Some(field) = out.get_mut(20..24) {
            field.copy_from_slice(&crc.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(BLOCK_SIZE), 0);
        out
    }

    /// Decodes checkpoint bytes; `None` if they fail any check.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let le = |at: usize, n: usize| bytes.get(at..at + n);
        if le(0, 4)? != MAGIC || le(4, 4)? != 1u32.to_le_bytes() {
            return None;
        }
        let high_watermark = Offset(u64::from_le_bytes(le(8, 8)?.try_into().ok()?));
        let count = u32::from_le_bytes(le(16, 4)?.try_into().ok()?) as usize;
        if count > EPOCHS_MAX {
            return None;
        }
        let entries = le(HEADER_SIZE, count * ENTRY_SIZE)?;
        if u32::from_le_bytes(le(20, 4)?.try_into().ok()?) != crc32c::crc32c(entries) {
            return None;
        }
        let mut checkpoint = Checkpoint {
            high_watermark,
            epochs: Vec::with_capacity(count),
        };
        for chunk in entries.chunks_exact(ENTRY_SIZE) {
            let epoch = LeaderEpoch(i32::from_le_bytes(chunk.get(..4)?.try_into().ok()?));
            let start_offset = Offset(u64::from_le_bytes(chunk.get(4..)?.try_into().ok()?));
            let ordered = checkpoint
                .epochs
                .last()
                .is_none_or(|last| last.epoch < epoch && last.start_offset <= start_offset);
            if !ordered {
                return None;
            }
            checkpoint.epochs.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        Some(checkpoint)
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
    fn roundtrip_rejects_damage_and_answers_epoch_queries() {
        let mut cp = Checkpoint {
            high_watermark: Offset(40),
            epochs: Vec::new(),
        };
        cp.observe_epoch(LeaderEpoch(1), Offset(0));
        cp.observe_epoch(LeaderEpoch(1), Offset(10));
        cp.observe_epoch(LeaderEpoch(3), Offset(20));
        cp.observe_epoch(LeaderEpoch(5), Offset(30));
        assert_eq!(cp.epochs.len(), 3);
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes), Some(cp.clone()));
        for at in 0..24 + 36 {
            let mut bad = bytes.clone();
            bad[at] ^= 4;
            assert_ne!(Checkpoint::decode(&bad), Some(cp.clone()), "flip at {at}");
        }
        let end = |e| {
            cp.end_offset_for_epoch(LeaderEpoch(e), Offset(50))
                .map(|x| (x.epoch.0, x.start_offset.0))
        };
        assert_eq!(end(0), None);
        assert_eq!(end(1), Some((1, 20)));
        assert_eq!(end(2), Some((1, 20)));
        assert_eq!(end(4), Some((3, 30)));
        assert_eq!(end(9), Some((5, 50)));
        cp.truncate(Offset(25));
        assert_eq!(cp.epochs.len(), 2);
        assert_eq!(cp.high_watermark, Offset(25));
    }
}
