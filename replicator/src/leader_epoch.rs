//! The leader-epoch history of a replica's log, and the follower's truncation decision.
//!
//! The history is the engine's checkpoint history ([`Checkpoint`]): epochs in increasing
//! order with the first offset each leader appended. A follower whose log may diverge from
//! its new leader's asks the leader where its latest epoch ends (OffsetsForLeaderEpoch) and
//! truncates there, repeating with older epochs until both logs hold the same epoch
//! (KIP-101, KIP-279). It never truncates to its high watermark alone: that can cut
//! committed data (after a restart the high watermark lags) or keep divergent data.

use shardlog_engine::checkpoint::{Checkpoint, EpochEntry};
use shardlog_engine::{LeaderEpoch, Offset};

/// Epochs of one replica's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    checkpoint: Checkpoint,
}

/// What a follower does with a leader's answer for `query` epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconcile {
    /// Truncate to `log_end` (if shorter than the log); the logs then agree.
    Done {
        /// The truncation point.
        log_end: Offset,
    },
    /// Truncate to `log_end`, then ask again about `query`.
    Again {
        /// The truncation point.
        log_end: Offset,
        /// The next epoch to ask about.
        query: LeaderEpoch,
    },
}

impl EpochHistory {
    /// Records that `epoch` starts at `start_offset`, if it is newer than the last epoch.
    pub fn observe(&mut self, epoch: LeaderEpoch, start_offset: Offset) {
        self.checkpoint.observe_epoch(epoch, start_offset);
    }

    /// Forgets epochs that start at or after `log_end`.
    pub fn truncate(&mut self, log_end: Offset) {
        self.checkpoint.truncate(log_end);
    }

    /// The latest epoch, [`LeaderEpoch::NONE`] for an empty history.
    #[must_use]
    pub fn last_epoch(&self) -> LeaderEpoch {
        self.checkpoint
            .epochs
            .last()
            .map_or(LeaderEpoch::NONE, |e| e.epoch)
    }

    /// Epoch of the batch holding `offset`: the last epoch starting at or before it.
    #[must_use]
    pub fn epoch_at(&self, offset: Offset) -> LeaderEpoch {
        let after = self
            .checkpoint
            .epochs
            .partition_point(|e| e.start_offset <= offset);
        after
            .checked_sub(1)
            .and_then(|i| self.checkpoint.epochs.get(i))
            .map_or(LeaderEpoch::NONE, |e| e.epoch)
    }

    /// Epoch of the batch ending just before `offset` (NONE at offset 0).
    #[must_use]
    pub fn epoch_before(&self, offset: Offset) -> LeaderEpoch {
        match offset.0.checked_sub(1) {
            Some(last) => self.epoch_at(Offset(last)),
            None => LeaderEpoch::NONE,
        }
    }

