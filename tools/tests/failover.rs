//! The shipped `shardlog` commands against a real 3-node cluster on 127.0.0.1 (the
//! cluster harness of `net/tests/common`: replication factor 3, `min_insync` 2, session
//! timeout 1 s), while a node is paused (SIGSTOP) or killed, as users run them:
//!
//! - a `shardlog produce --acks all --report-offsets --partition P` fed a line every
//!   20 ms, and a `shardlog consume --follow --format full --partition P`, while the
//!   leader of P is paused for 10 s (a leader that is also the controller leader) and for
//!   60 s (one that is not): both go on from the new leader within 2 s of the failover
//!   (measured from when the other nodes' metadata first names the new leader), and
//!   afterwards every acknowledged record is where its acknowledgement said;
//! - `shardlog topic create|describe|delete` with each node killed in turn and with the
//!   controller leader and another node paused, the down node first in `--brokers`; and
//!   `shardlog cluster status` against a paused node answering within its 5 s bound.
//!
//! The partitions tested are the ones the paused node leads (those fail over; a
//! partition whose follower stops is another matter). Times are measured and printed;
//! the asserted bounds are the (2 s after the failover, 5 s per status attempt)
//! with some headroom for a loaded two-core machine. A failing test prints the tail of
//! every node's stderr.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`)
//! or named by `SHARDLOGD_BIN`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "../../net/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links, partition};
use shardlog_net::api::MetadataResponse;

/// The bound from the failover to the clients going on, and the headroom a
/// loaded two-core machine gets on top.
const RESUME_BOUND: Duration = Duration::from_secs(2);
const HEADROOM: Duration = Duration::from_millis(500);
/// `cluster status` waits at most this per attempt (the README's promise).
const STATUS_ATTEMPT: Duration = Duration::from_secs(5);
/// Bound on every wait for the cluster to reach a state.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// The topic of the pause tests: three partitions (one led by each node), replication
/// factor 3.
const TOPIC: &str = "orders";
const PARTITIONS: u32 = 3;
/// How often the producer's input gets a line.
const LINE_EVERY: Duration = Duration::from_millis(20);

/// Which node the pause tests stop: the leader of the partition written, which is also
/// the controller leader (its failover waits for a controller election first) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Paused {
    LeaderAndController,
    LeaderOnly,
}

#[test]
fn produce_and_follow_go_on_when_the_leader_pauses_for_10s() {
    pause_the_leader_under_load(Duration::from_secs(10), Paused::LeaderAndController);
}

#[test]
fn produce_and_follow_go_on_when_the_leader_pauses_for_60s() {
    pause_the_leader_under_load(Duration::from_secs(60), Paused::LeaderOnly);
}

/// Only the partition the paused node leads is written and read: that one fails over. (A
/// partition whose follower stops must go on too, but that is the replicas' business,
/// not the client's.)
fn pause_the_leader_under_load(pause: Duration, paused: Paused) {
    let started = Instant::now();
    let (mut cluster, partition_id, leader) = cluster_with_topic(TOPIC, paused);
    let brokers = cluster.brokers();
    let producer = Producer::start(&brokers, TOPIC, partition_id);
    let consumer = Consumer::start(&brokers, TOPIC, partition_id);
    wait_until(&mut cluster, "acks and records before the pause", || {
        producer.acks().len() >= 20 && consumer.records().len() >= 20
    });

    let paused_at = Instant::now();
    cluster.pause(leader);
    let others: Vec<usize> = (0..3).filter(|&n| n != leader).collect();
    let (failed_over_at, new_meta) =
        wait_for_new_leader(&mut cluster, &others, partition_id, leader);
    let p = partition(&new_meta, TOPIC, partition_id).unwrap();
    eprintln!(
        "FAILOVER: node {leader} ({paused:?}) paused; partition {partition_id}: node {:?} \
         leads at epoch {} after {:?}",
        p.leader,
        p.leader_epoch,
        failed_over_at - paused_at
    );
    check_resumed(
        &mut cluster,
        &producer,
        &consumer,
        paused_at,
        failed_over_at,
    );

    // The rest of the pause, then the node comes back; producing goes on.
    std::thread::sleep(pause.saturating_sub(paused_at.elapsed()));
    cluster.resume(leader);
    let resumed_at = Instant::now();
    wait_until(&mut cluster, "acks after SIGCONT", || {
        let times = producer.acks_times();
        times.iter().filter(|at| **at > resumed_at).count() >= 20
    });
    let acked = producer.finish();
    let last = acked.values().max().copied().unwrap_or(0);
    wait_until(&mut cluster, "the consumer at the last ack", || {
        consumer.records().keys().next_back() >= Some(&last)
    });
    let seen = consumer.finish();
    check(&acked, &seen);
    cluster.assert_running();
    eprintln!(
        "{} records acknowledged, {} consumed; test time {:?}",
        acked.len(),
        seen.len(),
        started.elapsed()
    );
}

