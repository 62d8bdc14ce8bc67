//! Placement policies end to end, on four real `shardlogd` nodes on 127.0.0.1
//! (replication factor 3, `min_insync` 2, session timeout 1 s) under `acks=all` load from
//! idempotent producers with a consumer per partition (`common::load`):
//!
//! 1. Automatic re-placement: with `--replace-dead-node-after 3`, SIGKILL a node for good;
//!    every partition gets back to 3 in-sync replicas on the remaining three nodes, the
//!    preferred leaders (and so the leaders) spread over them, and every record
//!    acknowledged before, during and after is in place, once.
//! 2. Leader balance: SIGKILL a node and restart it; its leaderships come back, so every
//!    node leads as many partitions as before (an even spread).
//! 3. Leaders over shards: four nodes of two shards each and a topic of 16 partitions, so
//!    placement alone puts each node's four leaderships on one of its shards (a
//!    partition's shard on a node is `owner_shard`, the same on every node); the
//!    controller swaps preferred leaders until every node leads two partitions on each of
//!    its shards, and after a node's SIGKILL and restart it is so again.
//!
//! Decommission is in `tools/tests/decommission.rs` (it runs the `shardlog` command).
//! Times are printed, never asserted beyond generous waits. A failing test prints the
//! tail of every node's stderr.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::too_many_lines
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links};
use common::load::{Load, Shape, TOPIC, verify, wait_acks};
use common::view::{all, describe, every_partition, others, setup_on, wait_view};
use shardlog_net::api::MetadataResponse;
use shardlog_replicator::controller::leader_shards::owner_shard;

/// Partitions of the test topic: two preferred leaderships per node of four.
const PARTITIONS: u32 = 8;
const LOAD: Shape = Shape {
    partitions: PARTITIONS,
    producers_per_partition: 1,
    pause: Duration::from_millis(5),
};
/// Acknowledged batches each phase waits for, per producer.
const PHASE_ACKS: usize = 20;
/// Re-placement waits for up to this long: the delay, a placement round (every 5 s), then
/// the new replicas catching up and joining the ISR.
const REPLACE_MAX: Duration = Duration::from_secs(90);

/// Four nodes (with `extra` flags) and the topic, every partition fully in sync.
fn four_nodes(extra: &[&str]) -> Cluster {
    four_nodes_with(extra, PARTITIONS)
}

/// [`four_nodes`] with a topic of `partitions` partitions.
fn four_nodes_with(extra: &[&str], partitions: u32) -> Cluster {
    setup_on(Cluster::start_with(4, Links::Direct, extra), partitions)
}

/// Partitions led per node, and preferred leaderships per node.
fn leaders(meta: &MetadataResponse) -> (BTreeMap<u32, usize>, BTreeMap<u32, usize>) {
    let mut led = BTreeMap::new();
    let mut preferred = BTreeMap::new();
    for p in meta
        .topics
        .iter()
        .filter(|t| t.name == TOPIC)
        .flat_map(|t| &t.partitions)
    {
        if let Some(l) = p.leader {
            *led.entry(l).or_insert(0) += 1;
        }
        if let Some(first) = p.replicas.first() {
            *preferred.entry(*first).or_insert(0) += 1;
        }
    }
    (led, preferred)
}

/// Whether `counts` spreads `total` over `nodes` evenly (each within one of the others).
fn even(counts: &BTreeMap<u32, usize>, nodes: &[u32], total: usize) -> bool {
    let per: Vec<usize> = nodes
        .iter()
        .map(|n| counts.get(n).copied().unwrap_or(0))
        .collect();
    let (min, max) = (per.iter().min().unwrap(), per.iter().max().unwrap());
    per.iter().sum::<usize>() == total && max - min <= 1
}

#[test]
fn a_node_killed_for_good_has_its_replicas_re_placed() {
    let started = Instant::now();
    let mut cluster = four_nodes(&["--replace-dead-node-after", "3"]);
    let load = Load::start(&cluster.brokers(), 0, LOAD);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the kill",
    );
    let dead = 3usize;
    let killed_at = Instant::now();
    cluster.kill(&[dead]);
    let survivors = others(&cluster, dead);
    let dead_id = dead as u32;
    let (meta, took) = cluster.wait_for("re-placement", REPLACE_MAX, |c| {
        let m = common::view::controller_view(c, &survivors)?;
        every_partition(&m, |p| {
            p.replicas.len() == 3
                && !p.replicas.contains(&dead_id)
                && p.isr.len() == 3
                && p.leader.is_some()
        })
        .map(|()| m)
    });
    eprintln!(
        "RE-PLACED: every partition at 3 in-sync replicas without node {dead} {took:?} after \
         its SIGKILL: {}",
        describe(&meta)
    );
    let (_, preferred) = leaders(&meta);
    assert!(
        even(&preferred, &[0, 1, 2], PARTITIONS as usize),
        "preferred leaders {preferred:?}"
    );
    let (meta, took) = wait_view(&mut cluster, "leaders spread", &survivors, |m| {
        let (led, _) = leaders(m);
        if even(&led, &[0, 1, 2], PARTITIONS as usize) {
            Ok(())
        } else {
            Err(format!("{led:?}: {}", describe(m)))
        }
    });
    eprintln!("LEADERS: spread {took:?} later: {:?}", leaders(&meta).0);
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after the re-placement",
    );
    let outcome = load.stop();
    verify(&cluster, &[&outcome], "re-placement");
    eprintln!(
        "test time {:?} ({:?} after the kill)",
        started.elapsed(),
        killed_at.elapsed()
    );
}

