//! Consumer groups on the shardlog protocol: the classic Kafka group protocol's apis
//! (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, DescribeGroups, ListGroups) as rkyv messages. The groups are the same ones
//! Kafka clients join on the Kafka listener: one coordinator per group (the leader of its
//! `__consumer_offsets` partition), one state machine, one store of committed offsets.
//!
//! A member's subscription (JoinGroup `protocols[].metadata`) and assignment (SyncGroup
//! `assignments[].assignment`) are opaque bytes to the coordinator; the shardlog client
//! writes them in Kafka's consumer protocol encoding (`client::consumer_protocol`), so a
//! shardlog consumer and a Kafka consumer can share a group and `shardlog group
//! describe` reads either's assignment.
//!
//! Every request except FindCoordinator and ListGroups goes to the group's coordinator;
//! another node answers `NotCoordinator`, a coordinator still reading its offsets
//! partition `CoordinatorLoading` (look the coordinator up again, retry). ListGroups is
//! answered by each node for the groups it coordinates. No request carries data.

/// Longest group id accepted (bytes).
pub const GROUP_ID_MAX: usize = 1024;

/// Request meta: which node coordinates `group`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FindCoordinatorRequest {
    /// The group id.
    pub group: String,
}

/// Response meta.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FindCoordinatorResponse {
    /// `ErrorCode` number (`CoordinatorNotAvailable`: the offsets partition has no leader).
    pub error: u16,
    /// The coordinator's node id.
    pub node_id: u32,
    /// Its client address (as `Metadata` advertises it).
    pub host: String,
    /// Its client port.
    pub port: u16,
    /// Human context for an error.
    pub message: String,
}

/// One protocol (assignor) a member can use, with its subscription in that protocol.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GroupProtocol {
    /// The protocol's name (`range`, `roundrobin`, ...).
    pub name: String,
    /// The member's metadata in it (for `consumer` groups: a consumer-protocol
    /// subscription).
    pub metadata: Vec<u8>,
}

/// Request meta: join (or rejoin) `group`; answered once the group's rebalance completes.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct JoinGroupRequest {
    /// The group id.
    pub group: String,
    /// The member id the coordinator gave this member, empty for a new member.
    pub member_id: String,
    /// The client's name, shown by DescribeGroups.
    pub client_id: String,
    /// A member silent (no heartbeat) this long is removed from the group.
    pub session_timeout_ms: u32,
    /// How long the coordinator waits for every member to rejoin in a rebalance.
    pub rebalance_timeout_ms: u32,
    /// The kind of group (`consumer`).
    pub protocol_type: String,
    /// The protocols this member supports, preferred first.
    pub protocols: Vec<GroupProtocol>,
}

/// A member as the leader sees it in the JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct JoinedMember {
    /// Its member id.
    pub member_id: String,
    /// Its metadata in the chosen protocol.
    pub metadata: Vec<u8>,
}

/// Response meta.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct JoinGroupResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// The group's new generation.
    pub generation: i32,
    /// The protocol chosen for this generation.
    pub protocol: String,
    /// The leader's member id: the leader assigns the partitions (SyncGroup).
    pub leader: String,
    /// This member's id (new members learn theirs here).
    pub member_id: String,
    /// Every member with its metadata, for the leader only (empty for the others).
    pub members: Vec<JoinedMember>,
    /// Human context for an error.
    pub message: String,
}

/// One member's assignment, as the leader sends it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MemberAssignment {
    /// The member.
    pub member_id: String,
    /// Its assignment (for `consumer` groups: a consumer-protocol assignment).
    pub assignment: Vec<u8>,
}

/// Request meta: after a JoinGroup, fetch this member's assignment (the leader brings
/// everyone's).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SyncGroupRequest {
    /// The group id.
    pub group: String,
    /// The generation JoinGroup answered.
    pub generation: i32,
    /// This member's id.
    pub member_id: String,
    /// The leader: every member's assignment; the others: empty.
    pub assignments: Vec<MemberAssignment>,
}

/// Response meta.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SyncGroupResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// This member's assignment.
    pub assignment: Vec<u8>,
    /// Human context for an error.
    pub message: String,
}

/// Request meta: a member is alive; the answer says whether a rebalance began
/// (`RebalanceInProgress`: rejoin).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HeartbeatRequest {
    /// The group id.
    pub group: String,
    /// The member's generation.
    pub generation: i32,
    /// The member.
    pub member_id: String,
}

