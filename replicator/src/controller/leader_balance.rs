//! Leader balancing (a pure decision): which partitions the controller leader asks to
//! elect their preferred replica (`ElectLeader`), Kafka's `auto.leader.rebalance.enable`.
//!
//! Preferred replicas are spread evenly when a topic is created (`placement`) and when
//! replicas move (`replica_plan`), so leaders are spread once every partition is led by
//! its preferred replica. A failover moves leaderships off a node; when it comes back and
//! rejoins the ISRs, they move back here, with two brakes against flapping (hysteresis):
//!
//! - the node must have been live for `hold_ms` without a break, so a node that restarts
//!   in a loop (or whose session keeps expiring) does not drag leaderships back and forth;
//! - like Kafka's `leader.imbalance.per.broker.percentage`, a node's preferred partitions
//!   move back only once more than `imbalance_percent` of them are led by another node,
//!   and then all of those where it is in sync move at once (one round of elections, not
//!   a trickle of single moves). The ratio is taken per shard of the node (the shard that
//!   owns each partition there, [`owner_shard`]; a node whose shard count the controller
//!   does not know counts as one shard), so the leaderships a node lacks on one shard are
//!   not hidden by the others' (`leader_shards` spreads preferred leaders over shards).
//!
//! A draining (decommissioned) node gets no leadership back. A partition with no leader
//! and an eligible live member is always due: that is not
//! balancing but availability, and waits for nothing.

use std::collections::BTreeMap;

use super::failover::choose_leader;
use super::leader_shards::owner_shard;
use super::metadata::Metadata;
use crate::ids::{NodeId, Tick};

/// The brakes of leader balancing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderBalance {
    /// A node leads its preferred partitions again only after this long live (ms).
    pub hold_ms: u64,
    /// A node's preferred partitions led elsewhere, in percent of all its preferred
    /// partitions, above which they move back (Kafka's default: 10).
    pub imbalance_percent: u32,
}

/// A (node, shard)'s preferred partitions: how many, and those an election would give back.
type Preferred = (usize, Vec<(String, u32)>);

