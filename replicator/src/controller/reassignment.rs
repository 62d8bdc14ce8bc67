//! Replica moves (`Command::ReassignPartition`), applied inside
//! [`Metadata::apply`](super::Metadata::apply). The model is Kafka's KIP-455 with
//! Redpanda's learners: replicas are added before any is removed, and an added replica
//! counts for nothing until it has caught up.
//!
//! 1. A reassignment to a target set `T` of a partition whose replicas are `O` makes the
//!    replicas `O ∪ T` (`O` first, so the preferred leader does not move mid-way), with
//!    `adding = T \ O` outside the ISR and `removing = O \ T`. Every node reconciles: an
//!    adding node opens the replica and follows the leader from the log start; the
//!    leader ships to it as to any follower (throttled: it is marked catching up).
//! 2. The leader's ISR rule lets a caught-up adding replica join the ISR (`ChangeIsr`).
//! 3. Once `T ⊆ ISR`, the same apply commits the move ([`complete`]): replicas become `T`,
//!    the ISR `ISR ∩ T` and the ELR `ELR ∩ T`. A leader not in `T` hands over to the first
//!    live member of `T` (all in the ISR) with a new leader epoch, the normal leader
//!    change, so fencing holds. Only then do the removed nodes drop their replica.
//! 4. A new reassignment while one is in progress replaces its target: adding replicas not
//!    in the new target go at once (refused if that would remove the leader); a target
//!    equal to `O` cancels the move.
//!
//! Why no acknowledged record is lost: the ISR only ever loses members that are leaving
//! for good, and only in the commit, where every target member is in the ISR and so holds
//! everything below the high watermark; adding replicas join the ISR only by the leader's
//! rule (holding everything committed); and `acks=all` waits for the whole ISR, however
//! large it grew. Invariants (checked with the metadata's, [`check`]): `adding` and
//! `removing` are disjoint subsets of the replicas, `removing ∩ adding = ∅`, the target
//! is the replicas without `removing`, and it is never empty.

use super::metadata::{MetadataChange, PartitionState, Refusal, leader_changed};
use super::{failover, metadata::Metadata};
use crate::ids::NodeId;

/// A partition's move in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    /// The replica set the move ends with, preferred leader first.
    pub target: Vec<NodeId>,
    /// Replicas the move added (not replicas before it): catching up until in the ISR.
    pub adding: Vec<NodeId>,
    /// Replicas the move removes once it commits.
    pub removing: Vec<NodeId>,
    /// Bytes per second the leader ships to adding replicas; `None`: the leader node's
    /// `move_throttle_bytes`, `Some(0)`: unthrottled.
    pub throttle_bytes: Option<u64>,
}

/// Whether `node` is a replica that the partition's move is adding and that has not joined
/// the ISR yet: the leader throttles what it ships to it.
#[must_use]
pub fn catching_up(p: &PartitionState, node: NodeId) -> bool {
    p.reassignment
        .as_ref()
        .is_some_and(|r| r.adding.contains(&node) && !p.isr.contains(&node))
}

