//! ListOffsets (v1 to v6) and OffsetForLeaderEpoch (v2 to v4), partition by partition
//! through the operations.
//!
//! ListOffsets: timestamp -2 is the log start, -1 the high watermark (only committed
//! offsets are ever named), any other the first committed offset whose batch's max
//! timestamp is at or after it (the time index; -1 when there is none). The answer's
//! `timestamp` is -1 (the lookup does not return the record's timestamp) and its
//! `leader_epoch` the partition's current one. KIP-320 epoch checks as in Fetch.
//!
//! OffsetForLeaderEpoch: the leader's epoch history (KIP-101): the largest epoch at or
//! below the one asked for and the offset where it ended.
//!
//! Both need describe on the topic (authorization on), else TOPIC_AUTHORIZATION_FAILED
//! on each of its partitions.

use std::rc::Rc;

use futures::FutureExt;
use futures::future::{LocalBoxFuture, join_all};
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use shardlog_replicator::controller::acls::{Operation, Resource};

use super::errors;
use super::metadata::{epoch_check, leader_epoch};
use super::request::{self, Completion, Request, done, respond};
use crate::server::ops::reads::{self, EpochEndOp, ListOffsetsOp, OffsetSpec};
use crate::server::ops::{OpError, answered};
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;

/// Kafka's "earliest" and "latest" timestamps.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

pub(crate) async fn list_offsets(
    shard: &Rc<Shard>,
    request: Request,
    session: &Session,
) -> Completion {
    let body: ListOffsetsRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let access = Access::new(shard, session);
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in body.topics {
        let name = topic.name.0.as_str().to_owned();
        let mut partitions: Vec<LocalBoxFuture<'static, ListOffsetsPartitionResponse>> =
            Vec::with_capacity(topic.partitions.len());
        let allowed = access.allows(Operation::Describe, Resource::Topic(&name));
        for p in topic.partitions {
            if !allowed {
                let refused = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED);
                partitions.push(futures::future::ready(refused).boxed_local());
                continue;
            }
            partitions.push(list_partition(shard, head.version, &name, &p).await);
        }
        topics.push((topic.name, partitions));
    }
    async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            responses.push(
                ListOffsetsTopicResponse::default()
                    .with_name(name)
                    .with_partitions(join_all(partitions).await),
            );
        }
        respond(head, &ListOffsetsResponse::default().with_topics(responses))
    }
    .boxed_local()
}

/// One partition of a ListOffsets: routed now, answered by the returned future.
async fn list_partition(
    shard: &Rc<Shard>,
    version: i16,
    name: &str,
    p: &ListOffsetsPartition,
) -> LocalBoxFuture<'static, ListOffsetsPartitionResponse> {
    let response = ListOffsetsPartitionResponse::default()
        .with_partition_index(p.partition_index)
        .with_timestamp(-1)
        .with_offset(-1);
    let refused = |code| futures::future::ready(response.clone().with_error_code(code));
    let Ok(partition) = u32::try_from(p.partition_index) else {
        return refused(errors::UNKNOWN_TOPIC_OR_PARTITION).boxed_local();
    };
    if let Some(code) = epoch_check(shard, name, partition, p.current_leader_epoch) {
        return refused(code).boxed_local();
    }
    let spec = match p.timestamp {
        EARLIEST => OffsetSpec::Earliest,
        LATEST => OffsetSpec::Latest,
        t if t >= 0 => OffsetSpec::Timestamp(t),
        // -3 (max timestamp) and later specs belong to versions not served.
        _ => return refused(errors::INVALID_REQUEST).boxed_local(),
    };
    let op = ListOffsetsOp {
        topic: name.to_owned(),
        partition,
        spec,
    };
    let pending = reads::list_offsets(shard, op).await;
    // The answer's leader epoch is a field of v4 and later only.
    let epoch = if version >= 4 {
        leader_epoch(shard, name, partition)
    } else {
        -1
    };
    async move {
        match pending.await {
            Ok(offset) => response
                .with_error_code(errors::NONE)
                .with_offset(offset.map_or(-1, |o| i64::try_from(o.0).unwrap_or(-1)))
                .with_leader_epoch(epoch),
            Err(e) => response.with_error_code(errors::code(&e)),
        }
    }
    .boxed_local()
}

pub(crate) async fn for_leader_epoch(
    shard: &Rc<Shard>,
    request: Request,
    session: &Session,
) -> Completion {
    let body: OffsetForLeaderEpochRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let access = Access::new(shard, session);
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in body.topics {
        let name = topic.topic.0.as_str().to_owned();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let refusal = access
            .check(Operation::Describe, Resource::Topic(&name))
            .err();
        for p in topic.partitions {
            let response = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let pending = match (&refusal, u32::try_from(p.partition)) {
                (Some(refusal), _) => answered(Err(refusal.clone())),
                (None, Err(_)) => answered(Err(OpError::UnknownPartition)),
                (None, Ok(partition)) => {
                    if let Some(code) = epoch_check(shard, &name, partition, p.current_leader_epoch)
                    {
                        partitions.push(
                            futures::future::ready(response.with_error_code(code)).boxed_local(),
                        );
                        continue;
                    }
                    let op = EpochEndOp {
                        topic: name.clone(),
                        partition,
                        epoch: p.leader_epoch,
                    };
                    reads::end_offset_for_epoch(shard, op).await
                }
            };
            partitions.push(
                async move {
                    match pending.await {
                        Ok(Some(end)) => response
                            .with_error_code(errors::NONE)
                            .with_leader_epoch(end.epoch)
                            .with_end_offset(i64::try_from(end.end_offset).unwrap_or(-1)),
                        // No epoch that old: Kafka answers epoch -1, offset -1, no error.
                        Ok(None) => response.with_error_code(errors::NONE),
                        Err(e) => response.with_error_code(errors::code(&e)),
                    }
                }
                .boxed_local(),
            );
        }
        topics.push((topic.topic, partitions));
    }
    async move {
        let mut results = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            results.push(
                OffsetForLeaderTopicResult::default()
                    .with_topic(name)
                    .with_partitions(join_all(partitions).await),
            );
        }
        respond(
            head,
            &OffsetForLeaderEpochResponse::default().with_topics(results),
        )
    }
    .boxed_local()
}
