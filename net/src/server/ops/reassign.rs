//! Replica moves: `ReassignPartition` as a topic change (proposed on the controller
//! leader, passed on to it by any other node, answered once applied: the move has then
//! started, and runs by itself until every target replica is in sync) and the moves in
//! progress as this node's metadata shows them. The rules are the controller's
//! (`shardlog_replicator::controller::reassignment`).

use shardlog_replicator::controller::{Command, Refusal, THROTTLE_NODE_DEFAULT};

use crate::api::{PartitionMove, ReassignPartitionRequest};
use crate::server::ops::OpError;
use crate::server::shard::Shard;

/// Most replicas a move may name (more than any cluster here has nodes).
pub(crate) const REPLICAS_MAX: usize = 64;

/// A partition to move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewReplicas {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) replicas: Vec<u32>,
    /// `None`: the leader node's `move_throttle_bytes`.
    pub(crate) throttle_bytes: Option<u64>,
}

impl From<ReassignPartitionRequest> for NewReplicas {
    fn from(r: ReassignPartitionRequest) -> NewReplicas {
        NewReplicas {
            topic: r.topic,
            partition: r.partition,
            replicas: r.replicas,
            throttle_bytes: r.throttle_bytes,
        }
    }
}

impl From<&NewReplicas> for ReassignPartitionRequest {
    fn from(r: &NewReplicas) -> ReassignPartitionRequest {
        ReassignPartitionRequest {
            topic: r.topic.clone(),
            partition: r.partition,
            replicas: r.replicas.clone(),
            throttle_bytes: r.throttle_bytes,
        }
    }
}

/// The checks a client's request gets before it is proposed (the controller checks the
/// rest when it applies it: known nodes, `min_insync`), and the command.
pub(crate) fn command(move_: &NewReplicas) -> Result<Command, OpError> {
    if move_.replicas.is_empty() || move_.replicas.len() > REPLICAS_MAX {
        return Err(OpError::InvalidRequest(format!(
            "replicas: 1 to {REPLICAS_MAX} node ids, got {}",
            move_.replicas.len()
        )));
    }
    let throttle_bytes = match move_.throttle_bytes {
        None => THROTTLE_NODE_DEFAULT,
        Some(THROTTLE_NODE_DEFAULT) => {
            return Err(OpError::InvalidRequest("throttle out of range".into()));
        }
        Some(bytes) => bytes,
    };
    Ok(Command::ReassignPartition {
        topic: move_.topic.clone(),
        partition: move_.partition,
        replicas: move_.replicas.clone(),
        throttle_bytes,
    })
}

/// The outcome of a proposed reassignment: a target the partition already has is done
/// (so a retried request whose first attempt applied is answered alike).
pub(crate) fn outcome(refusal: Refusal) -> Result<(), OpError> {
    let message = refusal.to_string();
    match refusal {
        Refusal::NoChange => Ok(()),
        Refusal::UnknownPartition => Err(OpError::UnknownPartition),
        Refusal::UnknownNode(_) | Refusal::InvalidReassignment(_) => {
            Err(OpError::InvalidRequest(message))
        }
        _ => Err(OpError::Unknown(message)),
    }
}

/// The moves in progress of `topics` (all when empty), from this node's view.
pub(crate) fn in_progress(shard: &Shard, topics: &[String]) -> Result<Vec<PartitionMove>, OpError> {
    let view = shard.cluster.view().ok_or_else(|| {
        OpError::NotAvailable(format!(
            "node {} is catching up with the controller",
            shard.node.node_id
        ))
    })?;
    let ids = |nodes: &[shardlog_replicator::NodeId]| nodes.iter().map(|n| n.0).collect();
    let mut moves = Vec::new();
    for (name, info) in view.metadata.topics() {
        if !topics.is_empty() && !topics.contains(name) {
            continue;
        }
        for (partition, p) in (0u32..).zip(&info.partitions) {
            if let Some(r) = &p.reassignment {
                moves.push(PartitionMove {
                    topic: name.clone(),
                    partition,
                    target: ids(&r.target),
                    adding: ids(&r.adding),
                    removing: ids(&r.removing),
                    throttle_bytes: r.throttle_bytes,
                });
            }
        }
    }
    Ok(moves)
}
