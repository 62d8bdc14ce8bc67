//! Replica moves (pure decisions): re-place the replicas of nodes that must be emptied (a
//! node fenced longer than the re-placement delay, or a decommissioned one), and
//! rebalance replica counts over the serving nodes (a node that joined gets its share).
//!
//! A planner reads what the controller knows (each node's [`NodeRole`], each partition's
//! replica list) and returns [`Move`]s: a partition's new replica list, which the
//! controller hands to the reassignment mechanism (catch up outside the ISR, join it, then
//! the old replicas leave). Rules every plan keeps:
//!
//! - the replication factor: a replica is replaced, never dropped (a partition with no
//!   serving node to take a replica keeps it where it is);
//! - replicas stay on distinct nodes, and only [`NodeRole::Serving`] nodes receive any;
//! - replicas that stay keep their position, so the preferred leader (the first replica)
//!   changes only when it is the one moved; the node taking the first position is the one
//!   with the fewest preferred leaderships among the least loaded, so leaders stay spread;
//! - at most one move per partition per plan; a plan of the current state after its moves
//!   are done is empty once balanced (no move when balanced: replica counts of serving
//!   nodes differ by at most one); a partition with a move in progress is not moved.
//!
//! The controller starts a plan's moves a few at a time ([`start_within`]): at most
//! `max_concurrent_moves` partitions move at once, counting every move in progress (an
//! operator's `shardlog partition reassign` too, which itself is never held back). A plan
//! is made from the current state, moves in progress counted at their targets and never
//! moved again, so planning again as moves finish starts the rest until the plan is empty.

use std::collections::BTreeMap;

use crate::ids::NodeId;

/// What a planner may do with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// Live and not draining: keeps its replicas and may receive more.
    Serving,
    /// Fenced, not yet for the re-placement delay: keeps its replicas, receives none.
    Unavailable,
    /// Decommissioned, or fenced longer than the re-placement delay: every replica it holds
    /// moves to a serving node; it receives none.
    Evacuate,
}

/// One partition as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Replicas, preferred leader first (the target of a move in progress).
    pub replicas: Vec<NodeId>,
    /// A move of it is in progress: counted, never moved again before it ends.
    pub moving: bool,
}

/// A partition's new replica list (preferred leader first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The replica list to reach.
    pub replicas: Vec<NodeId>,
}

/// Replica and preferred-leader counts per serving node.
struct Load {
    replicas: BTreeMap<NodeId, usize>,
    preferred: BTreeMap<NodeId, usize>,
}

impl Load {
    fn of(roles: &BTreeMap<NodeId, NodeRole>, partitions: &[PlanPartition]) -> Load {
        let serving = roles.iter().filter(|(_, r)| **r == NodeRole::Serving);
        let mut load = Load {
            replicas: serving.clone().map(|(n, _)| (*n, 0)).collect(),
            preferred: serving.map(|(n, _)| (*n, 0)).collect(),
        };
        for p in partitions {
            for (i, n) in p.replicas.iter().enumerate() {
                load.add(*n, i == 0, 1);
            }
        }
        load
    }

    /// Counts (or uncounts, with `delta` -1) a replica on `node`, the first one if `first`.
    fn add(&mut self, node: NodeId, first: bool, delta: isize) {
        if let Some(count) = self.replicas.get_mut(&node) {
            *count = count.saturating_add_signed(delta);
        }
        if first && let Some(count) = self.preferred.get_mut(&node) {
            *count = count.saturating_add_signed(delta);
        }
    }

    /// The serving node not in `taken` to receive a replica at position `position`: the
    /// least loaded, then (for the first position) the fewest preferred leaderships, then
    /// the smallest id.
    fn pick(&self, taken: &[NodeId], position: usize) -> Option<NodeId> {
        self.replicas
            .iter()
            .filter(|(n, _)| !taken.contains(n))
            .min_by_key(|(n, count)| {
                let preferred = if position == 0 {
                    self.preferred.get(n).copied().unwrap_or(0)
                } else {
                    0
                };
                (**count, preferred, **n)
            })
            .map(|(n, _)| *n)
    }
}

