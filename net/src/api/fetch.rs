//! Fetch: read whole batches from an offset. At the tail, the server may hold the request
//! up to `max_wait_ms` until `min_bytes` are there (long poll). Consumers only ever get
//! batches below the high watermark.

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FetchRequest {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// First offset wanted; the reply starts with the batch holding it.
    pub offset: u64,
    /// Byte budget of the reply (at least one batch is returned regardless).
    pub max_bytes: u32,
    /// Longest wait for data at the tail.
    pub max_wait_ms: u32,
    /// Bytes to wait for before answering (0: answer at once).
    pub min_bytes: u32,
}

/// Response meta; data = whole batches, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FetchResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// Offsets below it are committed and readable.
    pub high_watermark: u64,
    /// First offset held.
    pub log_start: u64,
    /// Where to fetch next.
    pub next_offset: u64,
    /// With `NotLeader`: the node id of the leader, if known.
    pub leader_hint: Option<u32>,
    /// Human context for an error.
    pub message: String,
}
