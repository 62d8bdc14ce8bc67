//! What a replica knows of its own log, without owning it: where it starts (retention
//! deletes its head), the log end it has asked the storage for, the durable end the
//! storage reported, the high watermark, the epoch history and the producer table. The
//! driver owns the bytes.
//!
//! Invariants: `log_start <= high_watermark <= log_end`, `durable_end <= log_end`, and
//! the high watermark never moves back except when a replica restarts (it starts at its
//! log start). A truncation below the high watermark is a bug (it would cut committed
//! data) and stops. The log start only moves up: by retention (never past the high
//! watermark) or by a reset past the log end (a follower behind its leader's log start).

use shardlog_engine::Offset;
use shardlog_engine::batch::BatchHeader;

use crate::leader_epoch::EpochHistory;
use crate::producer_state::ProducerTable;

/// A replica's view of its log.
#[derive(Clone, Debug, Default)]
pub struct LocalLog {
    /// The first offset the log holds.
    pub log_start: Offset,
    /// The next offset to assign: the end of what the storage was asked to append.
    pub log_end: Offset,
    /// The end of what the storage reported durable.
    pub durable_end: Offset,
    /// Offsets below it are committed.
    pub high_watermark: Offset,
    /// Epochs of the log.
    pub epochs: EpochHistory,
    /// Idempotent producers of the log.
    pub producers: ProducerTable,
}

impl LocalLog {
    /// Records a batch appended at the log end (its header holds its real offsets).
    pub fn appended(&mut self, header: &BatchHeader) {
        assert!(
            header.base_offset == self.log_end,
            "batch at {} appended at log end {}",
            header.base_offset,
            self.log_end
        );
        self.epochs.observe(header.leader_epoch, header.base_offset);
        self.producers.apply(header);
        self.log_end = header.next_offset();
    }

    /// Cuts the log to `log_end`; never below the high watermark.
    pub fn truncate(&mut self, log_end: Offset) {
        assert!(
            log_end <= self.log_end,
            "truncate to {log_end} past {}",
            self.log_end
        );
        assert!(
            log_end >= self.high_watermark,
            "truncate to {log_end} below high watermark {}",
            self.high_watermark
        );
        self.log_end = log_end;
        self.durable_end = self.durable_end.min(log_end);
        self.epochs.truncate(log_end);
        self.producers.truncate(log_end);
    }

    /// Empties the log and restarts it at `log_start`, past its end: everything it held
    /// is below the leader's log start, deleted there by retention and committed. The
    /// epochs and producers of the deleted batches go with them (Kafka forgets producers
    /// whose batches retention deleted, too).
    pub fn reset(&mut self, log_start: Offset) {
        assert!(
            log_start > self.log_end,
            "reset to {log_start} at or below log end {}",
            self.log_end
        );
        self.log_start = log_start;
        self.log_end = log_start;
        self.durable_end = log_start;
        self.high_watermark = log_start;
        self.epochs.truncate(Offset(0));
        self.producers = ProducerTable::default();
    }

    /// Retention deleted the head of the log: it now starts at `log_start`. Whatever
    /// retention deleted was committed (it stops at the log's high watermark, which may
    /// be ahead of this replica's after a restart), so the high watermark is raised to it.
    /// A start past the log end is ignored (a truncation or reset is still queued).
    pub fn retained(&mut self, log_start: Offset) {
        if log_start <= self.log_start || log_start > self.log_end {
            return;
        }
        self.log_start = log_start;
        self.raise_high_watermark(log_start);
    }

    /// Takes the storage's report of what is durable.
    pub fn durable(&mut self, durable_end: Offset) {
        self.durable_end = self.durable_end.max(durable_end.min(self.log_end));
    }

    /// Raises the high watermark to `candidate`, bounded by the log end.
    pub fn raise_high_watermark(&mut self, candidate: Offset) {
        let bounded = candidate.min(self.log_end);
        if bounded > self.high_watermark {
            self.high_watermark = bounded;
        }
    }

    /// Checks the offsets' order.
    pub fn invariants(&self) {
        assert!(
            self.log_start <= self.high_watermark,
            "log start {} > high watermark {}",
            self.log_start,
            self.high_watermark
        );
        assert!(
            self.high_watermark <= self.log_end,
            "high watermark {} > log end {}",
            self.high_watermark,
            self.log_end
        );
        assert!(
            self.durable_end <= self.log_end,
            "durable end {} > log end {}",
            self.durable_end,
            self.log_end
        );
        self.epochs.invariants(self.log_end);
    }
}
