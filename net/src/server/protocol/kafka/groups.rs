//! The Kafka group apis (the classic group protocol): FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups and
//! ListGroups. Each decodes its request, calls `ops::groups` and encodes the answer; the
//! coordinator and its rules live there (`server::groups`).
//!
//! JoinGroup and SyncGroup wait for the rest of the group: their completion is the
//! operation's pending answer, so the connection's later requests (a heartbeat of
//! another member, a fetch) are served meanwhile and answered in order.
//!
//! Versions (see `versions`): every api from v0 where the codecs have it (librdkafka 2.0
//! enables groups only if version 0 of the group apis is offered); OffsetCommit from v2
//! and OffsetFetch from v1, the codecs' first; OffsetCommit up to 8 and OffsetFetch up to
//! 7 (their next versions are KIP-848's and batch several groups). Static membership
//! (`group.instance.id`, JoinGroup v5+) is refused with UNSUPPORTED_VERSION.
//!
//! Authorization (when on), as in Kafka: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and
//! OffsetCommit need read on the group, OffsetFetch and DescribeGroups describe on it
//! (else GROUP_AUTHORIZATION_FAILED); OffsetCommit needs read on each topic, OffsetFetch
//! describe (else TOPIC_AUTHORIZATION_FAILED on its partitions; a fetch of every
//! committed offset leaves such topics out). ListGroups lists every group to those who
//! may describe the cluster, else the groups they may describe. FindCoordinator is not
//! checked: a coordinator's address is no secret (every broker's is in Metadata).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as KafkaCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use shardlog_replicator::controller::acls::{Operation, Resource};

use super::errors;
use super::request::{self, Answer, Completion, Head, Request, done, respond};
use crate::server::groups::GroupError;
use crate::server::ops::OpError;
use crate::server::ops::groups::{
    self, CommitOffset, FetchedOffset, GroupOp, GroupReply, HeartbeatOp, JoinGroupOp, LeaveGroupOp,
    OffsetCommitOp, OffsetFetchOp, SyncGroupOp,
};
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;

/// Kafka's error code of a group operation's refusal.
pub(crate) fn code(error: &GroupError) -> i16 {
    match error {
        GroupError::NotCoordinator { .. } => 16,
        GroupError::CoordinatorLoadInProgress => 14,
        GroupError::CoordinatorNotAvailable | GroupError::CommitFailed(_) => 15,
        GroupError::IllegalGeneration { .. } => 22,
        GroupError::InconsistentGroupProtocol => 23,
        GroupError::InvalidGroupId => 24,
        GroupError::UnknownMemberId => 25,
        GroupError::InvalidSessionTimeout(_) => 26,
        GroupError::RebalanceInProgress => 27,
        GroupError::OffsetMetadataTooLarge => 12,
        GroupError::StaticMembershipUnsupported => errors::UNSUPPORTED_VERSION,
        GroupError::InvalidRequest(_) => errors::INVALID_REQUEST,
        GroupError::MemberIdRequired(_) => 79,
        GroupError::Unknown(_) => -1,
    }
}

/// An operation error (the node stopping) as a group refusal.
fn op_code(error: &OpError) -> i16 {
    match error {
        OpError::ShuttingDown => code(&GroupError::NotCoordinator { coordinator: None }),
        _ => code(&GroupError::CoordinatorNotAvailable),
    }
}

fn text(s: &StrBytes) -> String {
    s.as_str().to_owned()
}

fn str_bytes(s: String) -> StrBytes {
    StrBytes::from_string(s)
}

/// GROUP_AUTHORIZATION_FAILED unless the connection may do `operation` on group `id`.
fn group_access(
    shard: &Shard,
    session: &Session,
    operation: Operation,
    id: &str,
) -> Result<(), i16> {
    if Access::new(shard, session).allows(operation, Resource::Group(id)) {
        Ok(())
    } else {
        Err(errors::GROUP_AUTHORIZATION_FAILED)
    }
}

