//! Why a produce request was not appended or not acknowledged.

use shardlog_engine::Offset;
use shardlog_engine::batch::Corruption;

/// The answer to a produce request that failed; each variant says what the client does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// This replica does not lead the partition (any more): refresh metadata and retry.
    #[error("not the leader")]
    NotLeader,
    /// `acks=all` while the ISR is smaller than `min_insync`: retry later.
    #[error("not enough in-sync replicas")]
    NotEnoughReplicas,
    /// The batch bytes are not a valid batch: do not retry.
    #[error("corrupt batch: {0}")]
    CorruptBatch(Corruption),
    /// The batch's sequence does not follow the producer's last one: resend in order.
    #[error("out of order sequence: expected {expected}, found {found}")]
    OutOfOrderSequence {
        /// The next sequence this partition expects from the producer.
        expected: i32,
        /// The batch's base sequence.
        found: i32,
    },
    /// A newer epoch of this producer id exists: this producer is a zombie.
    #[error("producer fenced: epoch {current} is current")]
    ProducerFenced {
        /// The producer epoch this partition knows.
        current: i16,
    },
    /// The batch was appended at `base_offset` but not acknowledged in time; it may still
    /// commit. An idempotent producer retries and gets the original offsets.
    #[error("timed out waiting for replication of offset {base_offset}")]
    Timeout {
        /// Where the batch was appended.
        base_offset: Offset,
    },
    /// Too many requests waiting: retry later.
    #[error("too many produce requests waiting")]
    Busy,
}

/// Why a snapshot payload was not used (the opening replica falls back to an older
/// snapshot, or replays the whole log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The payload ends early or has bytes left over.
    #[error("payload length does not match its contents")]
    Length,
    /// A version this build does not read.
    #[error("payload version {0}")]
    Version(u32),
    /// A count beyond its bound.
    #[error("count {count} beyond {max}")]
    Count {
        /// The count found.
        count: u32,
        /// Its bound.
        max: usize,
    },
    /// Values that break the state's rules (order, offsets past the snapshot).
    #[error("invalid state: {0}")]
    Invalid(&'static str),
}
