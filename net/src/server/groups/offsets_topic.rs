//! The internal topic `__consumer_offsets`, created through the controller on the first
//! group request: `offsets_partitions` partitions (default 16), replication factor
//! `min(3, nodes of the cluster)` (a creation needs that many live nodes: until then
//! clients hear `CoordinatorNotAvailable` and retry, as with Kafka's
//! `offsets.topic.replication.factor`), `min_insync` the server's default, and small
//! segments (`offsets_segment_bytes`, default 1 MiB), since each partition's active
//! segment preallocates up to that much.
//!
//! Its partition count is read from the controller's metadata, never from this node's
//! flags: nodes with different flags still agree on every group's coordinator.

use std::rc::Rc;

use crate::server::cluster::TopicSettings;
use crate::server::groups::{GroupError, OFFSETS_TOPIC};
use crate::server::ops::OpError;
use crate::server::ops::topics::{self, NewTopic, TopicChange};
use crate::server::shard::Shard;

/// The partition count of `__consumer_offsets`, creating it first if it does not exist.
pub(crate) async fn ensure(shard: &Rc<Shard>) -> Result<u32, GroupError> {
    if let Some(partitions) = partitions(shard) {
        return Ok(partitions);
    }
    // No early refusal while `view_behind()`: an applied entry that changes no metadata
    // (a producer-id reservation) leaves it true until the next change, so refusing
    // here answered CoordinatorNotAvailable forever after the first idempotent producer.
    // Creating is safe anyway: a topic that exists answers TopicExists.
    let config = shard.groups.config();
    let nodes = u16::try_from(shard.cluster.config.nodes()).unwrap_or(u16::MAX);
    let topic = NewTopic {
        name: OFFSETS_TOPIC.to_owned(),
        partitions: config.offsets_partitions,
        replication_factor: Some(nodes.clamp(1, 3)),
        min_insync: None,
        settings: TopicSettings {
            segment_bytes: Some(config.offsets_segment_bytes),
            retention_bytes: None,
            retention_ms: None,
        },
    };
    if !shard.groups.begin_creating() {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    let created = topics::change(shard, TopicChange::Create(topic))
        .await
        .await;
    shard.groups.end_creating();
    match created {
        Ok(()) | Err(OpError::TopicExists(_)) => {
            tracing::info!(topic = OFFSETS_TOPIC, "created the offsets topic");
        }
        Err(e) => {
            tracing::warn!(topic = OFFSETS_TOPIC, error = %e, "creating the offsets topic failed");
            return Err(GroupError::CoordinatorNotAvailable);
        }
    }
    partitions(shard).ok_or(GroupError::CoordinatorNotAvailable)
}

/// The partition count the view shows, if the topic exists.
pub(crate) fn partitions(shard: &Shard) -> Option<u32> {
    let view = shard.cluster.view()?;
    let info = view.metadata.topics().get(OFFSETS_TOPIC)?;
    u32::try_from(info.partitions.len()).ok().filter(|p| *p > 0)
}
