//! The real-client compatibility suite: unmodified Kafka clients against a real
//! `shardlogd` (one node, and a 3-node cluster) through `--kafka-listen`. The client
//! side is Python scripts in `kafka_clients/` (confluent-kafka, kafka-python, aiokafka,
//! and kcat driven from Python) that check what they see and print a JSON summary, which
//! these tests check again; a script asks the test to SIGKILL and restart nodes.
//!
//! The clients are installed on first use, idempotently (`kafka_clients/setup.sh`:
//! Debian's kcat, a virtualenv under `target/kafka-clients` with the PyPI packages).
//! When the package registries cannot be reached the tests fail, naming the install
//! that failed: they never pass without their clients.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`)
//! or named by `SHARDLOGD_BIN`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "kafka_clients/nodes.rs"]
mod nodes;
#[path = "kafka_clients/script.rs"]
mod script;

use std::time::Duration;

use nodes::Nodes;
use script::python_script;

/// A consumer group member's session timeout: short, so that a dead member's partitions
/// move on within seconds.
const SESSION_MS: &str = "6000";
/// How long one script may run (its own waits are shorter).
const SCRIPT_MAX: Duration = Duration::from_secs(200);

#[test]
fn confluent_kafka_admin_idempotent_keyed_headers_and_every_codec() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(
        &mut nodes,
        "confluent_produce.py",
        &[&bootstrap],
        SCRIPT_MAX,
    );
    eprintln!("summary: {summary}");
    assert_eq!(summary["idempotent"]["records"], 400);
    assert_eq!(summary["idempotent"]["partitions_used"], 4);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        assert_eq!(summary["codecs"][codec], 60, "{codec}");
    }
}

#[test]
fn confluent_kafka_group_splits_rebalances_takes_over_and_commits_survive_a_broker_sigkill() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let args = [bootstrap.as_str(), SESSION_MS, "range,roundrobin"];
    let summary = python_script(&mut nodes, "confluent_group.py", &args, SCRIPT_MAX);
    eprintln!("summary: {summary}");
    let members = |step: &str| summary[step].as_object().unwrap().len();
    assert_eq!(members("two"), 2);
    assert_eq!(members("three"), 3);
    // 120 + 60 + 60 + 40 records, each consumed (some twice only where no commit had
    // covered them yet).
    assert_eq!(summary["records"], 280);
    assert_eq!(summary["consumed"], 280);
    let takeover = summary["takeover_s"].as_f64().unwrap();
    eprintln!("survivors took the dead member's partitions in {takeover} s");
}

#[test]
fn kafka_python_produces_consumes_and_resumes_after_its_group_commit() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(
        &mut nodes,
        "kafka_python_client.py",
        &[&bootstrap],
        SCRIPT_MAX,
    );
    eprintln!("summary: {summary}");
    assert_eq!(summary["produced"], 60);
}

#[test]
fn aiokafka_produces_consumes_and_resumes_after_its_group_commit() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(&mut nodes, "aiokafka_client.py", &[&bootstrap], SCRIPT_MAX);
    eprintln!("summary: {summary}");
    assert_eq!(summary["produced"], 60);
}

#[test]
fn kcat_lists_produces_consumes_queries_by_time_and_commits_as_a_group() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(&mut nodes, "kcat_client.py", &[&bootstrap], SCRIPT_MAX);
    eprintln!("summary: {summary}");
    assert_eq!(summary["group_reads"], serde_json::json!([30, 0, 5]));
}

#[test]
fn cluster_clients_follow_a_killed_coordinator_and_leader_and_lose_nothing_acknowledged() {
    let mut nodes = Nodes::start(3);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(
        &mut nodes,
        "cluster_failover.py",
        &[&bootstrap, SESSION_MS],
        SCRIPT_MAX,
    );
    eprintln!("summary: {summary}");
    let acked = summary["acked"].as_u64().unwrap();
    assert!(acked >= 300, "only {acked} records acknowledged");
    assert!(summary["consumed"].as_u64().unwrap() >= acked);
    assert!(summary["in_log"].as_u64().unwrap() >= acked);
}
