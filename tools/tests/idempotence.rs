//! Issue 11, item 4: the shipped `shardlog produce` is idempotent across leader
//! failovers. A real 3-node cluster (replication factor 3, `min_insync` 2), one
//! partition, `shardlog produce --acks all --report-offsets --partition 0` fed lines
//! continuously (about 10,000 a second) while the partition's leader is SIGKILLed
//! `KILLS` times (and restarted each time, once the partition has failed over). Then
//! everything is consumed: every line the CLI reported is at the offset it reported,
//! every line was reported (the CLI exits 0), and no line is stored twice.
//!
//! Before the producer ids (the CLI sent none) a batch whose acknowledgement was lost
//! in the kill was resent to the new leader and stored a second time: this test counted
//! the duplicates and failed.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`)
//! or named by `SHARDLOGD_BIN`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "../../net/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links, partition};

const TOPIC: &str = "once";
/// Leader kills.
const KILLS: usize = 4;
/// Acknowledgements between two kills (and before the first).
const ACKS_BETWEEN_KILLS: usize = 3_000;
/// Lines fed per `FEED_EVERY`.
const FEED_LINES: usize = 100;
const FEED_EVERY: Duration = Duration::from_millis(10);
/// Bound on every wait for the cluster to reach a state.
const WAIT_MAX: Duration = Duration::from_secs(30);

#[test]
fn produce_across_leader_kills_stores_every_record_once() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, Links::Direct);
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
    assert!(created.status.success(), "{created:?}");
    wait_in_sync(&mut cluster);

    let producer = Producer::start(&brokers);
    for kill in 0..KILLS {
        let target = producer.reported() + ACKS_BETWEEN_KILLS;
        wait_until(&mut cluster, "acknowledgements before a kill", || {
            producer.reported() >= target
        });
        let (_, meta) = cluster.metadata_any().unwrap();
        let leader = partition(&meta, TOPIC, 0).unwrap().leader.unwrap() as usize;
        let epoch = partition(&meta, TOPIC, 0).unwrap().leader_epoch;
        let before = producer.reported();
        cluster.kill(&[leader]);
        let killed_at = Instant::now();
        let others: Vec<usize> = (0..3).filter(|&n| n != leader).collect();
        cluster.wait_for("a new leader", WAIT_MAX, |c| {
            let (_, meta) = c.metadata_from(&others).ok_or("no node answers")?;
            let p = partition(&meta, TOPIC, 0).ok_or("no partition")?;
            match p.leader {
                Some(l) if l as usize != leader && p.leader_epoch > epoch => Ok(()),
                _ => Err(format!("{p:?}")),
            }
        });
        wait_until(&mut cluster, "acknowledgements from the new leader", || {
            producer.reported() > before + 100
        });
        eprintln!(
            "kill {kill}: node {leader} (acked {before} before); producing again after {:?}",
            killed_at.elapsed()
        );
        cluster.restart(leader);
        wait_in_sync(&mut cluster);
    }
    let (sent, reported) = producer.finish();
    let stored = stored(&brokers);
    check(sent, &reported, &stored);
    cluster.assert_running();
    eprintln!(
        "{sent} lines sent, {} stored; test time {:?}",
        stored.len(),
        started.elapsed()
    );
}

/// Every line reported at its offset, every line reported, none stored twice.
fn check(sent: usize, reported: &[u64], stored: &BTreeMap<u64, String>) {
    let mut copies: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (offset, value) in stored {
        copies.entry(value.as_str()).or_default().push(*offset);
    }
    let duplicated: Vec<(&str, &Vec<u64>)> = copies
        .iter()
        .filter(|(_, offsets)| offsets.len() > 1)
        .map(|(value, offsets)| (*value, offsets))
        .collect();
    eprintln!(
        "{} records stored, {} distinct, {} stored more than once (first: {:?})",
        stored.len(),
        copies.len(),
        duplicated.len(),
        duplicated.iter().take(5).collect::<Vec<_>>()
    );
    let mut misplaced = 0;
    for (i, offset) in reported.iter().enumerate() {
        let expected = format!("line-{i}");
        if stored.get(offset) != Some(&expected) {
            misplaced += 1;
            if misplaced <= 5 {
                eprintln!(
                    "line {i}: reported at {offset}, stored there: {:?}",
                    stored.get(offset)
                );
            }
        }
    }
    assert_eq!(misplaced, 0, "lines not where their acknowledgement said");
    assert_eq!(reported.len(), sent, "every line acknowledged");
    assert!(
        duplicated.is_empty(),
        "{} records stored more than once",
        duplicated.len()
    );
    assert_eq!(copies.len(), sent, "every line stored");
}

/// Waits until partition 0 has a leader and all three replicas in sync.
fn wait_in_sync(cluster: &mut Cluster) {
    cluster.wait_for("the partition led and fully in sync", WAIT_MAX, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        let p = partition(&meta, TOPIC, 0).ok_or("no partition yet")?;
        if p.leader.is_some() && p.isr.len() == 3 && meta.brokers.iter().all(|b| b.live) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
}

fn wait_until(cluster: &mut Cluster, what: &str, mut done: impl FnMut() -> bool) {
    cluster.wait_for(what, WAIT_MAX, |_| {
        if done() {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
}

fn shardlog(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .output()
        .unwrap()
}

/// `shardlog produce --acks all --report-offsets --partition 0`, fed `line-<i>`.
struct Producer {
    child: Child,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<usize>>,
    offsets: Arc<Mutex<Vec<u64>>>,
    count: Arc<AtomicUsize>,
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
                let mut chunk = String::new();
                for i in sent..sent + FEED_LINES {
                    chunk.push_str(&format!("line-{i}\n"));
                }
                if stdin.write_all(chunk.as_bytes()).is_err() {
                    break;
                }
                sent += FEED_LINES;
                std::thread::sleep(FEED_EVERY);
            }
            sent
        });
        let offsets = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn({
            let (offsets, count) = (offsets.clone(), count.clone());
            move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let (partition, offset) = line.split_once('\t').unwrap();
                    assert_eq!(partition, "0", "{line}");
                    offsets.lock().unwrap().push(offset.parse().unwrap());
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Producer {
            child,
            stop,
            feeder: Some(feeder),
            offsets,
            count,
            reader: Some(reader),
        }
    }

    fn reported(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Closes stdin, waits for the exit; the lines sent and the offsets reported, in
    /// input order.
    fn finish(mut self) -> (usize, Vec<u64>) {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.feeder.take().unwrap().join().unwrap();
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let offsets = std::mem::take(&mut *self.offsets.lock().unwrap());
        eprintln!(
            "shardlog produce: {status}, {} of {sent} reported",
            offsets.len()
        );
        (sent, offsets)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.child.kill();
    }
}

/// Offset -> value of every record of the partition.
fn stored(brokers: &str) -> BTreeMap<u64, String> {
    let out = shardlog(&[
        "consume",
        "--brokers",
        brokers,
        "--topic",
        TOPIC,
        "--partition",
        "0",
        "--from",
        "beginning",
        "--format",
        "full",
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields[1].parse().unwrap(), fields[4].to_owned())
        })
        .collect()
}
