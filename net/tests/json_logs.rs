//! `shardlogd --log-format json` on a real 3-node cluster: every stderr line of every node
//! is one JSON object with the stable fields (`ts`, `level`, `target`, `msg`, and `node`),
//! the ready line is found in JSON (the harness waits on it), and when the leader of a
//! partition is SIGKILLed the survivors' leadership-change lines name the `topic`,
//! `partition` and new `epoch` as fields, and fencing names the dead node as `peer`.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Links, partition};
use serde_json::Value;
use shardlog_net::api::{Acks, TopicConfig};
use shardlog_net::client::{Client, ClientConfig};
use shardlog_net::testing::READY_PREFIX;

const TOPIC: &str = "json-logs";
const WAIT: Duration = Duration::from_secs(60);

/// Produces one record to partition 0 with acks=all, retrying through a failover.
fn produce_one(brokers: String) {
    let config = ClientConfig {
        request_timeout: Duration::from_millis(500),
        retries: 60,
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_millis(250),
        ..ClientConfig::default()
    };
    common::run(move || async move {
        let client = Client::connect(&brokers, config).await.unwrap();
        let batch = common::batch(&[b"logged".to_vec()]);
        client.produce(TOPIC, 0, Acks::All, batch).await.unwrap();
    });
}

/// Every line of `node`'s stderr, parsed; panics naming the first line that is not a JSON
/// object with the stable fields.
fn json_lines(cluster: &Cluster, node: usize) -> Vec<Value> {
    let lines: Vec<String> = cluster
        .log_lines(node)
        .into_iter()
        .filter(|line| !line.starts_with("---- test:"))
        .collect();
    assert!(!lines.is_empty(), "node {node} logged nothing");
    lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("node {node}: not JSON ({e}): {line}"));
            let ts = value["ts"]
                .as_str()
                .unwrap_or_else(|| panic!("no ts: {line}"));
            assert!(ts.len() == 24 && ts.ends_with('Z'), "ts {ts}: {line}");
            let level = value["level"].as_str().unwrap_or_default();
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
                "level: {line}"
            );
            assert!(value["target"].is_string(), "target: {line}");
            assert!(value["msg"].is_string(), "msg: {line}");
            assert_eq!(value["node"].as_u64(), Some(node as u64), "node: {line}");
            value
        })
        .collect()
}

/// Creates the topic (one partition, replication factor 3) and waits until it is led with
/// every replica in sync; its leader and epoch.
fn create_led_topic(cluster: &mut Cluster) -> (u32, i32) {
    let brokers = cluster.brokers();
    common::run({
        move || async move {
            let client = Client::connect(&brokers, ClientConfig::default())
                .await
                .unwrap();
            client
                .create_topic(TOPIC, 1, 3, TopicConfig::default())
                .await
                .unwrap();
        }
    });
    let (led, _) = cluster.wait_for("partition 0 led with 3 in sync", WAIT, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        let p = partition(&meta, TOPIC, 0).ok_or("no partition yet")?;
        match p.leader {
            Some(leader) if p.isr.len() == 3 => Ok((leader, p.leader_epoch)),
            _ => Err(format!("{p:?}")),
        }
    });
    led
}

#[test]
fn json_lines_carry_stable_fields_and_leadership_changes_name_the_partition() {
    let mut cluster = Cluster::start_with(3, Links::Direct, &["--log-format", "json"]);
    cluster.wait_for_controller(WAIT);
    let brokers = cluster.brokers();
    let (leader, epoch) = create_led_topic(&mut cluster);
    produce_one(brokers.clone());

    cluster.kill(&[leader as usize]);
    let survivors: Vec<usize> = (0..3).filter(|n| *n != leader as usize).collect();
    let (new_epoch, _) = cluster.wait_for("a new leader of partition 0", WAIT, |c| {
        let (_, meta) = c.metadata_from(&survivors).ok_or("no survivor answers")?;
        let p = partition(&meta, TOPIC, 0).ok_or("no partition")?;
        match p.leader {
            Some(new) if new != leader => Ok(p.leader_epoch),
            _ => Err(format!("{p:?}")),
        }
    });
    assert!(new_epoch > epoch, "{new_epoch} <= {epoch}");
    produce_one(brokers);

    let mut ready_lines = 0;
    for node in 0..3 {
        let lines = json_lines(&cluster, node);
        ready_lines += lines
            .iter()
            .filter(|l| {
                l["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(READY_PREFIX))
            })
            .inspect(|l| assert!(l["listen"].is_string(), "{l}"))
            .count();
        if node == leader as usize {
            continue;
        }
        // The controller's voter on each survivor applied the change; its replica took
        // its new role. Both name the partition by fields, not in the message.
        let changed = lines.iter().find(|l| {
            l["msg"] == "leader changed"
                && l["topic"] == TOPIC
                && l["partition"] == 0
                && l["epoch"].as_i64() == Some(i64::from(new_epoch))
        });
        let changed = changed.unwrap_or_else(|| {
            cluster.print_logs();
            panic!("node {node}: no leader-changed line for epoch {new_epoch}")
        });
        assert!(changed["shard"].is_u64(), "{changed}");
        assert!(changed["leader"].is_u64(), "{changed}");
        let role = lines.iter().find(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("replica becomes"))
                && l["topic"] == TOPIC
                && l["epoch"].as_i64() == Some(i64::from(new_epoch))
        });
        let role = role.unwrap_or_else(|| panic!("node {node}: no role line for {new_epoch}"));
        assert_eq!(role["partition"], 0, "{role}");
        assert!(role["offset"].is_u64(), "{role}");
        let fenced = lines
            .iter()
            .any(|l| l["msg"] == "node fenced" && l["peer"] == leader);
        assert!(fenced, "node {node}: no fencing line naming node {leader}");
    }
    assert_eq!(ready_lines, 3, "one ready line per node, in JSON");
}
