//! The shardlog front end's authorization (when `--authorization on`): what each api
//! needs, checked before the request is begun, by the rules of the Kafka front end
//! (`security::acl`). A refusal is an error reply with `AuthorizationFailed`.
//!
//! - Produce: write on the topic; Fetch: read; ListOffsets and Metadata: describe
//!   (Metadata for every topic lists only those the connection may describe; checked in
//!   `handlers`, as are Produce and Fetch, where the request is decoded anyway).
//! - CreateTopic: create on the cluster or the topic; DeleteTopic: delete on the topic.
//! - InitProducerId: write on the cluster or on any topic.
//! - ReassignPartition, DrainNode, RebalanceReplicas, CreateAcl, DeleteAcl: alter on the
//!   cluster; ListReassignments, ListAcls, ListGroups: describe on the cluster.
//! - JoinGroup, SyncGroup, Heartbeat, LeaveGroup: read on the group; OffsetCommit: read
//!   on the group and on every topic it commits; OffsetFetch: describe on the group and
//!   on every topic it names; DescribeGroups: describe on every group it names.
//!   FindCoordinator is not checked (a coordinator's address is no secret).

use shardlog_replicator::controller::acls::{Operation, Resource};

use crate::api::{
    Api, ArchivedCreateTopicRequest, ArchivedDeleteTopicRequest, ArchivedDescribeGroupsRequest,
    ArchivedHeartbeatRequest, ArchivedJoinGroupRequest, ArchivedLeaveGroupRequest,
    ArchivedListOffsetsRequest, ArchivedOffsetCommitRequest, ArchivedOffsetFetchRequest,
    ArchivedSyncGroupRequest,
};
use crate::frame::FrameError;
use crate::server::ops::OpError;
use crate::server::security::acl::Access;
use crate::wire::Frame;

/// Why a request may not be begun: its meta does not decode, or the ACLs refuse it.
pub(crate) enum Refused {
    Invalid(FrameError),
    Unauthorized(OpError),
}

/// Checks `frame` of `api` (not Produce, Fetch or Metadata: see the module docs).
pub(crate) fn check(access: &Access<'_>, api: Api, frame: &Frame) -> Result<(), Refused> {
    if !access.is_enforced() {
        return Ok(());
    }
    let check = |operation, resource: Resource<'_>| {
        access
            .check(operation, resource)
            .map_err(Refused::Unauthorized)
    };
    match api {
        Api::CreateTopic => {
            let r = frame
                .access::<ArchivedCreateTopicRequest>()
                .map_err(Refused::Invalid)?;
            if access.allows(Operation::Create, Resource::Cluster) {
                return Ok(());
            }
            check(Operation::Create, Resource::Topic(r.name.as_str()))
        }
        Api::DeleteTopic => {
            let r = frame
                .access::<ArchivedDeleteTopicRequest>()
                .map_err(Refused::Invalid)?;
            check(Operation::Delete, Resource::Topic(r.name.as_str()))
        }
        Api::ListOffsets => {
            let r = frame
                .access::<ArchivedListOffsetsRequest>()
                .map_err(Refused::Invalid)?;
            check(Operation::Describe, Resource::Topic(r.topic.as_str()))
        }
        Api::InitProducerId => {
            if access.allows_on_cluster_or_any_topic(Operation::Write) {
                Ok(())
            } else {
                Err(Refused::Unauthorized(
                    access.refusal(Operation::Write, Resource::Cluster),
                ))
            }
        }
        Api::ReassignPartition
        | Api::DrainNode
        | Api::RebalanceReplicas
        | Api::CreateAcl
        | Api::DeleteAcl
        | Api::UpsertUser
        | Api::DeleteUser => check(Operation::Alter, Resource::Cluster),
        Api::ListReassignments | Api::ListAcls | Api::ListUsers | Api::ListGroups => {
            check(Operation::Describe, Resource::Cluster)
        }
        Api::JoinGroup
        | Api::SyncGroup
        | Api::Heartbeat
        | Api::LeaveGroup
        | Api::OffsetCommit
        | Api::OffsetFetch
        | Api::DescribeGroups => group_api(access, api, frame),
        // Checked where they are decoded (`handlers`), or not at all (FindCoordinator, and
        // the SASL exchange, which is how a connection gets a principal), or refused on
        // this listener anyway (the node-to-node apis).
        Api::SaslHandshake
        | Api::SaslAuthenticate
        | Api::Produce
        | Api::Fetch
        | Api::Metadata
        | Api::FindCoordinator
        | Api::Replicate
        | Api::Controller
        | Api::AllocateProducerIds
        | Api::BindShard => Ok(()),
    }
}

/// The checks of the group apis.
fn group_api(access: &Access<'_>, api: Api, frame: &Frame) -> Result<(), Refused> {
    let check = |operation, resource: Resource<'_>| {
        access
            .check(operation, resource)
            .map_err(Refused::Unauthorized)
    };
    let group = |operation, group: &str| {
        access
            .check(operation, Resource::Group(group))
            .map_err(Refused::Unauthorized)
    };
    match api {
        Api::JoinGroup => {
            let r = frame
                .access::<ArchivedJoinGroupRequest>()
                .map_err(Refused::Invalid)?;
            group(Operation::Read, r.group.as_str())
        }
        Api::SyncGroup => {
            let r = frame
                .access::<ArchivedSyncGroupRequest>()
                .map_err(Refused::Invalid)?;
            group(Operation::Read, r.group.as_str())
        }
        Api::Heartbeat => {
            let r = frame
                .access::<ArchivedHeartbeatRequest>()
                .map_err(Refused::Invalid)?;
            group(Operation::Read, r.group.as_str())
        }
        Api::LeaveGroup => {
            let r = frame
                .access::<ArchivedLeaveGroupRequest>()
                .map_err(Refused::Invalid)?;
            group(Operation::Read, r.group.as_str())
        }
        Api::OffsetCommit => {
            let r = frame
                .access::<ArchivedOffsetCommitRequest>()
                .map_err(Refused::Invalid)?;
            group(Operation::Read, r.group.as_str())?;
            (r.offsets.iter())
                .try_for_each(|o| check(Operation::Read, Resource::Topic(o.topic.as_str())))
        }
        Api::OffsetFetch => {
            let r = frame
                .access::<ArchivedOffsetFetchRequest>()
                .map_err(Refused::Invalid)?;
            group(Operation::Describe, r.group.as_str())?;
            (r.partitions
                .as_ref()
                .map(|p| p.as_slice())
                .unwrap_or_default()
                .iter())
            .try_for_each(|t| check(Operation::Describe, Resource::Topic(t.topic.as_str())))
        }
        Api::DescribeGroups => {
            let r = frame
                .access::<ArchivedDescribeGroupsRequest>()
                .map_err(Refused::Invalid)?;
            (r.groups.iter()).try_for_each(|g| group(Operation::Describe, g.as_str()))
        }
        _ => Ok(()),
    }
}