/// Runs `op` at its coordinator if the connection may read its group; `encode` turns
/// the reply (or an error's code) into the response.
async fn run(
    shard: &Rc<Shard>,
    (head, session): (Head, &Session),
    op: GroupOp,
    encode: fn(Head, Result<GroupReply, i16>) -> Answer,
) -> Completion {
    if let Err(code) = group_access(shard, session, Operation::Read, op.group_id()) {
        return done(encode(head, Err(code)));
    }
    let pending = groups::run(shard, op).await;
    async move {
        let reply = pending.await.map_err(|e| op_code(&e));
        encode(head, reply)
    }
    .boxed_local()
}

/// FindCoordinator (group keys only; v4+ several keys at once).
pub(crate) async fn find_coordinator(
    shard: &Rc<Shard>,
    request: Request,
    _session: &Session,
) -> Completion {
    let body: FindCoordinatorRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let keys: Vec<String> = if head.version >= 4 {
        body.coordinator_keys.iter().map(text).collect()
    } else {
        vec![text(&body.key)]
    };
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let result = if body.key_type == 0 {
            groups::find_coordinator(shard, &key).await
        } else {
            // Transaction coordinators (key type 1): transactions are not supported.
            Err(GroupError::InvalidRequest(format!(
                "key type {} is not supported (only groups, 0)",
                body.key_type
            )))
        };
        let address = result.and_then(|c| {
            kafka_address(shard, c.node_id)
                .map(|(host, port)| (c.node_id, host, port))
                .ok_or(GroupError::CoordinatorNotAvailable)
        });
        found.push((key, address));
    }
    let mut response = FindCoordinatorResponse::default();
    if head.version >= 4 {
        response.coordinators = found
            .into_iter()
            .map(|(key, address)| {
                let (error_code, message, (node, host, port)) = split(address);
                KafkaCoordinator::default()
                    .with_key(str_bytes(key))
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_error_code(error_code)
                    .with_error_message(message)
            })
            .collect();
    } else if let Some((_, address)) = found.into_iter().next() {
        let (error_code, message, (node, host, port)) = split(address);
        response = response
            .with_error_code(error_code)
            .with_error_message(message)
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port);
    }
    done(respond(head, &response))
}

type Found = Result<(u32, String, u16), GroupError>;

fn split(found: Found) -> (i16, Option<StrBytes>, (i32, String, i32)) {
    match found {
        Ok((node, host, port)) => (
            errors::NONE,
            None,
            (i32::try_from(node).unwrap_or(-1), host, i32::from(port)),
        ),
        Err(e) => (
            code(&e),
            Some(str_bytes(e.to_string())),
            (-1, String::new(), -1),
        ),
    }
}

/// The Kafka listener's advertised address of node `node_id`.
fn kafka_address(shard: &Shard, node_id: u32) -> Option<(String, u16)> {
    if node_id == shard.node.node_id {
        return Some(shard.node.kafka_advertised.clone());
    }
    let meta = crate::server::ops::topics::metadata(shard, &[]).ok()?;
    meta.brokers
        .into_iter()
        .find(|b| b.id == node_id && b.live)
        .and_then(|b| b.kafka)
}

/// JoinGroup: answered once the rebalance completes.
pub(crate) async fn join(shard: &Rc<Shard>, request: Request, session: &Session) -> Completion {
    let body: JoinGroupRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let session_timeout_ms = u32::try_from(body.session_timeout_ms).unwrap_or(0);
    // v0 has no rebalance timeout: the session timeout serves (as in Kafka).
    let rebalance_timeout_ms = if head.version == 0 {
        session_timeout_ms
    } else {
        u32::try_from(body.rebalance_timeout_ms).unwrap_or(0)
    };
    let op = JoinGroupOp {
        group_id: text(&body.group_id.0),
        member_id: text(&body.member_id),
        group_instance_id: body.group_instance_id.as_ref().map(text),
        session_timeout_ms,
        rebalance_timeout_ms,
        protocol_type: text(&body.protocol_type),
        protocols: body
            .protocols
            .iter()
            .map(|p| (text(&p.name), p.metadata.clone()))
            .collect(),
        require_known_member_id: head.version >= 4,
        // The request header's client id is not kept by the dispatcher: member ids
        // and DescribeGroups go without it.
        client_id: "member".to_owned(),
        client_host: String::new(),
    };
    run(shard, (head, session), GroupOp::Join(op), encode_join).await
}

