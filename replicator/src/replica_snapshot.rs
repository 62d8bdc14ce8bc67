//! [`ReplicaSnapshot`]: what a replica derives from its log's batches below an offset
//! (the producer table and the leader-epoch history), so that an open replays only the
//! batches after the newest snapshot instead of the whole log (Kafka's producer
//! snapshots). The driver keeps one in step with the log as it performs appends and
//! truncations, writes it at each segment roll and at a clean stop, and restores the
//! replica from it on open. The engine frames the file (`<offset>.snapshot`, CRC,
//! atomic write); this is its payload.
//!
//! Equal to what replaying the same batches gives: `apply` and `truncate` are the
//! replica's own (`LocalLog::appended`/`truncate`) on the same tables. One difference is
//! wanted: a snapshot taken before retention deleted a segment still holds the
//! producers and epochs of that segment, as a replica that never restarted does.
//!
//! Payload, version 1, little-endian:
//! ```text
//! u32 version   u64 log_end (== the snapshot's offset)
//! u32 epochs,    each: i32 epoch, u64 start_offset
//! u32 producers, each: i64 id, position, u32 batches,
//!                      each: i32 base_sequence, u64 base_offset, u64 last_offset, position
//! position: u8 present (0 or 1), then if 1: i16 producer epoch, i32 next sequence
//! ```

use shardlog_engine::batch::BatchHeader;
use shardlog_engine::checkpoint::EpochEntry;
use shardlog_engine::{LeaderEpoch, Offset};

use crate::error::SnapshotError;
use crate::leader_epoch::EpochHistory;
use crate::producer_state::{ProducerPosition, ProducerTable};

const VERSION: u32 = 1;
/// More epochs than this in one snapshot is damage (the engine's checkpoint bound).
const EPOCHS_MAX: usize = 1 << 20;

/// The state of a log's batches below `log_end`. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSnapshot {
    log_end: Offset,
    epochs: EpochHistory,
    producers: ProducerTable,
}

impl ReplicaSnapshot {
    /// The state of an empty log starting at `log_start` (what a full replay starts from).
    #[must_use]
    pub fn empty(log_start: Offset) -> Self {
        ReplicaSnapshot {
            log_end: log_start,
            ..ReplicaSnapshot::default()
        }
    }

    /// The offset it describes the log below.
    #[must_use]
    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    /// The epoch history.
    #[must_use]
    pub fn epochs(&self) -> &EpochHistory {
        &self.epochs
    }

    /// The producer table.
    #[must_use]
    pub fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    /// Takes the batch appended at `log_end` (its header carries its real offsets).
    pub fn apply(&mut self, header: &BatchHeader) {
        assert_eq!(
            header.base_offset, self.log_end,
            "batch at {} applied at {}",
            header.base_offset, self.log_end
        );
        self.epochs.observe(header.leader_epoch, header.base_offset);
        self.producers.apply(header);
        self.log_end = header.next_offset();
    }

    /// Forgets the batches at or after `log_end`, as the log's truncation does.
    pub fn truncate(&mut self, log_end: Offset) {
        if log_end >= self.log_end {
            return;
        }
        self.log_end = log_end;
        self.epochs.truncate(log_end);
        self.producers.truncate(log_end);
    }

    /// The payload bytes (see the module docs).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Writer(Vec::with_capacity(64 + 64 * self.producers.len()));
        out.u32(VERSION);
        out.u64(self.log_end.0);
        let epochs = self.epochs.entries();
        out.u32(u32::try_from(epochs.len()).expect("epoch count fits u32"));
        for entry in epochs {
            out.i32(entry.epoch.0);
            out.u64(entry.start_offset.0);
        }
        self.producers.encode(&mut out);
        out.0
    }

    /// Reads a payload written for the snapshot at `offset`, checking every field.
    pub fn decode(bytes: &[u8], offset: Offset) -> Result<Self, SnapshotError> {
        let mut input = Reader(bytes);
        let version = input.u32()?;
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        let log_end = Offset(input.u64()?);
        if log_end != offset {
            return Err(SnapshotError::Invalid("offset differs from the file's"));
        }
        let count = input.count(EPOCHS_MAX)?;
        let mut entries = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            entries.push(EpochEntry {
                epoch: LeaderEpoch(input.i32()?),
                start_offset: Offset(input.u64()?),
            });
        }
        let epochs = EpochHistory::from_entries(entries, log_end)
            .ok_or(SnapshotError::Invalid("epochs out of order"))?;
        let producers = ProducerTable::decode(&mut input, log_end)?;
        if !input.0.is_empty() {
            return Err(SnapshotError::Length);
        }
        Ok(ReplicaSnapshot {
            log_end,
            epochs,
            producers,
        })
    }
}

