//! ReassignPartition (move a partition's replicas; answered with a `TopicResponse` once
//! the controller applied the move's start, not its end) and ListReassignments (the
//! moves in progress, from the answering node's metadata).

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReassignPartitionRequest {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The target replicas (node ids, distinct), preferred leader first.
    pub replicas: Vec<u32>,
    /// Bytes per second the leader ships to the catching-up replicas of this move;
    /// `None`: the leader node's `move_throttle_bytes`; 0: unthrottled.
    pub throttle_bytes: Option<u64>,
}

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListReassignmentsRequest {
    /// Topics asked about; empty means all.
    pub topics: Vec<String>,
}

/// One partition's move in progress.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionMove {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The replicas the move ends with.
    pub target: Vec<u32>,
    /// Replicas being added (catching up until they are in the ISR).
    pub adding: Vec<u32>,
    /// Replicas removed when the move commits.
    pub removing: Vec<u32>,
    /// The move's own throttle (bytes per second, 0 none); `None`: the leader node's.
    pub throttle_bytes: Option<u64>,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListReassignmentsResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// Human context for an error.
    pub message: String,
    /// The moves in progress, by topic and partition.
    pub moves: Vec<PartitionMove>,
}
