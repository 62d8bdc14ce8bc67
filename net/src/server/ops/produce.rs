//! Produce: one record batch to a partition's leading replica. The replica takes it in
//! the order `produce` is called (it gets its offsets there) and answers once the acks
//! level holds: `leader`, once the leader's flush policy's promise holds for it; `all`,
//! once every in-sync replica holds it and the ISR has at least `min_insync` members.
//! The batch is checked once, by the replica (`batch::validate_produced`), and goes to
//! the log as it arrived but for its base offset and leader epoch, which its CRC does not
//! cover.

use std::borrow::Cow;
use std::rc::Rc;

use bytes::BytesMut;
use futures::FutureExt;
use shardlog_engine::batch::BATCH_SIZE_MAX;
use shardlog_replicator::{Acks as ReplicaAcks, ProduceError};

use crate::server::ops::{
    OpError, OpReply, PartitionOp, Pending, Place, answered, forward, locate_settled,
};
use crate::server::shard::Shard;

/// When a produce is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acks {
    /// Never: the producer is not listening (the answer is computed and dropped).
    None,
    /// Once the leader's flush policy's promise holds.
    Leader,
    /// Once the in-sync replicas hold it.
    All,
}

/// One batch for one partition. The topic's name is borrowed from the request while the
/// batch is produced on the shard that read it, and owned only to cross to another
/// shard: the usual produce allocates no name.
pub(crate) struct ProduceOp<'a> {
    pub(crate) topic: Cow<'a, str>,
    pub(crate) partition: u32,
    pub(crate) acks: Acks,
    /// One record batch as the client sent it: a region of the request's buffer, which
    /// the leader patches (base offset, leader epoch) in place and stores, never copied.
    pub(crate) batch: BytesMut,
}

/// Where a produced batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Produced {
    /// The offset of its first record.
    pub(crate) base_offset: u64,
}

/// First phase of a produce; see the module docs.
pub(crate) async fn produce(shard: &Rc<Shard>, op: ProduceOp<'_>) -> Pending<Produced> {
    if op.batch.len() > BATCH_SIZE_MAX {
        // Bigger data could never be a batch: say it is too large, naming the limit,
        // rather than let the batch check call its length "out of bounds" (damage).
        return answered(Err(OpError::TooLarge(format!(
            "batch of {} bytes is too large: the limit is 16 MiB ({BATCH_SIZE_MAX} bytes) per \
             batch, and a record must fit in one",
            op.batch.len()
        ))));
    }
    let replica = match locate_settled(shard, &op.topic, op.partition).await {
        Ok(Place::Here(replica)) => replica,
        Ok(Place::Shard(owner)) => {
            let unwrap = |reply| match reply {
                OpReply::Produced(result) => Some(result),
                _ => None,
            };
            let op = ProduceOp {
                topic: Cow::Owned(op.topic.into_owned()),
                ..op
            };
            return forward(shard, owner, PartitionOp::Produce(op), unwrap).await;
        }
        Ok(Place::Elsewhere { leader }) => {
            // Offline here (closed, waiting to reopen): say why, not "go to yourself".
            let refusal = shard.cluster.offline_refusal(&op.topic, op.partition);
            return match refusal {
                Some(why) if leader == Some(shard.cluster.id.0) => {
                    answered(Err(OpError::Storage(why)))
                }
                _ => answered(Err(OpError::NotLeader { leader })),
            };
        }
        Err(e) => return answered(Err(e)),
    };
    if replica.log().stop_cause().is_some() && replica.driver.leading().is_some() {
        // Its log stopped: refused until it is reopened (or its leadership moves).
        let why = shard
            .cluster
            .offline_refusal(&op.topic, op.partition)
            .unwrap_or_else(|| stopped_refusal(&replica));
        return answered(Err(OpError::Storage(why)));
    }
    let wanted = match op.acks {
        Acks::All => ReplicaAcks::All,
        Acks::Leader | Acks::None => ReplicaAcks::Leader,
    };
    let answer = replica.driver.submit(wanted, op.batch);
    let cluster = shard.cluster.clone();
    async move {
        match answer.await {
            Ok(produced) => Ok(Produced {
                base_offset: produced.base_offset.0,
            }),
            Err(ProduceError::NotLeader) => Err(OpError::NotLeader {
                leader: cluster.leader_of(&replica.topic, replica.partition),
            }),
            Err(e) => Err(refused(&e)),
        }
    }
    .boxed_local()
}

/// What a produce to a stopped log hears before `offline` has taken it in.
fn stopped_refusal(replica: &crate::server::cluster::Replica) -> String {
    let cause = replica
        .log()
        .stop_cause()
        .map_or_else(String::new, |c| c.to_string());
    format!(
        "partition {}/{} is offline on this node: {cause}",
        replica.topic, replica.partition
    )
}

/// A replica's refusal as an operation error.
fn refused(error: &ProduceError) -> OpError {
    let message = error.to_string();
    match error {
        ProduceError::NotLeader => OpError::NotLeader { leader: None },
        ProduceError::NotEnoughReplicas => OpError::NotEnoughReplicas,
        ProduceError::CorruptBatch(corruption) => OpError::CorruptBatch(corruption.to_string()),
        ProduceError::OutOfOrderSequence { .. } => OpError::OutOfOrderSequence(message),
        ProduceError::ProducerFenced { .. } => OpError::ProducerFenced(message),
        ProduceError::Timeout { .. } => OpError::Timeout(message),
        ProduceError::Busy => OpError::Busy,
        _ => OpError::Unknown(message),
    }
}