/// Little-endian fields appended to a payload.
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn position(&mut self, position: Option<ProducerPosition>) {
        match position {
            None => self.0.push(0),
            Some(p) => {
                self.0.push(1);
                self.0.extend_from_slice(&p.epoch.to_le_bytes());
                self.i32(p.next_sequence);
            }
        }
    }
}

/// Little-endian fields read from a payload; running out is [`SnapshotError::Length`].
pub(crate) struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(SnapshotError::Length)?;
        self.0 = rest;
        Ok(*head)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.take().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.take().map(u64::from_le_bytes)
    }
    pub(crate) fn i32(&mut self) -> Result<i32, SnapshotError> {
        self.take().map(i32::from_le_bytes)
    }
    pub(crate) fn i64(&mut self) -> Result<i64, SnapshotError> {
        self.take().map(i64::from_le_bytes)
    }
    /// A count, refused beyond `max` before anything is allocated for it.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize, SnapshotError> {
        let count = self.u32()?;
        match usize::try_from(count) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(SnapshotError::Count { count, max }),
        }
    }
    pub(crate) fn position(&mut self) -> Result<Option<ProducerPosition>, SnapshotError> {
        match self.take::<1>()? {
            [0] => Ok(None),
            [1] => Ok(Some(ProducerPosition {
                epoch: self.take().map(i16::from_le_bytes)?,
                next_sequence: self.i32()?,
            })),
            _ => Err(SnapshotError::Invalid("position flag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer_state::SequenceCheck;
    use proptest::prelude::*;
    use shardlog_engine::TimestampMs;

    fn header(base: u64, epoch: i32, pid: i64, seq: i32, count: u32) -> BatchHeader {
        BatchHeader {
            base_offset: Offset(base),
            size: 100,
            leader_epoch: LeaderEpoch(epoch),
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: TimestampMs(0),
            max_timestamp: TimestampMs(0),
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq,
            record_count: count,
        }
    }

    /// A log of `batches` (producer choice, record count), epochs rising every 7 batches.
    fn replay(batches: &[(u8, u8)], from: Offset) -> ReplicaSnapshot {
        let mut state = ReplicaSnapshot::empty(from);
        let mut sequences = [0i32; 8];
        for (i, &(producer, count)) in batches.iter().enumerate() {
            let count = u32::from(count % 5) + 1;
            let pid = i64::from(producer % 8) - 1; // -1: not idempotent
            let slot = usize::from(producer % 8);
            let seq = if pid < 0 { -1 } else { sequences[slot] };
            let epoch = i32::try_from(i / 7).unwrap_or(i32::MAX);
            state.apply(&header(state.log_end().0, epoch, pid, seq, count));
            sequences[slot] += i32::try_from(count).unwrap_or(0);
        }
        state
    }

    proptest! {
        /// Encode/decode is the identity, a truncation after a decode equals one before,
        /// and a snapshot at any batch boundary plus the rest equals the whole replay.
        #[test]
        fn roundtrip_and_split_replay(
            batches in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..200),
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = replay(&batches, Offset(10));
            let decoded = ReplicaSnapshot::decode(&whole.encode(), whole.log_end()).unwrap();
            prop_assert_eq!(&decoded, &whole);
            let at = whole.log_end().0 - 10;
            let to = Offset(10 + cut.index(usize::try_from(at).unwrap_or(0) + 1) as u64);
            let (mut a, mut b) = (whole.clone(), decoded);
            a.truncate(to);
            b.truncate(to);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let state = replay(&[(1, 3), (2, 0), (1, 4), (0, 2), (3, 1)], Offset(0));
        let bytes = state.encode();
        assert!(ReplicaSnapshot::decode(&bytes, Offset(1)).is_err());
        for cut in 0..bytes.len() {
            assert!(ReplicaSnapshot::decode(&bytes[..cut], state.log_end()).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ReplicaSnapshot::decode(&longer, state.log_end()),
            Err(SnapshotError::Length)
        );
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                // Most flips are refused; the rest must decode to some valid state.
                if let Ok(other) = ReplicaSnapshot::decode(&bad, state.log_end()) {
                    other.epochs().invariants(other.log_end());
                }
            }
        }
    }

    #[test]
    fn a_restored_table_still_answers_duplicates() {
        let mut state = ReplicaSnapshot::empty(Offset(0));
        state.apply(&header(0, 1, 7, 0, 3));
        state.apply(&header(3, 1, 8, 0, 1));
        let restored = ReplicaSnapshot::decode(&state.encode(), Offset(4)).unwrap();
        assert_eq!(
            restored.producers().check(&header(99, 1, 7, 0, 3)),
            SequenceCheck::Duplicate {
                base_offset: Offset(0),
                last_offset: Offset(2)
            }
        );
        assert_eq!(restored.epochs().last_epoch(), LeaderEpoch(1));
    }
}