/// The first replica was replaced: the member of `target` with the fewest preferred
/// leaderships goes first (a replica that stays before a new one, which is not in sync
/// yet), so leaderships stay spread when a node leads many of the evacuated partitions.
fn choose_preferred(load: &mut Load, target: &mut [NodeId], before: &[NodeId]) {
    let key = |(i, n): (usize, &NodeId)| {
        let preferred = load.preferred.get(n).copied().unwrap_or(usize::MAX);
        (preferred, !before.contains(n), i)
    };
    if let Some((best, _)) = target.iter().enumerate().min_by_key(|&(i, n)| key((i, n))) {
        target.swap(0, best);
    }
    if let Some(count) = target.first().and_then(|n| load.preferred.get_mut(n)) {
        *count += 1;
    }
}

fn roles_map(nodes: &[(NodeId, NodeRole)]) -> BTreeMap<NodeId, NodeRole> {
    nodes.iter().copied().collect()
}

/// Moves that take every replica off [`NodeRole::Evacuate`] nodes, onto the least loaded
/// serving nodes. A replica on a node the planner does not know is treated as
/// unavailable (kept).
#[must_use]
pub fn evacuate(nodes: &[(NodeId, NodeRole)], partitions: &[PlanPartition]) -> Vec<Move> {
    let roles = roles_map(nodes);
    let mut load = Load::of(&roles, partitions);
    let mut moves = Vec::new();
    for p in partitions.iter().filter(|p| !p.moving) {
        let mut target = p.replicas.clone();
        for position in 0..target.len() {
            let node = target[position];
            if roles.get(&node) != Some(&NodeRole::Evacuate) {
                continue;
            }
            let Some(to) = load.pick(&target, position) else {
                continue; // no serving node left for it: keep the replica (RF before all)
            };
            target[position] = to;
            load.add(to, false, 1);
        }
        if target.first() != p.replicas.first() {
            choose_preferred(&mut load, &mut target, &p.replicas);
        }
        if target != p.replicas {
            moves.push(Move {
                topic: p.topic.clone(),
                partition: p.partition,
                replicas: target,
            });
        }
    }
    moves
}

/// Moves that even out replica counts over the serving nodes (a node that joined gets its
/// share), each from a most loaded node to a least loaded one, only while they differ by
/// two or more: the fewest moves that bring every count within one of the others.
/// Partitions with a replica on a node that is not serving are left alone (evacuation and
/// failover come first). A non-preferred replica moves rather than a preferred one when
/// the partition has the choice, so fewer leaderships move.
#[must_use]
pub fn rebalance(nodes: &[(NodeId, NodeRole)], partitions: &[PlanPartition]) -> Vec<Move> {
    let roles = roles_map(nodes);
    let mut load = Load::of(&roles, partitions);
    let movable: Vec<&PlanPartition> = partitions
        .iter()
        .filter(|p| {
            !p.moving
                && p.replicas
                    .iter()
                    .all(|n| roles.get(n) == Some(&NodeRole::Serving))
        })
        .collect();
    let mut moved = vec![false; movable.len()];
    let mut moves = Vec::new();
    // Each move lowers the sum of squared counts: the loop ends.
    while let Some((index, position, to)) = next_rebalance_move(&load, &movable, &moved) {
        let p = movable[index];
        let mut target = p.replicas.clone();
        let from = target[position];
        target[position] = to;
        load.add(from, position == 0, -1);
        load.add(to, position == 0, 1);
        moved[index] = true;
        moves.push(Move {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas: target,
        });
    }
    moves
}

/// The next rebalancing move: (index into `movable`, replica position, new node).
fn next_rebalance_move(
    load: &Load,
    movable: &[&PlanPartition],
    moved: &[bool],
) -> Option<(usize, usize, NodeId)> {
    let mut by_load: Vec<(usize, NodeId)> = load.replicas.iter().map(|(n, c)| (*c, *n)).collect();
    by_load.sort_unstable();
    for &(high, from) in by_load.iter().rev() {
        for &(low, to) in &by_load {
            if high < low + 2 {
                break;
            }
            let mut best: Option<(usize, usize)> = None;
            for (index, p) in movable.iter().enumerate() {
                if moved[index] || p.replicas.contains(&to) {
                    continue;
                }
                let Some(position) = p.replicas.iter().position(|n| *n == from) else {
                    continue;
                };
                // Prefer a follower replica: its move changes no leadership.
                if best.is_none_or(|(_, pos)| pos == 0 && position > 0) {
                    best = Some((index, position));
                }
                if position > 0 {
                    break;
                }
            }
            if let Some((index, position)) = best {
                return Some((index, position, to));
            }
        }
    }
    None
}

