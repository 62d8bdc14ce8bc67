//! Replica-to-replica messages and their rkyv envelope.
//!
//! ```text
//! Envelope { version, partition, from, to, message }
//!   Ship        leader -> follower  leader_epoch, prev_offset, prev_epoch, high_watermark,
//!                                   batches: whole stored batches from prev_offset, untouched
//!   ShipAck     follower -> leader  leader_epoch, incarnation, log_end, durable_end, resend
//!   EpochQuery  follower -> leader  leader_epoch, incarnation, epoch   (Kafka's
//!   EpochAnswer leader -> follower  leader_epoch, query_epoch, epoch,   OffsetsForLeaderEpoch,
//!                                   end_offset                          KIP-101/KIP-279)
//!   Fenced      any -> stale leader leader_epoch: the newer epoch the sender knows
//!                                   (a hint only: a leader steps down on the
//!                                   controller's word, never on a peer's)
//!   LogStart    leader -> follower  leader_epoch, log_start, high_watermark: the leader's
//!                                   log no longer holds the follower's next offset
//!                                   (retention deleted it); a follower whose log ends
//!                                   below `log_start` empties it and restarts there
//!                                   (Kafka: OFFSET_OUT_OF_RANGE, then truncate fully
//!                                   and start at the leader's log start offset)
//! ```
//! New variants are appended last: the archived layout of the older ones is unchanged,
//! and a node that does not know a variant refuses it in [`decode`] (and drops it).
//! Fields are plain integers so the archive is stable and checkable; the typed views
//! (`Offset`, `LeaderEpoch`) are applied at the edges. Bytes from a socket are untrusted:
//! [`decode`] validates the archive (bytecheck) and the follower validates every batch
//! (length and CRC) before it appends one. Batch bytes ride inside untouched: a follower
//! stores exactly what the leader stored.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use shardlog_engine::{LeaderEpoch, Offset};

use crate::ids::NodeId;

/// Version of the envelope format; a receiver drops envelopes of other versions.
pub const ENVELOPE_VERSION: u16 = 1;

/// A message with its routing: which partition, from which node to which.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`].
    pub version: u16,
    /// The partition this message is about.
    pub partition: u32,
    /// Sending node.
    pub from: u32,
    /// Receiving node.
    pub to: u32,
    /// The message.
    pub message: Message,
}

/// A replica-to-replica message.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Message {
    /// Batches from the leader, or an empty heartbeat carrying the high watermark.
    Ship(Ship),
    /// A follower's progress.
    ShipAck(ShipAck),
    /// A follower asks where the leader's log ends for an epoch.
    EpochQuery(EpochQuery),
    /// The leader's answer.
    EpochAnswer(EpochAnswer),
    /// The receiver's epoch is stale.
    Fenced(Fenced),
    /// The leader's log starts past the follower's next offset.
    LogStart(LogStart),
}

/// Whole batches continuing the follower's log at `prev_offset`.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Ship {
    /// The sender's leader epoch.
    pub leader_epoch: i32,
    /// Offset of the first batch: the follower's log must end here.
    pub prev_offset: u64,
    /// Epoch of the batch just before `prev_offset` in the leader's log (-1 at offset 0).
    pub prev_epoch: i32,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// Zero or more whole batches as stored, concatenated.
    pub batches: Vec<u8>,
}

/// A follower's log end and durable end, sent after each ship and each sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShipAck {
    /// The epoch of the leader this follows.
    pub leader_epoch: i32,
    /// The follower's incarnation.
    pub incarnation: u64,
    /// The follower's log end.
    pub log_end: u64,
    /// The follower's durable end.
    pub durable_end: u64,
    /// A ship did not continue the log: ship again from `log_end`.
    pub resend: bool,
}

/// OffsetsForLeaderEpoch request: where does the leader's `epoch` end?
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EpochQuery {
    /// The epoch of the leader asked.
    pub leader_epoch: i32,
    /// The follower's incarnation.
    pub incarnation: u64,
    /// The latest epoch in the follower's log still to be reconciled.
    pub epoch: i32,
}

/// OffsetsForLeaderEpoch answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EpochAnswer {
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// The epoch asked about.
    pub query_epoch: i32,
    /// The largest epoch at or below `query_epoch` in the leader's log, -1 if none.
    pub epoch: i32,
    /// Where `epoch` ends in the leader's log.
    pub end_offset: u64,
}

/// The sender knows a newer leader epoch than the receiver's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Fenced {
    /// The newer epoch.
    pub leader_epoch: i32,
}

/// The leader's log start, sent instead of a ship when the follower's next offset is
/// below it: what the follower needs was deleted by retention (all of it committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LogStart {
    /// The sender's leader epoch.
    pub leader_epoch: i32,
    /// The first offset the leader's log holds.
    pub log_start: u64,
    /// The leader's high watermark, never below `log_start` (a receiver refuses a message
    /// where it is: the leader's retention stops at its high watermark).
    pub high_watermark: u64,
}

impl Ship {
    /// The sender's epoch, typed.
    #[must_use]
    pub fn epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch)
    }
}

/// Why bytes are not an envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The archive fails validation.
    #[error("invalid envelope: {0}")]
    Invalid(String),
    /// A version this build does not speak.
    #[error("envelope version {0}")]
    Version(u16),
}

/// Builds an envelope around `message`.
#[must_use]
pub fn envelope(partition: u32, from: NodeId, to: NodeId, message: Message) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        partition,
        from: from.0,
        to: to.0,
        message,
    }
}

/// Encodes an envelope into an aligned archive.
pub fn encode(envelope: &Envelope) -> Result<AlignedVec, DecodeError> {
    rkyv::to_bytes::<rancor::Error>(envelope).map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// Validates and decodes untrusted bytes (copied into an aligned buffer first).
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let envelope = rkyv::from_bytes::<Envelope, rancor::Error>(&aligned)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if envelope.version != ENVELOPE_VERSION {
        return Err(DecodeError::Version(envelope.version));
    }
    Ok(envelope)
}

/// An offset field of a message, typed.
#[must_use]
pub fn offset(raw: u64) -> Offset {
    Offset(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let sent = envelope(
            3,
            NodeId(1),
            NodeId(2),
            Message::Ship(Ship {
                leader_epoch: 4,
                prev_offset: 10,
                prev_epoch: 3,
                high_watermark: 7,
                batches: vec![1, 2, 3, 4, 5],
            }),
        );
        let bytes = encode(&sent).expect("encode");
        assert_eq!(decode(&bytes).expect("decode"), sent);
        let reset = envelope(
            3,
            NodeId(1),
            NodeId(2),
            Message::LogStart(LogStart {
                leader_epoch: 4,
                log_start: 1980,
                high_watermark: 2000,
            }),
        );
        let reset_bytes = encode(&reset).expect("encode");
        assert_eq!(decode(&reset_bytes).expect("decode"), reset);
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
        let mut flipped = bytes.to_vec();
        for at in 0..flipped.len() {
            flipped[at] ^= 0x40;
            let _ = decode(&flipped);
            flipped[at] ^= 0x40;
        }
    }
}
