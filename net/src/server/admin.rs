//! Metadata, CreateTopic and DeleteTopic. Every shard answers Metadata from its copy of
//! the catalog. Catalog changes run on shard 0, one at a time: it checks the request,
//! writes or removes `topic.json` (off the executor), and has every shard open or close
//! its partitions before it answers.

use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::join_all;

use bytes::Bytes;
use shardlog_replicator::NodeId;
use shardlog_replicator::controller::{Command, Refusal, TopicInfo};

use crate::api::{
    Api, BrokerMetadata, CreateTopicRequest, DeleteTopicRequest, ErrorResponse, MetadataRequest,
    MetadataResponse, PartitionMetadata, TopicMetadata, TopicResponse, valid_topic_name,
};
use crate::error_code::ErrorCode;
use crate::frame::FLAG_ERROR;
use crate::server::catalog::{self, PARTITIONS_MAX, TopicSpec};
use crate::server::cluster::controller::ControllerService;
use crate::server::cluster::{ClusterNode, ClusterView, topic_config_pairs};
use crate::server::inbox::ShardMsg;
use crate::server::reply::{Reply, error_reply, reply};
use crate::server::shard::{SINGLE_NODE_EPOCH, Shard};
use crate::wire::Frame;

/// Metadata from this shard's catalog (one node: it leads every partition) or, in cluster
/// mode, from the controller's view (an error while this node is catching up after start).
pub(crate) fn metadata(shard: &Shard, frame: &Frame) -> Reply {
    let request: MetadataRequest = match frame.decode() {
        Ok(r) => r,
        Err(e) => return error_reply(&frame.header, ErrorCode::InvalidRequest, &e.to_string()),
    };
    if let Some(cluster) = &shard.cluster {
        let Some(view) = cluster.view() else {
            let message = format!(
                "node {} is catching up with the controller",
                shard.node.node_id
            );
            return error_reply(&frame.header, ErrorCode::LeaderNotAvailable, &message);
        };
        return reply(
            &frame.header,
            &cluster_metadata(shard, &view, &request),
            Vec::new(),
        );
    }
    let node = shard.node.node_id;
    let catalog = shard.catalog.borrow();
    let describe = |spec: &TopicSpec| TopicMetadata {
        name: spec.name.clone(),
        error: ErrorCode::None.as_u16(),
        partitions: (0..spec.partitions)
            .map(|partition| PartitionMetadata {
                partition,
                leader: Some(node),
                leader_epoch: SINGLE_NODE_EPOCH.0,
                replicas: vec![node],
                isr: vec![node],
            })
            .collect(),
    };
    let topics = if request.topics.is_empty() {
        catalog.values().map(describe).collect()
    } else {
        request
            .topics
            .iter()
            .map(|name| {
                catalog.get(name).map_or_else(
                    || TopicMetadata {
                        name: name.clone(),
                        error: ErrorCode::UnknownTopic.as_u16(),
                        partitions: Vec::new(),
                    },
                    describe,
                )
            })
            .collect()
    };
    let (host, port) = shard.node.advertised.clone();
    let response = MetadataResponse {
        node_id: node,
        controller: None,
        brokers: vec![BrokerMetadata {
            node_id: node,
            host,
            port,
            live: true,
        }],
        topics,
    };
    reply(&frame.header, &response, Vec::new())
}

