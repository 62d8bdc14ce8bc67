//! Produce: append one record batch (the frame's data region, Kafka v2 bytes) to a
//! partition. The leader assigns the offsets; the reply names the first one.

/// How many replicas must hold a batch before the producer is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Acks {
    /// No answer at all (fire and forget).
    None,
    /// Answer after the leader's own write (under its flush policy).
    Leader,
    /// Answer once the in-sync replicas hold it (one node: same as `Leader`).
    All,
}

/// Request meta; data = exactly one batch.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProduceRequest {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// When to answer.
    pub acks: Acks,
    /// How long the server may take before answering `Timeout`.
    pub timeout_ms: u32,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProduceResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// With `NotLeader`: the node id of the leader, if known.
    pub leader_hint: Option<u32>,
    /// Human context for an error.
    pub message: String,
}