/// The moves of `plan` to start now: as many as fit under `cap` with `in_flight` moves
/// already in progress (none when they fill it), in plan order.
#[must_use]
pub fn start_within(mut plan: Vec<Move>, in_flight: usize, cap: usize) -> Vec<Move> {
    plan.truncate(cap.saturating_sub(in_flight));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::placement;
    use proptest::prelude::*;

    fn partitions(assignment: Vec<Vec<NodeId>>) -> Vec<PlanPartition> {
        (0u32..)
            .zip(assignment)
            .map(|(partition, replicas)| PlanPartition {
                topic: "t".into(),
                partition,
                replicas,
                moving: false,
            })
            .collect()
    }

    fn ids(range: std::ops::Range<u32>) -> Vec<NodeId> {
        range.map(NodeId).collect()
    }

    fn serving(range: std::ops::Range<u32>) -> Vec<(NodeId, NodeRole)> {
        range.map(|n| (NodeId(n), NodeRole::Serving)).collect()
    }

    /// `partitions` with `moves` done.
    fn applied(partitions: &[PlanPartition], moves: &[Move]) -> Vec<PlanPartition> {
        let mut out = partitions.to_vec();
        for m in moves {
            let p = out
                .iter_mut()
                .find(|p| p.topic == m.topic && p.partition == m.partition)
                .unwrap();
            p.replicas = m.replicas.clone();
        }
        out
    }

    fn counts(partitions: &[PlanPartition], first_only: bool) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for p in partitions {
            let take = if first_only { 1 } else { p.replicas.len() };
            for n in p.replicas.iter().take(take) {
                *counts.entry(*n).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn a_dead_nodes_replicas_spread_over_the_other_three() {
        let parts = partitions(placement::assign(&ids(0..4), 12, 3, 0));
        let mut nodes = serving(0..4);
        nodes[3].1 = NodeRole::Evacuate;
        let moves = evacuate(&nodes, &parts);
        assert_eq!(moves.len(), 9, "node 3 held 9 replicas");
        let after = applied(&parts, &moves);
        assert_eq!(
            counts(&after, false),
            [0, 1, 2].map(|n| (NodeId(n), 12)).into()
        );
        assert_eq!(
            counts(&after, true),
            [0, 1, 2].map(|n| (NodeId(n), 4)).into()
        );
        assert!(evacuate(&nodes, &after).is_empty());
    }

    #[test]
    fn unavailable_nodes_keep_their_replicas_and_receive_none() {
        let parts = partitions(placement::assign(&ids(0..4), 8, 3, 0));
        let nodes = vec![
            (NodeId(0), NodeRole::Serving),
            (NodeId(1), NodeRole::Serving),
            (NodeId(2), NodeRole::Unavailable),
            (NodeId(3), NodeRole::Evacuate),
        ];
        let moves = evacuate(&nodes, &parts);
        for (m, p) in moves.iter().map(|m| (m, &parts[m.partition as usize])) {
            for (old, new) in p.replicas.iter().zip(&m.replicas) {
                if old != new {
                    assert_eq!(*old, NodeId(3));
                    assert!(*new == NodeId(0) || *new == NodeId(1));
                }
            }
        }
        // With only two serving nodes, a partition on 0, 1 and 3 keeps its replica on 3.
        let after = applied(&parts, &moves);
        assert!(after.iter().all(|p| p.replicas.len() == 3));
        assert!(after.iter().any(|p| p.replicas.contains(&NodeId(3))));
    }

    #[test]
    fn a_new_node_gets_its_share_in_the_fewest_moves() {
        let parts = partitions(placement::assign(&ids(0..3), 12, 3, 0));
        let moves = rebalance(&serving(0..4), &parts);
        assert_eq!(
            moves.len(),
            9,
            "36 replicas over 4 nodes: 9 for the new one"
        );
        let after = applied(&parts, &moves);
        assert_eq!(
            counts(&after, false),
            (0..4).map(|n| (NodeId(n), 9)).collect()
        );
        assert!(
            moves.iter().all(|m| m.replicas[0] != NodeId(3)),
            "followers move, leaderships stay"
        );
        assert!(rebalance(&serving(0..4), &after).is_empty());
    }

    #[test]
    fn balanced_means_no_move() {
        let parts = partitions(placement::assign(&ids(0..5), 10, 3, 2));
        assert!(rebalance(&serving(0..5), &parts).is_empty());
        assert!(evacuate(&serving(0..5), &parts).is_empty());
    }

    fn cluster() -> impl Strategy<Value = (Vec<(NodeId, NodeRole)>, Vec<PlanPartition>)> {
        (3u32..8, 1u32..30, 1u16..4, 0u64..8).prop_flat_map(|(n, parts, rf, seq)| {
            let roles = proptest::collection::vec(
                prop_oneof![
                    4 => Just(NodeRole::Serving),
                    1 => Just(NodeRole::Unavailable),
                    1 => Just(NodeRole::Evacuate),
                ],
                n as usize,
            );
            let members = 1 + n / 2..n + 1; // created on a prefix, others joined since
            (roles, members).prop_map(move |(roles, members)| {
                let nodes: Vec<(NodeId, NodeRole)> = ids(0..n).into_iter().zip(roles).collect();
                let rf = rf.min(u16::try_from(members).unwrap());
                (
                    nodes,
                    partitions(placement::assign(&ids(0..members), parts, rf, seq)),
                )
            })
        })
    }

    fn check_move(nodes: &[(NodeId, NodeRole)], p: &PlanPartition, m: &Move) {
        let roles = roles_map(nodes);
        assert_eq!(
            m.replicas.len(),
            p.replicas.len(),
            "replication factor kept"
        );
        let mut sorted = m.replicas.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), m.replicas.len(), "distinct replicas");
        for (old, new) in p.replicas.iter().zip(&m.replicas) {
            if old != new {
                assert_eq!(roles.get(new), Some(&NodeRole::Serving));
            }
        }
    }

    proptest! {
        #[test]
        fn evacuation_keeps_rf_and_converges((nodes, parts) in cluster()) {
            let moves = evacuate(&nodes, &parts);
            for m in &moves {
                check_move(&nodes, &parts[m.partition as usize], m);
            }
            let after = applied(&parts, &moves);
            let serving = nodes.iter().filter(|(_, r)| *r == NodeRole::Serving).count();
            let roles = roles_map(&nodes);
            for p in &after {
                let kept = p.replicas.iter().filter(|n| roles[n] != NodeRole::Evacuate).count();
                // Everything evacuated that has somewhere to go.
                let on_evacuated = p.replicas.len() - kept;
                let serving_free = serving - p.replicas.iter()
                    .filter(|n| roles[n] == NodeRole::Serving).count();
                prop_assert!(on_evacuated == 0 || serving_free == 0);
            }
            prop_assert!(evacuate(&nodes, &after).is_empty(), "a second pass moves nothing");
        }

        #[test]
        fn rebalance_keeps_rf_and_evens_counts((nodes, parts) in cluster()) {
            let nodes: Vec<(NodeId, NodeRole)> =
                nodes.into_iter().map(|(n, _)| (n, NodeRole::Serving)).collect();
            let mut state = parts.clone();
            for _ in 0..64 {
                let moves = rebalance(&nodes, &state);
                if moves.is_empty() {
                    break;
                }
                for m in &moves {
                    check_move(&nodes, &state[m.partition as usize], m);
                }
                state = applied(&state, &moves);
            }
            prop_assert!(rebalance(&nodes, &state).is_empty(), "converges");
            let load = Load::of(&roles_map(&nodes), &state);
            let max = load.replicas.values().max().copied().unwrap_or(0);
            let min = load.replicas.values().min().copied().unwrap_or(0);
            // Even, unless replicas are too few for every node to share (rf over n).
            let total: usize = load.replicas.values().sum();
            prop_assert!(max - min <= 1, "max {max} min {min} over {total}");
        }
    }

    #[test]
    fn start_within_fills_the_room_left() {
        let parts = partitions(placement::assign(&ids(0..3), 12, 3, 0));
        let plan = rebalance(&serving(0..4), &parts);
        assert_eq!(plan.len(), 9);
        assert_eq!(start_within(plan.clone(), 0, 4), plan[..4].to_vec());
        assert_eq!(start_within(plan.clone(), 3, 4), plan[..1].to_vec());
        assert!(start_within(plan.clone(), 4, 4).is_empty());
        assert!(
            start_within(plan.clone(), 7, 4).is_empty(),
            "an operator's moves fill it"
        );
        assert_eq!(start_within(plan.clone(), 0, 50), plan);
    }

    /// `parts` with `moves` started: each partition moving, counted at its target.
    fn started(parts: &mut [PlanPartition], moves: &[Move]) {
        for m in moves {
            let p = parts
                .iter_mut()
                .find(|p| p.topic == m.topic && p.partition == m.partition)
                .unwrap();
            assert!(!p.moving, "a partition moving is never moved again: {m:?}");
            p.replicas = m.replicas.clone();
            p.moving = true;
        }
    }

    /// One planning round as the controller runs it: evacuation first, else rebalancing,
    /// started within the cap.
    fn round(nodes: &[(NodeId, NodeRole)], parts: &mut [PlanPartition], cap: usize) -> usize {
        let mut plan = evacuate(nodes, parts);
        if plan.is_empty() {
            plan = rebalance(nodes, parts);
        }
        let in_flight = parts.iter().filter(|p| p.moving).count();
        let moves = start_within(plan, in_flight, cap);
        started(parts, &moves);
        moves.len()
    }

    #[test]
    fn a_capped_drain_ends_where_an_uncapped_one_does() {
        let parts = partitions(placement::assign(&ids(0..4), 12, 3, 0));
        let mut nodes = serving(0..4);
        nodes[2].1 = NodeRole::Evacuate;
        let all_at_once = applied(&parts, &evacuate(&nodes, &parts));
        let mut state = parts.clone();
        let mut rounds = 0;
        while round(&nodes, &mut state, 2) > 0 {
            assert!(state.iter().filter(|p| p.moving).count() <= 2);
            // The moves in progress finish before the next round.
            state.iter_mut().for_each(|p| p.moving = false);
            rounds += 1;
        }
        assert_eq!(rounds, 5, "9 moves two at a time");
        assert_eq!(state, all_at_once);
    }

    proptest! {
        /// Rounds of planning within a cap while moves finish in any order and an operator
        /// starts moves of their own (never held back, but counted): the planners never
        /// take the moves in progress above the cap, and once the operator stops, the
        /// rounds end (every plan empty, nothing moving) balanced as an uncapped plan is.
        #[test]
        fn capped_rounds_never_exceed_the_cap_and_converge(
            (nodes, parts) in cluster(),
            cap in 1usize..5,
            steps in proptest::collection::vec((any::<u64>(), 0u8..4), 1..40),
        ) {
            let mut state = parts;
            for (pick, operator) in &steps {
                let in_flight = state.iter().filter(|p| p.moving).count();
                let planned = round(&nodes, &mut state, cap);
                let after = state.iter().filter(|p| p.moving).count();
                prop_assert!(planned == 0 || after <= cap, "{in_flight} + {planned} > {cap}");
                // Some move in progress finishes (picked by `pick`).
                let moving: Vec<usize> = (0..state.len()).filter(|i| state[*i].moving).collect();
                if !moving.is_empty() {
                    let i = moving[usize::try_from(pick % moving.len() as u64).unwrap()];
                    state[i].moving = false;
                }
                // Now and then an operator moves a partition (to the same nodes, reordered:
                // a valid target that leaves the counts alone).
                if *operator == 0 {
                    let len = state.len() as u64;
                    let p = &mut state[usize::try_from(pick % len).unwrap()];
                    if !p.moving {
                        p.replicas.rotate_left(1);
                        p.moving = true;
                    }
                }
            }
            for _ in 0..500 {
                let planned = round(&nodes, &mut state, cap);
                prop_assert!(state.iter().filter(|p| p.moving).count() <= cap.max(planned));
                if planned == 0 && state.iter().all(|p| !p.moving) {
                    break;
                }
                // Moves finish one at a time, the first started first.
                if let Some(p) = state.iter_mut().find(|p| p.moving) {
                    p.moving = false;
                }
            }
            prop_assert!(state.iter().all(|p| !p.moving), "rounds end");
            prop_assert!(evacuate(&nodes, &state).is_empty(), "evacuated");
            prop_assert!(rebalance(&nodes, &state).is_empty(), "rebalanced");
        }
    }
}