/// Metadata in cluster mode: the controller's view as this node knows it.
fn cluster_metadata(
    shard: &Shard,
    view: &ClusterView,
    request: &MetadataRequest,
) -> MetadataResponse {
    let ids = |nodes: &[NodeId]| nodes.iter().map(|n| n.0).collect::<Vec<u32>>();
    let describe = |name: &str, info: &TopicInfo| TopicMetadata {
        name: name.to_owned(),
        error: ErrorCode::None.as_u16(),
        partitions: (0u32..)
            .zip(&info.partitions)
            .map(|(partition, p)| PartitionMetadata {
                partition,
                leader: p.leader.map(|n| n.0),
                leader_epoch: p.leader_epoch.0,
                replicas: ids(&p.replicas),
                isr: ids(&p.isr),
            })
            .collect(),
    };
    let topics = view.metadata.topics();
    let topics = if request.topics.is_empty() {
        topics
            .iter()
            .map(|(name, info)| describe(name, info))
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|name| {
                topics.get(name).map_or_else(
                    || TopicMetadata {
                        name: name.clone(),
                        error: ErrorCode::UnknownTopic.as_u16(),
                        partitions: Vec::new(),
                    },
                    |info| describe(name, info),
                )
            })
            .collect()
    };
    let brokers = view
        .metadata
        .nodes()
        .iter()
        .filter_map(|(id, info)| {
            let (host, port) = info.address.rsplit_once(':')?;
            Some(BrokerMetadata {
                node_id: id.0,
                host: host.to_owned(),
                port: port.parse().ok()?,
                live: !info.fenced,
            })
        })
        .collect();
    MetadataResponse {
        node_id: shard.node.node_id,
        controller: view.controller.map(|n| n.0),
        brokers,
        topics,
    }
}

/// CreateTopic or DeleteTopic, on shard 0.
pub(crate) async fn change(shard: Rc<Shard>, frame: Frame) -> Option<Reply> {
    let header = frame.header;
    if let Some(service) = shard.cluster.as_ref().and_then(|c| c.controller.clone()) {
        let cluster = shard.cluster.clone()?;
        return Some(cluster_change(&shard, &cluster, &service, frame).await);
    }
    let Ok(_permit) = shard.admin.acquire_permit(1).await else {
        return Some(error_reply(&header, ErrorCode::ShuttingDown, "stopping"));
    };
    let result = if header.api == Api::CreateTopic as u16 {
        match frame.decode::<CreateTopicRequest>() {
            Ok(request) => create(&shard, request).await,
            Err(e) => Err((ErrorCode::InvalidRequest, e.to_string())),
        }
    } else {
        match frame.decode::<DeleteTopicRequest>() {
            Ok(request) => delete(&shard, &request.name).await,
            Err(e) => Err((ErrorCode::InvalidRequest, e.to_string())),
        }
    };
    Some(topic_response(&header, result))
}

type AdminResult = Result<(), (ErrorCode, String)>;

/// CreateTopic or DeleteTopic in cluster mode: proposed to the controller by its leader;
/// a node that does not lead the controller passes the request on to the one that does.
async fn cluster_change(
    shard: &Shard,
    cluster: &ClusterNode,
    service: &ControllerService,
    frame: Frame,
) -> Reply {
    let header = frame.header;
    let create = header.api == Api::CreateTopic as u16;
    if !service.is_leader() {
        return pass_to_leader(cluster, service, frame).await;
    }
    let command = if create {
        match frame.decode::<CreateTopicRequest>() {
            Ok(request) => match create_command(shard, cluster, &request) {
                Ok(command) => command,
                Err((code, message)) => return topic_response(&header, Err((code, message))),
            },
            Err(e) => return error_reply(&header, ErrorCode::InvalidRequest, &e.to_string()),
        }
    } else {
        match frame.decode::<DeleteTopicRequest>() {
            Ok(request) => Command::DeleteTopic { name: request.name },
            Err(e) => return error_reply(&header, ErrorCode::InvalidRequest, &e.to_string()),
        }
    };
    let result = match service.propose(command).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refusal)) => Err((refusal_code(&refusal), refusal.to_string())),
        Err(e) => Err((ErrorCode::Timeout, e)),
    };
    topic_response(&header, result)
}

