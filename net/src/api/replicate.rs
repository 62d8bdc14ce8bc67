//! Replicate (node to node): one replicator message about one partition, fire and forget.
//! The meta holds the topic and the replicator's `Envelope` (partition, sender, receiver
//! and the message's wire form); a `Ship`'s batches are the data region, the stored
//! bytes untouched, exactly as long and as many as the envelope says (the receiver checks
//! it, and each batch's CRC, in `shardlog_replicator::message::open`). There is no reply:
//! the replicas' own timers resend what got lost.
//!
//! Versions: the frame header's version of a `Replicate` frame is [`REPLICATE_VERSION`],
//! not the client apis' `VERSION`. A node refuses a `Replicate` frame of another version
//! with an `UnsupportedVersion` error reply, logs it and counts it, and never tries to
//! read its meta: version 1 carried the batches inside the envelope, in the data region.

/// The `Replicate` frame version this build sends and accepts. 2: the batches are the
/// data region and the envelope the meta (issue 15); 1: the envelope with the batches
/// inside it was the data region.
pub const REPLICATE_VERSION: u16 = 2;

/// Request meta; data = the batches of a ship (nothing for other messages).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReplicateRequest {
    /// Topic.
    pub topic: String,
    /// The message, its partition and its routing.
    pub envelope: shardlog_replicator::Envelope,
}