    /// The leader's side of OffsetsForLeaderEpoch: the largest epoch at or below `epoch`
    /// and where it ends. If every epoch here is newer than `epoch` (retention deleted
    /// the older ones' batches, and a restart forgot them), `epoch` itself ending where
    /// the oldest known epoch starts, as Kafka answers: the asker keeps its log below
    /// that point (all of it older than anything here). `(NONE, 0)` for an empty history
    /// or an asker with no epoch.
    #[must_use]
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch, log_end: Offset) -> EpochEntry {
        let none = EpochEntry {
            epoch: LeaderEpoch::NONE,
            start_offset: Offset(0),
        };
        if let Some(entry) = self.checkpoint.end_offset_for_epoch(epoch, log_end) {
            return entry;
        }
        match self.checkpoint.epochs.first() {
            Some(first) if epoch != LeaderEpoch::NONE => EpochEntry {
                epoch,
                start_offset: first.start_offset,
            },
            _ => none,
        }
    }

    /// The follower's side (KIP-279): the leader's log holds `answer_epoch` as its largest
    /// epoch at or below the one asked about, ending at `answer_end`.
    #[must_use]
    pub fn reconcile(
        &self,
        log_end: Offset,
        answer_epoch: LeaderEpoch,
        answer_end: Offset,
    ) -> Reconcile {
        if answer_epoch == LeaderEpoch::NONE {
            return Reconcile::Done { log_end: Offset(0) };
        }
        let Some(mine) = self.checkpoint.end_offset_for_epoch(answer_epoch, log_end) else {
            // Every epoch here is newer than any the leader has at this point.
            return Reconcile::Done { log_end: Offset(0) };
        };
        let point = mine.start_offset.min(answer_end).min(log_end);
        if mine.epoch == answer_epoch {
            Reconcile::Done { log_end: point }
        } else {
            // The leader never had our epochs after `mine.epoch`: cut them and ask again.
            assert!(mine.epoch < answer_epoch, "{} > {answer_epoch}", mine.epoch);
            Reconcile::Again {
                log_end: point,
                query: mine.epoch,
            }
        }
    }

    /// The epochs, oldest first.
    #[must_use]
    pub fn entries(&self) -> &[EpochEntry] {
        &self.checkpoint.epochs
    }

    /// A history of `entries`, if they are in order (epochs strictly increasing, start
    /// offsets not decreasing) and every one starts below `log_end`.
    #[must_use]
    pub fn from_entries(entries: Vec<EpochEntry>, log_end: Offset) -> Option<EpochHistory> {
        let ordered = entries.windows(2).all(|pair| match pair {
            [a, b] => a.epoch < b.epoch && a.start_offset <= b.start_offset,
            _ => true,
        });
        let below = entries
            .iter()
            .all(|e| e.start_offset < log_end && e.epoch != LeaderEpoch::NONE);
        (ordered && below).then_some(EpochHistory {
            checkpoint: Checkpoint {
                high_watermark: Offset(0),
                epochs: entries,
            },
        })
    }

    /// Checks the history's order: both fields strictly increase.
    pub fn invariants(&self, log_end: Offset) {
        for pair in self.checkpoint.epochs.windows(2) {
            if let [a, b] = pair {
                assert!(a.epoch < b.epoch, "{a:?} then {b:?}");
                assert!(a.start_offset <= b.start_offset, "{a:?} then {b:?}");
            }
        }
        if let Some(last) = self.checkpoint.epochs.last() {
            assert!(last.start_offset <= log_end, "{last:?} past {log_end}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(i32, u64)]) -> EpochHistory {
        let mut h = EpochHistory::default();
        for &(epoch, start) in entries {
            h.observe(LeaderEpoch(epoch), Offset(start));
        }
        h
    }

    #[test]
    fn reconcile_table() {
        // (follower history, follower log end, answer epoch, answer end, expected)
        let done = |o| Reconcile::Done { log_end: Offset(o) };
        let again = |o, q| Reconcile::Again {
            log_end: Offset(o),
            query: LeaderEpoch(q),
        };
        type Case = (&'static [(i32, u64)], u64, i32, u64, Reconcile);
        let cases: &[Case] = &[
            // Same epoch, the leader has more: keep everything.
            (&[(0, 0), (1, 10)], 15, 1, 20, done(15)),
            // Same epoch, the follower has an uncommitted tail: cut it (KIP-101).
            (&[(0, 0), (1, 10)], 15, 1, 12, done(12)),
            // The follower has epoch 2 the leader never had; the leader's epoch 1 ended
            // at 12, the follower's at 14: cut to 12 (KIP-279 first round).
            (&[(0, 0), (1, 10), (2, 14)], 18, 1, 12, done(12)),
            // The follower lacks the answered epoch: cut its newer epochs, ask again.
            (&[(0, 0), (2, 10)], 15, 1, 12, again(10, 0)),
            // Nothing in common.
            (&[(3, 0)], 5, 1, 4, done(0)),
            (&[(0, 0)], 5, -1, 0, done(0)),
        ];
        for (entries, log_end, epoch, end, expected) in cases {
            let got =
                history(entries).reconcile(Offset(*log_end), LeaderEpoch(*epoch), Offset(*end));
            assert_eq!(got, *expected, "{entries:?} {log_end} {epoch} {end}");
        }
    }

    #[test]
    fn epoch_lookups() {
        let h = history(&[(0, 0), (2, 10), (5, 30)]);
        assert_eq!(h.epoch_at(Offset(9)), LeaderEpoch(0));
        assert_eq!(h.epoch_at(Offset(10)), LeaderEpoch(2));
        assert_eq!(h.epoch_before(Offset(10)), LeaderEpoch(0));
        assert_eq!(h.epoch_before(Offset(0)), LeaderEpoch::NONE);
        let e = h.end_offset_for_epoch(LeaderEpoch(3), Offset(40));
        assert_eq!((e.epoch, e.start_offset), (LeaderEpoch(2), Offset(30)));
        let e = h.end_offset_for_epoch(LeaderEpoch(9), Offset(40));
        assert_eq!((e.epoch, e.start_offset), (LeaderEpoch(5), Offset(40)));
    }
}
