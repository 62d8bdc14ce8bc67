//! A 3-node cluster of real `shardlogd` (the harness of `net/tests/common`: session
//! timeout 1 s): once a topic is fully in sync, `/metrics` on node 0 shows no
//! under-replicated partition; SIGKILL node 2 (a follower of the partitions the others
//! lead) and node 0's `shardlog_under_replicated_partitions` becomes > 0 within the
//! session timeout plus generous room for a loaded machine. Prints how long it took.
//!
//! The replication metrics move on the node whose replica causes them: an acks=all
//! produce to an RF=3 partition adds replication latency samples on its leader (one per
//! follower acknowledgement), not on the followers; a SIGSTOPped follower is dropped from
//! the ISR (a shrink counted on the leader) and, resumed, rejoins (an expand); a SIGKILLed
//! leader's partition gets a new leader, whose node counts one leadership change. And a
//! node that does not lead the controller shows every node's heartbeat age in
//! `/v1/status` (the leader shares its sessions), a killed node's growing.
//!
//! `shardlogd` and `shardlog` must be built in the same target directory
//! (`cargo build --workspace`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "common/admin.rs"]
mod admin;
#[path = "../../net/tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use admin::{get, promtool_check, sample};
use common::cluster::{Cluster, Links, partition};
use serde_json::Value;

const WAIT_MAX: Duration = Duration::from_secs(60);
/// The harness's `--session-timeout-ms`.
const SESSION_TIMEOUT: Duration = Duration::from_secs(1);

fn under_replicated(cluster: &Cluster, node: usize) -> Option<f64> {
    let page = get(cluster.admin_addr(node), "/metrics").body;
    sample(&page, "shardlog_under_replicated_partitions", "")
}

