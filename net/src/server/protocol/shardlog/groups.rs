//! The shardlog protocol's consumer-group requests (apis 11-19, `api/groups.rs`): each
//! frame's meta is validated and decoded, turned into a group operation
//! (`ops::groups`, the same ones the Kafka front end calls), and the operation's answer
//! becomes the response frame; `GroupError`s become shardlog `ErrorCode`s here.
//!
//! Group operations are begun in the connection's order (so one member's commits apply
//! in the order it sent them) and answered concurrently: a JoinGroup waiting for the rest
//! of its group does not hold up the connection's other requests. FindCoordinator and
//! ListGroups are not ordered with anything, so they run entirely in their completion.

use std::rc::Rc;

use bytes::Bytes;
use futures::FutureExt;

use crate::api::{
    Api, CommittedOffset, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupDescription, GroupResponse, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, JoinedMember, LeaveGroupRequest, ListGroupsRequest, ListGroupsResponse,
    ListedGroup, MemberDescription, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, PartitionError, SyncGroupRequest, SyncGroupResponse,
};
use crate::error_code::ErrorCode;
use crate::frame::{FrameError, FrameHeader, Meta};
use crate::server::groups::GroupError;
use crate::server::ops::OpError;
use crate::server::ops::groups::{
    self as group_ops, CommitOffset, GroupOp, GroupReply, HeartbeatOp, JoinGroupOp, LeaveGroupOp,
    OffsetCommitOp, OffsetFetchOp, SyncGroupOp,
};
use crate::server::shard::Shard;
use crate::wire::Frame;

use super::handlers::Completion;
use super::reply::{error_reply, reply};

/// The shardlog code of a group operation's refusal.
fn code(error: &GroupError) -> ErrorCode {
    match error {
        GroupError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
        GroupError::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoading,
        GroupError::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
        GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
        GroupError::UnknownMemberId => ErrorCode::UnknownMember,
        GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress,
        GroupError::MemberIdRequired(_) => ErrorCode::MemberIdRequired,
        GroupError::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout(_) => ErrorCode::InvalidSessionTimeout,
        GroupError::InvalidGroupId => ErrorCode::InvalidGroupId,
        GroupError::OffsetMetadataTooLarge => ErrorCode::OffsetMetadataTooLarge,
        // The shardlog protocol carries no group instance id: only a bug gets here.
        GroupError::StaticMembershipUnsupported | GroupError::InvalidRequest(_) => {
            ErrorCode::InvalidRequest
        }
        GroupError::CommitFailed(_) => ErrorCode::CommitFailed,
        GroupError::Unknown(_) => ErrorCode::Unknown,
    }
}

/// An error's code and text, for a response's `error` and `message`.
fn refused(error: &GroupError) -> (u16, String) {
    (code(error).as_u16(), error.to_string())
}

/// Begins a group request; see the module docs.
pub(super) async fn begin(shard: &Rc<Shard>, api: Api, frame: Frame, peer: &str) -> Completion {
    let header = frame.header;
    let op = match decode(api, &frame, peer) {
        Ok(Decoded::Op(op)) => op,
        Ok(Decoded::FindCoordinator(group)) => {
            return find_coordinator(shard.clone(), header, group);
        }
        Ok(Decoded::ListGroups) => return list_groups(shard.clone(), header),
        Err(e) => {
            return done(error_reply(
                &header,
                ErrorCode::InvalidRequest,
                &e.to_string(),
            ));
        }
    };
    let pending = group_ops::run(shard, op).await;
    async move {
        match pending.await {
            Ok(answer) => Some(answered(&header, answer)),
            Err(e) => Some(error_reply(&header, e.code(), &e.to_string())),
        }
    }
    .boxed_local()
}

fn done(reply: super::reply::Reply) -> Completion {
    futures::future::ready(Some(reply)).boxed_local()
}

/// A request, decoded.
enum Decoded {
    Op(GroupOp),
    FindCoordinator(String),
    ListGroups,
}