/// Applies a reassignment of `p` to `target` (see the module doc), or refuses it with
/// `p` unchanged. `meta_nodes`: the registered nodes; `min_insync`: the topic's.
pub(crate) fn reassign(
    meta_nodes: &[NodeId],
    p: &mut PartitionState,
    target: &[u32],
    throttle_bytes: Option<u64>,
    min_insync: u16,
) -> Result<(), Refusal> {
    let target: Vec<NodeId> = target.iter().map(|n| NodeId(*n)).collect();
    if target.is_empty() {
        return Err(Refusal::InvalidReassignment("no replicas"));
    }
    if (1..target.len()).any(|i| target[i..].contains(&target[i - 1])) {
        return Err(Refusal::InvalidReassignment("replicas not distinct"));
    }
    if let Some(unknown) = target.iter().find(|n| !meta_nodes.contains(n)) {
        return Err(Refusal::UnknownNode(*unknown));
    }
    if target.len() < usize::from(min_insync) {
        return Err(Refusal::InvalidReassignment(
            "fewer replicas than the topic's min_insync",
        ));
    }
    // The replicas before any move (a move in progress added the others).
    let before: Vec<NodeId> = match &p.reassignment {
        Some(r) => p
            .replicas
            .iter()
            .copied()
            .filter(|n| !r.adding.contains(n))
            .collect(),
        None => p.replicas.clone(),
    };
    if p.reassignment.is_none() && target == before {
        return Err(Refusal::NoChange);
    }
    // Replicas a replaced move added that the new target does not keep: they go now.
    let dropped: Vec<NodeId> = p
        .replicas
        .iter()
        .copied()
        .filter(|n| !before.contains(n) && !target.contains(n))
        .collect();
    if p.leader.is_some_and(|l| dropped.contains(&l)) {
        return Err(Refusal::InvalidReassignment(
            "the new target drops the partition's leader, which the move in progress added",
        ));
    }
    if p.isr.iter().all(|n| dropped.contains(n)) {
        return Err(Refusal::InvalidReassignment(
            "the new target empties the ISR",
        ));
    }
    let adding: Vec<NodeId> = target
        .iter()
        .copied()
        .filter(|n| !before.contains(n))
        .collect();
    let removing: Vec<NodeId> = before
        .iter()
        .copied()
        .filter(|n| !target.contains(n))
        .collect();
    // The move in progress asked for again without a throttle (a `--wait` re-run of the
    // same command) keeps the throttle it has: only a throttle given changes it.
    let throttle_bytes = match &p.reassignment {
        Some(r) if r.target == target && throttle_bytes.is_none() => r.throttle_bytes,
        _ => throttle_bytes,
    };
    p.replicas = before.iter().chain(&adding).copied().collect();
    p.isr.retain(|n| !dropped.contains(n));
    p.elr.retain(|n| !dropped.contains(n));
    p.reassignment = Some(Reassignment {
        target,
        adding,
        removing,
        throttle_bytes,
    });
    p.partition_epoch += 1;
    Ok(())
}

/// Commits `p`'s move if every target replica is in the ISR and, when the leader is
/// leaving, a live target member can take over; the change to publish, if it did. A
/// move that changes nothing more (its target is the replicas) just ends.
pub(crate) fn complete(
    topic: &str,
    partition: u32,
    p: &mut PartitionState,
    live: &[NodeId],
) -> Option<MetadataChange> {
    let r = p.reassignment.as_ref()?;
    if !r.target.iter().all(|n| p.isr.contains(n)) {
        return None;
    }
    let leader_leaves = p.leader.is_some_and(|l| !r.target.contains(&l));
    let successor = r.target.iter().copied().find(|n| live.contains(n));
    if leader_leaves && successor.is_none() {
        return None; // No live target member yet: the move waits for one.
    }
    let target = r.target.clone();
    p.reassignment = None;
    p.isr = target.clone();
    p.elr.retain(|n| target.contains(n));
    p.replicas = target;
    if leader_leaves {
        failover::set_leader(p, successor);
        return Some(leader_changed(topic, partition, p));
    }
    p.partition_epoch += 1;
    Some(MetadataChange::IsrChanged {
        topic: topic.to_owned(),
        partition: shardlog_engine::PartitionId(partition),
        leader_epoch: p.leader_epoch,
        isr: p.isr.clone(),
    })
}

/// Commits every move that can be (after any applied command: an ISR change, a node
/// back, a new reassignment).
pub(crate) fn complete_all(meta: &mut Metadata, changes: &mut Vec<MetadataChange>) {
    let live = meta.live_nodes();
    for (topic, partition, _, p) in meta.partitions_mut() {
        if p.reassignment.is_some()
            && let Some(change) = complete(topic, partition, p, &live)
        {
            changes.push(change);
        }
    }
}