fn encode_join(head: Head, reply: Result<GroupReply, i16>) -> Answer {
    let response = match reply {
        Ok(GroupReply::Joined(Ok(joined))) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_type(Some(str_bytes(joined.protocol_type)))
            .with_protocol_name(Some(str_bytes(joined.protocol_name)))
            .with_leader(str_bytes(joined.leader))
            .with_member_id(str_bytes(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(m.member_id))
                            .with_group_instance_id(m.group_instance_id.map(str_bytes))
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            ),
        Ok(GroupReply::Joined(Err(GroupError::MemberIdRequired(member_id)))) => {
            JoinGroupResponse::default()
                .with_error_code(code(&GroupError::MemberIdRequired(String::new())))
                .with_generation_id(-1)
                .with_member_id(str_bytes(member_id))
        }
        Ok(GroupReply::Joined(Err(e))) => refused_join(code(&e)),
        Ok(_) => refused_join(-1),
        Err(code) => refused_join(code),
    };
    respond(head, &response)
}

fn refused_join(error_code: i16) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error_code)
        .with_generation_id(-1)
}

/// SyncGroup: answered once the leader's assignments are in.
pub(crate) async fn sync(shard: &Rc<Shard>, request: Request, session: &Session) -> Completion {
    let body: SyncGroupRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let op = SyncGroupOp {
        group_id: text(&body.group_id.0),
        generation: body.generation_id,
        member_id: text(&body.member_id),
        group_instance_id: body.group_instance_id.as_ref().map(text),
        protocol_type: body.protocol_type.as_ref().map(text),
        protocol_name: body.protocol_name.as_ref().map(text),
        assignments: body
            .assignments
            .iter()
            .map(|a| (text(&a.member_id), a.assignment.clone()))
            .collect(),
    };
    run(
        shard,
        (request.head, session),
        GroupOp::Sync(op),
        encode_sync,
    )
    .await
}

fn encode_sync(head: Head, reply: Result<GroupReply, i16>) -> Answer {
    let response = match reply {
        Ok(GroupReply::Synced(Ok(synced))) => SyncGroupResponse::default()
            .with_protocol_type(Some(str_bytes(synced.protocol_type)))
            .with_protocol_name(Some(str_bytes(synced.protocol_name)))
            .with_assignment(synced.assignment),
        Ok(GroupReply::Synced(Err(e))) => SyncGroupResponse::default().with_error_code(code(&e)),
        Ok(_) => SyncGroupResponse::default().with_error_code(-1),
        Err(code) => SyncGroupResponse::default().with_error_code(code),
    };
    respond(head, &response)
}

/// Heartbeat.
pub(crate) async fn heartbeat(
    shard: &Rc<Shard>,
    request: Request,
    session: &Session,
) -> Completion {
    let body: HeartbeatRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let op = HeartbeatOp {
        group_id: text(&body.group_id.0),
        generation: body.generation_id,
        member_id: text(&body.member_id),
        group_instance_id: body.group_instance_id.as_ref().map(text),
    };
    run(
        shard,
        (request.head, session),
        GroupOp::Heartbeat(op),
        |head, reply| {
            let error_code = match reply {
                Ok(GroupReply::Heartbeat(Ok(()))) => errors::NONE,
                Ok(GroupReply::Heartbeat(Err(e))) => code(&e),
                Ok(_) => -1,
                Err(code) => code,
            };
            respond(
                head,
                &HeartbeatResponse::default().with_error_code(error_code),
            )
        },
    )
    .await
}

