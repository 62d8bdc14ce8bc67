//! Replica-to-replica messages and their rkyv envelope.
//!
//! ```text
//! Envelope { version, partition, from, to, message: Head }
//!   Ship        leader -> follower  leader_epoch, prev_offset, prev_epoch, high_watermark,
//!                                   batches_bytes, batch_count (the batches: whole stored
//!                                   batches from prev_offset, untouched, beside the archive)
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
//! (`Offset`, `LeaderEpoch`) are applied at the edges.
//!
//! A ship's batches do not ride in the archive. The wire form of a message, [`Head`],
//! carries a ship's metadata and the length and count of its batches ([`ShipHead`]); the
//! batches themselves travel beside the archive untouched (the frame's data region), as
//! the leader read them from its log ([`Batches`]: shared buffers, never copied to be
//! sent), and reach the follower as the receive buffer they arrived in. [`seal`] splits a
//! [`Message`] into its head and its batches; [`open`] joins them again on the receiving
//! side and is where bytes from a peer are checked: the data must be exactly as long as
//! the head says and hold exactly `batch_count` whole batches, each with a valid header
//! and CRC. That is the only CRC check of a shipped batch on the follower (its append
//! trusts it).

use bytes::Bytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use shardlog_engine::batch::{self, BatchHeader, Corruption};
use shardlog_engine::{LeaderEpoch, Offset};

use crate::ids::NodeId;

/// Version of the envelope format; a receiver drops envelopes of other versions.
/// 2: a ship's batches travel beside the envelope, which holds their length and count
/// (version 1 carried them inside the archive).
pub const ENVELOPE_VERSION: u16 = 2;

/// A message's wire form with its routing: which partition, from which node to which.
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
    /// The message, a ship without its batches.
    pub message: Head,
}

/// The wire form of a [`Message`]: the same, but a ship's batches are only counted.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Head {
    /// A ship's metadata; its batches follow the envelope.
    Ship(ShipHead),
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

/// A ship as the envelope carries it: everything but the batches, and what the batches
/// that follow must be (a receiver refuses data that is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShipHead {
    /// The sender's leader epoch.
    pub leader_epoch: i32,
    /// Offset of the first batch: the follower's log must end here.
    pub prev_offset: u64,
    /// Epoch of the batch just before `prev_offset` in the leader's log (-1 at offset 0).
    pub prev_epoch: i32,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// Bytes of the batches that follow the envelope.
    pub batches_bytes: u64,
    /// How many whole batches they are.
    pub batch_count: u32,
}

/// A replica-to-replica message.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ship {
    /// The sender's leader epoch.
    pub leader_epoch: i32,
    /// Offset of the first batch: the follower's log must end here.
    pub prev_offset: u64,
    /// Epoch of the batch just before `prev_offset` in the leader's log (-1 at offset 0).
    pub prev_epoch: i32,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// Zero or more whole batches as stored.
    pub batches: Batches,
}

/// Whole batches as a log stores them, in offset order, in shared buffers: the runs a
/// leader's log read returned (its tail cache's or a disk read's buffers, sliced, never
/// copied), or the receive buffer of a ship [`open`] checked. A chunk holds whole batches
/// only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batches {
    chunks: Vec<Bytes>,
    count: u32,
}

impl Batches {
    /// Adds `chunk`, `batch_count` whole batches from this node's log (checked when they
    /// were stored, and when read from disk). Empty chunks are left out.
    pub fn push(&mut self, chunk: Bytes, batch_count: u32) {
        if !chunk.is_empty() {
            self.chunks.push(chunk);
            self.count += batch_count;
        }
    }

    /// The chunks, in offset order.
    #[must_use]
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// How many batches.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Total bytes.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The offset after the last batch, if any.
    #[must_use]
    pub fn end_offset(&self) -> Option<Offset> {
        headers(self.chunks.last()?)
            .last()
            .map(|(_, h)| h.next_offset())
    }

    /// Every batch's header, with the chunk it is in and its position there.
    pub fn headers(&self) -> impl Iterator<Item = (&Bytes, usize, BatchHeader)> {
        self.chunks
            .iter()
            .flat_map(|chunk| headers(chunk).map(move |(at, header)| (chunk, at, header)))
    }
}

