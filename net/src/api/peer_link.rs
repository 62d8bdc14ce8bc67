//! `BindShard` (node to node): the first frame a node sends on a link it opened, naming
//! the shard that sent it. The listener hands the link to its own shard of that number,
//! which answers: a partition belongs to the same shard on every node with the same shard
//! count, so that shard's ships and acks arrive where their replicas are and never cross
//! shards there. The dialer sends nothing else until the answer comes, so nothing is read
//! ahead when the socket moves.

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BindShardRequest {
    /// The dialing shard's number: the listener's shard of that number should serve it.
    pub shard: u32,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BindShardResponse {
    /// `ErrorCode` number (0: served, by the shard below).
    pub error: u16,
    /// The shard that serves the link: the one asked for, or the one it landed on when
    /// it could not move (TLS, a node with fewer shards, bytes read ahead).
    pub shard: u32,
}
