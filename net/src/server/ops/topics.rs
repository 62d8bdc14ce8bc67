//! Metadata, topic creation and deletion. Metadata is this node's view of the
//! controller's state (every shard holds it). A topic change runs on shard 0, where the
//! controller voter lives: the controller leader checks it, proposes it and answers once
//! it is applied; a node that does not lead the controller passes it to the one that
//! does over the peer link and relays the answer.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::oneshot;
use shardlog_replicator::NodeId;
use shardlog_replicator::controller::{Command, Refusal, TopicInfo};

use crate::api::{
    Api, CreateTopicRequest, DeleteTopicRequest, ErrorResponse, TopicConfig, TopicResponse,
    valid_topic_name,
};
use crate::client::ClientError;
use crate::error_code::ErrorCode;
use crate::frame::FLAG_ERROR;
use crate::server::cluster::controller::ControllerService;
use crate::server::cluster::disk_space;
use crate::server::cluster::open_outcomes::{OpenOutcome, OpenOutcomes};
use crate::server::cluster::{ClusterView, TopicSettings};
use crate::server::ops::{OpError, Pending, answered, reassign};
use crate::server::shard::{Shard, ShardMsg};
use crate::wire::Frame;

/// The most partitions a topic may have (the controller's limit).
pub(crate) const PARTITIONS_MAX: u32 = shardlog_replicator::controller::metadata::MAX_PARTITIONS;

/// A node as metadata shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Broker {
    pub(crate) id: u32,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Registered and not fenced.
    pub(crate) live: bool,
    /// Decommissioned: its replicas move away.
    pub(crate) draining: bool,
    /// Where Kafka clients reach it, if it registered a Kafka listener.
    pub(crate) kafka: Option<(String, u16)>,
}

/// One partition as metadata shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionInfo {
    pub(crate) partition: u32,
    pub(crate) leader: Option<u32>,
    pub(crate) leader_epoch: i32,
    pub(crate) replicas: Vec<u32>,
    pub(crate) isr: Vec<u32>,
}

/// One topic as metadata shows it, or why it cannot be shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicMeta {
    pub(crate) name: String,
    pub(crate) partitions: Result<Vec<PartitionInfo>, OpError>,
}

/// The cluster as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterMetadata {
    /// The node answering.
    pub(crate) node_id: u32,
    /// The controller leader, if known.
    pub(crate) controller: Option<u32>,
    pub(crate) brokers: Vec<Broker>,
    pub(crate) topics: Vec<TopicMeta>,
}

/// Metadata of `topics` (all of them when empty), from this node's view; an error while
/// the node is catching up with the controller after its start.
pub(crate) fn metadata(shard: &Shard, topics: &[String]) -> Result<ClusterMetadata, OpError> {
    let view = shard.cluster.view().ok_or_else(|| catching_up(shard))?;
    let outcomes = &shard.cluster.open_outcomes;
    Ok(describe(shard.node.node_id, &view, topics, outcomes))
}

fn catching_up(shard: &Shard) -> OpError {
    OpError::NotAvailable(format!(
        "node {} is catching up with the controller",
        shard.node.node_id
    ))
}

/// The view's metadata, with this node's offline replicas (see `open_outcomes`) out of
/// their ISR, and without a leader where they were it.
fn describe(
    node_id: u32,
    view: &ClusterView,
    wanted: &[String],
    outcomes: &OpenOutcomes,
) -> ClusterMetadata {
    let ids = |nodes: &[NodeId], offline: bool| {
        nodes
            .iter()
            .map(|n| n.0)
            .filter(|n| !(offline && *n == node_id))
            .collect::<Vec<u32>>()
    };
    let partitions = |name: &str, info: &TopicInfo| {
        (0u32..)
            .zip(&info.partitions)
            .map(|(partition, p)| {
                let offline = outcomes.offline_reason(name, info.id, partition).is_some();
                PartitionInfo {
                    partition,
                    leader: p
                        .leader
                        .map(|n| n.0)
                        .filter(|l| !(offline && *l == node_id)),
                    leader_epoch: p.leader_epoch.0,
                    replicas: ids(&p.replicas, false),
                    isr: ids(&p.isr, offline),
                }
            })
            .collect()
    };
    let all = view.metadata.topics();
    let topics = if wanted.is_empty() {
        all.iter()
            .map(|(name, info)| TopicMeta {
                name: name.clone(),
                partitions: Ok(partitions(name, info)),
            })
            .collect()
    } else {
        wanted
            .iter()
            .map(|name| TopicMeta {
                name: name.clone(),
                partitions: all
                    .get(name)
                    .map(|info| partitions(name, info))
                    .ok_or(OpError::UnknownTopic),
            })
            .collect()
    };
    let brokers = view
        .metadata
        .nodes()
        .iter()
        .filter_map(|(id, info)| {
            let (host, port) = split_host_port(&info.address)?;
            Some(Broker {
                id: id.0,
                host,
                port,
                live: !info.fenced,
                draining: info.draining,
                kafka: info.kafka_address.as_deref().and_then(split_host_port),
            })
        })
        .collect();
    ClusterMetadata {
        node_id,
        controller: view.controller.map(|n| n.0),
        brokers,
        topics,
    }
}

fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewTopic {
    pub(crate) name: String,
    pub(crate) partitions: u32,
    /// `None`: the server's default.
    pub(crate) replication_factor: Option<u16>,
    /// `None`: the server's default (at most the replication factor).
    pub(crate) min_insync: Option<u16>,
    pub(crate) settings: TopicSettings,
}

/// A topic change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TopicChange {
    Create(NewTopic),
    Delete(String),
    /// Move a partition's replicas (`ops::reassign`).
    Reassign(reassign::NewReplicas),
}

/// Creates or deletes a topic (on shard 0, where the controller voter runs); the answer
/// comes once the controller applied it.
pub(crate) async fn change(shard: &Rc<Shard>, change: TopicChange) -> Pending<()> {
    if shard.id == 0 {
        let shard = shard.clone();
        return async move { change_here(&shard, change).await }.boxed_local();
    }
    let (tx, rx) = oneshot::channel();
    let Some(inbox) = shard.inboxes.first() else {
        return answered(Err(OpError::Unknown("no shard 0".into())));
    };
    if inbox
        .send_async(ShardMsg::TopicChange { change, reply: tx })
        .await
        .is_err()
    {
        return answered(Err(OpError::ShuttingDown));
    }
    async move { rx.await.unwrap_or(Err(OpError::ShuttingDown)) }.boxed_local()
}

/// A topic change on shard 0: proposed if this node leads the controller, else passed to
/// the node that does.
pub(crate) async fn change_here(shard: &Rc<Shard>, change: TopicChange) -> Result<(), OpError> {
    let cluster = &shard.cluster;
    let service = cluster
        .controller
        .as_ref()
        .ok_or_else(|| OpError::Unknown("topic change off shard 0".into()))?;
    if !service.is_leader() {
        return pass_to_leader(shard, change).await;
    }
    let (command, created) = match change {
        TopicChange::Create(topic) => {
            let command = create_command(shard, &topic)?;
            check_space(shard, service, &topic)?;
            (command, Some(topic.name))
        }
        TopicChange::Delete(name) => (Command::DeleteTopic { name }, None),
        TopicChange::Reassign(move_) => {
            let command = reassign::command(&move_)?;
            return match service.propose(command).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(refusal)) => reassign::outcome(refusal),
                Err(e) => Err(OpError::Timeout(e)),
            };
        }
    };
    match service.propose(command).await {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => return Err(refused(&refusal)),
        Err(e) => return Err(OpError::Timeout(e)),
    }
    match created {
        Some(name) => undo_unopened(shard, service, &name).await,
        None => Ok(()),
    }
}

/// How long a creation waits for its partitions held here to open.
const OPEN_WAIT: Duration = Duration::from_secs(120);