/// LeaveGroup: one member (v0-2) or several (v3+).
pub(crate) async fn leave(shard: &Rc<Shard>, request: Request, session: &Session) -> Completion {
    let body: LeaveGroupRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let members = if head.version >= 3 {
        body.members
            .iter()
            .map(|m| (text(&m.member_id), m.group_instance_id.as_ref().map(text)))
            .collect()
    } else {
        vec![(text(&body.member_id), None)]
    };
    let op = LeaveGroupOp {
        group_id: text(&body.group_id.0),
        members,
    };
    run(shard, (head, session), GroupOp::Leave(op), encode_leave).await
}

fn encode_leave(head: Head, reply: Result<GroupReply, i16>) -> Answer {
    let mut response = LeaveGroupResponse::default();
    match reply {
        Ok(GroupReply::Left(Ok(left))) => {
            if head.version >= 3 {
                response.members = left
                    .into_iter()
                    .map(|l| {
                        MemberResponse::default()
                            .with_member_id(str_bytes(l.member_id))
                            .with_group_instance_id(l.group_instance_id.map(str_bytes))
                            .with_error_code(l.result.as_ref().map_or_else(code, |()| 0))
                    })
                    .collect();
            } else if let Some(Err(e)) = left.first().map(|l| &l.result) {
                response.error_code = code(e);
            }
        }
        Ok(GroupReply::Left(Err(e))) => response.error_code = code(&e),
        Ok(_) => response.error_code = -1,
        Err(code) => response.error_code = code,
    }
    respond(head, &response)
}

