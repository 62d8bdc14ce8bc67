//! Controller (node to node, cluster mode): messages for the shard 0 of a node, each fire
//! and forget like `Replicate`. Raft traffic between the controller voters, and what nodes
//! tell the controller leader: heartbeats (with the address to register) and the ISR
//! changes partition leaders ask for; and what the leader tells every node: the sessions
//! it keeps (heartbeat ages, free space). Lost messages are resent on the senders' timers.

/// Request meta. For `Raft` the data region is one encoded raft-rs message; otherwise empty.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ControllerRequest {
    /// A raft message between controller voters.
    Raft {
        /// The sending node.
        from: u32,
    },
    /// A node is alive; the controller leader registers it at `address` if it is new.
    Heartbeat {
        /// The node.
        node: u32,
        /// Where clients reach it (`HOST:PORT`).
        address: String,
        /// Its incarnation (this run of it).
        incarnation: u64,
        /// Bytes free for new data in its data directory (statvfs), if it could tell:
        /// the controller leader refuses a topic that would not fit.
        free_bytes: Option<u64>,
    },
    /// A partition leader asks for a new ISR.
    ChangeIsr {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The proposer's leader epoch; a stale leader is refused.
        leader_epoch: i32,
        /// The partition epoch the proposal builds on; a stale one is refused.
        partition_epoch: u64,
        /// The whole proposed ISR.
        isr: Vec<u32>,
    },
    /// The sender's replica of a partition stopped (its log failed): move its leadership
    /// and take it out of the ISR (`Command::ReplicaOffline`). Resent while it stays
    /// stopped and the view still shows it leading or in the ISR.
    ReplicaOffline {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The leader epoch the replica was in when its log stopped.
        leader_epoch: i32,
        /// The partition epoch the report builds on; a stale one is refused.
        partition_epoch: u64,
    },
    /// `Heartbeat` of a node with a Kafka listener, which is registered too. (Last in
    /// the enum: the other messages keep their tags.)
    HeartbeatListening {
        /// The node.
        node: u32,
        /// Where shardlog clients reach it (`HOST:PORT`).
        address: String,
        /// Where Kafka clients reach it (`HOST:PORT`).
        kafka_address: String,
        /// Its incarnation (this run of it).
        incarnation: u64,
        /// Bytes free for new data in its data directory, if it could tell.
        free_bytes: Option<u64>,
    },
    /// The controller leader's sessions, sent to every other node a few times a second so
    /// that any node can show them (`/v1/status`, the console); only the leader sees
    /// heartbeats. Taken only from the node the receiver knows as the controller leader.
    /// (After the older messages: they keep their tags.)
    Sessions {
        /// The controller leader (the sender).
        leader: u32,
        /// Its Raft term.
        term: u64,
        /// Each registered node's session as the leader sees it.
        nodes: Vec<NodeSession>,
    },
    /// The sender's shard count, sent with each heartbeat: the controller leader spreads
    /// preferred leaders over each node's shards. (After the others: they keep their
    /// tags; a leader of an older version drops it as undecodable.)
    Shards {
        /// The node.
        node: u32,
        /// Its shards (`--shards`).
        shards: u32,
    },
}

/// One node's session on the controller leader, in [`ControllerRequest::Sessions`].
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NodeSession {
    /// The node.
    pub node: u32,
    /// Milliseconds since the leader last heard its heartbeat, when the leader sent this.
    pub heartbeat_age_ms: u64,
    /// Free bytes of its data directory, as its last heartbeat said.
    pub free_bytes: Option<u64>,
}
