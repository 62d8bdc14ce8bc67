//! Metadata: every live broker with its advertised Kafka address, the controller, and
//! the topics asked for (all of them when the request names none) with each partition's
//! leader, leader epoch, replicas and ISR, from this node's view of the controller. Topics
//! the request names that do not exist are created first when auto-creation is on
//! (`--kafka-auto-create-topics`, and the request allows it); one the view does not show
//! yet is answered LEADER_NOT_AVAILABLE, which clients retry.
//!
//! With authorization on, as in Kafka: a request for every topic lists only the topics
//! the connection may describe; a named topic it may not describe is answered
//! TOPIC_AUTHORIZATION_FAILED (whether it exists or not), and is auto-created only if it
//! may create it.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use shardlog_replicator::controller::acls::{Operation, Resource};

use super::errors;
use super::request::{self, Answer, Completion, Head, Request, done, respond};
use super::topics::auto_create;
use crate::api::valid_topic_name;
use crate::server::ops::OpError;
use crate::server::ops::topics::{self, ClusterMetadata, TopicMeta};
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;

/// The cluster id Metadata names (shardlog has one cluster per controller quorum and no
/// cluster id of its own).
const CLUSTER_ID: &str = "shardlog";
/// The internal topic of consumer group offsets.
const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// What a Metadata request asks for.
enum Wanted {
    All,
    /// Named topics; `None` for an entry that names a topic by id only (not supported).
    Topics(Vec<Option<String>>),
}

/// First phase: any topic creations start here; the answer is made once they are done.
pub(crate) async fn begin(
    shard: &Rc<Shard>,
    request: Request,
    session: &Rc<Session>,
) -> Completion {
    let body: MetadataRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let wanted = match body.topics {
        None => Wanted::All,
        // v0 has no null: an empty list asks for every topic.
        Some(topics) if topics.is_empty() && head.version == 0 => Wanted::All,
        Some(topics) => Wanted::Topics(
            topics
                .into_iter()
                .map(|t| t.name.map(|n| n.0.as_str().to_owned()))
                .collect(),
        ),
    };
    let allowed = head.version < 4 || body.allow_auto_topic_creation;
    let creating = match &wanted {
        Wanted::Topics(names) if allowed => {
            let access = Access::new(shard, session);
            let names = (names.iter().flatten())
                .map(String::as_str)
                .filter(|name| access.allows(Operation::Describe, Resource::Topic(name)));
            auto_create(shard, names, &access).await
        }
        _ => None,
    };
    let (shard, session) = (shard.clone(), session.clone());
    async move {
        let created = match creating {
            Some(creating) => creating.await,
            None => Vec::new(),
        };
        answer(
            &shard,
            head,
            &wanted,
            &created,
            &Access::new(&shard, &session),
        )
    }
    .boxed_local()
}

/// The answer; `created` names the topics just created, which this shard's view may not
/// show yet: those are LEADER_NOT_AVAILABLE (retriable), not unknown.
fn answer(
    shard: &Shard,
    head: Head,
    wanted: &Wanted,
    created: &[String],
    access: &Access<'_>,
) -> Answer {
    let names: Vec<String> = match wanted {
        Wanted::All => Vec::new(),
        Wanted::Topics(names) => names.iter().flatten().cloned().collect(),
    };
    let meta = match topics::metadata(shard, &names) {
        Ok(meta) => meta,
        // Catching up with the controller: no broker yet, every topic retriable.
        Err(e) => ClusterMetadata {
            node_id: shard.node.node_id,
            controller: None,
            brokers: Vec::new(),
            topics: names
                .into_iter()
                .map(|name| TopicMeta {
                    name,
                    partitions: Err(e.clone()),
                })
                .collect(),
        },
    };
    let mut response = MetadataResponse::default()
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(meta.controller.map_or(-1, signed)))
        .with_brokers(brokers(shard, &meta));
    let listing = matches!(wanted, Wanted::All);
    response.topics = meta
        .topics
        .into_iter()
        .filter(|meta| {
            // Listing every topic shows only those the connection may describe.
            !listing || access.allows(Operation::Describe, Resource::Topic(&meta.name))
        })
        .map(|mut meta| {
            if let Err(e) = access.check(Operation::Describe, Resource::Topic(&meta.name)) {
                meta.partitions = Err(e);
                return topic(meta);
            }
            if meta.partitions == Err(OpError::UnknownTopic) {
                if created.contains(&meta.name) {
                    meta.partitions = Err(OpError::NotAvailable("just created".into()));
                } else if !valid_topic_name(&meta.name) {
                    meta.partitions = Err(OpError::InvalidTopic(meta.name.clone()));
                }
            }
            topic(meta)
        })
        .collect();
    if let Wanted::Topics(names) = wanted {
        // Entries naming a topic by id only: topic ids are not supported.
        for _ in names.iter().filter(|n| n.is_none()) {
            response
                .topics
                .push(MetadataResponseTopic::default().with_error_code(errors::UNKNOWN_TOPIC_ID));
        }
    }
    respond(head, &response)
}

