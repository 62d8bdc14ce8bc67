//! `shardlog node decommission` and `shardlog cluster rebalance` as users run them,
//! against four real `shardlogd` nodes on 127.0.0.1 (the cluster harness of
//! `net/tests/common`: session timeout 1 s) started with `--max-concurrent-moves 1`, a
//! topic of 8 partitions with replication factor 3 and `min_insync` 2, under `acks=all`
//! load from idempotent producers with a consumer per partition:
//!
//! 1. `node decommission 2`: the live node is drained until it holds nothing, every
//!    partition back at 3 in-sync replicas on the other three; `cluster status` shows it
//!    live, holding 0 replicas, leading 0 partitions, `drained`.
//! 2. `node decommission 2 --cancel`, then `cluster rebalance`: the empty node (as a node
//!    added to a running cluster would be) gets its fair share back, 6 replicas of 24.
//!
//! Every record acknowledged before, during and after is in place, once. The cap holds: no
//! view of the controller's metadata taken while the moves run (every 50 ms) shows two
//! partitions moving at once (a moving partition lists its old and new replicas, 4).
//! A failing test
//! prints the tail of every node's stderr.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`)
//! or named by `SHARDLOGD_BIN`.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::too_many_lines
)]

#[path = "../../net/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links};
use common::load::{Load, Shape, TOPIC, verify, wait_acks};
use common::view::{all, controller_view, describe, every_partition, setup_on};
use shardlog_net::api::MetadataResponse;

const PARTITIONS: u32 = 8;
const LOAD: Shape = Shape {
    partitions: PARTITIONS,
    producers_per_partition: 1,
    pause: Duration::from_millis(5),
};
const PHASE_ACKS: usize = 20;
/// A drain or a rebalance: a placement round (every 5 s), then the new replicas catching
/// up and joining the ISR.
const MOVES_MAX: Duration = Duration::from_secs(90);

fn shardlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .output()
        .unwrap()
}

/// `shardlog ARGS --brokers B`, which must succeed; its stdout.
fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let brokers = cluster.brokers();
    let mut full = args.to_vec();
    full.extend(["--brokers", &brokers]);
    let output = shardlog(&full);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{full:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Partitions of the topic in the middle of a move (old and new replicas listed).
fn moving(meta: &MetadataResponse) -> usize {
    meta.topics
        .iter()
        .filter(|t| t.name == TOPIC)
        .flat_map(|t| &t.partitions)
        .filter(|p| p.replicas.len() > 3)
        .count()
}

/// Replicas per node.
fn replicas(meta: &MetadataResponse) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for p in meta
        .topics
        .iter()
        .filter(|t| t.name == TOPIC)
        .flat_map(|t| &t.partitions)
    {
        for n in &p.replicas {
            *counts.entry(*n).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn a_node_is_decommissioned_then_rebalanced_back_under_load() {
    let started = Instant::now();
    let mut cluster = setup_on(
        Cluster::start_with(4, Links::Direct, &["--max-concurrent-moves", "1"]),
        PARTITIONS,
    );
    let nodes = all(&cluster);
    let load = Load::start(&cluster.brokers(), 0, LOAD);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the drain",
    );

    let drained = 2u32;
    let said = ok(&cluster, &["node", "decommission", "2"]);
    eprintln!("node decommission 2: {said}");
    let asked = Instant::now();
    let mut most_moving = 0;
    let (meta, took) = cluster.wait_for("the node drained", MOVES_MAX, |c| {
        let m = controller_view(c, &nodes)?;
        most_moving = most_moving.max(moving(&m));
        every_partition(&m, |p| {
            p.replicas.len() == 3
                && !p.replicas.contains(&drained)
                && p.isr.len() == 3
                && p.leader.is_some_and(|l| l != drained)
        })
        .map(|()| m)
    });
    eprintln!("DRAINED after {took:?}: {}", describe(&meta));
    assert!(
        most_moving <= 1,
        "{most_moving} partitions seen moving at once (drain)"
    );
    let status = ok(&cluster, &["cluster", "status"]);
    let row = status
        .lines()
        .find(|l| l.starts_with("2\t"))
        .unwrap_or_else(|| panic!("no row of node 2: {status}"));
    assert!(row.ends_with("\tyes\t0\t0\tdrained"), "{status}");
    wait_acks(
        &mut cluster,
        &load.progress,
        asked,
        PHASE_ACKS,
        "during the drain",
    );

    // Taken back and rebalanced: an empty node gets its share, as a new one would.
    ok(&cluster, &["node", "decommission", "2", "--cancel"]);
    let said = ok(&cluster, &["cluster", "rebalance"]);
    eprintln!("cluster rebalance: {said}");
    assert!(
        said.contains("6 replica moves planned, at most 1 at once"),
        "{said}"
    );
    let mut most_moving = 0;
    let (meta, took) = cluster.wait_for("the node's share back", MOVES_MAX, |c| {
        let m = controller_view(c, &nodes)?;
        most_moving = most_moving.max(moving(&m));
        let counts = replicas(&m);
        let even = (0..4).all(|n| counts.get(&n) == Some(&6));
        every_partition(&m, |p| p.replicas.len() == 3 && p.isr.len() == 3)?;
        if even {
            Ok(m)
        } else {
            Err(format!("{counts:?}"))
        }
    });
    eprintln!("REBALANCED after {took:?}: {:?}", replicas(&meta));
    assert!(
        most_moving <= 1,
        "{most_moving} partitions seen moving at once (rebalance)"
    );
    let status = ok(&cluster, &["cluster", "status"]);
    assert!(status.contains("\tyes\t6\t"), "{status}");
    let said = ok(&cluster, &["cluster", "rebalance", "--dry-run"]);
    assert!(said.contains("would move 0 replicas"), "{said}");

    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after the rebalance",
    );
    let outcome = load.stop();
    verify(&cluster, &[&outcome], "decommission and rebalance");
    eprintln!("test time {:?}", started.elapsed());
}
