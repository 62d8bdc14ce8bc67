//! The operations: what a front end asks of the node, as typed requests with typed
//! results and errors, free of any wire format. Partition work (produce with acks, fetch
//! with a long poll, list offsets) runs on the shard that owns the partition; topic admin
//! runs on the controller; metadata is the view every shard holds.
//!
//! A partition operation has two phases. [`produce`], [`reads::fetch`] and
//! [`reads::list_offsets`] are awaited in the order a connection's requests arrive: they
//! find the owner shard and do what must keep that order (a produce gets its offsets
//! there, or enters the owner shard's inbox there). They return a [`Pending`] answer,
//! awaited concurrently with later requests: waiting for the flush or the in-sync
//! replicas, a long poll, or the owner shard's reply. Routing, forwarding and waiting
//! live in this module only; front ends never see a shard.

pub(crate) mod acls;
pub(crate) mod groups;
pub(crate) mod observe;
pub(crate) mod placement;
pub(crate) mod produce;
pub(crate) mod producer_ids;
pub(crate) mod reads;
pub(crate) mod reassign;
pub(crate) mod topics;

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, ready, select};
use shardlog_engine::Error as EngineError;

use crate::error_code::ErrorCode;
use crate::server::cluster::Replica;
use crate::server::shard::{Shard, ShardMsg, owner_shard};

pub(crate) use produce::{ProduceOp, Produced};
pub(crate) use reads::{FetchOp, Fetched, ListOffsetsOp};

/// The second phase of an operation: its answer.
pub(crate) type Pending<T> = LocalBoxFuture<'static, Result<T, OpError>>;

/// An answer that is already known.
pub(crate) fn answered<T: 'static>(result: Result<T, OpError>) -> Pending<T> {
    ready(result).boxed_local()
}

/// Runs a controller change on shard 0, where the node's controller service lives: at once
/// when `shard` is shard 0 (`here`), else sent to shard 0's inbox as `message`. The answer
/// is a sentence saying what was done.
pub(crate) async fn on_shard_zero<C, Here, Done>(
    shard: &Rc<Shard>,
    change: C,
    here: Here,
    message: fn(C, oneshot::Sender<Result<String, OpError>>) -> ShardMsg,
) -> Pending<String>
where
    C: 'static,
    Here: FnOnce(Rc<Shard>, C) -> Done,
    Done: Future<Output = Result<String, OpError>> + 'static,
{
    if shard.id == 0 {
        return here(shard.clone(), change).boxed_local();
    }
    let (tx, rx) = oneshot::channel();
    let Some(inbox) = shard.inboxes.first() else {
        return answered(Err(OpError::Unknown("no shard 0".into())));
    };
    if inbox.send_async(message(change, tx)).await.is_err() {
        return answered(Err(OpError::ShuttingDown));
    }
    async move { rx.await.unwrap_or(Err(OpError::ShuttingDown)) }.boxed_local()
}

/// Why an operation failed. Each front end maps these to its own codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpError {
    /// No such topic.
    #[error("unknown topic")]
    UnknownTopic,
    /// The topic exists, the partition does not.
    #[error("unknown partition")]
    UnknownPartition,
    /// This node does not lead the partition; `leader` names the one that does, if any
    /// (none: an election is under way, or no in-sync replica is live).
    #[error("{}", match .leader { Some(l) => format!("node {l} leads this partition"), None => "the partition has no leader".to_owned() })]
    NotLeader {
        /// The leader, if known.
        leader: Option<u32>,
    },
    /// The node has not caught up with the controller yet, or the controller has no leader.
    #[error("{0}")]
    NotAvailable(String),
    /// The offset is outside the log.
    #[error("{0}")]
    OffsetOutOfRange(String),
    /// `acks=all` with fewer in-sync replicas than `min_insync`.
    #[error("not enough in-sync replicas")]
    NotEnoughReplicas,
    /// A batch failed its checks.
    #[error("corrupt batch: {0}")]
    CorruptBatch(String),
    /// A batch over the size the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The request breaks a rule; the message says which.
    #[error("{0}")]
    InvalidRequest(String),
    /// A topic name breaks the naming rules.
    #[error("{0}")]
    InvalidTopic(String),
    /// The topic exists.
    #[error("{0}")]
    TopicExists(String),
    /// Not answered in time.
    #[error("{0}")]
    Timeout(String),
    /// Too many requests waiting on the partition.
    #[error("too many produce requests waiting")]
    Busy,
    /// An idempotent producer's batch out of sequence.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// A newer epoch of the producer exists.
    #[error("{0}")]
    ProducerFenced(String),
    /// The partition's storage failed.
    #[error("{0}")]
    Storage(String),
    /// The node is stopping.
    #[error("the server is stopping")]
    ShuttingDown,
    /// Authorization is on and the ACLs do not let the connection do this to a resource
    /// of this type; the message names who, what and which.
    #[error("{1}")]
    Unauthorized(shardlog_replicator::controller::acls::ResourceType, String),
    /// Anything else; the message says what.
    #[error("{0}")]
    Unknown(String),
}

