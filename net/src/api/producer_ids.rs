//! Producer ids for idempotent producers.
//!
//! `InitProducerId` (client api, any node): the node answers with an id from the block
//! of ids the controller reserved for it (`AllocateProducerIds`, node to node, on the
//! peer listener: a node whose block is used up asks the controller leader for the next
//! one). Ids are unique in the cluster and across restarts: the controller's next
//! unreserved id is replicated metadata, and a node takes a fresh block after every
//! start. A new id's epoch is 0.

/// Request meta; no data. (Nothing to say yet: every request gets a new producer id.)
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct InitProducerIdRequest {}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct InitProducerIdResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// The new producer id (`-1` with an error).
    pub producer_id: i64,
    /// Its epoch (0 for a new id).
    pub producer_epoch: i16,
    /// Human context for an error.
    pub message: String,
}

/// Request meta (node to node, to the controller leader); no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AllocateProducerIdsRequest {
    /// The node asking; must be the node the peer handshake proved.
    pub node: u32,
    /// How many ids it wants.
    pub count: u32,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AllocateProducerIdsResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// The block's first id.
    pub first: u64,
    /// Ids in the block: `[first, first + count)`.
    pub count: u32,
    /// Human context for an error.
    pub message: String,
}