/// Validates and decodes a group request's meta into what to run.
fn decode(api: Api, frame: &Frame, peer: &str) -> Result<Decoded, FrameError> {
    Ok(Decoded::Op(match api {
        Api::FindCoordinator => {
            let request: FindCoordinatorRequest = frame.decode()?;
            return Ok(Decoded::FindCoordinator(request.group));
        }
        Api::ListGroups => {
            let _: ListGroupsRequest = frame.decode()?;
            return Ok(Decoded::ListGroups);
        }
        Api::JoinGroup => GroupOp::Join(join_op(frame.decode()?, peer)),
        Api::SyncGroup => {
            let r: SyncGroupRequest = frame.decode()?;
            GroupOp::Sync(SyncGroupOp {
                group_id: r.group,
                generation: r.generation,
                member_id: r.member_id,
                assignments: r
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id, Bytes::from(a.assignment)))
                    .collect(),
                ..SyncGroupOp::default()
            })
        }
        Api::Heartbeat => {
            let r: HeartbeatRequest = frame.decode()?;
            GroupOp::Heartbeat(HeartbeatOp {
                group_id: r.group,
                generation: r.generation,
                member_id: r.member_id,
                group_instance_id: None,
            })
        }
        Api::LeaveGroup => {
            let r: LeaveGroupRequest = frame.decode()?;
            GroupOp::Leave(LeaveGroupOp {
                group_id: r.group,
                members: vec![(r.member_id, None)],
            })
        }
        Api::OffsetCommit => GroupOp::Commit(commit_op(frame.decode()?)?),
        Api::OffsetFetch => {
            let r: OffsetFetchRequest = frame.decode()?;
            GroupOp::Fetch(OffsetFetchOp {
                group_id: r.group,
                partitions: r
                    .partitions
                    .map(|ts| ts.into_iter().map(|t| (t.topic, t.partitions)).collect()),
            })
        }
        Api::DescribeGroups => {
            let r: DescribeGroupsRequest = frame.decode()?;
            // One group per request: a group lives on its own coordinator.
            let [group] = <[String; 1]>::try_from(r.groups).map_err(|groups| {
                FrameError::InvalidMessage(format!(
                    "DescribeGroups names {} groups: ask each group's coordinator for it alone",
                    groups.len()
                ))
            })?;
            GroupOp::Describe(group)
        }
        _ => {
            return Err(FrameError::InvalidMessage(format!(
                "{api:?} is not a group api"
            )));
        }
    }))
}

fn join_op(r: JoinGroupRequest, peer: &str) -> JoinGroupOp {
    JoinGroupOp {
        group_id: r.group,
        member_id: r.member_id,
        group_instance_id: None,
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        protocol_type: r.protocol_type,
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name, Bytes::from(p.metadata)))
            .collect(),
        // A new member gets its id with its first answer.
        require_known_member_id: false,
        client_id: r.client_id,
        client_host: peer_host(peer),
    }
}

