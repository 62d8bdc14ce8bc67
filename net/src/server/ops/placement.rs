//! Placement requests: decommission a node (`DrainNode`) or take it back, and rebalance
//! replica counts over the nodes. Like a topic change, each runs on shard 0, where the
//! controller voter lives: the controller leader takes it, a node that does not lead the
//! controller passes it to the one that does over the peer link and relays the answer.
//! The moves themselves are the controller leader's (`replica_plan`, `ReassignPartition`).

use std::rc::Rc;

use bytes::Bytes;
use shardlog_replicator::controller::{Command, Refusal};

use crate::api::{Api, DrainNodeRequest, RebalanceReplicasRequest};
use crate::server::ops::topics::{controller_leader, leader_answer};
use crate::server::ops::{OpError, Pending, on_shard_zero};
use crate::server::shard::{Shard, ShardMsg};

/// A placement request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlacementChange {
    /// Decommission `node` (`draining`), or take it back.
    Drain { node: u32, draining: bool },
    /// Even out replica counts; with `dry_run`, only count the moves.
    Rebalance { dry_run: bool },
}

/// Runs `change` on shard 0; the answer is a sentence saying what was done.
pub(crate) async fn change(shard: &Rc<Shard>, change: PlacementChange) -> Pending<String> {
    let here = |shard: Rc<Shard>, change| async move { change_here(&shard, change).await };
    on_shard_zero(shard, change, here, |change, reply| ShardMsg::Placement {
        change,
        reply,
    })
    .await
}

/// `change` on shard 0: taken if this node leads the controller, else passed to the node
/// that does.
pub(crate) async fn change_here(
    shard: &Rc<Shard>,
    change: PlacementChange,
) -> Result<String, OpError> {
    let service = shard
        .cluster
        .controller
        .as_ref()
        .ok_or_else(|| OpError::Unknown("placement change off shard 0".into()))?;
    if !service.is_leader() {
        return pass_to_leader(shard, change).await;
    }
    match change {
        PlacementChange::Drain { node, draining } => {
            let command = Command::DrainNode { node, draining };
            let what = if draining {
                "draining: its replicas move to the other nodes"
            } else {
                "taken back: it receives replicas again"
            };
            match service.propose(command).await {
                Ok(Ok(())) | Ok(Err(Refusal::NoChange)) => Ok(format!("node {node} {what}")),
                Ok(Err(Refusal::UnknownNode(n))) => Err(OpError::InvalidRequest(format!(
                    "node {n} is not a registered node of the cluster"
                ))),
                Ok(Err(refusal)) => Err(OpError::Unknown(refusal.to_string())),
                Err(e) => Err(OpError::Timeout(e)),
            }
        }
        PlacementChange::Rebalance { dry_run } => {
            let (moves, cap) = service
                .rebalance_replicas(dry_run)
                .map_err(OpError::NotAvailable)?;
            Ok(if dry_run {
                format!("a rebalance would move {moves} replicas")
            } else if moves > cap {
                format!(
                    "rebalance: {moves} replica moves planned, at most {cap} at once \
                     (max_concurrent_moves): the rest start as moves finish"
                )
            } else {
                format!("rebalance: {moves} replica moves started")
            })
        }
    }
}

/// Passes `change` to the controller leader over the peer link and relays its answer.
async fn pass_to_leader(shard: &Shard, change: PlacementChange) -> Result<String, OpError> {
    let leader = controller_leader(shard)?;
    let peers = &shard.cluster.peers;
    let answer = match change {
        PlacementChange::Drain { node, draining } => {
            let request = DrainNodeRequest { node, draining };
            peers
                .call(leader.0, Api::DrainNode, &request, Bytes::new())
                .await
        }
        PlacementChange::Rebalance { dry_run } => {
            let request = RebalanceReplicasRequest { dry_run };
            peers
                .call(leader.0, Api::RebalanceReplicas, &request, Bytes::new())
                .await
        }
    };
    leader_answer(leader, answer)
}