impl OpError {
    /// The shardlog protocol's code for it.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            OpError::UnknownTopic => ErrorCode::UnknownTopic,
            OpError::UnknownPartition => ErrorCode::UnknownPartition,
            OpError::NotLeader { leader: Some(_) } => ErrorCode::NotLeader,
            OpError::NotLeader { leader: None } | OpError::NotAvailable(_) => {
                ErrorCode::LeaderNotAvailable
            }
            OpError::OffsetOutOfRange(_) => ErrorCode::OffsetOutOfRange,
            OpError::NotEnoughReplicas => ErrorCode::NotEnoughReplicas,
            OpError::CorruptBatch(_) => ErrorCode::CorruptBatch,
            OpError::TooLarge(_) => ErrorCode::RequestTooLarge,
            OpError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            OpError::InvalidTopic(_) => ErrorCode::InvalidTopic,
            OpError::TopicExists(_) => ErrorCode::TopicExists,
            OpError::Timeout(_) => ErrorCode::Timeout,
            OpError::Busy => ErrorCode::Busy,
            OpError::OutOfOrderSequence(_) => ErrorCode::OutOfOrderSequence,
            OpError::ProducerFenced(_) => ErrorCode::ProducerFenced,
            OpError::Storage(_) => ErrorCode::StorageError,
            OpError::ShuttingDown => ErrorCode::ShuttingDown,
            OpError::Unauthorized(..) => ErrorCode::AuthorizationFailed,
            OpError::Unknown(_) => ErrorCode::Unknown,
        }
    }

    /// The leader a `NotLeader` names.
    pub(crate) fn leader_hint(&self) -> Option<u32> {
        match self {
            OpError::NotLeader { leader } => *leader,
            _ => None,
        }
    }
}

impl From<&EngineError> for OpError {
    fn from(error: &EngineError) -> OpError {
        let message = error.to_string();
        match error {
            EngineError::OffsetOutOfRange { .. } => OpError::OffsetOutOfRange(message),
            EngineError::CorruptBatch { .. } | EngineError::InvalidBatch(_) => {
                OpError::CorruptBatch(message)
            }
            EngineError::NotContiguous { .. } => OpError::InvalidRequest(message),
            EngineError::Io { .. } | EngineError::SyncFailed { .. } | EngineError::Stopped => {
                OpError::Storage(message)
            }
            _ => OpError::Unknown(message),
        }
    }
}

/// A partition operation on its way to the shard that owns the partition.
pub(crate) enum PartitionOp {
    Produce(ProduceOp<'static>),
    Fetch(FetchOp),
    ListOffsets(ListOffsetsOp),
    EpochEnd(reads::EpochEndOp),
}

/// The answer to a [`PartitionOp`], back from the owner shard.
pub(crate) enum OpReply {
    Produced(Result<Produced, OpError>),
    Fetched(Result<Fetched, OpError>),
    Offset(Result<Option<shardlog_engine::Offset>, OpError>),
    EpochEnd(Result<Option<reads::EpochEnd>, OpError>),
}

/// Where a partition is, from one shard.
pub(crate) enum Place {
    /// A replica of it on this shard.
    Here(Rc<Replica>),
    /// Another shard of this node owns it.
    Shard(usize),
    /// This node holds no replica of it (or has not opened it yet).
    Elsewhere {
        /// The leader, if any.
        leader: Option<u32>,
    },
}

/// Where `partition` of `topic` is, or why it is nowhere.
pub(crate) fn locate(shard: &Shard, topic: &str, partition: u32) -> Result<Place, OpError> {
    let Some(view) = shard.cluster.view() else {
        return Err(OpError::NotAvailable(format!(
            "node {} is catching up with the controller",
            shard.cluster.id
        )));
    };
    let info = view
        .metadata
        .topics()
        .get(topic)
        .ok_or(OpError::UnknownTopic)?;
    let state = usize::try_from(partition)
        .ok()
        .and_then(|p| info.partitions.get(p))
        .ok_or(OpError::UnknownPartition)?;
    let owner = owner_shard(topic, partition, shard.node.shards);
    if owner != shard.id {
        return Ok(Place::Shard(owner));
    }
    Ok(match shard.cluster.replica(topic, partition) {
        Some(replica) if replica.topic_id == info.id => Place::Here(replica),
        _ => Place::Elsewhere {
            leader: state.leader.map(|n| n.0),
        },
    })
}

/// How long an operation waits for this shard to open a replica that the view says
/// this node leads (a topic just created, a leadership just moved here).
const OPENING_WAIT: Duration = Duration::from_secs(2);

/// [`locate`], but what this shard is about to learn is waited for, up to
/// [`OPENING_WAIT`]: a partition this node leads whose replica this shard has not opened
/// or handed its leadership yet (reconciling a view takes a moment after the view names
/// the topic), and a topic this shard's view does not show while the controller has
/// applied more (the view is on its way to this shard). Answering `NotLeader` naming this
/// very node, or `UnknownTopic` for a topic whose creation was just answered, would be
/// wrong or send the client back here.
pub(crate) async fn locate_settled(
    shard: &Shard,
    topic: &str,
    partition: u32,
) -> Result<Place, OpError> {
    // The clock is read only once a wait begins: the usual answer costs one lookup.
    let mut deadline = None;
    loop {
        let located = locate(shard, topic, partition);
        if !about_to_change(shard, topic, partition, &located) {
            return located;
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + OPENING_WAIT);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return located;
        }
        let reconciled = shard.cluster.next_reconcile();
        let _ = select(reconciled, glommio::timer::Timer::new(left)).await;
    }
}