/// Kafka shows a member's host as `/ADDRESS`, without the port.
fn peer_host(peer: &str) -> String {
    let host = peer
        .rsplit_once(':')
        .map_or(peer, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    format!("/{host}")
}

fn commit_op(r: OffsetCommitRequest) -> Result<OffsetCommitOp, FrameError> {
    let mut offsets = Vec::with_capacity(r.offsets.len());
    for o in r.offsets {
        let offset = i64::try_from(o.offset)
            .map_err(|_| FrameError::InvalidMessage(format!("offset {} too large", o.offset)))?;
        offsets.push(CommitOffset {
            topic: o.topic,
            partition: o.partition,
            offset,
            leader_epoch: -1,
            metadata: Some(o.metadata),
        });
    }
    Ok(OffsetCommitOp {
        group_id: r.group,
        generation: r.generation,
        member_id: r.member_id,
        group_instance_id: None,
        offsets,
    })
}

/// The response frame of a group operation's answer.
fn answered(header: &FrameHeader, answer: GroupReply) -> super::reply::Reply {
    match answer {
        GroupReply::Joined(result) => respond(header, &joined(result)),
        GroupReply::Synced(result) => {
            let (error, assignment, message) = match result {
                Ok(synced) => (0, synced.assignment.to_vec(), String::new()),
                Err(e) => {
                    let (error, message) = refused(&e);
                    (error, Vec::new(), message)
                }
            };
            respond(
                header,
                &SyncGroupResponse {
                    error,
                    assignment,
                    message,
                },
            )
        }
        GroupReply::Heartbeat(result) => respond(header, &plain(result)),
        GroupReply::Left(result) => {
            // One member per request: its own outcome is the answer.
            let result = result.and_then(|left| left.into_iter().try_for_each(|l| l.result));
            respond(header, &plain(result))
        }
        GroupReply::Committed(result) => respond(header, &committed(result)),
        GroupReply::Fetched(result) => respond(header, &fetched(result)),
        GroupReply::Described(result) => respond(header, &described(result)),
    }
}

fn respond<T: Meta>(header: &FrameHeader, meta: &T) -> super::reply::Reply {
    reply(header, meta, Vec::new())
}

fn plain(result: Result<(), GroupError>) -> GroupResponse {
    let (error, message) = result.err().map_or((0, String::new()), |e| refused(&e));
    GroupResponse { error, message }
}

fn joined(result: Result<group_ops::Joined, GroupError>) -> JoinGroupResponse {
    match result {
        Ok(j) => JoinGroupResponse {
            error: 0,
            generation: j.generation,
            protocol: j.protocol_name,
            leader: j.leader,
            member_id: j.member_id,
            members: j
                .members
                .into_iter()
                .map(|m| JoinedMember {
                    member_id: m.member_id,
                    metadata: m.metadata.to_vec(),
                })
                .collect(),
            message: String::new(),
        },
        Err(e) => {
            let (error, message) = refused(&e);
            JoinGroupResponse {
                error,
                generation: -1,
                protocol: String::new(),
                leader: String::new(),
                // The id to join again with.
                member_id: match e {
                    GroupError::MemberIdRequired(id) => id,
                    _ => String::new(),
                },
                members: Vec::new(),
                message,
            }
        }
    }
}

fn committed(result: Result<Vec<group_ops::Committed>, GroupError>) -> OffsetCommitResponse {
    match result {
        Ok(partitions) => OffsetCommitResponse {
            error: 0,
            partitions: partitions
                .into_iter()
                .map(|c| PartitionError {
                    topic: c.topic,
                    partition: c.partition,
                    error: c.result.err().map_or(0, |e| code(&e).as_u16()),
                })
                .collect(),
            message: String::new(),
        },
        Err(e) => {
            let (error, message) = refused(&e);
            OffsetCommitResponse {
                error,
                partitions: Vec::new(),
                message,
            }
        }
    }
}

fn fetched(result: Result<Vec<group_ops::FetchedOffset>, GroupError>) -> OffsetFetchResponse {
    match result {
        Ok(offsets) => OffsetFetchResponse {
            error: 0,
            offsets: offsets
                .into_iter()
                .map(|o| CommittedOffset {
                    topic: o.topic,
                    partition: o.partition,
                    offset: u64::try_from(o.offset).ok(),
                    metadata: o.metadata.unwrap_or_default(),
                    error: 0,
                })
                .collect(),
            message: String::new(),
        },
        Err(e) => {
            let (error, message) = refused(&e);
            OffsetFetchResponse {
                error,
                offsets: Vec::new(),
                message,
            }
        }
    }
}

fn described(result: Result<group_ops::GroupDescription, GroupError>) -> DescribeGroupsResponse {
    let (error, message, groups) = match result {
        Ok(d) => (
            0,
            String::new(),
            vec![GroupDescription {
                group: d.group_id,
                error: 0,
                state: d.state,
                protocol_type: d.protocol_type,
                protocol: d.protocol_name,
                members: d
                    .members
                    .into_iter()
                    .map(|m| MemberDescription {
                        member_id: m.member_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        metadata: m.metadata.to_vec(),
                        assignment: m.assignment.to_vec(),
                    })
                    .collect(),
            }],
        ),
        Err(e) => {
            let (error, message) = refused(&e);
            (error, message, Vec::new())
        }
    };
    DescribeGroupsResponse {
        error,
        groups,
        message,
    }
}

/// FindCoordinator, run in its completion (it may create `__consumer_offsets` first).
fn find_coordinator(shard: Rc<Shard>, header: FrameHeader, group: String) -> Completion {
    async move {
        let response = match group_ops::find_coordinator(&shard, &group).await {
            Ok(c) => FindCoordinatorResponse {
                error: 0,
                node_id: c.node_id,
                host: c.host,
                port: c.port,
                message: String::new(),
            },
            Err(e) => {
                let (error, message) = refused(&e);
                FindCoordinatorResponse {
                    error,
                    node_id: 0,
                    host: String::new(),
                    port: 0,
                    message,
                }
            }
        };
        Some(respond(&header, &response))
    }
    .boxed_local()
}

/// ListGroups: every shard of this node, in its completion.
fn list_groups(shard: Rc<Shard>, header: FrameHeader) -> Completion {
    async move {
        let response = match group_ops::list(&shard).await {
            Ok(groups) => ListGroupsResponse {
                error: 0,
                groups: groups
                    .into_iter()
                    .map(|g| ListedGroup {
                        group: g.group_id,
                        protocol_type: g.protocol_type,
                        state: g.state,
                    })
                    .collect(),
                message: String::new(),
            },
            Err(e) => list_failed(&e),
        };
        Some(respond(&header, &response))
    }
    .boxed_local()
}

fn list_failed(e: &OpError) -> ListGroupsResponse {
    ListGroupsResponse {
        error: e.code().as_u16(),
        groups: Vec::new(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(peer_host("127.0.0.1:40000"), "/127.0.0.1");
        assert_eq!(peer_host("[::1]:40000"), "/::1");
        assert_eq!(peer_host("?"), "/?");
    }

    #[test]
    fn every_refusal_has_its_code() {
        let cases = [
            (
                GroupError::NotCoordinator { coordinator: None },
                ErrorCode::NotCoordinator,
            ),
            (
                GroupError::CoordinatorLoadInProgress,
                ErrorCode::CoordinatorLoading,
            ),
            (
                GroupError::IllegalGeneration { got: 1, current: 2 },
                ErrorCode::IllegalGeneration,
            ),
            (GroupError::UnknownMemberId, ErrorCode::UnknownMember),
            (
                GroupError::RebalanceInProgress,
                ErrorCode::RebalanceInProgress,
            ),
            (
                GroupError::CommitFailed("x".into()),
                ErrorCode::CommitFailed,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(code(&error), want, "{error:?}");
        }
    }
}