/// Three nodes with a controller, and `topic` created with the shipped CLI, every
/// partition led and fully in sync. Returns the cluster, a partition whose leader is
/// `paused` (the controller leader or not) and that leader.
fn cluster_with_topic(topic: &str, paused: Paused) -> (Cluster, u32, usize) {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    let brokers = cluster.brokers();
    let partitions = PARTITIONS.to_string();
    let args = ["topic", "create", topic, "--partitions", &partitions];
    let created = shardlog(&[&args[..], &["--brokers", &brokers]].concat());
    assert_eq!(created.status.code(), Some(0), "{}", describe(&created));
    let (meta, _) = cluster.wait_for("every partition led and in sync", WAIT_MAX, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        for id in 0..PARTITIONS {
            let p = partition(&meta, topic, id).ok_or("no partition yet")?;
            if p.leader.is_none() || p.isr.len() != 3 {
                return Err(format!("{p:?}"));
            }
        }
        Ok(meta.clone())
    });
    let controller = meta.controller.unwrap();
    let chosen = (0..PARTITIONS).find_map(|id| {
        let leader = partition(&meta, topic, id)?.leader?;
        let is_controller = leader == controller;
        (is_controller == (paused == Paused::LeaderAndController)).then_some((id, leader))
    });
    let (id, leader) = chosen.unwrap_or_else(|| panic!("no partition fits {paused:?}: {meta:?}"));
    (cluster, id, leader as usize)
}

/// Waits until both clients have something after the failover and checks it came within
/// the bound; prints the times.
fn check_resumed(
    cluster: &mut Cluster,
    producer: &Producer,
    consumer: &Consumer,
    paused_at: Instant,
    failed_over_at: Instant,
) {
    let (ack_at, record_at) = wait_until_value(cluster, "progress after the failover", || {
        let ack = producer.first_after(failed_over_at)?;
        let record = consumer.first_after(failed_over_at)?;
        Some((ack, record))
    });
    let producer_gap = gap(&producer.acks_times(), paused_at);
    let consumer_gap = gap(&consumer.record_times(), paused_at);
    eprintln!(
        "RESUMED: producer {:?} after the failover ({producer_gap:?} without acks), consumer \
         {:?} after it ({consumer_gap:?} without records)",
        ack_at.saturating_duration_since(failed_over_at),
        record_at.saturating_duration_since(failed_over_at),
    );
    for (who, at) in [("producer", ack_at), ("consumer", record_at)] {
        let after = at.saturating_duration_since(failed_over_at);
        assert!(
            after <= RESUME_BOUND + HEADROOM,
            "the {who} went on {after:?} after the failover"
        );
    }
}

/// `topic create|describe|delete` and `cluster status` with one node down: killed (each
/// in turn), then paused (the controller leader, then another node). The down node is
/// named first in `--brokers`.
#[test]
fn topic_admin_and_cluster_status_with_a_node_down() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    let mut timings: Vec<String> = Vec::new();
    for node in 0..3 {
        cluster.kill(&[node]);
        let listed = down_first(&cluster, node);
        admin_round(&listed, &format!("k{node}"), 3, &mut timings);
        cluster.restart(node);
        cluster.wait_for_controller(WAIT_MAX);
    }
    for round in ["the controller", "a node other than the controller"] {
        // A node resumed a moment ago may still be learning who leads: ask until one
        // names the controller.
        let (controller, _) = cluster.wait_for("a controller leader", WAIT_MAX, |c| {
            c.metadata_any()
                .and_then(|(_, meta)| meta.controller)
                .ok_or_else(|| "no node names a controller yet".to_owned())
        });
        let controller = controller as usize;
        let node = if round == "the controller" {
            controller
        } else {
            (controller + 1) % 3
        };
        eprintln!("pausing node {node}, {round}");
        cluster.pause(node);
        let paused_at = Instant::now();
        let listed = down_first(&cluster, node);
        admin_round(&listed, &format!("p{node}"), 1, &mut timings);
        // The case: only a live node named, the paused one still leading.
        let live = cluster.addr((node + 1) % 3);
        let (described, took) = timed(&["topic", "describe", "p-kept", "--brokers", &live]);
        timings.push(format!(
            "describe --brokers <live> with node {node} paused: {took:?}"
        ));
        assert_eq!(described.status.code(), Some(0), "{}", describe(&described));

        // Pointed at the paused node alone: the one attempt fails within its bound.
        let (status, took) = timed(&["cluster", "status", "--brokers", &cluster.addr(node)]);
        timings.push(format!(
            "cluster status --brokers <paused>: {took:?}, exit {:?}",
            status.status.code()
        ));
        assert_eq!(status.status.code(), Some(2), "{}", describe(&status));
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert!(stderr.contains("no reply within 5s"), "{stderr}");
        assert!(took <= STATUS_ATTEMPT + HEADROOM * 2, "{took:?}");
        eprintln!("node {node} paused for {:?}", paused_at.elapsed());
        cluster.resume(node);
        cluster.wait_for_controller(WAIT_MAX);
    }
    for line in &timings {
        eprintln!("{line}");
    }
    cluster.assert_running();
    eprintln!("test time {:?}", started.elapsed());
}

