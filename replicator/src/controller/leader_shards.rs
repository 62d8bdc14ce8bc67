//! Leaders over each node's shards (a pure decision): which partitions swap their
//! preferred leader so that every node's preferred leaderships spread evenly over its
//! shards, not only over the nodes.
//!
//! A partition's shard on a node is fixed ([`owner_shard`], a hash of the topic plus the
//! partition number, modulo that node's shard count), and so is its preferred leader (the
//! first replica), so placement alone can put all of a node's leaderships on one shard:
//! two nodes of two shards each, partitions alternating between the nodes, have every
//! partition node 0 leads on shard 0, and shard 1 leads nothing. The fix reorders replica
//! lists, never changes them: partitions `p` (preferred `n`, on `n`'s crowded shard) and
//! `q` (preferred `m`, on a quiet shard of `n`), each holding both nodes, swap their
//! preferred leaders: `p` puts `m` first, `q` puts `n` first. Leaderships per node stay as
//! they were (node balance is `replica_plan`'s and `placement`'s job); per shard they move
//! from a crowded shard to a quiet one.
//!
//! Rules:
//! - only nodes whose shard imbalance is above `imbalance_percent` of their preferred
//!   leaderships are touched (the brake of leader balancing, Kafka's
//!   `leader.imbalance.per.broker.percentage`), and only until their shards are within one
//!   of each other: a balanced cluster plans nothing (no flapping);
//! - a cycle takes `n` off a shard with at least two more leaderships than the one it
//!   gains and makes no other node's spread worse: the sum of squared per-shard counts
//!   falls with every cycle, so a plan ends;
//! - only partitions with no move in progress whose replicas are all in the ISR are
//!   reordered (then the reorder commits in the apply that starts it: no data moves), each
//!   at most once per plan.

use std::collections::BTreeMap;

use super::replica_plan::{Move, PlanPartition};
use crate::ids::NodeId;

/// The shard that owns `partition` of `topic` on a node of `shards` shards: partitions of
/// one topic go round-robin over the shards, starting at a shard picked by the topic's
/// name, so topics with few partitions do not all land on shard 0. Stable across
/// restarts (a node's shard count is fixed for its data directory).
#[must_use]
pub fn owner_shard(topic: &str, partition: u32, shards: usize) -> usize {
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    start.wrapping_add(partition as usize) % shards.max(1)
}

/// One partition as this planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderPartition {
    /// The partition (its `replicas` preferred leader first, `moving` if it may not be
    /// reordered now).
    pub plan: PlanPartition,
    /// Every replica is in the ISR.
    pub in_sync: bool,
}

/// Preferred leaderships per shard of each node (`shards`: each node's shard count; a
/// node not in it counts as one shard).
#[must_use]
pub fn per_shard(
    partitions: &[LeaderPartition],
    shards: &BTreeMap<NodeId, usize>,
) -> BTreeMap<NodeId, Vec<usize>> {
    let mut counts: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
    for p in partitions {
        let Some(first) = p.plan.replicas.first() else {
            continue;
        };
        let n = shard_count(shards, *first);
        let row = counts.entry(*first).or_insert_with(|| vec![0; n]);
        if let Some(count) = row.get_mut(owner_shard(&p.plan.topic, p.plan.partition, n)) {
            *count += 1;
        }
    }
    counts
}

fn shard_count(shards: &BTreeMap<NodeId, usize>, node: NodeId) -> usize {
    shards.get(&node).copied().unwrap_or(1).max(1)
}

/// Whether `counts` (one node's leaderships per shard) are off by more than
/// `imbalance_percent` of their total: the leaderships above the even share's ceiling,
/// or missing below its floor, whichever is more.
#[must_use]
pub fn imbalanced(counts: &[usize], imbalance_percent: u32) -> bool {
    let total: usize = counts.iter().sum();
    let Some(shards) = std::num::NonZeroUsize::new(counts.len()) else {
        return false;
    };
    let floor = total / shards;
    let ceiling = total.div_ceil(shards.get());
    let over: usize = counts.iter().map(|c| c.saturating_sub(ceiling)).sum();
    let under: usize = counts.iter().map(|c| floor.saturating_sub(*c)).sum();
    over.max(under) * 100 > total * imbalance_percent as usize
}

