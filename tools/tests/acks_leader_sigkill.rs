//! `shardlog produce --acks leader --report-offsets`, the shipped CLI with its defaults,
//! against a lone `shardlogd` (flush=always, the default) that is SIGKILLed mid-load,
//! three times on the same data directory. Every record the CLI reported as acknowledged
//! must be, after the restarts, at the offset it reported: `acks=leader` means the
//! leader wrote (and, under flush=always, synced) it, not that it was taken into memory.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::test_dir;
use shardlog_net::testing::Shardlogd;

const ROUNDS: usize = 3;
/// Acknowledgements a round waits for before it kills the server (mid-load).
const ACKED_BEFORE_KILL: usize = 20_000;

/// One producer process fed lines `rROUND-line-I` as fast as it takes them, and what it
/// reported: line index -> offset.
struct Producer {
    child: Child,
    stop: Arc<AtomicBool>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
    reported: Arc<Mutex<Vec<u64>>>,
    count: Arc<AtomicUsize>,
}

impl Producer {
    fn start(brokers: &str, round: usize) -> Producer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args([
                "produce",
                "--brokers",
                brokers,
                "--topic",
                "t",
                "--acks",
                "leader",
            ])
            .args(["--report-offsets", "--partition", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shardlog produce");
        let stop = Arc::new(AtomicBool::new(false));
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let mut chunk = String::new();
                    for _ in 0..500 {
                        chunk.push_str(&format!("r{round}-line-{i}\n"));
                        i += 1;
                    }
                    if stdin.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
            }
        });
        let reported = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn({
            let reported = reported.clone();
            let count = count.clone();
            move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    let (_, offset) = line.split_once('\t').expect("partition<TAB>offset");
                    reported.lock().unwrap().push(offset.parse().unwrap());
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Producer {
            child,
            stop,
            writer,
            reader,
            reported,
            count,
        }
    }

    /// Stops the process and returns what it reported.
    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.writer.join().unwrap();
        self.reader.join().unwrap();
        std::mem::take(&mut *self.reported.lock().unwrap())
    }
}

/// Offset -> value of every record in partition 0 of `t`.
fn stored(brokers: &str) -> BTreeMap<u64, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args([
            "consume",
            "--brokers",
            brokers,
            "--topic",
            "t",
            "--partition",
            "0",
        ])
        .args(["--from", "beginning", "--format", "json"])
        .output()
        .expect("run shardlog consume");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                record["offset"].as_u64().unwrap(),
                record["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn records_acknowledged_at_acks_leader_survive_sigkill() {
    let dir = test_dir("acks-leader-kill-");
    // (round, line index, offset) of every acknowledged record.
    let mut acknowledged = Vec::new();
    for round in 0..ROUNDS {
        let mut server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
        if round == 0 {
            let out = common::run_against(
                &server.brokers(),
                &["topic", "create", "t", "--partitions", "1"],
                "",
            );
            assert!(out.status.success(), "{out:?}");
        }
        let producer = Producer::start(&server.brokers(), round);
        let deadline = Instant::now() + Duration::from_secs(30);
        while producer.count.load(Ordering::Relaxed) < ACKED_BEFORE_KILL {
            assert!(
                Instant::now() < deadline,
                "round {round}: too few acknowledgements"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
        let reported = producer.finish();
        acknowledged.extend(reported.into_iter().enumerate().map(|(i, o)| (round, i, o)));
    }
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let stored = stored(&server.brokers());
    let mut previous_round_end = 0;
    for round in 0..ROUNDS {
        let this: Vec<_> = acknowledged
            .iter()
            .filter(|(r, _, _)| *r == round)
            .collect();
        assert!(
            this.len() >= ACKED_BEFORE_KILL,
            "round {round}: {} acknowledged",
            this.len()
        );
        for &&(_, i, offset) in &this {
            assert_eq!(
                stored.get(&offset).map(String::as_str),
                Some(format!("r{round}-line-{i}").as_str()),
                "round {round}: line {i} was acknowledged at offset {offset}"
            );
            assert!(
                offset >= previous_round_end,
                "round {round}: offset {offset} reused"
            );
        }
        previous_round_end = this.iter().map(|(_, _, o)| o + 1).max().unwrap();
    }
    eprintln!(
        "{} acknowledged, {} stored",
        acknowledged.len(),
        stored.len()
    );
    // Offsets are dense: the log has no holes.
    let offsets: Vec<u64> = stored.keys().copied().collect();
    assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
}
