//! Consumer-group operations (the classic Kafka group protocol): find coordinator, join,
//! sync, heartbeat, leave, commit and fetch offsets, describe, list. Typed requests and
//! results, free of any wire format; every front end calls these.
//!
//! A group's coordinator is the leader of partition `crc32c(group) % partitions` of the
//! internal topic `__consumer_offsets` (see `groups::offsets_topic`), and its state lives
//! on the shard that owns that partition (`groups::ShardGroups`), so no lock is taken. An
//! operation reaching another shard of the coordinator's node is forwarded through that
//! shard's inbox, like a partition operation; one reaching another node is answered
//! `GroupError::NotCoordinator` naming the coordinator's node. JoinGroup and SyncGroup
//! wait for the rest of the group: their wait is the [`Pending`] second phase, so a
//! connection keeps serving its other requests meanwhile. ListGroups asks every shard of
//! this node (Kafka's ListGroups is per broker).
//!
//! Assignments are client-side: the coordinator passes the members' protocol metadata
//! to the leader and the leader's assignments to the members as opaque bytes, so any
//! assignor (range, roundrobin, cooperative-sticky) works.

use std::rc::Rc;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::oneshot;

use crate::server::groups::{self, GroupError, coordinator};
use crate::server::ops::{OpError, Pending, Place, answered, locate_settled};
use crate::server::shard::{Shard, ShardMsg};

/// Where a group's coordinator is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Coordinator {
    pub(crate) node_id: u32,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// JoinGroup: become (or stay) a member; answered once the rebalance completes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JoinGroupOp {
    pub(crate) group_id: String,
    /// Empty for a new member.
    pub(crate) member_id: String,
    /// `group.instance.id` (static membership): refused, see `GroupError`.
    pub(crate) group_instance_id: Option<String>,
    pub(crate) session_timeout_ms: u32,
    /// How long the coordinator waits for members to rejoin in a rebalance.
    pub(crate) rebalance_timeout_ms: u32,
    /// `consumer` for consumers; every member must use the same.
    pub(crate) protocol_type: String,
    /// `(assignor name, opaque metadata)` in the member's order of preference.
    pub(crate) protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets its id (`MemberIdRequired`) and joins again
    /// with it.
    pub(crate) require_known_member_id: bool,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
}

/// A member as the group leader sees it after a join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinedMember {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub(crate) metadata: Bytes,
}

/// The answer to a join: the new generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Joined {
    pub(crate) generation: i32,
    pub(crate) protocol_type: String,
    /// The assignor every member supports, chosen by the members' preferences.
    pub(crate) protocol_name: String,
    pub(crate) leader: String,
    pub(crate) member_id: String,
    /// Every member with its metadata for the leader; empty for the others.
    pub(crate) members: Vec<JoinedMember>,
}

/// SyncGroup: the leader hands in the assignments; every member gets its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SyncGroupOp {
    pub(crate) group_id: String,
    pub(crate) generation: i32,
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    /// v5+: checked against the group's when set.
    pub(crate) protocol_type: Option<String>,
    /// v5+: checked against the group's when set.
    pub(crate) protocol_name: Option<String>,
    /// From the leader: `(member id, opaque assignment)`; empty from the others.
    pub(crate) assignments: Vec<(String, Bytes)>,
}

/// The answer to a sync: this member's assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Synced {
    pub(crate) protocol_type: String,
    pub(crate) protocol_name: String,
    pub(crate) assignment: Bytes,
}

/// Heartbeat: the member is alive in this generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeartbeatOp {
    pub(crate) group_id: String,
    pub(crate) generation: i32,
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
}

/// LeaveGroup: members leave (v0-2: one member; v3+: several).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaveGroupOp {
    pub(crate) group_id: String,
    /// `(member id, group instance id)`.
    pub(crate) members: Vec<(String, Option<String>)>,
}

/// One member's leave, answered per member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Left {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) result: Result<(), GroupError>,
}

/// One partition's offset to commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CommitOffset {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    /// The next offset the group will consume.
    pub(crate) offset: i64,
    /// The leader epoch of the last consumed record, -1 if unknown.
    pub(crate) leader_epoch: i32,
    /// Opaque client text (at most `groups::METADATA_BYTES_MAX`).
    pub(crate) metadata: Option<String>,
}

