//! CreateTopics and DeleteTopics through the topic operations (`ops::topics`: proposed
//! to the controller leader, answered once applied), and the topic auto-creation of
//! Metadata and Produce (`--kafka-auto-create-topics`, `--kafka-auto-create-partitions`,
//! the cluster's default replication factor).
//!
//! Topic configs a create may carry, by their Kafka names: `retention.ms`,
//! `retention.bytes`, `segment.bytes`, `min.insync.replicas` and `cleanup.policy=delete`
//! (the only policy: there is no compaction). Any other config is refused
//! (INVALID_CONFIG) rather than ignored. Explicit replica assignments and
//! `validate_only` are refused (INVALID_REQUEST).
//!
//! Authorization (when on): creating a topic, by request or auto-creation, needs create
//! on the cluster or on the topic (else TOPIC_AUTHORIZATION_FAILED); deleting one needs
//! delete on it.

use std::rc::Rc;

use futures::FutureExt;
use futures::future::{LocalBoxFuture, join_all};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use shardlog_replicator::controller::acls::{Operation, Resource};

use super::errors;
use super::request::{self, Completion, Request, done, respond};
use crate::api::valid_topic_name;
use crate::server::cluster::TopicSettings;
use crate::server::ops::OpError;
use crate::server::ops::topics::{self, NewTopic, TopicChange};
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;

/// Kafka's INVALID_CONFIG.
const INVALID_CONFIG: i16 = 40;
/// Topics one request may auto-create: a client naming thousands of made-up topics in a
/// Metadata request creates these many at most.
const AUTO_CREATE_MAX: usize = 64;

/// Creates the topics of `names` that this shard's view does not show, when the node
/// auto-creates topics and `access` allows their creation. `None` when there is none to create (the common case, and free:
/// nothing is allocated); else a future that resolves once each creation is answered, to
/// the names that exist now (created, or created meanwhile by someone else).
pub(crate) async fn auto_create<'a>(
    shard: &Rc<Shard>,
    names: impl Iterator<Item = &'a str> + Clone,
    access: &Access<'_>,
) -> Option<LocalBoxFuture<'static, Vec<String>>> {
    let kafka = &shard.node.kafka;
    let view = shard.cluster.view().filter(|_| kafka.auto_create_topics)?;
    let wanted = |name: &&str| {
        valid_topic_name(name)
            && !name.starts_with("__")
            && !view.metadata.topics().contains_key(*name)
            && may_create(access, name)
    };
    if !names.clone().any(|name| wanted(&name)) {
        return None;
    }
    let missing: Vec<String> = names
        .filter(wanted)
        .take(AUTO_CREATE_MAX)
        .map(str::to_owned)
        .collect();
    let mut pending = Vec::with_capacity(missing.len());
    for name in &missing {
        let topic = NewTopic {
            name: name.clone(),
            partitions: kafka.auto_create_partitions,
            replication_factor: None,
            min_insync: None,
            settings: TopicSettings::default(),
        };
        pending.push(topics::change(shard, TopicChange::Create(topic)).await);
    }
    Some(
        async move {
            let results = join_all(pending).await;
            missing
            .into_iter()
            .zip(results)
            .filter_map(|(name, result)| match result {
                Ok(()) | Err(OpError::TopicExists(_)) => Some(name),
                Err(e) => {
                    tracing::info!(topic = name, error = %e, "kafka topic auto-creation failed");
                    None
                }
            })
            .collect()
        }
        .boxed_local(),
    )
}

/// Whether `access` allows creating topic `name`: create on the cluster or on the topic.
fn may_create(access: &Access<'_>, name: &str) -> bool {
    access.allows(Operation::Create, Resource::Cluster)
        || access.allows(Operation::Create, Resource::Topic(name))
}