/// The headers of the whole batches at the start of `chunk`, with their positions; stops
/// at the first that does not parse or does not fit.
pub fn headers(chunk: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(chunk.get(at..)?).ok()?;
        let end = at.checked_add(header.size as usize)?;
        if end > chunk.len() {
            return None;
        }
        let item = (at, header);
        at = end;
        Some(item)
    })
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

/// A message received and checked ([`open`]), with its routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The partition it is about.
    pub partition: u32,
    /// The node the envelope names as its sender.
    pub from: u32,
    /// The node it is for.
    pub to: u32,
    /// The message, a ship with its checked batches.
    pub message: Message,
}

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The archive fails validation.
    #[error("invalid envelope: {0}")]
    Invalid(String),
    /// A version this build does not speak.
    #[error("envelope version {0} (this node speaks {ENVELOPE_VERSION})")]
    Version(u16),
    /// The data beside the envelope is not as long as the envelope says.
    #[error("the envelope announces {announced} bytes of batches, {received} came")]
    DataLength {
        /// What the envelope says.
        announced: u64,
        /// What the data region holds.
        received: u64,
    },
    /// The data does not hold as many batches as the envelope says.
    #[error("the envelope announces {announced} batches, the data holds {received}")]
    BatchCount {
        /// What the envelope says.
        announced: u32,
        /// Whole batches found before the data ended.
        received: u32,
    },
    /// A batch in the data is torn (its length runs past the data) or corrupt (header or
    /// CRC).
    #[error("batch at byte {position} of the shipped data: {reason}")]
    CorruptBatch {
        /// Where it starts in the data.
        position: u64,
        /// What is wrong.
        reason: Corruption,
    },
    /// A message that carries no batches came with data.
    #[error("{0} bytes of data beside a message that carries none")]
    UnexpectedData(u64),
}

/// Splits `message` into its wire form (with its routing) and the batches that travel
/// beside it (empty but for a ship).
#[must_use]
pub fn seal(partition: u32, from: NodeId, to: NodeId, message: Message) -> (Envelope, Batches) {
    let (head, batches) = match message {
        Message::Ship(ship) => {
            let head = ShipHead {
                leader_epoch: ship.leader_epoch,
                prev_offset: ship.prev_offset,
                prev_epoch: ship.prev_epoch,
                high_watermark: ship.high_watermark,
                batches_bytes: ship.batches.bytes() as u64,
                batch_count: ship.batches.count(),
            };
            (Head::Ship(head), ship.batches)
        }
        Message::ShipAck(ack) => (Head::ShipAck(ack), Batches::default()),
        Message::EpochQuery(query) => (Head::EpochQuery(query), Batches::default()),
        Message::EpochAnswer(answer) => (Head::EpochAnswer(answer), Batches::default()),
        Message::Fenced(fenced) => (Head::Fenced(fenced), Batches::default()),
        Message::LogStart(start) => (Head::LogStart(start), Batches::default()),
    };
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        partition,
        from: from.0,
        to: to.0,
        message: head,
    };
    (envelope, batches)
}

/// Joins a received envelope and the data that came beside it into the message, checking
/// the data against the envelope: its length, the batch count, each batch's header,
/// length and CRC. The batches stay in `data` (sliced, not copied).
pub fn open(envelope: Envelope, data: Bytes) -> Result<Received, DecodeError> {
    if envelope.version != ENVELOPE_VERSION {
        return Err(DecodeError::Version(envelope.version));
    }
    let message = match envelope.message {
        Head::Ship(head) => Message::Ship(ship(head, data)?),
        _ if !data.is_empty() => return Err(DecodeError::UnexpectedData(data.len() as u64)),
        Head::ShipAck(ack) => Message::ShipAck(ack),
        Head::EpochQuery(query) => Message::EpochQuery(query),
        Head::EpochAnswer(answer) => Message::EpochAnswer(answer),
        Head::Fenced(fenced) => Message::Fenced(fenced),
        Head::LogStart(start) => Message::LogStart(start),
    };
    Ok(Received {
        partition: envelope.partition,
        from: envelope.from,
        to: envelope.to,
        message,
    })
}

