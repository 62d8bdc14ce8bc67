//! Idempotent producers: per producer id, its epoch, the next sequence expected, and the
//! recent batches with their offsets, so that a retried batch is answered with its
//! original offsets instead of being appended twice.
//!
//! Every replica keeps this table as it appends (leader and follower alike), so a new
//! leader knows the producers' sequences after a failover. A truncation rolls the table
//! back exactly: each remembered batch keeps the producer's state from before it.
//! Bounds: `PRODUCERS_MAX` producer ids, `RECENT_MAX` batches each (Kafka keeps 5, the
//! most a producer may have in flight; more here lets a truncation restore the state).
//! A new producer id beyond `PRODUCERS_MAX` evicts the one whose last batch is oldest in
//! the log (Kafka expires producer state by age instead): decided by the log alone, so
//! every replica evicts the same one. An evicted producer's next batch is `OutOfOrder`
//! unless it starts a sequence at 0; a truncation does not bring an evicted one back.

use std::collections::{BTreeMap, VecDeque};

use shardlog_engine::Offset;
use shardlog_engine::batch::BatchHeader;

use crate::error::SnapshotError;
use crate::replica_snapshot::{Reader, Writer};

/// Producer ids remembered per partition.
pub const PRODUCERS_MAX: usize = 4096;
/// Batches remembered per producer.
pub const RECENT_MAX: usize = 32;