/// Node ids are `u32` in shardlog and `i32` in Kafka; ids past `i32::MAX` cannot be
/// named (`--node-id` is far below).
fn signed(id: u32) -> i32 {
    i32::try_from(id).unwrap_or(-1)
}

/// The live brokers with a Kafka listener, this node always among them.
fn brokers(shard: &Shard, meta: &ClusterMetadata) -> Vec<MetadataResponseBroker> {
    let me = shard.node.node_id;
    let mut brokers: Vec<MetadataResponseBroker> = meta
        .brokers
        .iter()
        .filter(|b| b.live && b.id != me)
        .filter_map(|b| {
            let (host, port) = b.kafka.as_ref()?;
            Some(broker(b.id, host, *port))
        })
        .collect();
    let (host, port) = &shard.node.kafka_advertised;
    brokers.push(broker(me, host, *port));
    brokers.sort_by_key(|b| b.node_id.0);
    brokers
}

fn broker(id: u32, host: &str, port: u16) -> MetadataResponseBroker {
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(signed(id)))
        .with_host(StrBytes::from_string(host.to_owned()))
        .with_port(i32::from(port))
}

fn topic(meta: TopicMeta) -> MetadataResponseTopic {
    let name = TopicName(StrBytes::from_string(meta.name.clone()));
    let topic = MetadataResponseTopic::default()
        .with_name(Some(name))
        .with_is_internal(meta.name == OFFSETS_TOPIC);
    match meta.partitions {
        Ok(partitions) => topic.with_partitions(
            partitions
                .into_iter()
                .map(|p| {
                    let ids = |nodes: Vec<u32>| nodes.into_iter().map(|n| BrokerId(signed(n)));
                    MetadataResponsePartition::default()
                        .with_error_code(if p.leader.is_some() {
                            errors::NONE
                        } else {
                            errors::LEADER_NOT_AVAILABLE
                        })
                        .with_partition_index(i32::try_from(p.partition).unwrap_or(i32::MAX))
                        .with_leader_id(BrokerId(p.leader.map_or(-1, signed)))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(ids(p.replicas).collect())
                        .with_isr_nodes(ids(p.isr).collect())
                })
                .collect(),
        ),
        Err(e) => topic.with_error_code(topic_error(&e)),
    }
}

fn topic_error(error: &OpError) -> i16 {
    match error {
        // The view does not show it yet (just created): retriable.
        OpError::NotAvailable(_) => errors::LEADER_NOT_AVAILABLE,
        other => errors::code(other),
    }
}

/// The leader a NOT_LEADER_OR_FOLLOWER answer names (KIP-951): its id, leader epoch and
/// Kafka endpoint, from this shard's view.
pub(crate) struct CurrentLeader {
    pub(crate) id: i32,
    pub(crate) epoch: i32,
    pub(crate) endpoint: Option<(String, u16)>,
}

/// The current leader of `partition` of `topic`, if the view names one.
pub(crate) fn current_leader(shard: &Shard, topic: &str, partition: u32) -> Option<CurrentLeader> {
    let view = shard.cluster.view()?;
    let state = view.metadata.partition(topic, partition)?;
    let leader = state.leader?;
    let endpoint = if leader.0 == shard.node.node_id {
        Some(shard.node.kafka_advertised.clone())
    } else {
        view.metadata
            .nodes()
            .get(&leader)
            .and_then(|n| n.kafka_address.as_deref())
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
    };
    Some(CurrentLeader {
        id: signed(leader.0),
        epoch: state.leader_epoch.0,
        endpoint,
    })
}

/// KIP-320: a request's `current_leader_epoch` against the view's leader epoch of the
/// partition: FENCED_LEADER_EPOCH when older, UNKNOWN_LEADER_EPOCH when newer; `None`
/// when it matches, is not given (`-1`), or the view does not show the partition.
pub(crate) fn epoch_check(shard: &Shard, topic: &str, partition: u32, epoch: i32) -> Option<i16> {
    if epoch < 0 {
        return None;
    }
    let view = shard.cluster.view()?;
    let current = view.metadata.partition(topic, partition)?.leader_epoch.0;
    match epoch.cmp(&current) {
        std::cmp::Ordering::Less => Some(errors::FENCED_LEADER_EPOCH),
        std::cmp::Ordering::Greater => Some(errors::UNKNOWN_LEADER_EPOCH),
        std::cmp::Ordering::Equal => None,
    }
}

/// The view's leader epoch of a partition, `-1` when it does not show it.
pub(crate) fn leader_epoch(shard: &Shard, topic: &str, partition: u32) -> i32 {
    shard
        .cluster
        .view()
        .and_then(|view| Some(view.metadata.partition(topic, partition)?.leader_epoch.0))
        .unwrap_or(-1)
}