/// After a creation: waits until every partition of `name` this node holds opened or
/// failed to. If one failed, the topic is deleted again (every node removes its files)
/// and the creation is answered with the reasons: a topic is kept only once its
/// partitions here opened.
async fn undo_unopened(
    shard: &Shard,
    service: &ControllerService,
    name: &str,
) -> Result<(), OpError> {
    let Some(info) = service.topic(name) else {
        return Ok(());
    };
    let here: Vec<u32> = (0u32..)
        .zip(&info.partitions)
        .filter(|(_, p)| p.replicas.contains(&service.node()))
        .map(|(partition, _)| partition)
        .collect();
    let outcomes = &shard.cluster.open_outcomes;
    let deadline = Instant::now() + OPEN_WAIT;
    let offline = loop {
        let tried: Vec<Option<OpenOutcome>> = here
            .iter()
            .map(|p| outcomes.outcome(name, info.id, *p))
            .collect();
        if tried.iter().all(Option::is_some) || Instant::now() >= deadline {
            break (here.iter().zip(tried))
                .filter_map(|(p, outcome)| match outcome {
                    Some(OpenOutcome::Offline(reason)) => Some((*p, reason)),
                    _ => None,
                })
                .collect::<Vec<_>>();
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    };
    let Some((partition, reason)) = offline.first() else {
        return Ok(());
    };
    tracing::warn!(
        topic = name,
        failed = offline.len(),
        "partitions of a new topic did not open; deleting the topic"
    );
    let deleted = service
        .propose(Command::DeleteTopic {
            name: name.to_owned(),
        })
        .await;
    let undone = match deleted {
        Ok(Ok(())) => "the topic was deleted again".to_owned(),
        Ok(Err(refusal)) => format!("deleting it again was refused: {refusal}"),
        Err(e) => format!("deleting it again failed: {e}"),
    };
    Err(OpError::Storage(format!(
        "topic {name:?}: {} of its partitions could not open on node {} (partition \
         {partition}: {reason}); {undone}",
        offline.len(),
        service.node()
    )))
}

/// Refuses a creation whose first preallocation does not fit on a node it would be
/// placed on, by the free space each node last reported (see `disk_space`).
fn check_space(
    shard: &Shard,
    service: &ControllerService,
    topic: &NewTopic,
) -> Result<(), OpError> {
    let config = &shard.cluster.config;
    let replication_factor = topic
        .replication_factor
        .unwrap_or(config.replication_factor);
    let engine = topic.settings.engine_config(&shard.node.defaults);
    let per_replica = disk_space::reservation_per_replica(&engine);
    let assignment = service.placement_of(topic.partitions, replication_factor);
    let free = service.free_bytes();
    match disk_space::shortfall(&assignment, per_replica, &free) {
        None => Ok(()),
        Some(short) => Err(OpError::Storage(format!(
            "topic {:?} does not fit: {short}; free space or create fewer partitions, \
             smaller preallocation steps (--preallocation-step-bytes) or a smaller \
             segment.bytes",
            topic.name
        ))),
    }
}

/// The checks of a create and the command it becomes.
fn create_command(shard: &Shard, topic: &NewTopic) -> Result<Command, OpError> {
    let name = topic.name.as_str();
    if !valid_topic_name(name) {
        return Err(OpError::InvalidTopic(format!(
            "topic name {name:?}: 1 to 249 of [a-zA-Z0-9._-], not . or .."
        )));
    }
    if !(1..=PARTITIONS_MAX).contains(&topic.partitions) {
        return Err(OpError::InvalidRequest(format!(
            "partitions {}: 1 to {PARTITIONS_MAX}",
            topic.partitions
        )));
    }
    let config = &shard.cluster.config;
    let replication_factor = topic
        .replication_factor
        .unwrap_or(config.replication_factor);
    let nodes = config.nodes();
    if replication_factor == 0 || usize::from(replication_factor) > nodes {
        return Err(OpError::InvalidRequest(format!(
            "replication factor {replication_factor}: 1 to {nodes} (the nodes of the cluster)"
        )));
    }
    let min_insync = topic
        .min_insync
        .unwrap_or_else(|| config.min_insync.min(replication_factor));
    if !(1..=replication_factor).contains(&min_insync) {
        return Err(OpError::InvalidRequest(format!(
            "min_insync {min_insync}: 1 to the replication factor {replication_factor}"
        )));
    }
    topic
        .settings
        .engine_config(&shard.node.defaults)
        .validate()
        .map_err(|e| OpError::InvalidRequest(e.to_string()))?;
    Ok(Command::CreateTopic {
        name: name.to_owned(),
        partitions: topic.partitions,
        replication_factor,
        min_insync,
        config: topic.settings.to_pairs(),
    })
}

fn refused(refusal: &Refusal) -> OpError {
    let message = refusal.to_string();
    match refusal {
        Refusal::TopicExists => OpError::TopicExists(message),
        Refusal::UnknownPartition => OpError::UnknownTopic,
        Refusal::InvalidTopic(_) => OpError::InvalidRequest(message),
        // Enough nodes are configured (checked before proposing): some are not live.
        Refusal::NotEnoughNodes { .. } => OpError::NotEnoughReplicas,
        _ => OpError::Unknown(message),
    }
}

/// Passes a topic change to the controller leader over the peer link and relays its
/// answer.
async fn pass_to_leader(shard: &Shard, change: TopicChange) -> Result<(), OpError> {
    let leader = controller_leader(shard)?;
    let peers = &shard.cluster.peers;
    let answer = match &change {
        TopicChange::Create(topic) => {
            let request = CreateTopicRequest {
                name: topic.name.clone(),
                partitions: topic.partitions,
                replication_factor: topic.replication_factor.unwrap_or(0),
                config: TopicConfig {
                    min_insync: topic.min_insync,
                    ..topic.settings.to_wire()
                },
            };
            peers
                .call(leader.0, Api::CreateTopic, &request, Bytes::new())
                .await
        }
        TopicChange::Delete(name) => {
            let request = DeleteTopicRequest { name: name.clone() };
            peers
                .call(leader.0, Api::DeleteTopic, &request, Bytes::new())
                .await
        }
        TopicChange::Reassign(move_) => {
            let request = crate::api::ReassignPartitionRequest::from(move_);
            peers
                .call(leader.0, Api::ReassignPartition, &request, Bytes::new())
                .await
        }
    };
    leader_answer(leader, answer).map(drop)
}

/// The controller leader a request that only it can apply is passed on to.
pub(crate) fn controller_leader(shard: &Shard) -> Result<NodeId, OpError> {
    shard
        .cluster
        .controller
        .as_ref()
        .and_then(|service| service.leader())
        .ok_or_else(|| {
            OpError::NotAvailable("no controller leader (an election is under way)".into())
        })
}

/// The controller leader's answer to a request passed on to it (a `TopicResponse` or
/// an error frame): its message, or the error it answered with.
pub(crate) fn leader_answer(
    leader: NodeId,
    answer: Result<Frame, ClientError>,
) -> Result<String, OpError> {
    let unavailable =
        |why: String| OpError::NotAvailable(format!("controller leader {leader}: {why}"));
    let answer = answer.map_err(|e| unavailable(e.to_string()))?;
    let (code, message) = if answer.header.flags & FLAG_ERROR != 0 {
        let e = answer
            .decode::<ErrorResponse>()
            .map_err(|e| unavailable(e.to_string()))?;
        (e.error, e.message)
    } else {
        let r = answer
            .decode::<TopicResponse>()
            .map_err(|e| unavailable(e.to_string()))?;
        (r.error, r.message)
    };
    match ErrorCode::from(code) {
        ErrorCode::None => Ok(message),
        code => Err(from_code(code, message)),
    }
}

/// An error the controller leader answered with, back as an operation error.
pub(crate) fn from_code(code: ErrorCode, message: String) -> OpError {
    match code {
        ErrorCode::UnknownTopic => OpError::UnknownTopic,
        ErrorCode::UnknownPartition => OpError::UnknownPartition,
        ErrorCode::NotLeader | ErrorCode::LeaderNotAvailable => OpError::NotAvailable(message),
        ErrorCode::NotEnoughReplicas => OpError::NotEnoughReplicas,
        ErrorCode::InvalidRequest => OpError::InvalidRequest(message),
        ErrorCode::InvalidTopic => OpError::InvalidTopic(message),
        ErrorCode::TopicExists => OpError::TopicExists(message),
        ErrorCode::Timeout => OpError::Timeout(message),
        ErrorCode::ShuttingDown => OpError::ShuttingDown,
        ErrorCode::StorageError => OpError::Storage(message),
        _ => OpError::Unknown(message),
    }
}

/// The topic settings of a wire request.
pub(crate) fn settings_of(config: &TopicConfig) -> TopicSettings {
    TopicSettings {
        segment_bytes: config.segment_bytes,
        retention_bytes: config.retention_bytes,
        retention_ms: config.retention_ms,
    }
}