#[test]
fn a_killed_follower_shows_as_under_replicated_within_the_session_timeout() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    let brokers = cluster.brokers();
    let created = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args([
            "topic",
            "create",
            "watched",
            "--partitions",
            "3",
            "--brokers",
            &brokers,
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    cluster.wait_for("every partition led and in sync", WAIT_MAX, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        for id in 0..3 {
            let p = partition(&meta, "watched", id).ok_or("no partition yet")?;
            if p.leader.is_none() || p.isr.len() != 3 {
                return Err(format!("{p:?}"));
            }
        }
        Ok(())
    });
    cluster.wait_for(
        "node 0 to show no under-replicated partition",
        WAIT_MAX,
        |c| match under_replicated(c, 0) {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let page = get(cluster.admin_addr(0), "/metrics").body;
    let (code, printed) = promtool_check(&page);
    assert_eq!(code, Some(0), "promtool check metrics: {printed}\n{page}");
    assert_eq!(
        sample(&page, "shardlog_nodes_live", ""),
        Some(3.0),
        "{page}"
    );
    cluster.kill(&[2]);
    let killed = Instant::now();
    let mut last = None;
    while killed.elapsed() < WAIT_MAX {
        last = under_replicated(&cluster, 0);
        if last.is_some_and(|v| v > 0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = killed.elapsed();
    eprintln!("under-replicated partitions {last:?} on node 0, {took:?} after SIGKILL of node 2");
    assert!(
        last.is_some_and(|v| v > 0.0),
        "still {last:?} after {took:?}"
    );
    // The session timeout, plus room for a loaded two-core machine.
    assert!(took < SESSION_TIMEOUT + Duration::from_secs(15), "{took:?}");
    let page = get(cluster.admin_addr(0), "/metrics").body;
    assert_eq!(
        sample(&page, "shardlog_nodes_live", ""),
        Some(2.0),
        "{page}"
    );
}

/// A counter (or histogram `_count`) of `node`'s `/metrics`, summed over its label sets.
fn counter(cluster: &Cluster, node: usize, name: &str) -> f64 {
    let page = get(cluster.admin_addr(node), "/metrics").body;
    sample(&page, name, "").unwrap_or_else(|| panic!("no {name} on node {node}:\n{page}"))
}

/// `shardlog ARGS --brokers ...` against the cluster; it must succeed.
fn shardlog(cluster: &Cluster, args: &[&str], stdin: &str) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    command.args(args).args(["--brokers", &cluster.brokers()]);
    let output = shardlog_net::testing::output_with_stdin(&mut command, stdin.as_bytes()).unwrap();
    assert!(output.status.success(), "shardlog {args:?}: {output:?}");
}

/// Creates `topic` with RF 3 and waits until each partition is led with 3 in sync.
fn create_in_sync(cluster: &mut Cluster, topic: &str, partitions: u32) {
    let count = partitions.to_string();
    let args = ["topic", "create", topic, "--partitions", &count];
    shardlog(
        cluster,
        &[&args[..], &["--replication-factor", "3"]].concat(),
        "",
    );
    cluster.wait_for("every partition led and in sync", WAIT_MAX, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        for id in 0..partitions {
            let p = partition(&meta, topic, id).ok_or("no partition yet")?;
            if p.leader.is_none() || p.isr.len() != 3 {
                return Err(format!("{p:?}"));
            }
        }
        Ok(())
    });
}

/// The controller leader and each partition's (leader, ISR) of `topic`, as node 0..3 say.
fn leaders(cluster: &Cluster, topic: &str, partitions: u32) -> (usize, Vec<(usize, Vec<u32>)>) {
    let (_, meta) = cluster.metadata_any().expect("a node answers");
    let controller = meta.controller.expect("a controller leader") as usize;
    let led = (0..partitions)
        .map(|id| {
            let p = partition(&meta, topic, id).expect("the partition");
            (p.leader.expect("a leader") as usize, p.isr.clone())
        })
        .collect();
    (controller, led)
}

#[test]
fn replication_latency_and_isr_shrinks_and_expands_move_on_the_leader() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    create_in_sync(&mut cluster, "replicated", 1);
    let (controller, led) = leaders(&cluster, "replicated", 1);
    let leader = led[0].0;
    // The follower to stop: not the controller leader if it can be helped (its pause
    // would stall the controller for an election, which the test does not need).
    let follower = (0..3)
        .filter(|&n| n != leader)
        .min_by_key(|&n| n == controller)
        .unwrap();
    let replication = "shardlog_replication_latency_seconds_count";
    let samples: Vec<f64> = (0..3).map(|n| counter(&cluster, n, replication)).collect();
    let records: String = (0..20).map(|i| format!("replicated-{i}\n")).collect();
    shardlog(
        &cluster,
        &["produce", "--topic", "replicated", "--acks", "all"],
        &records,
    );
    // Acknowledged under acks=all: both followers acknowledged the ship. The leader's
    // histogram counts one sample per follower acknowledgement; followers ship nothing.
    for (node, before) in samples.iter().enumerate() {
        let moved = counter(&cluster, node, replication) - before;
        if node == leader {
            assert!(moved >= 2.0, "leader {node}: {moved} replication samples");
        } else {
            assert_eq!(moved, 0.0, "follower {node}: {moved} replication samples");
        }
    }
    let page = get(cluster.admin_addr(leader), "/metrics").body;
    let (code, printed) = promtool_check(&page);
    assert_eq!(code, Some(0), "promtool check metrics: {printed}\n{page}");
    admin::check_histograms(&page);

    let (shrinks, expands) = ("shardlog_isr_shrinks_total", "shardlog_isr_expands_total");
    let before = (
        counter(&cluster, leader, shrinks),
        counter(&cluster, leader, expands),
    );
    cluster.pause(follower);
    let paused = Instant::now();
    cluster.wait_for("the leader to count an ISR shrink", WAIT_MAX, |c| {
        let moved = counter(c, leader, shrinks) - before.0;
        if moved >= 1.0 {
            Ok(())
        } else {
            Err(format!("{moved}"))
        }
    });
    eprintln!("ISR shrink counted {:?} after SIGSTOP", paused.elapsed());
    let (_, led) = leaders(&cluster, "replicated", 1);
    let stopped = u32::try_from(follower).unwrap();
    assert!(!led[0].1.contains(&stopped), "{led:?}");
    assert_eq!(counter(&cluster, leader, shrinks) - before.0, 1.0);
    assert_eq!(
        counter(&cluster, leader, expands),
        before.1,
        "expanded while paused"
    );
    cluster.resume(follower);
    cluster.wait_for("the leader to count an ISR expand", WAIT_MAX, |c| {
        let moved = counter(c, leader, expands) - before.1;
        if moved >= 1.0 {
            Ok(())
        } else {
            Err(format!("{moved}"))
        }
    });
    let (_, led) = leaders(&cluster, "replicated", 1);
    assert_eq!(led[0].1.len(), 3, "{led:?}");
    assert_eq!(counter(&cluster, leader, expands) - before.1, 1.0);
    assert_eq!(counter(&cluster, leader, shrinks) - before.0, 1.0);
}

/// `/v1/status` of `node`.
fn status(cluster: &Cluster, node: usize) -> Value {
    let answer = get(cluster.admin_addr(node), "/v1/status");
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// Each node's `heartbeat_age_ms` in `status` (`None` where it is null).
fn heartbeat_ages(status: &Value) -> Vec<(u64, Option<u64>)> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_u64().unwrap(), n["heartbeat_age_ms"].as_u64()))
        .collect()
}

