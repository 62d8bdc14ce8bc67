//! The apis and their messages. Each message is an rkyv archive in a frame's meta region
//! (see `frame.rs`); record batches ride in the frame's data region, untouched.
//! Every response carries an `error` (an `ErrorCode` number, 0 for success).

mod acls;
mod controller;
mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod peer_link;
mod placement;
mod produce;
mod producer_ids;
mod reassign;
mod replicate;
mod topics;
mod users;

pub use acls::{
    AclBinding, AclRequest, ArchivedAclRequest, ArchivedListAclsRequest, ListAclsRequest,
    ListAclsResponse, Operation, PatternType, Permission, ResourceType,
};
pub use controller::{ArchivedControllerRequest, ControllerRequest, NodeSession};
pub use fetch::{ArchivedFetchRequest, ArchivedFetchResponse, FetchRequest, FetchResponse};
pub use groups::{
    ArchivedDescribeGroupsRequest, ArchivedFindCoordinatorRequest, ArchivedHeartbeatRequest,
    ArchivedJoinGroupRequest, ArchivedLeaveGroupRequest, ArchivedListGroupsRequest,
    ArchivedOffsetCommitRequest, ArchivedOffsetFetchRequest, ArchivedSyncGroupRequest,
    CommittedOffset, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GROUP_ID_MAX, GroupDescription, GroupProtocol, GroupResponse,
    HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, JoinedMember, LeaveGroupRequest,
    ListGroupsRequest, ListGroupsResponse, ListedGroup, MemberAssignment, MemberDescription,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    OffsetToCommit, PartitionError, SyncGroupRequest, SyncGroupResponse, TopicPartitions,
    valid_group_id,
};
pub use list_offsets::{
    ArchivedListOffsetsRequest, ArchivedListOffsetsResponse, ArchivedOffsetSpec,
    ListOffsetsRequest, ListOffsetsResponse, OffsetSpec,
};
pub use metadata::{
    ArchivedMetadataRequest, ArchivedMetadataResponse, BrokerMetadata, MetadataRequest,
    MetadataResponse, PartitionMetadata, TopicMetadata,
};
pub use peer_link::{ArchivedBindShardRequest, BindShardRequest, BindShardResponse};
pub use placement::{
    ArchivedDrainNodeRequest, ArchivedRebalanceReplicasRequest, DrainNodeRequest,
    RebalanceReplicasRequest,
};
pub use produce::{
    Acks, ArchivedAcks, ArchivedProduceRequest, ArchivedProduceResponse, ProduceRequest,
    ProduceResponse,
};
pub use producer_ids::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, ArchivedAllocateProducerIdsRequest,
    InitProducerIdRequest, InitProducerIdResponse,
};
pub use reassign::{
    ArchivedListReassignmentsRequest, ArchivedReassignPartitionRequest, ListReassignmentsRequest,
    ListReassignmentsResponse, PartitionMove, ReassignPartitionRequest,
};
pub use replicate::{ArchivedReplicateRequest, REPLICATE_VERSION, ReplicateRequest};
pub use topics::{
    ArchivedCreateTopicRequest, ArchivedDeleteTopicRequest, CreateTopicRequest, DeleteTopicRequest,
    TopicConfig, TopicResponse,
};
pub use users::{
    ArchivedDeleteUserRequest, ArchivedListUsersRequest, ArchivedSaslAuthenticateRequest,
    ArchivedSaslHandshakeRequest, ArchivedUpsertUserRequest, DeleteUserRequest, ListUsersRequest,
    ListUsersResponse, ListedUser, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse, UpsertUserRequest,
};