/// OffsetCommit (v2+): answered once the offsets are committed.
pub(crate) async fn offset_commit(
    shard: &Rc<Shard>,
    request: Request,
    session: &Session,
) -> Completion {
    let body: OffsetCommitRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let access = Access::new(shard, session);
    let group = body.group_id.0.as_str();
    let group_refused = group_access(shard, session, Operation::Read, group).err();
    let mut offsets = Vec::new();
    let mut refused = Vec::new();
    for topic in &body.topics {
        let readable = access.allows(Operation::Read, Resource::Topic(topic.name.0.as_str()));
        for p in &topic.partitions {
            if !readable {
                let code = errors::TOPIC_AUTHORIZATION_FAILED;
                refused.push((text(&topic.name.0), p.partition_index, code));
                continue;
            }
            let Ok(partition) = u32::try_from(p.partition_index) else {
                let code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                refused.push((text(&topic.name.0), p.partition_index, code));
                continue;
            };
            offsets.push(CommitOffset {
                topic: text(&topic.name.0),
                partition,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(text),
            });
        }
    }
    let layout: Vec<(String, Vec<i32>)> = body
        .topics
        .iter()
        .map(|t| {
            (
                text(&t.name.0),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let op = OffsetCommitOp {
        group_id: text(&body.group_id.0),
        generation: body.generation_id_or_member_epoch,
        member_id: text(&body.member_id),
        group_instance_id: body.group_instance_id.as_ref().map(text),
        offsets,
    };
    if let Some(code) = group_refused {
        return done(respond(head, &commit_response(&layout, &[], &Err(code))));
    }
    let pending = groups::run(shard, GroupOp::Commit(op)).await;
    async move {
        let reply = pending.await.map_err(|e| op_code(&e));
        respond(head, &commit_response(&layout, &refused, &reply))
    }
    .boxed_local()
}

/// The OffsetCommit answer: every partition of the request (`layout`) with its code.
fn commit_response(
    layout: &[(String, Vec<i32>)],
    refused: &[(String, i32, i16)],
    reply: &Result<GroupReply, i16>,
) -> OffsetCommitResponse {
    let outcome = |topic: &str, partition: i32| -> i16 {
        let found = refused
            .iter()
            .find(|(t, p, _)| t == topic && *p == partition);
        if let Some((_, _, code)) = found {
            return *code;
        }
        match reply {
            Ok(GroupReply::Committed(Ok(outcomes))) => outcomes
                .iter()
                .find(|o| o.topic == topic && i64::from(o.partition) == i64::from(partition))
                .map_or(-1, |o| o.result.as_ref().map_or_else(code, |()| 0)),
            Ok(GroupReply::Committed(Err(e))) => code(e),
            Ok(_) => -1,
            Err(code) => *code,
        }
    };
    let topics = layout
        .iter()
        .map(|(topic, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(TopicName(str_bytes(topic.clone())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(*p)
                                .with_error_code(outcome(topic, *p))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// OffsetFetch (v1 to v7; `topics` null from v2: every partition the group committed).
pub(crate) async fn offset_fetch(
    shard: &Rc<Shard>,
    request: Request,
    session: &Session,
) -> Completion {
    let body: OffsetFetchRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let group = body.group_id.0.as_str();
    if let Err(code) = group_access(shard, session, Operation::Describe, group) {
        let wanted = body.topics.as_ref().map(|topics| {
            let named = topics.iter();
            named
                .map(|t| (text(&t.name.0), t.partition_indexes.clone()))
                .collect()
        });
        return done(respond(head, &offset_fetch_refused(head, wanted, code)));
    }
    let access = Access::new(shard, session);
    let describable = |topic: &str| access.allows(Operation::Describe, Resource::Topic(topic));
    // Named topics the connection may not describe are answered apart, not fetched.
    let (hidden, wanted): (Vec<_>, Vec<_>) = (body.topics.iter().flatten())
        .map(|t| (text(&t.name.0), t.partition_indexes.clone()))
        .partition(|(name, _)| !describable(name));
    let wanted: Option<Vec<(String, Vec<i32>)>> = body.topics.as_ref().map(|_| wanted);
    let partitions = wanted.as_ref().map(|topics| {
        topics
            .iter()
            .map(|(name, indexes)| {
                let valid = indexes.iter().filter_map(|p| u32::try_from(*p).ok());
                (name.clone(), valid.collect())
            })
            .collect()
    });
    let op = OffsetFetchOp {
        group_id: text(&body.group_id.0),
        partitions,
    };
    let pending = groups::run(shard, GroupOp::Fetch(op)).await;
    // Checked now, with this request's ACLs: which fetched topics it may see.
    let visible: Option<Vec<String>> = (body.topics.is_none() && access.is_enforced()).then(|| {
        let view = shard.cluster.view();
        let topics = view.iter().flat_map(|v| v.metadata.topics().keys());
        topics.filter(|t| describable(t)).cloned().collect()
    });
    async move {
        let reply = pending.await.map_err(|e| op_code(&e));
        let fetched = match reply {
            Ok(GroupReply::Fetched(Ok(fetched))) => Ok(fetched),
            Ok(GroupReply::Fetched(Err(e))) => Err(code(&e)),
            Ok(_) => Err(-1),
            Err(code) => Err(code),
        };
        match fetched {
            Ok(mut fetched) => {
                if let Some(visible) = &visible {
                    fetched.retain(|f| visible.contains(&f.topic));
                }
                let mut response = offsets_fetched(fetched);
                response
                    .topics
                    .extend(hidden.into_iter().map(topic_refused));
                respond(head, &response)
            }
            Err(code) => respond(head, &offset_fetch_refused(head, wanted, code)),
        }
    }
    .boxed_local()
}

/// A topic of an OffsetFetch the connection may not describe: its partitions refused.
fn topic_refused((name, partitions): (String, Vec<i32>)) -> OffsetFetchResponseTopic {
    let code = errors::TOPIC_AUTHORIZATION_FAILED;
    OffsetFetchResponseTopic::default()
        .with_name(TopicName(str_bytes(name)))
        .with_partitions(
            (partitions.into_iter())
                .map(|p| fetch_partition(p).with_error_code(code))
                .collect(),
        )
}

fn fetch_partition(partition: i32) -> OffsetFetchResponsePartition {
    OffsetFetchResponsePartition::default()
        .with_partition_index(partition)
        .with_committed_offset(-1)
        .with_committed_leader_epoch(-1)
        .with_metadata(Some(StrBytes::default()))
}

fn offsets_fetched(fetched: Vec<FetchedOffset>) -> OffsetFetchResponse {
    let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
    for f in fetched {
        let partition = fetch_partition(i32::try_from(f.partition).unwrap_or(i32::MAX))
            .with_committed_offset(f.offset)
            .with_committed_leader_epoch(f.leader_epoch)
            .with_metadata(Some(str_bytes(f.metadata.unwrap_or_default())));
        match topics.iter_mut().find(|t| t.name.0.as_str() == f.topic) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(f.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    OffsetFetchResponse::default().with_topics(topics)
}

/// An OffsetFetch refused as a whole: the code on every partition asked for (v1 has no
/// other place for it, and a client must not read "nothing committed" from a coordinator
/// that is loading), and from v2 at the top too.
fn offset_fetch_refused(
    head: Head,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    error_code: i16,
) -> OffsetFetchResponse {
    let topics = wanted
        .unwrap_or_default()
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| fetch_partition(p).with_error_code(error_code))
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if head.version >= 2 {
        response.with_error_code(error_code)
    } else {
        response
    }
}

/// DescribeGroups: each group from its coordinator.
pub(crate) async fn describe(shard: &Rc<Shard>, request: Request, session: &Session) -> Completion {
    let body: DescribeGroupsRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let mut pending = Vec::with_capacity(body.groups.len());
    for group in &body.groups {
        let id = text(&group.0);
        let answer = match group_access(shard, session, Operation::Describe, &id) {
            Ok(()) => Ok(groups::run(shard, GroupOp::Describe(id.clone())).await),
            Err(code) => Err(code),
        };
        pending.push((id, answer));
    }
    async move {
        let mut described = Vec::with_capacity(pending.len());
        for (id, answer) in pending {
            let group = DescribedGroup::default().with_group_id(GroupId(str_bytes(id)));
            let answer = match answer {
                Ok(answer) => answer.await,
                Err(code) => {
                    described.push(group.with_error_code(code));
                    continue;
                }
            };
            let group = match answer {
                Ok(GroupReply::Described(Ok(d))) => group
                    .with_group_state(str_bytes(d.state))
                    .with_protocol_type(str_bytes(d.protocol_type))
                    .with_protocol_data(str_bytes(d.protocol_name))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_group_instance_id(m.group_instance_id.map(str_bytes))
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                Ok(GroupReply::Described(Err(e))) => group.with_error_code(code(&e)),
                Ok(_) => group.with_error_code(-1),
                Err(e) => group.with_error_code(op_code(&e)),
            };
            described.push(group);
        }
        respond(
            head,
            &DescribeGroupsResponse::default().with_groups(described),
        )
    }
    .boxed_local()
}

/// ListGroups: the groups this node coordinates (v4+: filtered by state).
pub(crate) async fn list(shard: &Rc<Shard>, request: Request, session: &Session) -> Completion {
    let body: ListGroupsRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let filter: Vec<String> = body
        .states_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let access = Access::new(shard, session);
    let every = access.allows(Operation::Describe, Resource::Cluster);
    let response = match groups::list(shard).await {
        Ok(listed) => ListGroupsResponse::default().with_groups(
            listed
                .into_iter()
                .filter(|g| filter.is_empty() || filter.contains(&g.state.to_ascii_lowercase()))
                .filter(|g| {
                    every || access.allows(Operation::Describe, Resource::Group(&g.group_id))
                })
                .map(|g| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(g.group_id)))
                        .with_protocol_type(str_bytes(g.protocol_type))
                        .with_group_state(str_bytes(g.state))
                })
                .collect(),
        ),
        Err(e) => ListGroupsResponse::default().with_error_code(op_code(&e)),
    };
    done(respond(head, &response))
}