/// Whether this shard is about to learn better than `located`: a topic its view does not
/// show while the controller has applied more (the view is on its way), or a partition
/// this node leads whose replica here is not open or not leading yet.
fn about_to_change(
    shard: &Shard,
    topic: &str,
    partition: u32,
    located: &Result<Place, OpError>,
) -> bool {
    let me = Some(shard.cluster.id.0);
    match located {
        Err(OpError::UnknownTopic | OpError::UnknownPartition) => shard.cluster.view_behind(),
        Err(_) | Ok(Place::Shard(_)) => false,
        Ok(Place::Elsewhere { leader }) => *leader == me,
        Ok(Place::Here(replica)) => {
            replica.driver.leading().is_none() && shard.cluster.leader_of(topic, partition) == me
        }
    }
}

/// Runs a partition operation that reached this shard through its inbox, in the order
/// the inbox delivered it; the reply goes back once the operation is done.
pub(crate) async fn run_forwarded(
    shard: &Rc<Shard>,
    op: PartitionOp,
    reply: oneshot::Sender<OpReply>,
) {
    shard.begin_request();
    let done = {
        let shard = shard.clone();
        move || shard.end_request()
    };
    match op {
        PartitionOp::Produce(op) => {
            let pending = produce::produce(shard, op).await;
            glommio::spawn_local(async move {
                let _ = reply.send(OpReply::Produced(pending.await));
                done();
            })
            .detach();
        }
        PartitionOp::Fetch(op) => {
            let pending = reads::fetch(shard, op).await;
            glommio::spawn_local(async move {
                let _ = reply.send(OpReply::Fetched(pending.await));
                done();
            })
            .detach();
        }
        PartitionOp::ListOffsets(op) => {
            let pending = reads::list_offsets(shard, op).await;
            glommio::spawn_local(async move {
                let _ = reply.send(OpReply::Offset(pending.await));
                done();
            })
            .detach();
        }
        PartitionOp::EpochEnd(op) => {
            let pending = reads::end_offset_for_epoch(shard, op).await;
            glommio::spawn_local(async move {
                let _ = reply.send(OpReply::EpochEnd(pending.await));
                done();
            })
            .detach();
        }
    }
}

/// Hands `op` to the owner shard's inbox (awaited in request order, so forwarded
/// produces keep their order); the pending answer is that shard's reply.
async fn forward<T: 'static>(
    shard: &Shard,
    owner: usize,
    op: PartitionOp,
    unwrap: fn(OpReply) -> Option<Result<T, OpError>>,
) -> Pending<T> {
    let (tx, rx) = oneshot::channel();
    let Some(inbox) = shard.inboxes.get(owner) else {
        return answered(Err(OpError::Unknown(format!("no shard {owner}"))));
    };
    if inbox
        .send_async(ShardMsg::Op { op, reply: tx })
        .await
        .is_err()
    {
        return answered(Err(OpError::ShuttingDown));
    }
    async move {
        match rx.await {
            Ok(reply) => unwrap(reply)
                .unwrap_or_else(|| Err(OpError::Unknown("a reply of the wrong kind".into()))),
            Err(_) => Err(OpError::ShuttingDown),
        }
    }
    .boxed_local()
}
