//! `shardlog partition reassign` under load, on a real 4-node cluster on 127.0.0.1 (the
//! cluster harness of `net/tests/common`: replication factor 3, `min_insync` 2).
//!
//! A topic of one partition gets about 1 MB of records from the shipped `shardlog
//! produce --acks all --report-offsets` (an idempotent producer), then a second one
//! feeds it a line every 20 ms while a `shardlog consume --follow` reads it; meanwhile
//! the partition's replicas are moved four times with the shipped CLI, so that every
//! replica present at the start is removed (the leader twice) and every replica at the
//! end was created, and caught up from the log start, during the test:
//!
//! ```text
//!   [L, f1, f2] -> [s, f1, f2]   (the leader leaves; throttled to 256 KiB/s)
//!               -> [s, L, f2]    (f1 leaves, L comes back empty)
//!               -> [f1, L, s]    (f2 leaves, f1 comes back empty)
//!               -> [f1, L, f2]   (the leader s leaves, f2 comes back empty)
//! ```
//!
//! The first move is throttled so that it is seen in progress: `topic describe` shows
//! its adding and removing replicas, and it lasts at least as long as its throttle
//! allows (re-running the command with `--wait` keeps the throttle). Afterwards: every acknowledged record is where its
//! acknowledgement said, the consumer saw every offset once (nothing lost, nothing
//! duplicated), and nodes that no longer hold a replica have deleted its files.
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

const TOPIC: &str = "moving";
/// Bound on every wait for the cluster to reach a state.
const WAIT_MAX: Duration = Duration::from_secs(60);
/// How often the producer's input gets a line during the moves.
const LINE_EVERY: Duration = Duration::from_millis(20);
/// Records produced before the moves (about 1 MB).
const PREFILL_RECORDS: usize = 10_000;
/// The first move's throttle, bytes per second: the catch-up of about 1 MB takes seconds.
const THROTTLE: u32 = 262_144;
/// Bytes of record values in the prefill: the least the throttled catch-up ships.
const PREFILL_VALUE_BYTES: usize = PREFILL_RECORDS * 96;

