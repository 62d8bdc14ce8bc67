//! Leader election rules, applied inside [`Metadata::apply`](super::Metadata::apply).
//!
//! - A fenced node's leaderships move to the first live ISR member in replica (preferred)
//!   order, with the leader epoch + 1. It leaves every ISR it is in, except as the last
//!   member: an ISR is never empty.
//! - No unclean election: if no live ISR member exists, the partition becomes leaderless
//!   (epoch + 1) and waits for an ISR member to come back.
//! - ELR (KIP-966, simplified): a member removed while the ISR is below `min_insync` joins
//!   the partition's ELR. The high watermark does not advance below `min_insync`, so it
//!   holds every committed record; it may be elected when no ISR member is live. The ELR
//!   is cleared once the ISR is back at `min_insync`. Not modelled yet: dropping an ELR
//!   member that restarted with an unclean shutdown.
//! - A live leader only ever moves to its preferred replica, once that replica is live
//!   and back in the ISR (preferred-leader rebalance, proposed by the controller leader).

use super::metadata::{Metadata, MetadataChange, PartitionState, leader_changed};
use crate::ids::NodeId;

/// Who should lead `p` given the live nodes: the current leader, its preferred replica
/// (rebalance), or after a failure the first live ISR then ELR member; `None` if nobody.
#[must_use]
pub fn choose_leader(p: &PartitionState, live: &[NodeId]) -> Option<NodeId> {
    let live_in = |set: &[NodeId], n: &NodeId| set.contains(n) && live.contains(n);
    if let Some(leader) = p.leader.filter(|l| live_in(&p.isr, l)) {
        return match p.preferred() {
            Some(preferred) if live_in(&p.isr, &preferred) => Some(preferred),
            _ => Some(leader),
        };
    }
    let first_in = |set: &[NodeId]| p.replicas.iter().copied().find(|n| live_in(set, n));
    first_in(&p.isr).or_else(|| first_in(&p.elr))
}

/// Sets the leader with a new leader epoch; an ELR member elected joins the ISR.
pub fn set_leader(p: &mut PartitionState, leader: Option<NodeId>) {
    if let Some(l) = leader {
        if !p.isr.contains(&l) {
            p.elr.retain(|n| *n != l);
            p.isr.push(l);
            p.isr = in_replica_order(p, &p.isr);
        }
    }
    p.leader = leader;
    p.leader_epoch.0 += 1;
    p.partition_epoch += 1;
}

/// Replaces the ISR, maintaining the ELR (see the module doc).
pub fn set_isr(p: &mut PartitionState, isr: Vec<NodeId>, min_insync: u16) {
    let removed: Vec<NodeId> = p.isr.iter().copied().filter(|n| !isr.contains(n)).collect();
    p.isr = isr;
    let below = p.isr.len() < usize::from(min_insync);
    if below {
        p.elr.extend(removed); // de-duplicated by in_replica_order below
    }
    p.elr.retain(|n| !p.isr.contains(n));
    if !below {
        p.elr.clear();
    }
    p.elr = in_replica_order(p, &p.elr);
    p.partition_epoch += 1;
}

fn in_replica_order(p: &PartitionState, set: &[NodeId]) -> Vec<NodeId> {
    p.replicas
        .iter()
        .copied()
        .filter(|n| set.contains(n))
        .collect()
}

/// `node` was just fenced: shrink ISRs, move its leaderships. Every partition it is a
/// replica of gets a new partition epoch, so its leader learns the node is offline.
pub fn on_fenced(meta: &mut Metadata, node: NodeId, changes: &mut Vec<MetadataChange>) {
    let live = meta.live_nodes();
    for (topic, index, min_insync, p) in meta.partitions_mut() {
        if !p.replicas.contains(&node) {
            continue;
        }
        let mut isr_changed = false;
        if p.isr.contains(&node) && p.isr.len() > 1 {
            let isr = p.isr.iter().copied().filter(|n| *n != node).collect();
            set_isr(p, isr, min_insync);
            isr_changed = true;
        }
        if p.leader == Some(node) {
            set_leader(p, choose_leader(p, &live));
            changes.push(leader_changed(topic, index, p));
        } else if !isr_changed {
            p.partition_epoch += 1;
        } else {
            changes.push(MetadataChange::IsrChanged {
                topic: topic.to_owned(),
                partition: shardlog_engine::PartitionId(index),
                leader_epoch: p.leader_epoch,
                isr: p.isr.clone(),
            });
        }
    }
}

/// The replica on `node` stopped (its log failed) while in `stopped_in`: if it still leads
/// that epoch, the partition gets a new epoch, led by the first other live ISR (then ELR)
/// member, or by `node` again if there is none (no unclean election). It leaves the ISR
/// unless it leads or is the last member, and the ELR. Whether anything changed.
pub fn on_replica_offline(
    p: &mut PartitionState,
    node: NodeId,
    stopped_in: shardlog_engine::LeaderEpoch,
    live: &[NodeId],
    min_insync: u16,
) -> bool {
    let others: Vec<NodeId> = live.iter().copied().filter(|n| *n != node).collect();
    let leads_stopped = p.leader == Some(node) && p.leader_epoch == stopped_in;
    let mut changed = false;
    let successor = if leads_stopped {
        choose_leader(p, &others)
    } else {
        None
    };
    let may_leave = p.leader != Some(node) || successor.is_some();
    if may_leave && p.isr.contains(&node) && p.isr.len() > 1 {
        let isr = p.isr.iter().copied().filter(|n| *n != node).collect();
        set_isr(p, isr, min_insync);
        changed = true;
    }
    // Its log may have lost what it had not written: not an eligible leader any more
    // (KIP-966 drops an ELR member after an unclean shutdown alike).
    if p.elr.contains(&node) {
        p.elr.retain(|n| *n != node);
        p.partition_epoch += 1;
        changed = true;
    }
    if leads_stopped {
        set_leader(p, successor.or(Some(node)));
        changed = true;
    }
    changed
}

/// `node` is back: leaderless partitions it can lead elect it (or a better member); the
/// others it is a replica of get a new partition epoch, so their leader learns it may
/// join the ISR again.
pub fn on_unfenced(meta: &mut Metadata, node: NodeId, changes: &mut Vec<MetadataChange>) {
    let live = meta.live_nodes();
    for (topic, index, _, p) in meta.partitions_mut() {
        if !p.replicas.contains(&node) {
            continue;
        }
        let eligible = p.isr.contains(&node) || p.elr.contains(&node);
        match choose_leader(p, &live) {
            Some(leader) if p.leader.is_none() && eligible => {
                set_leader(p, Some(leader));
                changes.push(leader_changed(topic, index, p));
            }
            _ => p.partition_epoch += 1,
        }
    }
}
