//! Replicate (node to node): one replicator message about one partition, fire and forget.
//! The data region is the replicator's encoded `Envelope` (partition, sender, receiver
//! and the message; a `Ship` carries the stored batch bytes untouched). There is no reply:
//! the replicas' own timers resend what got lost.

/// Request meta; data = one encoded `shardlog_replicator::Envelope`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReplicateRequest {
    /// Topic.
    pub topic: String,
    /// Partition (the envelope must name the same one).
    pub partition: u32,
}