#[test]
fn a_killed_leader_counts_a_leadership_change_and_any_node_shows_heartbeat_ages() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    create_in_sync(&mut cluster, "led", 3);
    let (controller, led) = leaders(&cluster, "led", 3);
    // The node to kill leads a partition and not the controller; the observer is the
    // other node that does not lead the controller.
    let (index, victim) = led
        .iter()
        .enumerate()
        .map(|(i, (l, _))| (i, *l))
        .find(|(_, l)| *l != controller)
        .expect("a partition led outside the controller leader");
    let observer = (0..3).find(|&n| n != controller && n != victim).unwrap();
    // Every node's age, on a node that does not lead the controller.
    let (ages, _) = cluster.wait_for("heartbeat ages on a non-leader", WAIT_MAX, |c| {
        let status = status(c, observer);
        let ages = heartbeat_ages(&status);
        let known = ages.len() == 3 && ages.iter().all(|(_, age)| age.is_some());
        if status["controller"]["this_node_leads"] == Value::Bool(false) && known {
            Ok(ages)
        } else {
            Err(format!("{status}"))
        }
    });
    // Live nodes heartbeat every 100 ms: their ages are a fraction of a second (a few
    // seconds on a loaded machine), not the node's uptime.
    for (node, age) in &ages {
        assert!(age.unwrap() < 5_000, "node {node}: age {age:?}");
    }
    let changes = "shardlog_leadership_changes_total";
    let survivors = [controller, observer];
    let before: Vec<f64> = survivors
        .iter()
        .map(|&n| counter(&cluster, n, changes))
        .collect();
    let killed = Instant::now();
    cluster.kill(&[victim]);
    let (new_leader, _) = cluster.wait_for("a new leader", WAIT_MAX, |c| {
        let (_, meta) = c.metadata_from(&survivors).ok_or("no survivor answers")?;
        let p = partition(&meta, "led", u32::try_from(index).unwrap()).ok_or("no partition")?;
        match p.leader {
            Some(l) if l as usize != victim => Ok(l as usize),
            other => Err(format!("leader {other:?}")),
        }
    });
    let slot = survivors.iter().position(|&n| n == new_leader).unwrap();
    cluster.wait_for("the new leader to count the change", WAIT_MAX, |c| {
        let moved = counter(c, new_leader, changes) - before[slot];
        if moved >= 1.0 {
            Ok(())
        } else {
            Err(format!("{moved}"))
        }
    });
    assert_eq!(
        counter(&cluster, new_leader, changes) - before[slot],
        1.0,
        "node {new_leader} took over partition {index} of node {victim}"
    );
    killed_node_age_grows(&mut cluster, observer, victim, killed);
}

/// On `observer`, the age of `victim` (SIGKILLed at `killed`) grows past the session
/// timeout and on, while the live nodes' ages stay small.
fn killed_node_age_grows(cluster: &mut Cluster, observer: usize, victim: usize, killed: Instant) {
    let victim_age = |c: &Cluster| {
        let ages = heartbeat_ages(&status(c, observer));
        ages.iter()
            .find(|(n, _)| *n == victim as u64)
            .and_then(|(_, a)| *a)
    };
    let (first, _) =
        cluster.wait_for(
            "the killed node's age past 1 s",
            WAIT_MAX,
            |c| match victim_age(c) {
                Some(age) if age >= 1_000 => Ok(age),
                other => Err(format!("{other:?}")),
            },
        );
    std::thread::sleep(Duration::from_millis(600));
    let later = victim_age(cluster).expect("the killed node's age");
    assert!(later >= first + 500, "age {first} ms, then {later} ms");
    // Not the node's uptime or another garbage figure: about the time since the kill
    // (its last heartbeat came before it; a loaded machine may have delayed that one).
    assert!(
        u128::from(later) <= killed.elapsed().as_millis() + 5_000,
        "age {later} ms, killed {:?} ago",
        killed.elapsed()
    );
    let status = status(cluster, observer);
    let nodes = status["nodes"].as_array().unwrap();
    let dead = nodes.iter().find(|n| n["id"] == victim as u64).unwrap();
    assert_eq!(dead["state"], "fenced", "{status}");
    for (node, age) in heartbeat_ages(&status) {
        if node != victim as u64 {
            assert!(age.is_some_and(|a| a < 5_000), "node {node}: {age:?}");
        }
    }
}
