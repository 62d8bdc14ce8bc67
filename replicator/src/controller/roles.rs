//! What a node's replica of a partition is told, from the metadata its controller voter
//! applied: lead (with the ISR and what is known of each member), follow, or a new ISR.
//! net's reconciliation and the simulation both call [`replica_input`], so one copy of
//! the rules runs in both.

use shardlog_engine::LeaderEpoch;

use super::metadata::{Metadata, PartitionState};
use crate::ids::{Incarnation, NodeId};
use crate::replica::{Input, Member};

/// The replica a leaderless partition "follows": no node has this id.
pub const NO_LEADER: NodeId = NodeId(u32::MAX);

/// The (leader epoch, partition epoch) last handed to a replica; `None` before the first.
pub type RoleApplied = Option<(LeaderEpoch, u64)>;

impl Metadata {
    /// Whether the controller has run `incarnation` of `node` registered and live (not a
    /// previous run, not fenced). Until then the node's replicas lead nothing: leading an
    /// epoch of its previous run again would be unsafe (a follower may hold batches the
    /// node shipped but lost in a crash, and would keep them where the node now writes
    /// others: same epoch, same offsets, other bytes). The registration fences the
    /// previous run, which gives every partition it led a new leader epoch.
    #[must_use]
    pub fn rejoined(&self, node: NodeId, incarnation: u64) -> bool {
        self.nodes()
            .get(&node)
            .is_some_and(|info| info.incarnation == incarnation && !info.fenced)
    }
}

/// The controller's decision for the replica of `state` on `node`, once per (leader
/// epoch, partition epoch): `BecomeLeader` for a new epoch it leads, `IsrUpdated` for a
/// new partition epoch it leads, `BecomeFollower` for a new epoch led by another (or by
/// nobody: it then follows [`NO_LEADER`], so it stops leading an old epoch). `applied`
/// is the replica's marker, updated here. A leadership of a node not `rejoined` is held
/// back and not marked: a later view decides again.
pub fn replica_input(
    metadata: &Metadata,
    state: &PartitionState,
    node: NodeId,
    rejoined: bool,
    applied: &mut RoleApplied,
) -> Option<Input> {
    let now = (state.leader_epoch, state.partition_epoch);
    let before = *applied;
    if before == Some(now) {
        return None;
    }
    if state.leader == Some(node) && !rejoined {
        return None;
    }
    *applied = Some(now);
    let new_epoch = before.is_none_or(|(epoch, _)| epoch != state.leader_epoch);
    match state.leader {
        Some(leader) if leader == node => {
            let members = members(metadata, state);
            Some(if new_epoch {
                Input::BecomeLeader {
                    epoch: state.leader_epoch,
                    replicas: state.replicas.clone(),
                    isr: state.isr.clone(),
                    isr_version: state.partition_epoch,
                    members,
                }
            } else {
                Input::IsrUpdated {
                    epoch: state.leader_epoch,
                    isr_version: state.partition_epoch,
                    isr: state.isr.clone(),
                    members,
                }
            })
        }
        leader if new_epoch => Some(Input::BecomeFollower {
            epoch: state.leader_epoch,
            leader: leader.unwrap_or(NO_LEADER),
        }),
        _ => None,
    }
}

/// What the controller knows of each replica's node.
fn members(metadata: &Metadata, state: &PartitionState) -> Vec<Member> {
    state
        .replicas
        .iter()
        .map(|&node| {
            let info = metadata.nodes().get(&node);
            Member {
                node,
                live: info.is_some_and(|i| !i.fenced),
                incarnation: Incarnation(info.map_or(0, |i| i.incarnation)),
                catching_up: super::reassignment::catching_up(state, node),
            }
        })
        .collect()
}