/// OffsetCommit: answered once the offsets are committed in `__consumer_offsets`
/// (acks=all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OffsetCommitOp {
    pub(crate) group_id: String,
    /// -1 (with an empty member id): a commit from outside any generation, allowed only
    /// while the group has no members (a consumer that assigns itself partitions).
    pub(crate) generation: i32,
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) offsets: Vec<CommitOffset>,
}

/// One partition's commit outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Committed {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) result: Result<(), GroupError>,
}

/// OffsetFetch: the committed offsets of `partitions` (`None`: of every partition the
/// group has committed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OffsetFetchOp {
    pub(crate) group_id: String,
    /// `(topic, partitions)`.
    pub(crate) partitions: Option<Vec<(String, Vec<u32>)>>,
}

/// One partition's committed offset (`offset` -1: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FetchedOffset {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: Option<String>,
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberDescription {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// Its metadata for the group's protocol (empty while none is chosen).
    pub(crate) metadata: Bytes,
    pub(crate) assignment: Bytes,
}

/// DescribeGroups' answer for one group (a group the coordinator does not know is
/// `Dead` with no members, as in Kafka).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupDescription {
    pub(crate) group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub(crate) state: String,
    pub(crate) protocol_type: String,
    pub(crate) protocol_name: String,
    pub(crate) members: Vec<MemberDescription>,
}

/// ListGroups' answer for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupListing {
    pub(crate) group_id: String,
    pub(crate) protocol_type: String,
    pub(crate) state: String,
}

/// A group operation for the coordinator's shard.
#[derive(Debug)]
pub(crate) enum GroupOp {
    Join(JoinGroupOp),
    Sync(SyncGroupOp),
    Heartbeat(HeartbeatOp),
    Leave(LeaveGroupOp),
    Commit(OffsetCommitOp),
    Fetch(OffsetFetchOp),
    Describe(String),
}

impl GroupOp {
    /// The group it is about.
    pub(crate) fn group_id(&self) -> &str {
        match self {
            GroupOp::Join(op) => &op.group_id,
            GroupOp::Sync(op) => &op.group_id,
            GroupOp::Heartbeat(op) => &op.group_id,
            GroupOp::Leave(op) => &op.group_id,
            GroupOp::Commit(op) => &op.group_id,
            GroupOp::Fetch(op) => &op.group_id,
            GroupOp::Describe(group) => group,
        }
    }
}

/// A group operation's answer.
#[derive(Debug)]
pub(crate) enum GroupReply {
    Joined(Result<Joined, GroupError>),
    Synced(Result<Synced, GroupError>),
    Heartbeat(Result<(), GroupError>),
    Left(Result<Vec<Left>, GroupError>),
    Committed(Result<Vec<Committed>, GroupError>),
    Fetched(Result<Vec<FetchedOffset>, GroupError>),
    Described(Result<GroupDescription, GroupError>),
}

/// FindCoordinator (key type group): the node leading the group's offsets partition.
/// Creates `__consumer_offsets` on first use (answering `CoordinatorNotAvailable`, which
/// clients retry, until its partition has a leader).
pub(crate) async fn find_coordinator(
    shard: &Rc<Shard>,
    group_id: &str,
) -> Result<Coordinator, GroupError> {
    groups::check_group_id(group_id)?;
    let partitions = groups::offsets_topic::ensure(shard).await?;
    let partition = groups::offsets_partition(group_id, partitions);
    let leader = shard
        .cluster
        .leader_of(groups::OFFSETS_TOPIC, partition)
        .ok_or(GroupError::CoordinatorNotAvailable)?;
    let metadata = crate::server::ops::topics::metadata(shard, &[])
        .map_err(|_| GroupError::CoordinatorNotAvailable)?;
    let broker = metadata
        .brokers
        .into_iter()
        .find(|b| b.id == leader && b.live)
        .ok_or(GroupError::CoordinatorNotAvailable)?;
    Ok(Coordinator {
        node_id: broker.id,
        host: broker.host,
        port: broker.port,
    })
}