/// CreateTopics: each topic created in turn (the controller leader checks and applies
/// each), answered once all are.
pub(crate) async fn create(shard: &Rc<Shard>, request: Request, session: &Session) -> Completion {
    let body: CreateTopicsRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let access = Access::new(shard, session);
    let mut results: Vec<LocalBoxFuture<'static, CreatableTopicResult>> = Vec::new();
    for topic in body.topics {
        let name = topic.name.clone();
        let refusal = if !may_create(&access, name.0.as_str()) {
            let e = access.refusal(Operation::Create, Resource::Topic(name.0.as_str()));
            Some((errors::code(&e), e.to_string()))
        } else if body.validate_only {
            Some((
                errors::INVALID_REQUEST,
                "validate_only is not supported".to_owned(),
            ))
        } else {
            None
        };
        let new_topic = match refusal.map_or_else(|| new_topic(shard, &topic), Err) {
            Ok(new_topic) => new_topic,
            Err((code, message)) => {
                let result = created(name, code, Some(message));
                results.push(futures::future::ready(result).boxed_local());
                continue;
            }
        };
        let pending = topics::change(shard, TopicChange::Create(new_topic)).await;
        results.push(
            async move {
                match pending.await {
                    Ok(()) => created(name, errors::NONE, None),
                    Err(e) => created(name, errors::admin_code(&e), Some(e.to_string())),
                }
            }
            .boxed_local(),
        );
    }
    async move {
        let response = CreateTopicsResponse::default().with_topics(join_all(results).await);
        respond(head, &response)
    }
    .boxed_local()
}

fn created(name: TopicName, code: i16, message: Option<String>) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(name)
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
}

/// The topic a CreateTopics entry asks for, or the refusal (code, message).
fn new_topic(shard: &Shard, topic: &CreatableTopic) -> Result<NewTopic, (i16, String)> {
    if !topic.assignments.is_empty() {
        return Err((
            errors::INVALID_REQUEST,
            "explicit replica assignments are not supported: the controller places replicas"
                .to_owned(),
        ));
    }
    let partitions = match topic.num_partitions {
        -1 => shard.node.kafka.auto_create_partitions,
        n => u32::try_from(n).map_err(|_| {
            (
                errors::INVALID_PARTITIONS,
                format!("partitions {n}: at least 1"),
            )
        })?,
    };
    let replication_factor = match topic.replication_factor {
        -1 => None,
        n => Some(u16::try_from(n).map_err(|_| {
            (
                errors::INVALID_REPLICATION_FACTOR,
                format!("replication factor {n}: at least 1"),
            )
        })?),
    };
    let (settings, min_insync) = configs(topic)?;
    Ok(NewTopic {
        name: topic.name.0.as_str().to_owned(),
        partitions,
        replication_factor,
        min_insync,
        settings,
    })
}

/// The topic settings and `min_insync` of a CreateTopics entry's configs.
fn configs(topic: &CreatableTopic) -> Result<(TopicSettings, Option<u16>), (i16, String)> {
    let mut settings = TopicSettings::default();
    let mut min_insync = None;
    for config in &topic.configs {
        let key = config.name.as_str();
        let value = config.value.as_ref().map_or("", |v| v.as_str());
        let number = || {
            value.parse::<u64>().map_err(|_| {
                (
                    INVALID_CONFIG,
                    format!("{key}={value:?}: expected a number"),
                )
            })
        };
        match key {
            "retention.ms" => settings.retention_ms = Some(number()?),
            "retention.bytes" => settings.retention_bytes = Some(number()?),
            "segment.bytes" => settings.segment_bytes = Some(number()?),
            "min.insync.replicas" => {
                let n = number()?;
                min_insync = Some(u16::try_from(n).map_err(|_| {
                    (
                        INVALID_CONFIG,
                        format!("min.insync.replicas={n}: too large"),
                    )
                })?);
            }
            "cleanup.policy" if value == "delete" => {}
            _ => {
                return Err((
                    INVALID_CONFIG,
                    format!(
                        "{key}={value:?} is not supported; topic configs: retention.ms, \
                         retention.bytes, segment.bytes, min.insync.replicas, \
                         cleanup.policy=delete"
                    ),
                ));
            }
        }
    }
    Ok((settings, min_insync))
}

/// DeleteTopics (by name; v6's topic ids are not served).
pub(crate) async fn delete(shard: &Rc<Shard>, request: Request, session: &Session) -> Completion {
    let body: DeleteTopicsRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let access = Access::new(shard, session);
    let mut results = Vec::with_capacity(body.topic_names.len());
    for name in body.topic_names {
        let pending = match access.check(Operation::Delete, Resource::Topic(name.0.as_str())) {
            Ok(()) => topics::change(shard, TopicChange::Delete(name.0.as_str().to_owned())).await,
            Err(e) => crate::server::ops::answered(Err(e)),
        };
        results.push(async move {
            let (code, message) = match pending.await {
                Ok(()) => (errors::NONE, None),
                Err(e) => (errors::admin_code(&e), Some(e.to_string())),
            };
            DeletableTopicResult::default()
                .with_name(Some(name))
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        });
    }
    async move {
        let response = DeleteTopicsResponse::default().with_responses(join_all(results).await);
        respond(head, &response)
    }
    .boxed_local()
}
