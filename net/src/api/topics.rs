//! CreateTopic and DeleteTopic.

/// A topic's settings (Kafka-style names; absent values take the server's defaults).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct TopicConfig {
    /// `segment.bytes`.
    pub segment_bytes: Option<u64>,
    /// `retention.bytes` per partition.
    pub retention_bytes: Option<u64>,
    /// `retention.ms`.
    pub retention_ms: Option<u64>,
    /// `min.insync.replicas`: the smallest ISR that acknowledges `acks=all` (cluster mode).
    pub min_insync: Option<u16>,
}

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CreateTopicRequest {
    /// Topic name (see `valid_topic_name`).
    pub name: String,
    /// Partitions, at least 1.
    pub partitions: u32,
    /// Replicas per partition; 0 takes the server's default.
    pub replication_factor: u16,
    /// Settings.
    pub config: TopicConfig,
}

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DeleteTopicRequest {
    /// Topic name.
    pub name: String,
}

/// Response meta of both; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// Human context for an error.
    pub message: String,
}
