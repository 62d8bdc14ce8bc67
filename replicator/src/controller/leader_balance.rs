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
//!   a trickle of single moves).
//!
//! A draining (decommissioned) node gets no leadership back. A partition with no leader
//! and an eligible live member is always due: that is not
//! balancing but availability, and waits for nothing.

use std::collections::BTreeMap;

use super::failover::choose_leader;
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

/// Partitions to propose `ElectLeader` for: leaderless ones with an eligible live member,
/// and the preferred partitions of every node over the imbalance ratio that has been live
/// since at least `hold_ms` before `now` (`live_since`: since when each node is live, as
/// the controller leader saw it) and is in their ISR.
#[must_use]
pub fn elections(
    meta: &Metadata,
    live_since: &BTreeMap<NodeId, Tick>,
    now: Tick,
    brakes: LeaderBalance,
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
    // Per preferred node: its partitions, and those a move would give back to it.
    let mut preferred: BTreeMap<NodeId, (usize, Vec<(String, u32)>)> = BTreeMap::new();
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
            let entry = preferred.entry(first).or_default();
            entry.0 += 1;
            if p.leader != Some(first) && next == Some(first) {
                entry.1.push((name.clone(), index));
            }
        }
    }
    for (node, (total, movable)) in preferred {
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
        assert!(
            elections(&meta, &since, Tick(5999), BRAKES).is_empty(),
            "held"
        );
        let due = elections(&meta, &since, Tick(6000), BRAKES);
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
        assert!(elections(&meta, &since, Tick(10_000), lenient).is_empty());
    }
}