/// A node that does not lead the controller passes a topic change on to the one that does
/// and relays its answer.
async fn pass_to_leader(cluster: &ClusterNode, service: &ControllerService, frame: Frame) -> Reply {
    let header = frame.header;
    let create = header.api == Api::CreateTopic as u16;
    let Some(leader) = service.leader() else {
        return error_reply(
            &header,
            ErrorCode::LeaderNotAvailable,
            "no controller leader (an election is under way)",
        );
    };
    let passed = if create {
        match frame.decode::<CreateTopicRequest>() {
            Ok(r) => {
                cluster
                    .peers
                    .call(leader.0, Api::CreateTopic, &r, Bytes::new())
                    .await
            }
            Err(e) => return error_reply(&header, ErrorCode::InvalidRequest, &e.to_string()),
        }
    } else {
        match frame.decode::<DeleteTopicRequest>() {
            Ok(r) => {
                cluster
                    .peers
                    .call(leader.0, Api::DeleteTopic, &r, Bytes::new())
                    .await
            }
            Err(e) => return error_reply(&header, ErrorCode::InvalidRequest, &e.to_string()),
        }
    };
    match passed {
        Ok(answer) if answer.header.flags & FLAG_ERROR != 0 => {
            match answer.decode::<ErrorResponse>() {
                Ok(e) => error_reply(&header, ErrorCode::from(e.error), &e.message),
                Err(e) => error_reply(&header, ErrorCode::Unknown, &e.to_string()),
            }
        }
        Ok(answer) => match answer.decode::<TopicResponse>() {
            Ok(response) => reply(&header, &response, Vec::new()),
            Err(e) => error_reply(&header, ErrorCode::Unknown, &e.to_string()),
        },
        Err(e) => error_reply(
            &header,
            ErrorCode::LeaderNotAvailable,
            &format!("controller leader {leader}: {e}"),
        ),
    }
}

fn create_command(
    shard: &Shard,
    cluster: &ClusterNode,
    request: &CreateTopicRequest,
) -> Result<Command, (ErrorCode, String)> {
    check_name_and_partitions(request)?;
    let name = request.name.as_str();
    let replication_factor = match request.replication_factor {
        0 => cluster.config.replication_factor,
        n => n,
    };
    let nodes = cluster.config.peers.len();
    if usize::from(replication_factor) > nodes {
        let message =
            format!("replication factor {replication_factor}: the cluster has {nodes} nodes");
        return Err((ErrorCode::InvalidRequest, message));
    }
    let min_insync = request
        .config
        .min_insync
        .unwrap_or_else(|| cluster.config.min_insync.min(replication_factor));
    if !(1..=replication_factor).contains(&min_insync) {
        let message =
            format!("min_insync {min_insync}: 1 to the replication factor {replication_factor}");
        return Err((ErrorCode::InvalidRequest, message));
    }
    let spec = TopicSpec::new(name, request.partitions, &request.config);
    if let Err(e) = spec.engine_config(&shard.node.defaults).validate() {
        return Err((ErrorCode::InvalidRequest, e.to_string()));
    }
    Ok(Command::CreateTopic {
        name: name.to_owned(),
        partitions: request.partitions,
        replication_factor,
        min_insync,
        config: topic_config_pairs(&request.config),
    })
}

fn refusal_code(refusal: &Refusal) -> ErrorCode {
    match refusal {
        Refusal::TopicExists => ErrorCode::TopicExists,
        Refusal::UnknownPartition => ErrorCode::UnknownTopic,
        Refusal::InvalidTopic(_) => ErrorCode::InvalidRequest,
        // Enough nodes are configured (checked before proposing): some are not live yet
        // or any more, which passes.
        Refusal::NotEnoughNodes { .. } => ErrorCode::NotEnoughReplicas,
        _ => ErrorCode::Unknown,
    }
}

fn topic_response(header: &crate::frame::FrameHeader, result: AdminResult) -> Reply {
    let response = match result {
        Ok(()) => TopicResponse {
            error: ErrorCode::None.as_u16(),
            message: String::new(),
        },
        Err((code, message)) => TopicResponse {
            error: code.as_u16(),
            message,
        },
    };
    reply(header, &response, Vec::new())
}

