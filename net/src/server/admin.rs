//! Metadata, CreateTopic and DeleteTopic. Every shard answers Metadata from its copy of
//! the catalog. Catalog changes run on shard 0, one at a time: it checks the request,
//! writes or removes `topic.json` (off the executor), and has every shard open or close
//! its partitions before it answers.

use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::join_all;

use crate::api::{
    Api, BrokerMetadata, CreateTopicRequest, DeleteTopicRequest, MetadataRequest, MetadataResponse,
    PartitionMetadata, TopicMetadata, TopicResponse, valid_topic_name,
};
use crate::error_code::ErrorCode;
use crate::server::catalog::{self, PARTITIONS_MAX, TopicSpec};
use crate::server::inbox::ShardMsg;
use crate::server::reply::{Reply, error_reply, reply};
use crate::server::shard::{SINGLE_NODE_EPOCH, Shard};
use crate::wire::Frame;

/// Metadata from this shard's catalog: on one node, this node leads every partition.
pub(crate) fn metadata(shard: &Shard, frame: &Frame) -> Reply {
    let request: MetadataRequest = match frame.decode() {
        Ok(r) => r,
        Err(e) => return error_reply(&frame.header, ErrorCode::InvalidRequest, &e.to_string()),
    };
    let node = shard.node.node_id;
    let catalog = shard.catalog.borrow();
    let describe = |spec: &TopicSpec| TopicMetadata {
        name: spec.name.clone(),
        error: ErrorCode::None.as_u16(),
        partitions: (0..spec.partitions)
            .map(|partition| PartitionMetadata {
                partition,
                leader: node,
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
        brokers: vec![BrokerMetadata {
            node_id: node,
            host,
            port,
        }],
        topics,
    };
    reply(&frame.header, &response, Vec::new())
}

/// CreateTopic or DeleteTopic, on shard 0.
pub(crate) async fn change(shard: Rc<Shard>, frame: Frame) -> Option<Reply> {
    let header = frame.header;
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
    Some(reply(&header, &response, Vec::new()))
}

type AdminResult = Result<(), (ErrorCode, String)>;

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

/// The checks of a create request, and the topic it makes.
fn check_create(
    shard: &Shard,
    request: &CreateTopicRequest,
) -> Result<TopicSpec, (ErrorCode, String)> {
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
    if request.replication_factor > 1 {
        let message = format!(
            "replication factor {} needs as many nodes; this node runs alone",
            request.replication_factor
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
