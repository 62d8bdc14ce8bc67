//! Kafka's consumer protocol: how a `consumer` group's members describe their
//! subscription (JoinGroup metadata) and the leader hands out partitions (SyncGroup
//! assignments). The coordinator never reads these bytes; members do. Writing Kafka's
//! encoding lets shardlog consumers and Kafka consumers share a group, and lets `shardlog
//! group describe` show any member's assignment.
//!
//! ```text
//! Subscription (written as v0; later versions add fields after these, which a reader
//! of an older version skips):
//!   version        int16
//!   topics         int32 count, then per topic: int16 length + UTF-8 name
//!   user_data      int32 length (-1: null) + bytes
//! Assignment (written as v0; same rule):
//!   version        int16
//!   partitions     int32 count, then per topic: int16 length + UTF-8 name,
//!                  int32 count + int32 partition ids
//!   user_data      int32 length (-1: null) + bytes
//! ```
//! Big-endian, as all of Kafka's wire. The bytes come from other clients: every count is
//! checked against the bytes left before anything is allocated, and bad input is an
//! error value, never a panic.
#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;

/// The protocol type of groups of consumers.
pub const PROTOCOL_TYPE: &str = "consumer";

/// Why bytes are not a subscription or an assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consumer protocol: {0}")]
pub struct DecodeError(&'static str);

/// A member's subscription: the topics it reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Topic names.
    pub topics: Vec<String>,
}

/// A member's assignment: partitions per topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// Topic -> partitions, sorted.
    pub partitions: BTreeMap<String, Vec<u32>>,
}

impl Subscription {
    /// Kafka's v0 encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0i16.to_be_bytes());
        put_len(&mut out, self.topics.len());
        for topic in &self.topics {
            put_str(&mut out, topic);
        }
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out
    }

    /// Decodes any version (fields after v0's are ignored).
    pub fn decode(bytes: &[u8]) -> Result<Subscription, DecodeError> {
        let mut reader = Reader(bytes);
        reader.version()?;
        let count = reader.count(2)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            topics.push(reader.string()?);
        }
        Ok(Subscription { topics })
    }
}

impl Assignment {
    /// Kafka's v0 encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0i16.to_be_bytes());
        put_len(&mut out, self.partitions.len());
        for (topic, partitions) in &self.partitions {
            put_str(&mut out, topic);
            put_len(&mut out, partitions.len());
            for partition in partitions {
                let id = i32::try_from(*partition).unwrap_or(i32::MAX);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out
    }

    /// Decodes any version (fields after v0's are ignored). Empty bytes are an empty
    /// assignment (a member the leader gave nothing, or a group in a rebalance).
    pub fn decode(bytes: &[u8]) -> Result<Assignment, DecodeError> {
        if bytes.is_empty() {
            return Ok(Assignment::default());
        }
        let mut reader = Reader(bytes);
        reader.version()?;
        let topics = reader.count(6)?;
        let mut partitions = BTreeMap::new();
        for _ in 0..topics {
            let topic = reader.string()?;
            let count = reader.count(4)?;
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                let id = u32::try_from(reader.i32()?)
                    .map_err(|_| DecodeError("a negative partition id"))?;
                ids.push(id);
            }
            // A topic named twice is merged; ids come out sorted and unique.
            let known: &mut Vec<u32> = partitions.entry(topic).or_default();
            known.extend(ids);
            known.sort_unstable();
            known.dedup();
        }
        Ok(Assignment { partitions })
    }

    /// Every (topic, partition), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.partitions
            .iter()
            .flat_map(|(topic, ids)| ids.iter().map(move |id| (topic.as_str(), *id)))
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = i32::try_from(len).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Topic names are at most 249 bytes; a longer string is cut rather than mis-framed.
    let bytes = s.as_bytes();
    let len = bytes.len().min(i16::MAX as usize);
    let prefix = i16::try_from(len).unwrap_or(i16::MAX);
    out.extend_from_slice(&prefix.to_be_bytes());
    out.extend_from_slice(bytes.get(..len).unwrap_or_default());
}

/// Reads big-endian fields off the front of untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError("truncated"))?;
        self.0 = rest;
        Ok(*head)
    }

    fn version(&mut self) -> Result<i16, DecodeError> {
        let version = i16::from_be_bytes(self.take()?);
        if version < 0 {
            return Err(DecodeError("a negative version"));
        }
        Ok(version)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    /// An array count, checked against the bytes left: each element takes at least
    /// `element_min` bytes, so a count the input cannot hold is refused before any
    /// allocation.
    fn count(&mut self, element_min: usize) -> Result<usize, DecodeError> {
        let count = usize::try_from(self.i32()?).map_err(|_| DecodeError("a negative count"))?;
        if count.saturating_mul(element_min) > self.0.len() {
            return Err(DecodeError("a count longer than the bytes"));
        }
        Ok(count)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::try_from(i16::from_be_bytes(self.take()?))
            .map_err(|_| DecodeError("a null or negative string length"))?;
        let bytes = self.0.get(..len).ok_or(DecodeError("truncated string"))?;
        self.0 = self.0.get(len..).unwrap_or_default();
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("a string that is not UTF-8"))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subscription_roundtrips_and_matches_kafka_bytes() {
        let subscription = Subscription {
            topics: vec!["ab".into(), "c".into()],
        };
        let bytes = subscription.encode();
        assert_eq!(
            bytes,
            [
                0, 0, 0, 0, 0, 2, 0, 2, b'a', b'b', 0, 1, b'c', 0xff, 0xff, 0xff, 0xff
            ]
        );
        assert_eq!(Subscription::decode(&bytes), Ok(subscription));
    }

    #[test]
    fn assignment_roundtrips() {
        let mut assignment = Assignment::default();
        assignment.partitions.insert("t".into(), vec![0, 2, 3]);
        assignment.partitions.insert("u".into(), vec![1]);
        let bytes = assignment.encode();
        assert_eq!(Assignment::decode(&bytes), Ok(assignment.clone()));
        let pairs: Vec<_> = assignment.iter().collect();
        assert_eq!(pairs, [("t", 0), ("t", 2), ("t", 3), ("u", 1)]);
        assert_eq!(Assignment::decode(&[]), Ok(Assignment::default()));
    }

    #[test]
    fn later_versions_keep_their_v0_fields() {
        // A v1 subscription: v0's fields, then owned partitions (one topic, none owned).
        let mut bytes = Subscription {
            topics: vec!["t".into()],
        }
        .encode();
        bytes[1] = 1;
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]);
        assert_eq!(Subscription::decode(&bytes).unwrap().topics, ["t"]);
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let bytes = [0, 0, 0x7f, 0xff, 0xff, 0xff];
        assert!(Subscription::decode(&bytes).is_err());
        assert!(Assignment::decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Subscription::decode(&bytes);
            let _ = Assignment::decode(&bytes);
        }
    }
}