async fn create(shard: &Shard, request: CreateTopicRequest) -> AdminResult {
    let spec = check_create(shard, &request)?;
    let name = request.name.as_str();
    let data_dir = shard.node.data_dir.clone();
    let stored = spec.clone();
    glommio::executor()
        .spawn_blocking(move || catalog::store(&data_dir, &stored))
        .await
        .map_err(|e| {
            (
                ErrorCode::StorageError,
                format!("writing topic {name:?}: {e}"),
            )
        })?;
    let mut waits = Vec::new();
    for (id, peer) in shard.peers.iter().enumerate() {
        if id == shard.id {
            continue;
        }
        let (done, wait) = oneshot::channel();
        let msg = ShardMsg::OpenTopic {
            spec: spec.clone(),
            done,
        };
        if peer.send_async(msg).await.is_ok() {
            waits.push(wait);
        }
    }
    let mut failures: Vec<String> = Vec::new();
    if let Err(e) = shard.open_topic(&spec).await {
        failures.push(e.to_string());
    }
    for result in join_all(waits).await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("a shard stopped".into()),
        }
    }
    if failures.is_empty() {
        tracing::info!(
            topic = name,
            partitions = request.partitions,
            "topic created"
        );
        Ok(())
    } else {
        Err((ErrorCode::StorageError, failures.join("; ")))
    }
}

/// The checks every create request gets: a valid name and a partition count in range.
fn check_name_and_partitions(request: &CreateTopicRequest) -> AdminResult {
    let name = request.name.as_str();
    if !valid_topic_name(name) {
        return Err((
            ErrorCode::InvalidTopic,
            format!("topic name {name:?}: 1 to 249 of [a-zA-Z0-9._-], not . or .."),
        ));
    }
    if !(1..=PARTITIONS_MAX).contains(&request.partitions) {
        let message = format!("partitions {}: 1 to {PARTITIONS_MAX}", request.partitions);
        return Err((ErrorCode::InvalidRequest, message));
    }
    Ok(())
}

/// The checks of a create request, and the topic it makes.
fn check_create(
    shard: &Shard,
    request: &CreateTopicRequest,
) -> Result<TopicSpec, (ErrorCode, String)> {
    check_name_and_partitions(request)?;
    let name = request.name.as_str();
    if request.replication_factor > 1 {
        let message = format!(
            "replication factor {} needs as many nodes; this node runs alone",
            request.replication_factor
        );
        return Err((ErrorCode::InvalidRequest, message));
    }
    // The same rule, and words, as a cluster's create: alone, the replication factor is 1.
    if let Some(min_insync) = request.config.min_insync
        && min_insync != 1
    {
        let message = format!(
            "min_insync {min_insync}: 1 to the replication factor 1 (this node runs alone)"
        );
        return Err((ErrorCode::InvalidRequest, message));
    }
    let spec = TopicSpec::new(name, request.partitions, &request.config);
    if let Err(e) = spec.engine_config(&shard.node.defaults).validate() {
        return Err((ErrorCode::InvalidRequest, e.to_string()));
    }
    if shard.catalog.borrow().contains_key(name) {
        return Err((ErrorCode::TopicExists, format!("topic {name:?} exists")));
    }
    Ok(spec)
}

async fn delete(shard: &Shard, name: &str) -> AdminResult {
    if !shard.catalog.borrow().contains_key(name) {
        return Err((ErrorCode::UnknownTopic, format!("topic {name:?}")));
    }
    let mut waits = Vec::new();
    for (id, peer) in shard.peers.iter().enumerate() {
        if id == shard.id {
            continue;
        }
        let (done, wait) = oneshot::channel();
        let msg = ShardMsg::DropTopic {
            name: name.to_owned(),
            done,
        };
        if peer.send_async(msg).await.is_ok() {
            waits.push(wait);
        }
    }
    shard.drop_topic(name).await;
    join_all(waits).await;
    let data_dir = shard.node.data_dir.clone();
    let owned = name.to_owned();
    glommio::executor()
        .spawn_blocking(move || catalog::remove(&data_dir, &owned))
        .await
        .map_err(|e| {
            (
                ErrorCode::StorageError,
                format!("removing topic {name:?}: {e}"),
            )
        })?;
    tracing::info!(topic = name, "topic deleted");
    Ok(())
}