/// Api numbers. Stable: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Api {
    /// Brokers, topics, partitions and their leaders.
    Metadata = 1,
    /// Create a topic.
    CreateTopic = 2,
    /// Delete a topic.
    DeleteTopic = 3,
    /// Append one batch to a partition.
    Produce = 4,
    /// Read batches from a partition.
    Fetch = 5,
    /// Earliest, latest, or by-timestamp offset of a partition.
    ListOffsets = 6,
    /// Node to node: a replication message (no reply).
    Replicate = 7,
    /// Node to node: a controller message (no reply).
    Controller = 8,
    /// A new producer id for an idempotent producer, from the node's block.
    InitProducerId = 9,
    /// Node to node: a block of producer ids, reserved by the controller leader.
    AllocateProducerIds = 10,
    /// Which node coordinates a consumer group.
    FindCoordinator = 11,
    /// Join a group (answered once its rebalance completes).
    JoinGroup = 12,
    /// A member's assignment for the generation it joined (the leader brings everyone's).
    SyncGroup = 13,
    /// A member is alive; learns of a rebalance.
    Heartbeat = 14,
    /// A member leaves its group.
    LeaveGroup = 15,
    /// Commit a group's offsets.
    OffsetCommit = 16,
    /// A group's committed offsets.
    OffsetFetch = 17,
    /// Groups' state and members.
    DescribeGroups = 18,
    /// The groups a node coordinates.
    ListGroups = 19,
    /// Move a partition's replicas (to the controller leader; a node passes it on).
    ReassignPartition = 20,
    /// The replica moves in progress.
    ListReassignments = 21,
    /// Decommission a node, or take it back (to the controller leader; a node passes it
    /// on). (30 on: 20-29 are left to the apis of the reassignment work.)
    DrainNode = 30,
    /// Even out replica counts over the nodes (to the controller leader).
    RebalanceReplicas = 31,
    /// Choose the SASL mechanism of this connection's authentication (40-49: SASL).
    SaslHandshake = 40,
    /// One SASL token each way.
    SaslAuthenticate = 41,
    /// Set a user's SCRAM credential (to the controller leader; a node passes it on).
    UpsertUser = 42,
    /// Delete a user (to the controller leader; a node passes it on).
    DeleteUser = 43,
    /// Users and their mechanisms.
    ListUsers = 44,
    /// Add an ACL binding (to the controller leader; a node passes it on). (50 on: 40-49
    /// are left to authentication's apis.)
    CreateAcl = 50,
    /// Remove an ACL binding (to the controller leader).
    DeleteAcl = 51,
    /// The ACL bindings, from the answering node's view.
    ListAcls = 52,
    /// Node to node, the first frame on a link: serve it on the dialing shard's number.
    /// (60 on: the links' own apis.)
    BindShard = 60,
}

impl Api {
    /// The api with number `n`, if any.
    #[must_use]
    pub fn from_u16(n: u16) -> Option<Api> {
        Some(match n {
            1 => Api::Metadata,
            2 => Api::CreateTopic,
            3 => Api::DeleteTopic,
            4 => Api::Produce,
            5 => Api::Fetch,
            6 => Api::ListOffsets,
            7 => Api::Replicate,
            8 => Api::Controller,
            9 => Api::InitProducerId,
            10 => Api::AllocateProducerIds,
            11 => Api::FindCoordinator,
            12 => Api::JoinGroup,
            13 => Api::SyncGroup,
            14 => Api::Heartbeat,
            15 => Api::LeaveGroup,
            16 => Api::OffsetCommit,
            17 => Api::OffsetFetch,
            18 => Api::DescribeGroups,
            19 => Api::ListGroups,
            20 => Api::ReassignPartition,
            21 => Api::ListReassignments,
            30 => Api::DrainNode,
            31 => Api::RebalanceReplicas,
            40 => Api::SaslHandshake,
            41 => Api::SaslAuthenticate,
            42 => Api::UpsertUser,
            43 => Api::DeleteUser,
            44 => Api::ListUsers,
            50 => Api::CreateAcl,
            51 => Api::DeleteAcl,
            52 => Api::ListAcls,
            60 => Api::BindShard,
            _ => return None,
        })
    }
}

/// The only message version so far, of every api.
pub const VERSION: u16 = 1;

/// The meta of a response frame with `FLAG_ERROR`: the request could not be served at all
/// (unknown api or version, undecodable meta, a limit broken).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ErrorResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// Human context.
    pub message: String,
}

/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_MAX: usize = 249;

/// Kafka's topic naming rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
#[must_use]
pub fn valid_topic_name(name: &str) -> bool {
    (1..=TOPIC_NAME_MAX).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for good in ["orders", "a", "A.b_c-9"] {
            assert!(valid_topic_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }

    #[test]
    fn api_numbers_roundtrip() {
        for n in 0..64u16 {
            if let Some(api) = Api::from_u16(n) {
                assert_eq!(api as u16, n);
            }
        }
    }
}
