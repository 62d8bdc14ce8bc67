//! Metadata: the brokers, and for each topic its partitions with leader, epoch, replicas
//! and in-sync replicas. Clients cache it and refresh it on `NotLeader`.

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MetadataRequest {
    /// Topics asked about; empty means all.
    pub topics: Vec<String>,
}

/// A broker (node).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerMetadata {
    /// Node id.
    pub node_id: u32,
    /// Host clients connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Registered and not fenced (its heartbeats reach the controller).
    pub live: bool,
    /// Decommissioned (`shardlog node decommission`): its replicas move away.
    pub draining: bool,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionMetadata {
    /// Partition number.
    pub partition: u32,
    /// Node id of the leader; `None` while no in-sync replica is live.
    pub leader: Option<u32>,
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// Node ids of all replicas, preferred leader first.
    pub replicas: Vec<u32>,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<u32>,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// `ErrorCode` number (`UnknownTopic` for a topic asked about that does not exist).
    pub error: u16,
    /// Partitions in order.
    pub partitions: Vec<PartitionMetadata>,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MetadataResponse {
    /// Node id of the node answering.
    pub node_id: u32,
    /// The controller leader as the answering node knows it (`None` during an election).
    pub controller: Option<u32>,
    /// All brokers.
    pub brokers: Vec<BrokerMetadata>,
    /// The topics.
    pub topics: Vec<TopicMetadata>,
}