/// A ship of `head` with `data` as its batches, each checked once.
fn ship(head: ShipHead, data: Bytes) -> Result<Ship, DecodeError> {
    if head.batches_bytes != data.len() as u64 {
        return Err(DecodeError::DataLength {
            announced: head.batches_bytes,
            received: data.len() as u64,
        });
    }
    let mut count = 0u32;
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        let position = (data.len() - rest.len()) as u64;
        let corrupt = |reason| DecodeError::CorruptBatch { position, reason };
        let header = BatchHeader::parse(rest).map_err(corrupt)?;
        let size = header.size as usize;
        let one = rest.get(..size).ok_or_else(|| {
            corrupt(Corruption::Truncated {
                needed: u64::from(header.size),
                available: rest.len() as u64,
            })
        })?;
        batch::validate(one).map_err(corrupt)?;
        count = count.saturating_add(1);
        rest = rest.get(size..).unwrap_or_default();
    }
    if count != head.batch_count {
        return Err(DecodeError::BatchCount {
            announced: head.batch_count,
            received: count,
        });
    }
    let mut batches = Batches::default();
    batches.push(data, count);
    Ok(Ship {
        leader_epoch: head.leader_epoch,
        prev_offset: head.prev_offset,
        prev_epoch: head.prev_epoch,
        high_watermark: head.high_watermark,
        batches,
    })
}

/// Encodes an envelope into an aligned archive.
pub fn encode(envelope: &Envelope) -> Result<AlignedVec, DecodeError> {
    rkyv::to_bytes::<rancor::Error>(envelope).map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// Validates and decodes an untrusted envelope archive (copied into an aligned buffer
/// first); [`open`] then checks the data that came beside it.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let archived = rkyv::access::<ArchivedEnvelope, rancor::Error>(&aligned)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    from_archived(archived)
}

