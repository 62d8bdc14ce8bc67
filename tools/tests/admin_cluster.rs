//! A 3-node cluster of real `shardlogd` (the harness of `net/tests/common`: session
//! timeout 1 s): once a topic is fully in sync, `/metrics` on node 0 shows no
//! under-replicated partition; SIGKILL node 2 (a follower of the partitions the others
//! lead) and node 0's `shardlog_under_replicated_partitions` becomes > 0 within the
//! session timeout plus generous room for a loaded machine. Prints how long it took.
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
