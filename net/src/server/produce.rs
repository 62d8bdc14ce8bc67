//! Produce: the batch arrives as the frame's data region and goes to the engine as is;
//! the engine checks it (CRC, every record) and patches its base offset and epoch, which
//! the CRC does not cover. Offsets are given in `begin`, in request order; the reply waits
//! for the flush policy's promise in the completion, so one flush (and one fdatasync)
//! serves every request that arrived meanwhile, from every connection.

use std::rc::Rc;

use futures::FutureExt;
use shardlog_engine::batch::BATCH_SIZE_MAX;
use shardlog_replicator::{Acks as ReplicaAcks, ProduceError};

use crate::api::{Acks, ArchivedAcks, ArchivedProduceRequest, ProduceResponse};
use crate::error_code::ErrorCode;
use crate::frame::FrameHeader;
use crate::server::cluster::Replica;
use crate::server::dispatch::{self, Completion, done, forward};
use crate::server::reply::{Reply, reply};
use crate::server::shard::{Route, SINGLE_NODE_EPOCH, Shard};
use crate::wire::Frame;

/// First phase of a produce request.
pub(crate) async fn begin(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    let (route, acks) = match frame.access::<ArchivedProduceRequest>() {
        Ok(request) => (
            shard.route(request.topic.as_str(), request.partition.to_native()),
            match request.acks {
                ArchivedAcks::None => Acks::None,
                ArchivedAcks::Leader => Acks::Leader,
                ArchivedAcks::All => Acks::All,
            },
        ),
        Err(e) => return dispatch::invalid(&header, &e),
    };
    if let Some(refusal) = too_large(&header, frame.data.len()) {
        return answer(&header, acks, refusal);
    }
    let log = match route {
        Route::Local(log) => log,
        Route::Replica(replica) => {
            return replicated(shard, &header, acks, replica, frame.data.into());
        }
        Route::Elsewhere(leader) => return answer(&header, acks, not_here(&header, leader)),
        Route::Shard(owner) => return forward(shard, owner, frame).await,
        Route::UnknownTopic => {
            return answer(
                &header,
                acks,
                failed(&header, ErrorCode::UnknownTopic, "unknown topic"),
            );
        }
        Route::UnknownPartition => {
            return answer(
                &header,
                acks,
                failed(&header, ErrorCode::UnknownPartition, "unknown partition"),
            );
        }
    };
    let pending = match log.append_start(frame.data, SINGLE_NODE_EPOCH).await {
        Ok(pending) => pending,
        Err(e) => {
            return answer(
                &header,
                acks,
                failed(&header, ErrorCode::from(&e), &e.to_string()),
            );
        }
    };
    async move {
        let result = log.append_wait(&pending).await;
        if acks == Acks::None {
            return None;
        }
        Some(match result {
            Ok(appended) => reply(
                &header,
                &ProduceResponse {
                    error: ErrorCode::None.as_u16(),
                    base_offset: appended.base_offset.0,
                    leader_hint: None,
                    message: String::new(),
                },
                Vec::new(),
            ),
            Err(e) => failed(&header, ErrorCode::from(&e), &e.to_string()),
        })
    }
    .boxed_local()
}

/// Cluster mode: the replica takes the batch (the frame's data buffer, turned into a `Vec`
/// without a copy: the reader allocated it alone) now (its offsets follow request order); the
/// completion waits for its answer (`acks=all`: the in-sync replicas hold it).
fn replicated(
    shard: &Shard,
    header: &FrameHeader,
    acks: Acks,
    replica: Rc<Replica>,
    batch: Vec<u8>,
) -> Completion {
    let wanted = match acks {
        Acks::All => ReplicaAcks::All,
        Acks::Leader | Acks::None => ReplicaAcks::Leader,
    };
    let answer = replica.driver.submit(wanted, batch);
    let header = *header;
    let cluster = shard.cluster.clone();
    async move {
        let result = answer.await;
        if acks == Acks::None {
            return None;
        }
        Some(match result {
            Ok(produced) => reply(
                &header,
                &ProduceResponse {
                    error: ErrorCode::None.as_u16(),
                    base_offset: produced.base_offset.0,
                    leader_hint: None,
                    message: String::new(),
                },
                Vec::new(),
            ),
            Err(ProduceError::NotLeader) => {
                let leader = cluster.and_then(|c| c.leader_of(&replica.topic, replica.partition));
                not_here(&header, leader)
            }
            Err(e) => failed(&header, produce_error_code(&e), &e.to_string()),
        })
    }
    .boxed_local()
}

/// The wire code of a replica's refusal.
pub(crate) fn produce_error_code(error: &ProduceError) -> ErrorCode {
    match error {
        ProduceError::NotLeader => ErrorCode::NotLeader,
        ProduceError::NotEnoughReplicas => ErrorCode::NotEnoughReplicas,
        ProduceError::CorruptBatch(_) => ErrorCode::CorruptBatch,
        ProduceError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        ProduceError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
        ProduceError::Timeout { .. } => ErrorCode::Timeout,
        ProduceError::Busy => ErrorCode::Busy,
        _ => ErrorCode::Unknown,
    }
}

/// This node holds no replica of the partition: `NotLeader` naming the leader, or
/// `LeaderNotAvailable` while there is none (or it is this node, still opening it).
fn not_here(header: &FrameHeader, leader: Option<u32>) -> Reply {
    match leader {
        Some(leader) => reply(
            header,
            &ProduceResponse {
                error: ErrorCode::NotLeader.as_u16(),
                base_offset: 0,
                leader_hint: Some(leader),
                message: format!("node {leader} leads this partition"),
            },
            Vec::new(),
        ),
        None => failed(
            header,
            ErrorCode::LeaderNotAvailable,
            "the partition has no leader",
        ),
    }
}

/// `acks=none` is never answered, not even with an error: the producer is not listening.
fn answer(header: &FrameHeader, acks: Acks, reply: Reply) -> Completion {
    if acks == Acks::None {
        tracing::debug!(correlation = header.correlation, "acks=none produce failed");
        return futures::future::ready(None).boxed_local();
    }
    done(reply)
}

/// The refusal of a batch over the limit. Bigger data could never be a batch: say it is
/// too large, naming the limit, rather than let the batch check call its length "out of
/// bounds", which reads as damage.
fn too_large(header: &FrameHeader, bytes: usize) -> Option<Reply> {
    (bytes > BATCH_SIZE_MAX).then(|| {
        let message = format!(
            "batch of {bytes} bytes is too large: the limit is 16 MiB ({BATCH_SIZE_MAX} bytes) \
             per batch, and a record must fit in one"
        );
        failed(header, ErrorCode::RequestTooLarge, &message)
    })
}

fn failed(header: &FrameHeader, code: ErrorCode, message: &str) -> Reply {
    reply(
        header,
        &ProduceResponse {
            error: code.as_u16(),
            base_offset: 0,
            leader_hint: None,
            message: message.to_owned(),
        },
        Vec::new(),
    )
}