/// The envelope of a validated archive (bytecheck passed: a receiver accessed it in
/// place), refused if it is of another version.
pub fn from_archived(archived: &ArchivedEnvelope) -> Result<Envelope, DecodeError> {
    let version = archived.version.to_native();
    if version != ENVELOPE_VERSION {
        return Err(DecodeError::Version(version));
    }
    rkyv::deserialize::<Envelope, rancor::Error>(archived)
        .map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// An offset field of a message, typed.
#[must_use]
pub fn offset(raw: u64) -> Offset {
    Offset(raw)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use shardlog_engine::TimestampMs;
    use shardlog_engine::record::BatchBuilder;

    /// A valid batch of `records` records at `base`.
    fn stored(base: u64, records: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for i in 0..records {
            builder.push(TimestampMs(1_000 + i as i64), None, Some(b"value"), &[]);
        }
        let mut bytes = builder.finish();
        batch::patch_base(&mut bytes, Offset(base), LeaderEpoch(4));
        bytes
    }

    fn ship_of(chunks: &[Vec<u8>]) -> Message {
        let mut batches = Batches::default();
        for chunk in chunks {
            let count = u32::try_from(headers(chunk).count()).unwrap();
            batches.push(Bytes::copy_from_slice(chunk), count);
        }
        Message::Ship(Ship {
            leader_epoch: 4,
            prev_offset: 10,
            prev_epoch: 3,
            high_watermark: 7,
            batches,
        })
    }

    /// What a receiver gets: the archive and the chunks as one data region.
    fn wire(message: Message) -> (AlignedVec, Bytes) {
        let (envelope, batches) = seal(3, NodeId(1), NodeId(2), message);
        let data: Vec<u8> = batches.chunks().iter().flat_map(|c| c.to_vec()).collect();
        (encode(&envelope).unwrap(), Bytes::from(data))
    }

    fn received(archive: &[u8], data: Bytes) -> Result<Received, DecodeError> {
        open(decode(archive)?, data)
    }

    #[test]
    fn roundtrip() {
        let first = [stored(10, 2), stored(12, 1)].concat();
        let sent = ship_of(&[first, stored(13, 3)]);
        let (archive, data) = wire(sent.clone());
        let got = received(&archive, data.clone()).unwrap();
        assert_eq!((got.partition, got.from, got.to), (3, 1, 2));
        let Message::Ship(ship) = got.message else {
            panic!("not a ship")
        };
        assert_eq!(ship.batches.count(), 3);
        assert_eq!(ship.batches.chunks(), [data]);
        assert_eq!(ship.batches.end_offset(), Some(Offset(16)));
        let reset = Message::LogStart(LogStart {
            leader_epoch: 4,
            log_start: 1980,
            high_watermark: 2000,
        });
        let (archive, data) = wire(reset.clone());
        assert_eq!(received(&archive, data).unwrap().message, reset);
    }

    #[test]
    fn data_that_disagrees_with_the_envelope_is_refused() {
        let two = [stored(10, 2), stored(12, 1)].concat();
        let (archive, data) = wire(ship_of(std::slice::from_ref(&two)));
        // Shorter and longer than announced.
        let short = data.slice(..data.len() - 1);
        assert!(matches!(
            received(&archive, short),
            Err(DecodeError::DataLength { .. })
        ));
        let mut long = data.to_vec();
        long.push(0);
        assert!(matches!(
            received(&archive, Bytes::from(long)),
            Err(DecodeError::DataLength { .. })
        ));
        // A bit flipped inside a batch: its CRC.
        let mut flipped = data.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            received(&archive, Bytes::from(flipped)),
            Err(DecodeError::CorruptBatch { position, .. }) if position == two.len() as u64 - stored(12, 1).len() as u64
        ));
        // One batch announced, two sent (lengths agree: the envelope lies about the count).
        let (envelope, batches) =
            seal(3, NodeId(1), NodeId(2), ship_of(std::slice::from_ref(&two)));
        let Head::Ship(head) = envelope.message else {
            panic!("not a ship")
        };
        let lying = Envelope {
            message: Head::Ship(ShipHead {
                batch_count: 1,
                ..head
            }),
            ..envelope.clone()
        };
        assert!(matches!(
            open(lying, batches.chunks()[0].clone()),
            Err(DecodeError::BatchCount {
                announced: 1,
                received: 2
            })
        ));
        // Data beside an ack.
        let ack = Message::ShipAck(ShipAck {
            leader_epoch: 4,
            incarnation: 1,
            log_end: 0,
            durable_end: 0,
            resend: false,
        });
        let (archive, _) = wire(ack);
        assert_eq!(
            received(&archive, Bytes::from_static(b"x")),
            Err(DecodeError::UnexpectedData(1))
        );
    }

    #[test]
    fn a_torn_batch_is_refused_at_every_cut() {
        let two = [stored(10, 2), stored(12, 3)].concat();
        let (envelope, _) = seal(3, NodeId(1), NodeId(2), ship_of(std::slice::from_ref(&two)));
        let Head::Ship(head) = envelope.message else {
            panic!("not a ship")
        };
        for cut in 1..two.len() {
            // The envelope agrees with the cut length: only the batch walk can tell.
            let lying = Envelope {
                message: Head::Ship(ShipHead {
                    batches_bytes: cut as u64,
                    ..head
                }),
                ..envelope.clone()
            };
            let result = open(lying, Bytes::copy_from_slice(&two[..cut]));
            assert!(
                matches!(
                    result,
                    Err(DecodeError::CorruptBatch { .. } | DecodeError::BatchCount { .. })
                ),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let (archive, data) = wire(ship_of(&[stored(10, 2)]));
        for cut in 0..archive.len() {
            let _ = received(&archive[..cut], data.clone());
        }
        let mut flipped = archive.to_vec();
        for at in 0..flipped.len() {
            flipped[at] ^= 0x40;
            let _ = received(&flipped, data.clone());
            flipped[at] ^= 0x40;
        }
        // The base offset (bytes 0..8) and the leader epoch (12..16) lie outside the CRC,
        // as in Kafka: the follower checks those against its log. Everything else is
        // caught here.
        let mut noisy = data.to_vec();
        for at in 0..noisy.len() {
            noisy[at] ^= 0x40;
            let result = received(&archive, Bytes::from(noisy.clone()));
            if (8..12).contains(&at) || at >= 16 {
                assert!(result.is_err(), "flip at {at} passed");
            }
            noisy[at] ^= 0x40;
        }
    }
}