/// Every node's address, `down` first.
fn down_first(cluster: &Cluster, down: usize) -> String {
    let mut nodes = vec![down];
    nodes.extend((0..cluster.len()).filter(|&n| n != down));
    nodes
        .iter()
        .map(|&n| cluster.addr(n))
        .collect::<Vec<_>>()
        .join(",")
}

/// `creates` topics created, described and deleted, and `cluster status`, against
/// `brokers`; one topic (`p-kept`) is kept for later describes. Pushes the timings.
fn admin_round(brokers: &str, label: &str, creates: usize, timings: &mut Vec<String>) {
    // Replication factor 2: two nodes are live (3 would be refused as NotEnoughReplicas).
    let mut names: Vec<String> = (0..creates).map(|i| format!("{label}-{i}")).collect();
    if label.starts_with('p') && !names.is_empty() {
        names.push("p-kept".to_owned());
    }
    for name in &names {
        let args = [
            "topic",
            "create",
            name.as_str(),
            "--partitions",
            "3",
            "--replication-factor",
            "2",
            "--if-not-exists",
            "--brokers",
            brokers,
        ];
        let (created, took) = timed(&args);
        timings.push(format!("{label}: create {name}: {took:?}"));
        assert_eq!(created.status.code(), Some(0), "{}", describe(&created));
        let (described, took) = timed(&["topic", "describe", name, "--brokers", brokers]);
        timings.push(format!("{label}: describe {name}: {took:?}"));
        assert_eq!(described.status.code(), Some(0), "{}", describe(&described));
        let rows = String::from_utf8_lossy(&described.stdout).lines().count();
        assert_eq!(rows, 5, "{}", describe(&described));
    }
    for name in names.iter().filter(|n| *n != "p-kept") {
        let (deleted, took) = timed(&["topic", "delete", name, "--brokers", brokers]);
        timings.push(format!("{label}: delete {name}: {took:?}"));
        assert_eq!(deleted.status.code(), Some(0), "{}", describe(&deleted));
    }
    let (status, took) = timed(&["cluster", "status", "--brokers", brokers]);
    timings.push(format!("{label}: cluster status: {took:?}"));
    // 1: a node is not live (0 while a paused one is not fenced yet).
    assert!(
        matches!(status.status.code(), Some(0 | 1)),
        "{}",
        describe(&status)
    );
    let nodes = String::from_utf8_lossy(&status.stdout).lines().count();
    assert_eq!(
        nodes,
        5,
        "controller line, header, 3 nodes: {}",
        describe(&status)
    );
    assert!(took <= STATUS_ATTEMPT + HEADROOM * 2, "{took:?}");
}

// ---- the clients, as child processes ----

/// Stdout lines of a child with the time each arrived.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

fn read_lines(child: &mut Child) -> (Lines, JoinHandle<()>) {
    let stdout = child.stdout.take().unwrap();
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    (lines, reader)
}

/// `shardlog produce --acks all --report-offsets`, fed `r<i>` every `LINE_EVERY`.
struct Producer {
    child: Child,
    partition: u32,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<usize>>,
    lines: Lines,
    reader: Option<JoinHandle<()>>,
}

impl Producer {
    fn start(brokers: &str, topic: &str, partition: u32) -> Producer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["produce", "--brokers", brokers, "--topic", topic])
            .args(["--partition", &partition.to_string()])
            .args(["--acks", "all", "--report-offsets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let feeder = std::thread::spawn(move || {
            let mut sent = 0;
            while !stopped.load(Ordering::SeqCst) {
                if writeln!(stdin, "r{sent}").is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(LINE_EVERY);
            }
            sent
        });
        let (lines, reader) = read_lines(&mut child);
        Producer {
            child,
            partition,
            stop,
            feeder: Some(feeder),
            lines,
            reader: Some(reader),
        }
    }

    /// Offsets acknowledged so far, in input order.
    fn acks(&self) -> Vec<u64> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, line)| offset_of(line, self.partition))
            .collect()
    }

    fn acks_times(&self) -> Vec<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .collect()
    }

    fn first_after(&self, since: Instant) -> Option<Instant> {
        self.acks_times().into_iter().find(|at| *at > since)
    }

    /// Closes stdin, waits for the exit (0: every record acknowledged) and returns input
    /// line -> offset.
    fn finish(mut self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.feeder.take().unwrap().join().unwrap();
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let acks = self.acks();
        assert_eq!(status.code(), Some(0), "shardlog produce: {status}");
        assert_eq!(acks.len(), sent, "every line acknowledged");
        acks.into_iter()
            .enumerate()
            .map(|(i, offset)| (format!("r{i}"), offset))
            .collect()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.child.kill();
    }
}

