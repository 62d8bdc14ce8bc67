//! DescribeConfigs of topics: the settings shardlog has, by their Kafka names, as the
//! topic's partitions run with them (the topic's own value, else the server default):
//! `retention.ms`, `retention.bytes` (-1: none), `segment.bytes`, `min.insync.replicas`,
//! `cleanup.policy` (always `delete`: no compaction) and `max.message.bytes` (the batch
//! limit). All are read-only here (AlterConfigs is not served). Other resource types
//! (brokers) are answered INVALID_REQUEST.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use shardlog_engine::batch::BATCH_SIZE_MAX;
use shardlog_replicator::controller::TopicInfo;
use shardlog_replicator::controller::acls::{Operation, Resource};

use super::errors;
use super::request::{self, Answer, Request, respond};
use crate::server::cluster::TopicSettings;
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;

/// Kafka's resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// Kafka's config sources: set on the topic, or the server's default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's config types (v3+).
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// One config: name, value, whether the topic sets it, type.
type Entry = (&'static str, String, bool, i8);

/// Each topic needs describe on it (Kafka's DescribeConfigs operation, which its
/// AlterConfigs implies: here describe, implied by alter).
pub(crate) fn describe(shard: &Shard, request: &Request, session: &Session) -> Answer {
    let body: DescribeConfigsRequest = match request::decode(request) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let view = shard.cluster.view();
    let access = Access::new(shard, session);
    let results = body
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            if resource.resource_type != RESOURCE_TOPIC {
                return result
                    .with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "only topic configs are described",
                    )));
            }
            let name = resource.resource_name.as_str();
            if let Err(e) = access.check(Operation::Describe, Resource::Topic(name)) {
                return result
                    .with_error_code(errors::code(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string())));
            }
            let Some(info) = view.as_ref().and_then(|v| v.metadata.topics().get(name)) else {
                return result.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION);
            };
            let keys = resource.configuration_keys.as_deref();
            let configs = entries(shard, info)
                .into_iter()
                .filter(|(key, ..)| keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == *key)))
                .map(|(key, value, set, kind)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str(key))
                        .with_value(Some(StrBytes::from_string(value)))
                        .with_read_only(true)
                        .with_config_source(if set { SOURCE_TOPIC } else { SOURCE_DEFAULT })
                        .with_config_type(kind)
                })
                .collect();
            result.with_error_code(errors::NONE).with_configs(configs)
        })
        .collect();
    respond(
        request.head,
        &DescribeConfigsResponse::default().with_results(results),
    )
}

fn entries(shard: &Shard, info: &TopicInfo) -> Vec<Entry> {
    let settings = TopicSettings::of(info);
    let engine = settings.engine_config(&shard.node.defaults);
    let retention_ms = engine
        .retention_age
        .map_or(-1, |age| i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    let retention_bytes = engine
        .retention_bytes
        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    vec![
        (
            "retention.ms",
            retention_ms.to_string(),
            settings.retention_ms.is_some(),
            TYPE_LONG,
        ),
        (
            "retention.bytes",
            retention_bytes.to_string(),
            settings.retention_bytes.is_some(),
            TYPE_LONG,
        ),
        (
            "segment.bytes",
            engine.segment_bytes.to_string(),
            settings.segment_bytes.is_some(),
            TYPE_INT,
        ),
        (
            "min.insync.replicas",
            info.min_insync.to_string(),
            true,
            TYPE_INT,
        ),
        ("cleanup.policy", "delete".to_owned(), false, TYPE_LIST),
        (
            "max.message.bytes",
            BATCH_SIZE_MAX.to_string(),
            false,
            TYPE_INT,
        ),
    ]
}
