//! ListOffsets: a partition's earliest or latest offset, or the first offset whose record
//! timestamp is at or after a given time.

/// Which offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum OffsetSpec {
    /// The log start.
    Earliest,
    /// The high watermark (the next offset a consumer can read up to).
    Latest,
    /// First record at or after this timestamp (ms since the epoch).
    Timestamp(i64),
}

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListOffsetsRequest {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Which offset.
    pub spec: OffsetSpec,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListOffsetsResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// The offset; `None` for a timestamp after every record.
    pub offset: Option<u64>,
    /// With `NotLeader`: the node id of the leader, if known.
    pub leader_hint: Option<u32>,
    /// Human context for an error.
    pub message: String,
}