/// What to do with a produced batch, by its producer fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already in the log at these offsets: answer them, do not append.
    Duplicate {
        /// Where the original batch starts.
        base_offset: Offset,
        /// Where it ends.
        last_offset: Offset,
    },
    /// A gap or a too-old sequence.
    OutOfOrder {
        /// The sequence expected next.
        expected: i32,
    },
    /// The producer's epoch is older than the one known.
    Fenced {
        /// The known epoch.
        current: i16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProducerPosition {
    pub(crate) epoch: i16,
    pub(crate) next_sequence: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecentBatch {
    base_sequence: i32,
    base_offset: Offset,
    last_offset: Offset,
    before: Option<ProducerPosition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ProducerEntry {
    position: ProducerPosition,
    recent: VecDeque<RecentBatch>,
}

/// The idempotence table of one partition replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerTable {
    producers: BTreeMap<i64, ProducerEntry>,
}

fn last_sequence(header: &BatchHeader) -> i32 {
    let count = i32::try_from(header.record_count).unwrap_or(i32::MAX);
    header.base_sequence.wrapping_add(count.saturating_sub(1))
}

impl ProducerTable {
    /// Whether the leader may append `header`'s batch.
    #[must_use]
    pub fn check(&self, header: &BatchHeader) -> SequenceCheck {
        if header.producer_id < 0 {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return if header.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder { expected: 0 }
            };
        };
        let position = entry.position;
        if header.producer_epoch < position.epoch {
            return SequenceCheck::Fenced {
                current: position.epoch,
            };
        }
        if header.producer_epoch > position.epoch || header.base_sequence == position.next_sequence
        {
            return if header.producer_epoch > position.epoch && header.base_sequence != 0 {
                SequenceCheck::OutOfOrder { expected: 0 }
            } else {
                SequenceCheck::Append
            };
        }
        match entry
            .recent
            .iter()
            .find(|batch| batch.base_sequence == header.base_sequence)
        {
            Some(batch) => SequenceCheck::Duplicate {
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
            },
            None => SequenceCheck::OutOfOrder {
                expected: position.next_sequence,
            },
        }
    }

    /// Records a batch appended to the log (its header carries its real offsets).
    pub fn apply(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let before = self.producers.get(&header.producer_id).map(|e| e.position);
        if before.is_none() && self.producers.len() >= PRODUCERS_MAX {
            self.evict_oldest();
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                position: ProducerPosition {
                    epoch: header.producer_epoch,
                    next_sequence: 0,
                },
                recent: VecDeque::new(),
            });
        entry.position = ProducerPosition {
            epoch: header.producer_epoch,
            next_sequence: last_sequence(header).wrapping_add(1),
        };
        if entry.recent.len() == RECENT_MAX {
            entry.recent.pop_front();
        }
        entry.recent.push_back(RecentBatch {
            base_sequence: header.base_sequence,
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            before,
        });
    }

    /// Forgets the producer whose last batch is the oldest in the log.
    fn evict_oldest(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(id, entry)| (entry.recent.back().map(|b| b.last_offset), **id))
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// Forgets batches at or after `log_end`, restoring each producer's position from
    /// before the first batch forgotten.
    pub fn truncate(&mut self, log_end: Offset) {
        let mut forgotten = Vec::new();
        for (&id, entry) in &mut self.producers {
            let mut restored = None;
            while entry
                .recent
                .back()
                .is_some_and(|b| b.base_offset >= log_end)
            {
                restored = entry.recent.pop_back().map(|b| b.before);
            }
            match restored {
                Some(Some(position)) => entry.position = position,
                Some(None) => forgotten.push(id),
                None => {}
            }
        }
        for id in forgotten {
            self.producers.remove(&id);
        }
    }

    /// Appends the table to a snapshot payload (format in `replica_snapshot.rs`).
    pub(crate) fn encode(&self, out: &mut Writer) {
        out.u32(u32::try_from(self.producers.len()).expect("bounded by PRODUCERS_MAX"));
        for (&id, entry) in &self.producers {
            out.i64(id);
            out.position(Some(entry.position));
            out.u32(u32::try_from(entry.recent.len()).expect("bounded by RECENT_MAX"));
            for batch in &entry.recent {
                out.i32(batch.base_sequence);
                out.u64(batch.base_offset.0);
                out.u64(batch.last_offset.0);
                out.position(batch.before);
            }
        }
    }

    /// Reads a table written by `encode` for the batches below `log_end`, checking every
    /// bound and order the table keeps (the bytes passed a CRC, but a bug or a crafted
    /// file must not become state).
    pub(crate) fn decode(input: &mut Reader<'_>, log_end: Offset) -> Result<Self, SnapshotError> {
        let count = input.count(PRODUCERS_MAX)?;
        let mut table = ProducerTable::default();
        let mut previous_id = None;
        for _ in 0..count {
            let id = input.i64()?;
            if id < 0 || previous_id.is_some_and(|p| p >= id) {
                return Err(SnapshotError::Invalid("producer ids not ascending"));
            }
            previous_id = Some(id);
            let position = input
                .position()?
                .ok_or(SnapshotError::Invalid("no position"))?;
            let recent_count = input.count(RECENT_MAX)?;
            let mut recent = VecDeque::with_capacity(recent_count);
            let mut previous_end: Option<Offset> = None;
            for _ in 0..recent_count {
                let batch = RecentBatch {
                    base_sequence: input.i32()?,
                    base_offset: Offset(input.u64()?),
                    last_offset: Offset(input.u64()?),
                    before: input.position()?,
                };
                let ordered = batch.base_offset <= batch.last_offset
                    && batch.last_offset < log_end
                    && previous_end.is_none_or(|end| end < batch.base_offset);
                if !ordered {
                    return Err(SnapshotError::Invalid("producer batches out of order"));
                }
                previous_end = Some(batch.last_offset);
                recent.push_back(batch);
            }
            table
                .producers
                .insert(id, ProducerEntry { position, recent });
        }
        Ok(table)
    }

    /// Producer ids known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_engine::{LeaderEpoch, TimestampMs};

    fn header(pid: i64, epoch: i16, seq: i32, count: u32, base: u64) -> BatchHeader {
        BatchHeader {
            base_offset: Offset(base),
            size: 100,
            leader_epoch: LeaderEpoch(0),
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: TimestampMs(0),
            max_timestamp: TimestampMs(0),
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn sequences_duplicates_and_truncation() {
        let mut table = ProducerTable::default();
        assert_eq!(
            table.check(&header(7, 0, 1, 2, 0)),
            SequenceCheck::OutOfOrder { expected: 0 }
        );
        table.apply(&header(7, 0, 0, 2, 0));
        table.apply(&header(7, 0, 2, 3, 2));
        assert_eq!(table.check(&header(7, 0, 5, 1, 0)), SequenceCheck::Append);
        assert_eq!(
            table.check(&header(7, 0, 2, 3, 0)),
            SequenceCheck::Duplicate {
                base_offset: Offset(2),
                last_offset: Offset(4)
            }
        );
        assert_eq!(
            table.check(&header(7, 0, 9, 1, 0)),
            SequenceCheck::OutOfOrder { expected: 5 }
        );
        assert_eq!(
            table.check(&header(7, -1, 5, 1, 0)),
            SequenceCheck::Fenced { current: 0 }
        );
        assert_eq!(table.check(&header(7, 1, 0, 1, 0)), SequenceCheck::Append);
        // Truncating the second batch restores "next is 2"; truncating all forgets 7.
        table.truncate(Offset(2));
        assert_eq!(table.check(&header(7, 0, 2, 3, 0)), SequenceCheck::Append);
        table.truncate(Offset(0));
        assert!(table.is_empty());
        assert_eq!(
            table.check(&header(-1, -1, -1, 1, 0)),
            SequenceCheck::Append
        );
    }

    #[test]
    fn a_full_table_evicts_the_producer_last_seen_earliest() {
        let mut table = ProducerTable::default();
        let max = i64::try_from(PRODUCERS_MAX).unwrap();
        for pid in 0..max {
            // Producer 0 appends last, so producer 1's batch is the oldest.
            let base = if pid == 0 {
                10 * max as u64
            } else {
                pid as u64
            };
            table.apply(&header(pid, 0, 0, 1, base));
        }
        assert_eq!(table.len(), PRODUCERS_MAX);
        table.apply(&header(max, 0, 0, 1, 10 * max as u64 + 1));
        assert_eq!(table.len(), PRODUCERS_MAX, "bounded");
        assert_eq!(
            table.check(&header(1, 0, 1, 1, 0)),
            SequenceCheck::OutOfOrder { expected: 0 },
            "producer 1 was evicted"
        );
        assert_eq!(table.check(&header(0, 0, 1, 1, 0)), SequenceCheck::Append);
        assert_eq!(table.check(&header(max, 0, 1, 1, 0)), SequenceCheck::Append);
    }
}