/// The reorders (as [`Move`]s to the same replicas in a new order, one per partition of
/// each hand-over cycle) that even out leaderships over the shards of every node above
/// the imbalance ratio, at most `max_cycles` cycles.
#[must_use]
pub fn reorders(
    partitions: &[LeaderPartition],
    shards: &BTreeMap<NodeId, usize>,
    imbalance_percent: u32,
    max_cycles: usize,
) -> Vec<Move> {
    let mut plan = Plan {
        order: partitions.iter().map(|p| p.plan.replicas.clone()).collect(),
        counts: per_shard(partitions, shards),
        used: partitions
            .iter()
            .map(|p| p.plan.moving || !p.in_sync)
            .collect(),
        partitions,
        shards,
    };
    let crowded: Vec<NodeId> = plan
        .counts
        .iter()
        .filter(|(_, c)| imbalanced(c, imbalance_percent))
        .map(|(n, _)| *n)
        .collect();
    let mut cycles = 0;
    for n in crowded {
        while cycles < max_cycles
            && let Some(cycle) = plan.find_cycle(n)
        {
            plan.hand_over(&cycle);
            cycles += 1;
        }
    }
    (0..partitions.len())
        .filter(|i| plan.order[*i] != partitions[*i].plan.replicas)
        .map(|i| Move {
            topic: partitions[i].plan.topic.clone(),
            partition: partitions[i].plan.partition,
            replicas: plan.order[i].clone(),
        })
        .collect()
}

/// A plan being made: replica orders so far, per-shard counts, partitions not to touch.
struct Plan<'a> {
    order: Vec<Vec<NodeId>>,
    counts: BTreeMap<NodeId, Vec<usize>>,
    used: Vec<bool>,
    partitions: &'a [LeaderPartition],
    shards: &'a BTreeMap<NodeId, usize>,
}