#[test]
fn leaderships_return_to_an_even_spread_after_a_restart() {
    let started = Instant::now();
    let mut cluster = four_nodes(&[]);
    let nodes = all(&cluster);
    let ids: Vec<u32> = (0..4).collect();
    let (meta, _) = wait_view(&mut cluster, "leaders spread", &nodes, |m| {
        let (led, _) = leaders(m);
        if even(&led, &ids, PARTITIONS as usize) {
            Ok(())
        } else {
            Err(format!("{led:?}"))
        }
    });
    let before = leaders(&meta).0;
    let load = Load::start(&cluster.brokers(), 0, LOAD);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the kill",
    );
    let victim = 1usize;
    cluster.kill(&[victim]);
    let survivors = others(&cluster, victim);
    let (meta, _) = wait_view(&mut cluster, "its leaderships moved", &survivors, |m| {
        let (led, _) = leaders(m);
        if !led.contains_key(&(victim as u32)) && led.values().sum::<usize>() == 8 {
            Ok(())
        } else {
            Err(format!("{led:?}"))
        }
    });
    eprintln!("FAILED OVER: {:?}", leaders(&meta).0);
    let restarted = Instant::now();
    cluster.restart(victim);
    let (meta, took) = wait_view(&mut cluster, "leaders spread again", &nodes, |m| {
        let (led, _) = leaders(m);
        if led == before {
            Ok(())
        } else {
            Err(format!("{led:?}: {}", describe(m)))
        }
    });
    eprintln!(
        "BALANCED: leaders per node {:?} again {took:?} after the restart",
        leaders(&meta).0
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        restarted,
        PHASE_ACKS,
        "after the restart",
    );
    let outcome = load.stop();
    verify(&cluster, &[&outcome], "leader balance");
    eprintln!("test time {:?}", started.elapsed());
}

/// The cluster's shards per node (`common::cluster::NODE_ARGS`).
const SHARDS: usize = 2;

/// Partitions led per (node, shard): the shard is the one that owns the partition on the
/// node, `owner_shard`, which the server uses to place it.
fn leaders_per_shard(meta: &MetadataResponse) -> BTreeMap<(u32, usize), usize> {
    let mut counts = BTreeMap::new();
    for t in meta.topics.iter().filter(|t| t.name == TOPIC) {
        for (index, p) in (0u32..).zip(&t.partitions) {
            if let Some(leader) = p.leader {
                let shard = owner_shard(&t.name, index, SHARDS);
                *counts.entry((leader, shard)).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Every node leads `per_shard` partitions on each of its shards.
fn spread_over_shards(meta: &MetadataResponse, per_shard: usize) -> Result<(), String> {
    let counts = leaders_per_shard(meta);
    let even = (0..4u32).all(|n| (0..SHARDS).all(|s| counts.get(&(n, s)) == Some(&per_shard)));
    if even {
        Ok(())
    } else {
        Err(format!("leaders per (node, shard) {counts:?}"))
    }
}

#[test]
fn leaders_spread_over_each_nodes_shards_and_stay_so_after_a_restart() {
    let started = Instant::now();
    let partitions = 16;
    let mut cluster = four_nodes_with(&[], partitions);
    let nodes = all(&cluster);
    // Placement alone: each node is the preferred leader of four partitions, all on one
    // of its shards (partitions alternate over four nodes and over two shards).
    let meta = cluster.metadata(0).unwrap();
    let mut preferred: BTreeMap<(u32, usize), usize> = BTreeMap::new();
    for t in meta.topics.iter().filter(|t| t.name == TOPIC) {
        for (index, p) in (0u32..).zip(&t.partitions) {
            let shard = owner_shard(&t.name, index, SHARDS);
            *preferred.entry((p.replicas[0], shard)).or_insert(0) += 1;
        }
    }
    eprintln!("preferred leaders per (node, shard) at creation: {preferred:?}");
    let (meta, took) = wait_view(&mut cluster, "leaders over shards", &nodes, |m| {
        spread_over_shards(m, 2)
    });
    eprintln!("SPREAD after {took:?}: {:?}", leaders_per_shard(&meta));
    let victim = 2usize;
    cluster.kill(&[victim]);
    let survivors = others(&cluster, victim);
    wait_view(&mut cluster, "its leaderships moved", &survivors, |m| {
        let (led, _) = leaders(m);
        if !led.contains_key(&(victim as u32)) && led.values().sum::<usize>() == 16 {
            Ok(())
        } else {
            Err(format!("{led:?}"))
        }
    });
    cluster.restart(victim);
    let (meta, took) = wait_view(&mut cluster, "leaders over shards again", &nodes, |m| {
        spread_over_shards(m, 2)
    });
    eprintln!(
        "SPREAD AGAIN {took:?} after the restart: {:?}",
        leaders_per_shard(&meta)
    );
    eprintln!("test time {:?}", started.elapsed());
}