#[test]
fn every_replica_moves_under_load_and_nothing_is_lost_or_duplicated() {
    let started = Instant::now();
    let mut cluster = Cluster::start(4, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    let brokers = cluster.brokers();
    let created = shardlog(&[
        "topic",
        "create",
        TOPIC,
        "--partitions",
        "1",
        "--brokers",
        &brokers,
    ]);
    assert_eq!(created.status.code(), Some(0), "{}", describe(&created));
    let replicas = wait_in_sync(&mut cluster, None);
    let (leader, f1, f2) = (replicas[0], replicas[1], replicas[2]);
    let spare = (0..4).find(|n| !replicas.contains(n)).unwrap();
    eprintln!("start: replicas {replicas:?}, spare {spare}");

    let prefill = prefill(&brokers);
    let producer = Producer::start(&brokers);
    let consumer = Consumer::start(&brokers);
    wait_until(&mut cluster, "acks and records before the moves", || {
        producer.acks().len() >= 20 && consumer.records().len() >= 20
    });

    // Move 1, throttled: seen in progress, and no faster than its throttle.
    let target = [spare, f1, f2];
    throttled_move(&mut cluster, &brokers, &target, spare, leader);

    for target in [[spare, leader, f2], [f1, leader, spare], [f1, leader, f2]] {
        reassign_and_wait(&brokers, &target);
        assert_eq!(wait_in_sync(&mut cluster, Some(&target)), target);
        wait_until(&mut cluster, "acks after the move", || {
            let before = producer.acks().len();
            std::thread::sleep(Duration::from_millis(200));
            producer.acks().len() > before
        });
    }
    let final_replicas = [f1, leader, f2];
    // The last move took the leadership off `spare`: it must hold no replica now.
    let spare_dir = cluster.data_dir(spare);
    wait_until(
        &mut cluster,
        "no files on the node without a replica",
        || !holds_partition(&spare_dir),
    );

    let mut acked = producer.finish();
    acked.extend(prefill);
    let last = acked.values().max().copied().unwrap();
    wait_until(&mut cluster, "the consumer at the last ack", || {
        consumer.records().keys().next_back() >= Some(&last)
    });
    let seen = consumer.finish();
    check(&acked, &seen);
    for node in final_replicas {
        let dir = cluster.data_dir(node);
        assert!(holds_partition(&dir), "node {node} holds the partition");
    }
    cluster.assert_running();
    eprintln!(
        "{} records acknowledged, {} consumed; test time {:?}",
        acked.len(),
        seen.len(),
        started.elapsed()
    );
}

/// Move 1: started throttled, seen in progress, waited for. The throttle holds between
/// real nodes: the catch-up cannot be faster than it allows (less its 100 ms burst). A
/// lower bound only: a loaded machine makes moves longer, never shorter.
fn throttled_move(
    cluster: &mut Cluster,
    brokers: &str,
    target: &[usize],
    spare: usize,
    leader: usize,
) {
    let move_started = Instant::now();
    start_throttled_move(cluster, brokers, target, spare, leader);
    reassign_and_wait(brokers, target);
    assert_eq!(wait_in_sync(cluster, Some(target)), target);
    let took = move_started.elapsed();
    let floor = Duration::from_secs_f64(PREFILL_VALUE_BYTES as f64 / f64::from(THROTTLE) - 0.2);
    assert!(
        took >= floor,
        "a move throttled to {THROTTLE} B/s shipped {PREFILL_VALUE_BYTES} B in {took:?}"
    );
    eprintln!("throttled move: {took:?} (the throttle allows no less than {floor:?})");
}

/// Starts the move to `target` (adding `spare`, removing `leader`) throttled, without
/// waiting for it, and waits until `topic describe` shows it in progress.
fn start_throttled_move(
    cluster: &mut Cluster,
    brokers: &str,
    target: &[usize],
    spare: usize,
    leader: usize,
) {
    let list = ids(target);
    let begun = reassign(brokers, &list, &["--throttle-bytes", &THROTTLE.to_string()]);
    assert_eq!(begun.status.code(), Some(0), "{}", describe(&begun));
    let out = String::from_utf8_lossy(&begun.stdout).into_owned();
    assert!(
        out.contains(&format!("reassigning {TOPIC}/0 to {list}")),
        "{out}"
    );
    // Any node answers; one may not have applied the move yet: ask again until one shows
    // it (the throttled catch-up of about 1 MB lasts seconds).
    let moving =
        format!("reassigning partition 0: target {list}, adding {spare}, removing {leader}");
    wait_until(cluster, "describe showing the move", || {
        let described = shardlog(&["topic", "describe", TOPIC, "--brokers", brokers]);
        assert_eq!(described.status.code(), Some(0), "{}", describe(&described));
        String::from_utf8_lossy(&described.stdout).contains(&moving)
    });
}

/// `shardlog partition reassign` of partition 0 to the replicas `list`, plus `extra`.
fn reassign(brokers: &str, list: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "partition",
        "reassign",
        "--brokers",
        brokers,
        "--topic",
        TOPIC,
    ];
    args.extend(["--partition", "0", "--replicas", list]);
    args.extend(extra);
    shardlog(&args)
}

/// `partition reassign --wait` to `target`: it must end in the target with exit 0.
fn reassign_and_wait(brokers: &str, target: &[usize]) {
    let list = ids(target);
    let at = Instant::now();
    let done = reassign(brokers, &list, &["--wait", "--timeout", "60"]);
    assert_eq!(done.status.code(), Some(0), "{}", describe(&done));
    let out = String::from_utf8_lossy(&done.stdout).into_owned();
    let leader = target[0];
    assert!(
        out.contains(&format!("reassigned {TOPIC}/0 to {list} in")),
        "{}",
        describe(&done)
    );
    eprintln!(
        "moved to {list} in {:?} (preferred leader {leader})",
        at.elapsed()
    );
}