/// The move's invariants (see the module doc).
pub(crate) fn check(p: &PartitionState) -> Result<(), &'static str> {
    let Some(r) = &p.reassignment else {
        return Ok(());
    };
    if r.target.is_empty() {
        return Err("empty reassignment target");
    }
    if r.adding
        .iter()
        .chain(&r.removing)
        .any(|n| !p.replicas.contains(n))
    {
        return Err("adding or removing replica is not a replica");
    }
    if r.adding.iter().any(|n| r.removing.contains(n)) {
        return Err("a replica both added and removed");
    }
    let kept: Vec<NodeId> = p
        .replicas
        .iter()
        .copied()
        .filter(|n| !r.removing.contains(n))
        .collect();
    if kept.len() != r.target.len() || kept.iter().any(|n| !r.target.contains(n)) {
        return Err("target is not the replicas without the removing ones");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::controller::{Command, THROTTLE_NODE_DEFAULT};

    fn cluster(nodes: u32) -> Metadata {
        let mut meta = Metadata::default();
        let mut changes = Vec::new();
        for node in 1..=nodes {
            let register = Command::Register {
                node,
                address: format!("127.0.0.1:{}", 9000 + node),
                incarnation: 1,
                session_expires_ms: 0,
            };
            meta.apply(&register, &mut changes).unwrap();
        }
        let create = Command::CreateTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: 3,
            min_insync: 2,
            config: Vec::new(),
        };
        meta.apply(&create, &mut changes).unwrap();
        meta
    }

    fn state(meta: &Metadata) -> PartitionState {
        meta.partition("t", 0).unwrap().clone()
    }

    fn ids(nodes: &[u32]) -> Vec<NodeId> {
        nodes.iter().map(|n| NodeId(*n)).collect()
    }

    fn reassign(meta: &mut Metadata, replicas: &[u32]) -> Result<(), Refusal> {
        let command = Command::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            replicas: replicas.to_vec(),
            throttle_bytes: THROTTLE_NODE_DEFAULT,
        };
        meta.apply(&command, &mut Vec::new())
    }

    /// The partition's leader proposes `isr` (at the current epochs).
    fn change_isr(meta: &mut Metadata, isr: &[u32]) -> Result<(), Refusal> {
        let p = state(meta);
        let command = Command::ChangeIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: p.leader_epoch.0,
            partition_epoch: u32::try_from(p.partition_epoch).unwrap(),
            new_isr: isr.to_vec(),
        };
        meta.apply(&command, &mut Vec::new())
    }

    fn fence(meta: &mut Metadata, node: u32) {
        meta.apply(&Command::FenceNode { node }, &mut Vec::new())
            .unwrap();
    }

    #[test]
    fn a_move_adds_first_and_commits_once_every_target_is_in_sync() {
        let mut meta = cluster(4);
        let start = state(&meta);
        let before: Vec<u32> = start.replicas.iter().map(|n| n.0).collect();
        let spare = (1..=4).find(|n| !before.contains(n)).unwrap();
        // Replace the leader's node: target = the two followers and the spare node.
        let leader = start.leader.unwrap();
        let mut target: Vec<u32> = before.iter().copied().filter(|n| *n != leader.0).collect();
        target.push(spare);
        reassign(&mut meta, &target).unwrap();
        let moving = state(&meta);
        assert_eq!(moving.replicas.len(), 4, "old and new replicas: {moving:?}");
        assert_eq!(moving.isr, start.isr, "an adding replica is not in sync");
        assert_eq!(moving.leader, start.leader);
        assert!(catching_up(&moving, NodeId(spare)));
        let r = moving.reassignment.clone().unwrap();
        assert_eq!(r.adding, ids(&[spare]));
        assert_eq!(r.removing, vec![leader]);
        // The spare caught up: the leader asks for it in the ISR; the move commits in the
        // same apply and the leader, leaving, hands over with a new epoch.
        let mut isr: Vec<u32> = moving.isr.iter().map(|n| n.0).collect();
        isr.push(spare);
        change_isr(&mut meta, &isr).unwrap();
        let done = state(&meta);
        assert_eq!(done.replicas, ids(&target));
        assert_eq!(done.isr, ids(&target));
        assert_eq!(done.reassignment, None);
        assert_eq!(done.leader, Some(NodeId(target[0])));
        assert!(done.leader_epoch > start.leader_epoch);
    }

    #[test]
    fn the_same_move_asked_again_keeps_its_throttle_unless_given_one() {
        let mut meta = cluster(4);
        let before: Vec<u32> = state(&meta).replicas.iter().map(|n| n.0).collect();
        let spare = (1..=4).find(|n| !before.contains(n)).unwrap();
        let target = vec![spare, before[1], before[2]];
        let move_with = |meta: &mut Metadata, throttle_bytes| {
            let command = Command::ReassignPartition {
                topic: "t".into(),
                partition: 0,
                replicas: target.clone(),
                throttle_bytes,
            };
            meta.apply(&command, &mut Vec::new()).unwrap();
            state(meta).reassignment.unwrap().throttle_bytes
        };
        assert_eq!(move_with(&mut meta, 262_144), Some(262_144));
        assert_eq!(move_with(&mut meta, THROTTLE_NODE_DEFAULT), Some(262_144));
        assert_eq!(move_with(&mut meta, 0), Some(0));
        // A different target is a new move: its own throttle, the node's default here.
        reassign(&mut meta, &before).unwrap();
        assert_eq!(move_with(&mut meta, THROTTLE_NODE_DEFAULT), None);
    }

    #[test]
    fn an_adding_replica_out_of_sync_keeps_the_move_open() {
        let mut meta = cluster(4);
        let before: Vec<u32> = state(&meta).replicas.iter().map(|n| n.0).collect();
        let spare = (1..=4).find(|n| !before.contains(n)).unwrap();
        let target = [spare, before[1], before[2]];
        reassign(&mut meta, &target).unwrap();
        // An ISR shrink of a member that stays does not commit the move.
        change_isr(&mut meta, &before[..2]).unwrap();
        let p = state(&meta);
        assert!(p.reassignment.is_some());
        assert_eq!(p.replicas.len(), 4);
        // Nor does the fencing of an adding node.
        fence(&mut meta, spare);
        assert!(state(&meta).reassignment.is_some());
    }

    #[test]
    fn cancel_and_replace() {
        let mut meta = cluster(5);
        let start = state(&meta);
        let before: Vec<u32> = start.replicas.iter().map(|n| n.0).collect();
        let spares: Vec<u32> = (1..=5).filter(|n| !before.contains(n)).collect();
        reassign(&mut meta, &[before[0], before[1], spares[0]]).unwrap();
        // Replaced: the first spare is dropped at once, the second added.
        reassign(&mut meta, &[before[0], before[1], spares[1]]).unwrap();
        let p = state(&meta);
        assert!(!p.replicas.contains(&NodeId(spares[0])));
        assert_eq!(p.reassignment.as_ref().unwrap().adding, ids(&[spares[1]]));
        // Cancelled: back to the replicas before the move, nothing in progress.
        reassign(&mut meta, &before).unwrap();
        let p = state(&meta);
        assert_eq!(p.replicas, start.replicas);
        assert_eq!(p.isr, start.isr);
        assert_eq!(p.reassignment, None);
        assert_eq!(p.leader, start.leader);
        assert_eq!(reassign(&mut meta, &before), Err(Refusal::NoChange));
    }

    #[test]
    fn refusals() {
        let mut meta = cluster(4);
        let before: Vec<u32> = state(&meta).replicas.iter().map(|n| n.0).collect();
        let unchanged = state(&meta);
        assert!(matches!(
            reassign(&mut meta, &[]),
            Err(Refusal::InvalidReassignment(_))
        ));
        assert!(matches!(
            reassign(&mut meta, &[1, 1, 2]),
            Err(Refusal::InvalidReassignment(_))
        ));
        assert_eq!(
            reassign(&mut meta, &[1, 2, 9]),
            Err(Refusal::UnknownNode(NodeId(9)))
        );
        // min_insync is 2.
        assert!(matches!(
            reassign(&mut meta, &[1]),
            Err(Refusal::InvalidReassignment(_))
        ));
        assert_eq!(state(&meta), unchanged);
        // A move in progress whose added replica became the leader (its old leaders
        // died) cannot be replaced by a target without it.
        let spare = (1..=4).find(|n| !before.contains(n)).unwrap();
        reassign(&mut meta, &[before[0], before[1], before[2], spare]).unwrap();
        let isr = [before[0], before[1], before[2], spare];
        change_isr(&mut meta, &isr).unwrap();
        // (Target ⊆ ISR: committed at once, growing the set to four.)
        assert_eq!(state(&meta).replicas.len(), 4);
        assert_eq!(state(&meta).reassignment, None);
    }

    #[test]
    fn a_leaving_leader_waits_for_a_live_successor() {
        let mut meta = cluster(4);
        let before: Vec<u32> = state(&meta).replicas.iter().map(|n| n.0).collect();
        let leader = state(&meta).leader.unwrap().0;
        let spare = (1..=4).find(|n| !before.contains(n)).unwrap();
        // Move to {spare, one follower}: min_insync 2 allows two replicas.
        let follower = before.iter().copied().find(|n| *n != leader).unwrap();
        reassign(&mut meta, &[spare, follower]).unwrap();
        let mut isr: Vec<u32> = state(&meta).isr.iter().map(|n| n.0).collect();
        isr.push(spare);
        // Both target nodes are fenced before the ISR change commits the move... the
        // fenced spare cannot join, so the move stays open.
        fence(&mut meta, spare);
        assert!(change_isr(&mut meta, &isr).is_err());
        assert!(state(&meta).reassignment.is_some());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Reassign(Vec<u32>),
        /// The leader proposes its ISR plus (or minus) a node.
        Grow(u32),
        Shrink(u32),
        Fence(u32),
        Back(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::sample::subsequence(vec![1u32, 2, 3, 4, 5], 1..=4)
                .prop_shuffle()
                .prop_map(Op::Reassign),
            (1u32..=5).prop_map(Op::Grow),
            (1u32..=5).prop_map(Op::Shrink),
            (1u32..=5).prop_map(Op::Fence),
            (1u32..=5).prop_map(Op::Back),
        ]
    }

    fn run(meta: &mut Metadata, op: &Op) -> Result<(), Refusal> {
        let p = state(meta);
        let isr: Vec<u32> = p.isr.iter().map(|n| n.0).collect();
        match op {
            Op::Reassign(target) => reassign(meta, target),
            Op::Grow(node) => change_isr(meta, &[isr, vec![*node]].concat()),
            Op::Shrink(node) => {
                let rest: Vec<u32> = isr.into_iter().filter(|n| n != node).collect();
                change_isr(meta, &rest)
            }
            Op::Fence(node) => meta.apply(&Command::FenceNode { node: *node }, &mut Vec::new()),
            Op::Back(node) => {
                let heartbeat = Command::Heartbeat {
                    node: *node,
                    session_expires_ms: 0,
                };
                meta.apply(&heartbeat, &mut Vec::new())
            }
        }
    }

    proptest! {
        /// Whatever moves, ISR changes, failures and returns happen: the metadata's
        /// invariants hold (checked by every apply), no replica enters the ISR except by
        /// the leader's proposal (a move never counts a replica in sync by itself), the
        /// ISR always keeps a member of the one before (acknowledged records live on
        /// every member, so one survives every change), and a move commits only with
        /// every target replica in sync.
        #[test]
        fn moves_keep_the_isr_safe(ops in proptest::collection::vec(op(), 1..60)) {
            let mut meta = cluster(5);
            for op in &ops {
                let before = state(&meta);
                let outcome = run(&mut meta, op);
                let after = state(&meta);
                let proposed: Vec<NodeId> = match op {
                    Op::Grow(node) if outcome.is_ok() => vec![NodeId(*node)],
                    _ => Vec::new(),
                };
                for node in &after.isr {
                    let elected_from_elr = before.elr.contains(node) && after.leader == Some(*node);
                    prop_assert!(
                        before.isr.contains(node) || proposed.contains(node) || elected_from_elr,
                        "{node} entered the ISR by {op:?}: {before:?} -> {after:?}"
                    );
                }
                prop_assert!(
                    after.isr.iter().any(|n| before.isr.contains(n)),
                    "no member of the ISR survived {op:?}: {before:?} -> {after:?}"
                );
                if before.reassignment.is_some() && after.reassignment.is_none() {
                    if let Some(target) = before.reassignment.as_ref().map(|r| &r.target) {
                        let cancelled = matches!(op, Op::Reassign(_));
                        prop_assert!(
                            cancelled || target.iter().all(|n| after.isr.contains(n)),
                            "committed without every target replica in sync: {after:?}"
                        );
                    }
                }
            }
        }
    }
}