/// The offset of a `partition<TAB>offset` line, which must name `expected`.
fn offset_of(line: &str, expected: u32) -> u64 {
    let (partition, offset) = line.split_once('\t').unwrap();
    assert_eq!(partition, expected.to_string(), "{line}");
    offset.parse().unwrap()
}

/// `shardlog consume --from beginning --follow --format full`.
struct Consumer {
    child: Child,
    lines: Lines,
    reader: Option<JoinHandle<()>>,
}

impl Consumer {
    fn start(brokers: &str, topic: &str, partition: u32) -> Consumer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["consume", "--brokers", brokers, "--topic", topic])
            .args(["--partition", &partition.to_string()])
            .args(["--from", "beginning", "--follow", "--format", "full"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (lines, reader) = read_lines(&mut child);
        Consumer {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Offset -> value of every record printed so far.
    fn records(&self) -> BTreeMap<u64, String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, line)| {
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), 5, "{line}");
                (fields[1].parse().unwrap(), fields[4].to_owned())
            })
            .collect()
    }

    fn record_times(&self) -> Vec<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .collect()
    }

    fn first_after(&self, since: Instant) -> Option<Instant> {
        self.record_times().into_iter().find(|at| *at > since)
    }

    /// SIGTERM (exit 0 expected); returns offset -> value, checking the offsets were
    /// printed dense from 0 and in order.
    fn finish(mut self) -> BTreeMap<u64, String> {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "shardlog consume --follow: {status}"
        );
        let lines = self.lines.lock().unwrap();
        for (expected, (_, line)) in (0u64..).zip(lines.iter()) {
            let offset: u64 = line.split('\t').nth(1).unwrap().parse().unwrap();
            assert_eq!(offset, expected, "printed in order, dense: {line}");
        }
        drop(lines);
        self.records()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Every acknowledged line is at its acknowledged offset, and none is stored twice (the
/// CLI is an idempotent producer: a produce resent across the failover is stored once).
fn check(acked: &BTreeMap<String, u64>, seen: &BTreeMap<u64, String>) {
    for (line, offset) in acked {
        assert_eq!(
            seen.get(offset).map(String::as_str),
            Some(line.as_str()),
            "acknowledged {line} at {offset}"
        );
    }
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for value in seen.values() {
        *copies.entry(value.as_str()).or_default() += 1;
    }
    let duplicated = copies.values().filter(|n| **n > 1).count();
    assert_eq!(duplicated, 0, "lines stored more than once");
}

/// How long `times` had no entry around `since`: from the last entry at or before it to
/// the first after it.
fn gap(times: &[Instant], since: Instant) -> Duration {
    let before = times
        .iter()
        .rev()
        .find(|at| **at <= since)
        .copied()
        .unwrap_or(since);
    let after = times.iter().find(|at| **at > since).copied();
    after.map_or(Duration::MAX, |after| after - before)
}

/// Polls the nodes in `asking` every 10 ms until one names a leader of the partition other
/// than `old`; returns when that was seen and the metadata.
fn wait_for_new_leader(
    cluster: &mut Cluster,
    asking: &[usize],
    partition_id: u32,
    old: usize,
) -> (Instant, MetadataResponse) {
    let started = Instant::now();
    loop {
        cluster.assert_running();
        for &node in asking {
            if let Ok(meta) = cluster.metadata(node)
                && let Some(p) = partition(&meta, TOPIC, partition_id)
                && p.leader.is_some_and(|l| l as usize != old)
            {
                return (Instant::now(), meta);
            }
        }
        assert!(
            started.elapsed() < WAIT_MAX,
            "no new leader after {WAIT_MAX:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_until(cluster: &mut Cluster, what: &str, mut done: impl FnMut() -> bool) {
    wait_until_value(cluster, what, || done().then_some(()));
}

fn wait_until_value<T>(
    cluster: &mut Cluster,
    what: &str,
    mut value: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        cluster.assert_running();
        if let Some(value) = value() {
            return value;
        }
        assert!(
            started.elapsed() < WAIT_MAX,
            "waited {WAIT_MAX:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn shardlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn timed(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = shardlog(args);
    (output, started.elapsed())
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