/// Partitions to propose `ElectLeader` for: leaderless ones with an eligible live member,
/// and the preferred partitions of every (node, shard) over the imbalance ratio whose node
/// has been live since at least `hold_ms` before `now` (`live_since`: since when each
/// node is live, as the controller leader saw it) and is in their ISR. `shards`: each
/// node's shard count, as far as the controller leader knows.
#[must_use]
pub fn elections(
    meta: &Metadata,
    live_since: &BTreeMap<NodeId, Tick>,
    now: Tick,
    brakes: LeaderBalance,
    shards: &BTreeMap<NodeId, usize>,
) -> Vec<(String, u32)> {
    let live = meta.live_nodes();
    let draining = |n: NodeId| meta.nodes().get(&n).is_some_and(|i| i.draining);
    let settled = |n: NodeId| {
        live.contains(&n)
            && !draining(n)
            && live_since
                .get(&n)
                .is_some_and(|since| now.since(*since) >= brakes.hold_ms)
    };
    let mut due = Vec::new();
    // Per preferred (node, shard): its partitions, and those a move would give back to it.
    let mut preferred: BTreeMap<(NodeId, usize), Preferred> = BTreeMap::new();
    for (name, t) in meta.topics() {
        for (index, p) in (0u32..).zip(&t.partitions) {
            let next = choose_leader(p, &live);
            if p.leader.is_none() {
                if next.is_some() {
                    due.push((name.clone(), index));
                }
                continue;
            }
            let Some(first) = p.preferred() else {
                continue;
            };
            let shard = owner_shard(name, index, shards.get(&first).copied().unwrap_or(1));
            let entry = preferred.entry((first, shard)).or_default();
            entry.0 += 1;
            if p.leader != Some(first) && next == Some(first) {
                entry.1.push((name.clone(), index));
            }
        }
    }
    for ((node, _), (total, movable)) in preferred {
        let over = movable.len() * 100 > total * brakes.imbalance_percent as usize;
        if over && settled(node) {
            due.extend(movable);
        }
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Command;

    const BRAKES: LeaderBalance = LeaderBalance {
        hold_ms: 1000,
        imbalance_percent: 10,
    };

    fn apply(meta: &mut Metadata, command: Command) {
        meta.apply(&command, &mut Vec::new()).unwrap();
    }

    /// Three nodes, `partitions` partitions of RF 3; node 1 failed and came back (it
    /// leads nothing, and is in every ISR again).
    fn after_failover(partitions: u32) -> Metadata {
        let mut meta = Metadata::default();
        for node in 0..3 {
            let register = Command::Register {
                node,
                address: format!("n{node}:1"),
                incarnation: 1,
                session_expires_ms: 0,
            };
            apply(&mut meta, register);
        }
        let create = Command::CreateTopic {
            name: "t".into(),
            partitions,
            replication_factor: 3,
            min_insync: 1,
            config: Vec::new(),
        };
        apply(&mut meta, create);
        apply(&mut meta, Command::FenceNode { node: 1 });
        apply(
            &mut meta,
            Command::Heartbeat {
                node: 1,
                session_expires_ms: 0,
            },
        );
        for (index, p) in (0u32..).zip(&meta.topics()["t"].partitions.clone()) {
            let mut isr: Vec<u32> = p.isr.iter().map(|n| n.0).collect();
            isr.push(1);
            apply(
                &mut meta,
                Command::ChangeIsr {
                    topic: "t".into(),
                    partition: index,
                    leader_epoch: p.leader_epoch.0,
                    partition_epoch: u32::try_from(p.partition_epoch).unwrap(),
                    new_isr: isr,
                },
            );
        }
        meta
    }

    #[test]
    fn leaderships_return_once_the_node_has_been_live_long_enough() {
        let meta = after_failover(6);
        let since = BTreeMap::from([
            (NodeId(0), Tick(0)),
            (NodeId(1), Tick(5000)),
            (NodeId(2), Tick(0)),
        ]);
        let shards = BTreeMap::new();
        assert!(
            elections(&meta, &since, Tick(5999), BRAKES, &shards).is_empty(),
            "held"
        );
        let due = elections(&meta, &since, Tick(6000), BRAKES, &shards);
        let expected: Vec<(String, u32)> = (0..6)
            .filter(|i| meta.topics()["t"].partitions[*i as usize].preferred() == Some(NodeId(1)))
            .map(|i| ("t".to_owned(), i))
            .collect();
        assert_eq!(expected.len(), 2);
        assert_eq!(due, expected);
    }

    #[test]
    fn below_the_imbalance_ratio_nothing_moves() {
        let meta = after_failover(6);
        let since = BTreeMap::from([(NodeId(1), Tick(0))]);
        let lenient = LeaderBalance {
            imbalance_percent: 100,
            ..BRAKES
        };
        assert!(elections(&meta, &since, Tick(10_000), lenient, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn the_ratio_is_per_shard() {
        // Node 1 leads 10 of its 12 preferred partitions; the two it does not are both on
        // one of its two shards: 2 of 12 (17%) over the node, 2 of 6 over the shard.
        let mut meta = after_failover(36);
        let since = BTreeMap::from([(NodeId(1), Tick(0))]);
        let mine: Vec<u32> = (0..36)
            .filter(|i| meta.topics()["t"].partitions[*i as usize].preferred() == Some(NodeId(1)))
            .collect();
        assert_eq!(mine.len(), 12);
        let shards = BTreeMap::from([(NodeId(1), 2)]);
        let shard_of = |p: u32| owner_shard("t", p, 2);
        let odd_shard = shard_of(mine[0]);
        let (away, home): (Vec<u32>, Vec<u32>) =
            mine.iter().partition(|p| shard_of(**p) == odd_shard);
        // Give node 1 back all but two of its partitions, both on `odd_shard`.
        for p in home.iter().chain(&away[2..]) {
            let elect = Command::ElectLeader {
                topic: "t".into(),
                partition: *p,
            };
            apply(&mut meta, elect);
        }
        let ratio = LeaderBalance {
            imbalance_percent: 20,
            ..BRAKES
        };
        // Per node: 2 of 12 is under 20%; per shard: 2 of 6 is over.
        assert!(elections(&meta, &since, Tick(10_000), ratio, &BTreeMap::new()).is_empty());
        let due = elections(&meta, &since, Tick(10_000), ratio, &shards);
        let expected: Vec<(String, u32)> = away[..2].iter().map(|p| ("t".to_owned(), *p)).collect();
        assert_eq!(due, expected);
    }
}