/// Response meta of Heartbeat and LeaveGroup.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GroupResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// Human context for an error.
    pub message: String,
}

/// Request meta: a member leaves the group (its partitions go to the others at once).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LeaveGroupRequest {
    /// The group id.
    pub group: String,
    /// The member.
    pub member_id: String,
}

/// One partition's offset to commit.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OffsetToCommit {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The next offset the group reads (one past the last record it consumed).
    pub offset: u64,
    /// Free text kept with the offset.
    pub metadata: String,
}

/// Request meta: commit offsets for `group`. A member commits with its generation and id
/// (a stale generation is refused); a tool commits with generation `-1` and an empty
/// member id, accepted only while the group has no members.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OffsetCommitRequest {
    /// The group id.
    pub group: String,
    /// The member's generation, or `-1`.
    pub generation: i32,
    /// The member, or empty.
    pub member_id: String,
    /// The offsets.
    pub offsets: Vec<OffsetToCommit>,
}

/// One partition's answer to a commit.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionError {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// `ErrorCode` number.
    pub error: u16,
}

/// Response meta. Answered once the offsets are committed (replicated like any record).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OffsetCommitResponse {
    /// `ErrorCode` number for the whole request (the group: not the coordinator, a stale
    /// generation, ...).
    pub error: u16,
    /// Per partition, when `error` is 0.
    pub partitions: Vec<PartitionError>,
    /// Human context for an error.
    pub message: String,
}

/// Some partitions of a topic.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicPartitions {
    /// Topic.
    pub topic: String,
    /// Partitions.
    pub partitions: Vec<u32>,
}

/// Request meta: the offsets `group` committed.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OffsetFetchRequest {
    /// The group id.
    pub group: String,
    /// These partitions; `None`: every partition the group committed.
    pub partitions: Option<Vec<TopicPartitions>>,
}

/// One partition's committed offset.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The committed offset; `None` when the group committed none for it.
    pub offset: Option<u64>,
    /// What was committed with it.
    pub metadata: String,
    /// `ErrorCode` number.
    pub error: u16,
}

/// Response meta.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OffsetFetchResponse {
    /// `ErrorCode` number for the whole request.
    pub error: u16,
    /// Per partition.
    pub offsets: Vec<CommittedOffset>,
    /// Human context for an error.
    pub message: String,
}

/// Request meta: the state and members of groups this node coordinates.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DescribeGroupsRequest {
    /// Group ids.
    pub groups: Vec<String>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MemberDescription {
    /// Its member id.
    pub member_id: String,
    /// The client's name.
    pub client_id: String,
    /// Where it connected from.
    pub client_host: String,
    /// Its metadata in the group's protocol.
    pub metadata: Vec<u8>,
    /// Its assignment.
    pub assignment: Vec<u8>,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GroupDescription {
    /// The group id.
    pub group: String,
    /// `ErrorCode` number (`NotCoordinator`, ...).
    pub error: u16,
    /// Kafka's state name: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`,
    /// `Dead`.
    pub state: String,
    /// The kind of group (`consumer`).
    pub protocol_type: String,
    /// The protocol of the current generation (empty unless `Stable` or completing).
    pub protocol: String,
    /// Its members.
    pub members: Vec<MemberDescription>,
}

/// Response meta.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DescribeGroupsResponse {
    /// `ErrorCode` number for the whole request.
    pub error: u16,
    /// One per group asked for, in order.
    pub groups: Vec<GroupDescription>,
    /// Human context for an error.
    pub message: String,
}

/// Request meta: the groups this node coordinates. (Nothing to say.)
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ListGroupsRequest {}

/// A group ListGroups names.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListedGroup {
    /// The group id.
    pub group: String,
    /// The kind of group (`consumer`; empty for a group that only commits offsets).
    pub protocol_type: String,
    /// Its state (see [`GroupDescription::state`]).
    pub state: String,
}

/// Response meta.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListGroupsResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// The groups.
    pub groups: Vec<ListedGroup>,
    /// Human context for an error.
    pub message: String,
}

/// Whether `group` is a group id the brokers accept: 1 to [`GROUP_ID_MAX`] bytes.
#[must_use]
pub fn valid_group_id(group: &str) -> bool {
    (1..=GROUP_ID_MAX).contains(&group.len())
}