/// Runs a group operation at its coordinator: here, on another shard of this node
/// (forwarded), or refused `NotCoordinator` naming the coordinator's node.
pub(crate) async fn run(shard: &Rc<Shard>, op: GroupOp) -> Pending<GroupReply> {
    if let Err(e) = groups::check_group_id(op.group_id()) {
        return answered(Ok(refusal(&op, e)));
    }
    let partitions = match groups::offsets_topic::ensure(shard).await {
        Ok(partitions) => partitions,
        Err(e) => return answered(Ok(refusal(&op, e))),
    };
    let partition = groups::offsets_partition(op.group_id(), partitions);
    match locate_settled(shard, groups::OFFSETS_TOPIC, partition).await {
        Ok(Place::Here(replica)) => coordinator::run_here(shard, replica, partition, op).await,
        Ok(Place::Shard(owner)) => forward(shard, owner, op).await,
        Ok(Place::Elsewhere { leader }) => answered(Ok(refusal(
            &op,
            GroupError::NotCoordinator {
                coordinator: leader,
            },
        ))),
        Err(OpError::NotLeader { leader }) => answered(Ok(refusal(
            &op,
            GroupError::NotCoordinator {
                coordinator: leader,
            },
        ))),
        Err(OpError::ShuttingDown) => answered(Err(OpError::ShuttingDown)),
        Err(_) => answered(Ok(refusal(&op, GroupError::CoordinatorNotAvailable))),
    }
}

/// The reply that refuses `op` with `error`.
pub(crate) fn refusal(op: &GroupOp, error: GroupError) -> GroupReply {
    match op {
        GroupOp::Join(_) => GroupReply::Joined(Err(error)),
        GroupOp::Sync(_) => GroupReply::Synced(Err(error)),
        GroupOp::Heartbeat(_) => GroupReply::Heartbeat(Err(error)),
        GroupOp::Leave(_) => GroupReply::Left(Err(error)),
        GroupOp::Commit(_) => GroupReply::Committed(Err(error)),
        GroupOp::Fetch(_) => GroupReply::Fetched(Err(error)),
        GroupOp::Describe(_) => GroupReply::Described(Err(error)),
    }
}

/// Hands `op` to the owner shard's inbox; the pending answer is that shard's reply.
async fn forward(shard: &Shard, owner: usize, op: GroupOp) -> Pending<GroupReply> {
    let (tx, rx) = oneshot::channel();
    let Some(inbox) = shard.inboxes.get(owner) else {
        return answered(Err(OpError::Unknown(format!("no shard {owner}"))));
    };
    if inbox
        .send_async(ShardMsg::Group { op, reply: tx })
        .await
        .is_err()
    {
        return answered(Err(OpError::ShuttingDown));
    }
    async move { rx.await.map_err(|_| OpError::ShuttingDown)? }.boxed_local()
}

/// Runs a group operation that reached this shard through its inbox; the reply goes
/// back once it is answered (a join waits for the rebalance).
pub(crate) async fn run_forwarded(
    shard: &Rc<Shard>,
    op: GroupOp,
    reply: oneshot::Sender<Result<GroupReply, OpError>>,
) {
    shard.begin_request();
    let pending = run(shard, op).await;
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let _ = reply.send(pending.await);
        shard.end_request();
    })
    .detach();
}

/// ListGroups: the groups coordinated by every shard of this node.
pub(crate) async fn list(shard: &Rc<Shard>) -> Result<Vec<GroupListing>, OpError> {
    let mut waits = Vec::with_capacity(shard.inboxes.len());
    for (id, inbox) in shard.inboxes.iter().enumerate() {
        if id == shard.id {
            continue;
        }
        let (tx, rx) = oneshot::channel();
        if inbox
            .send_async(ShardMsg::ListGroups { reply: tx })
            .await
            .is_err()
        {
            return Err(OpError::ShuttingDown);
        }
        waits.push(rx);
    }
    let mut all = shard.groups.list();
    for wait in waits {
        all.extend(wait.await.map_err(|_| OpError::ShuttingDown)?);
    }
    all.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(all)
}