/// Waits until the partition is led, its ISR is all of its replicas, and (if given) they
/// are `target`; returns the replicas.
fn wait_in_sync(cluster: &mut Cluster, target: Option<&[usize]>) -> Vec<usize> {
    let (replicas, _) = cluster.wait_for("the partition led and in sync", WAIT_MAX, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        let p = partition(&meta, TOPIC, 0).ok_or("no partition yet")?;
        let replicas: Vec<usize> = p.replicas.iter().map(|n| *n as usize).collect();
        let led = p.leader.is_some_and(|l| replicas.contains(&(l as usize)));
        if !led || p.isr.len() != 3 || target.is_some_and(|t| t != replicas) {
            return Err(format!("{p:?}"));
        }
        Ok(replicas)
    });
    replicas
}

/// Whether a node's data directory holds a directory of the partition.
fn holds_partition(data_dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{TOPIC}-"))
        })
        .any(|e| e.path().join("0").exists())
}

/// `PREFILL_RECORDS` lines of about 100 bytes through `shardlog produce --acks all
/// --report-offsets`; returns line -> offset.
fn prefill(brokers: &str) -> BTreeMap<String, u64> {
    let lines: Vec<String> = (0..PREFILL_RECORDS)
        .map(|i| {
            format!(
                "p{i:05}-{}",
                "x".repeat(PREFILL_VALUE_BYTES / PREFILL_RECORDS - 7)
            )
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["produce", "--brokers", brokers, "--topic", TOPIC])
        .args(["--partition", "0", "--acks", "all", "--report-offsets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "prefill: {}",
        describe(&output)
    );
    let acks: Vec<u64> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(offset_of)
        .collect();
    assert_eq!(acks.len(), lines.len(), "every prefill line acknowledged");
    lines.into_iter().zip(acks).collect()
}

// ---- the clients, as child processes (as in failover.rs) ----

/// Stdout lines of a child.
type Lines = Arc<Mutex<Vec<String>>>;

fn read_lines(child: &mut Child) -> (Lines, JoinHandle<()>) {
    let stdout = child.stdout.take().unwrap();
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

/// `shardlog produce --acks all --report-offsets`, fed `r<i>` every `LINE_EVERY`.
struct Producer {
    child: Child,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<usize>>,
    lines: Lines,
    reader: Option<JoinHandle<()>>,
}

impl Producer {
    fn start(brokers: &str) -> Producer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["produce", "--brokers", brokers, "--topic", TOPIC])
            .args(["--partition", "0", "--acks", "all", "--report-offsets"])
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
            stop,
            feeder: Some(feeder),
            lines,
            reader: Some(reader),
        }
    }

    /// Offsets acknowledged so far, in input order.
    fn acks(&self) -> Vec<u64> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| offset_of(l))
            .collect()
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

/// The offset of a `0<TAB>offset` line.
fn offset_of(line: &str) -> u64 {
    let (partition, offset) = line.split_once('\t').unwrap();
    assert_eq!(partition, "0", "{line}");
    offset.parse().unwrap()
}

/// `shardlog consume --from beginning --follow --format full`.
struct Consumer {
    child: Child,
    lines: Lines,
    reader: Option<JoinHandle<()>>,
}

impl Consumer {
    fn start(brokers: &str) -> Consumer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["consume", "--brokers", brokers, "--topic", TOPIC])
            .args(["--partition", "0"])
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
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), 5, "{line}");
                (fields[1].parse().unwrap(), fields[4].to_owned())
            })
            .collect()
    }

    /// SIGTERM (exit 0 expected); returns offset -> value, checking the offsets were
    /// printed dense from 0 and in order (none skipped, none twice).
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
        for (expected, line) in (0u64..).zip(lines.iter()) {
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

/// Every acknowledged line is at its acknowledged offset, and none is stored twice.
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

fn wait_until(cluster: &mut Cluster, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    loop {
        cluster.assert_running();
        if done() {
            return;
        }
        assert!(
            started.elapsed() < WAIT_MAX,
            "waited {WAIT_MAX:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ids(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn shardlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