impl Plan<'_> {
    fn shard(&self, index: usize, node: NodeId) -> usize {
        let p = &self.partitions[index].plan;
        owner_shard(&p.topic, p.partition, shard_count(self.shards, node))
    }

    fn count(&self, node: NodeId, shard: usize) -> usize {
        self.counts
            .get(&node)
            .and_then(|c| c.get(shard))
            .copied()
            .unwrap_or(0)
    }

    fn led_by(&self, node: NodeId) -> impl Iterator<Item = usize> + '_ {
        (0..self.order.len())
            .filter(move |i| !self.used[*i] && self.order[*i].first() == Some(&node))
    }

    /// A cycle of leadership hand-overs that takes one of `n`'s leaderships off a crowded
    /// shard: each edge `(partition, from, to)` makes `to` (a replica of the partition,
    /// which `from` leads) its preferred leader. Every node of the cycle loses one and
    /// gains one, `n` onto a shard with at least two fewer, the others onto a shard no
    /// fuller than the one they lose (or the same). Breadth first over the nodes, so the
    /// shortest such cycle from each crowded shard of `n` (a swap of two partitions is a
    /// cycle of two).
    fn find_cycle(&self, n: NodeId) -> Option<Vec<(usize, NodeId, NodeId)>> {
        let row = self.counts.get(&n)?;
        let least = row.iter().min().copied().unwrap_or(0);
        for (lost, _) in row.iter().enumerate().filter(|(_, c)| **c >= least + 2) {
            // Node -> (partition it was handed, from whom, the shard it gained).
            let mut arrived: BTreeMap<NodeId, (usize, NodeId, usize)> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::new();
            for p in self.led_by(n).filter(|p| self.shard(*p, n) == lost) {
                for &m in self.order[p].iter().skip(1) {
                    if let std::collections::btree_map::Entry::Vacant(e) = arrived.entry(m) {
                        e.insert((p, n, self.shard(p, m)));
                        queue.push_back(m);
                    }
                }
            }
            while let Some(x) = queue.pop_front() {
                let gained = arrived[&x].2;
                for q in self.led_by(x) {
                    let gives = self.shard(q, x);
                    let no_worse = gained == gives || self.count(x, gained) < self.count(x, gives);
                    if !no_worse {
                        continue;
                    }
                    for &y in self.order[q].iter().skip(1) {
                        if y == n {
                            if self.count(n, lost) >= self.count(n, self.shard(q, n)) + 2 {
                                return Some(Self::path(&arrived, (q, x, n), n));
                            }
                        } else if let std::collections::btree_map::Entry::Vacant(e) =
                            arrived.entry(y)
                        {
                            e.insert((q, x, self.shard(q, y)));
                            queue.push_back(y);
                        }
                    }
                }
            }
        }
        None
    }

    /// The cycle that ends with `last`, walked back through `arrived` to `n`.
    fn path(
        arrived: &BTreeMap<NodeId, (usize, NodeId, usize)>,
        last: (usize, NodeId, NodeId),
        n: NodeId,
    ) -> Vec<(usize, NodeId, NodeId)> {
        let mut edges = vec![last];
        let mut at = last.1;
        while at != n {
            let Some(&(p, from, _)) = arrived.get(&at) else {
                break;
            };
            edges.push((p, from, at));
            at = from;
        }
        edges
    }

    fn hand_over(&mut self, cycle: &[(usize, NodeId, NodeId)]) {
        for &(index, old, new) in cycle {
            let old_shard = self.shard(index, old);
            let new_shard = self.shard(index, new);
            if let Some(c) = self.counts.get_mut(&old).and_then(|c| c.get_mut(old_shard)) {
                *c -= 1;
            }
            let row_len = shard_count(self.shards, new);
            let row = self.counts.entry(new).or_insert_with(|| vec![0; row_len]);
            if let Some(c) = row.get_mut(new_shard) {
                *c += 1;
            }
            let order = &mut self.order[index];
            if let Some(at) = order.iter().position(|x| *x == new) {
                order.swap(0, at);
            }
            self.used[index] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::placement;
    use proptest::prelude::*;

    fn topic(name: &str, assignment: Vec<Vec<NodeId>>) -> Vec<LeaderPartition> {
        (0u32..)
            .zip(assignment)
            .map(|(partition, replicas)| LeaderPartition {
                plan: PlanPartition {
                    topic: name.into(),
                    partition,
                    replicas,
                    moving: false,
                },
                in_sync: true,
            })
            .collect()
    }

    fn nodes(n: u32) -> Vec<NodeId> {
        (0..n).map(NodeId).collect()
    }

    fn apply(partitions: &mut [LeaderPartition], moves: &[Move]) {
        for m in moves {
            let p = partitions
                .iter_mut()
                .find(|p| p.plan.topic == m.topic && p.plan.partition == m.partition)
                .unwrap();
            let mut before = p.plan.replicas.clone();
            let mut after = m.replicas.clone();
            before.sort();
            after.sort();
            assert_eq!(before, after, "a reorder keeps the replicas");
            p.plan.replicas = m.replicas.clone();
        }
    }

    #[test]
    fn four_nodes_of_three_replicas_need_a_cycle_of_four() {
        // Node n leads [n, n+1, n+2]: no two partitions swap to any gain, a cycle does.
        let mut parts = topic("t", placement::assign(&nodes(4), 16, 3, 0));
        let shards: BTreeMap<NodeId, usize> = nodes(4).into_iter().map(|n| (n, 2)).collect();
        assert!(per_shard(&parts, &shards).values().all(|c| c.contains(&0)));
        let moves = reorders(&parts, &shards, 10, usize::MAX);
        apply(&mut parts, &moves);
        let after = per_shard(&parts, &shards);
        assert!(after.values().all(|c| c == &vec![2, 2]), "{after:?}");
    }

    fn per_node(partitions: &[LeaderPartition]) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for p in partitions {
            *counts.entry(p.plan.replicas[0]).or_insert(0) += 1;
        }
        counts
    }

    fn within_one(counts: &BTreeMap<NodeId, Vec<usize>>) -> bool {
        counts.values().all(|c| {
            let max = c.iter().max().copied().unwrap_or(0);
            let min = c.iter().min().copied().unwrap_or(0);
            max - min <= 1
        })
    }

    #[test]
    fn two_nodes_of_two_shards_get_a_leader_on_each_shard() {
        // Partitions alternate between the nodes and between the shards: each node leads
        // on one shard only.
        let mut parts = topic("t", placement::assign(&nodes(2), 8, 2, 0));
        let shards = BTreeMap::from([(NodeId(0), 2), (NodeId(1), 2)]);
        let before = per_shard(&parts, &shards);
        assert!(
            before.values().all(|c| c.contains(&0)),
            "each node leads on one shard: {before:?}"
        );
        let moves = reorders(&parts, &shards, 10, usize::MAX);
        assert!(!moves.is_empty());
        let nodes_before = per_node(&parts);
        apply(&mut parts, &moves);
        assert_eq!(per_node(&parts), nodes_before, "leaderships per node kept");
        let after = per_shard(&parts, &shards);
        assert!(within_one(&after), "{after:?}");
        assert!(
            reorders(&parts, &shards, 10, usize::MAX).is_empty(),
            "stable"
        );
    }

    #[test]
    fn balanced_or_single_shard_means_no_reorder() {
        let parts = topic("t", placement::assign(&nodes(3), 6, 3, 0));
        // Three nodes, two shards: placement already alternates.
        let shards = BTreeMap::from([(NodeId(0), 2), (NodeId(1), 2), (NodeId(2), 2)]);
        assert!(within_one(&per_shard(&parts, &shards)));
        assert!(reorders(&parts, &shards, 10, usize::MAX).is_empty());
        assert!(reorders(&parts, &BTreeMap::new(), 10, usize::MAX).is_empty());
    }

    #[test]
    fn below_the_ratio_nothing_moves_and_moving_partitions_stay() {
        let mut parts = topic("t", placement::assign(&nodes(2), 8, 2, 0));
        let shards = BTreeMap::from([(NodeId(0), 2), (NodeId(1), 2)]);
        assert!(reorders(&parts, &shards, 100, usize::MAX).is_empty());
        for p in &mut parts {
            p.in_sync = false;
        }
        assert!(reorders(&parts, &shards, 10, usize::MAX).is_empty());
    }

    #[test]
    fn the_imbalance_measure() {
        assert!(!imbalanced(&[2, 2], 10));
        assert!(!imbalanced(&[3, 2], 10));
        assert!(imbalanced(&[4, 0], 10));
        assert!(imbalanced(&[2, 2, 0], 10), "one short of the floor");
        assert!(
            !imbalanced(&[11, 9], 10),
            "one over the ceiling of 20 is 5%"
        );
        assert!(!imbalanced(&[], 10));
        assert!(!imbalanced(&[7], 10));
    }

    #[test]
    fn owner_shard_is_round_robin_from_the_topic() {
        let first = owner_shard("orders", 0, 4);
        for p in 0..8 {
            assert_eq!(owner_shard("orders", p, 4), (first + p as usize) % 4);
        }
        assert_eq!(owner_shard("orders", 5, 1), 0);
        assert_eq!(owner_shard("orders", 5, 0), 0);
    }

    fn cluster() -> impl Strategy<Value = (Vec<LeaderPartition>, BTreeMap<NodeId, usize>)> {
        (
            2u32..6,
            1u16..4,
            1usize..5,
            proptest::collection::vec((1u32..24, 0u64..6), 1..4),
        )
            .prop_map(|(n, rf, s, topics)| {
                let rf = rf.min(u16::try_from(n).unwrap());
                let mut parts = Vec::new();
                for (i, (count, seq)) in topics.into_iter().enumerate() {
                    let name = format!("t{i}");
                    parts.extend(topic(&name, placement::assign(&nodes(n), count, rf, seq)));
                }
                let shards = nodes(n)
                    .into_iter()
                    .map(|node| (node, 1 + (s + node.0 as usize) % 3))
                    .collect();
                (parts, shards)
            })
    }

    proptest! {
        /// Reorders keep every partition's replicas and every node's leaderships; they
        /// leave no node's spread worse (sum of squared per-shard counts) and the
        /// cluster's better; a plan applied and planned again converges to nothing.
        #[test]
        fn reorders_keep_nodes_even_out_shards_and_converge((parts, shards) in cluster()) {
            let squares = |c: &BTreeMap<NodeId, Vec<usize>>| -> usize {
                c.values().flat_map(|r| r.iter().map(|x| x * x)).sum()
            };
            let mut state = parts.clone();
            let nodes_before = per_node(&state);
            for _ in 0..64 {
                let before = per_shard(&state, &shards);
                let moves = reorders(&state, &shards, 10, usize::MAX);
                if moves.is_empty() {
                    break;
                }
                apply(&mut state, &moves);
                prop_assert_eq!(per_node(&state), nodes_before.clone());
                let after = per_shard(&state, &shards);
                prop_assert!(squares(&after) < squares(&before), "{before:?} -> {after:?}");
                for (node, row) in &before {
                    let was: usize = row.iter().map(|x| x * x).sum();
                    let now: usize = after[node].iter().map(|x| x * x).sum();
                    prop_assert!(now <= was, "node {} spread worse: {:?} -> {:?}", node, row, after[node]);
                }
            }
            prop_assert!(reorders(&state, &shards, 10, usize::MAX).is_empty(), "converges");
            prop_assert_eq!(per_node(&state), nodes_before);
        }
    }
}
