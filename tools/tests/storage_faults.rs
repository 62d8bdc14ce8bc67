//! Storage faults with the shipped binaries, on a small loop-mounted ext4 filesystem
//! (`net/tests/common/small_disk.rs`) that a filler file fills for real:
//!
//! - one node: with the disk full, `shardlog produce` is refused with `StorageError`
//!   saying the disk is full, `shardlog consume` still reads every acknowledged record,
//!   and once the filler is deleted writes go on without a restart; every acknowledged
//!   record is at the offset its acknowledgement named;
//! - SIGTERM on a full disk: the partition that cannot close is reported and the server
//!   exits non-zero, never "stopped cleanly".
//!
//! Without root (or a loop device, or `mkfs.ext4`) each test prints why and returns.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;
#[path = "../../net/tests/common/mod.rs"]
mod net_common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{describe, run_against, stderr};
use net_common::small_disk::SmallDisk;
use shardlog_net::testing::{Launch, LogTail, Shardlogd, StderrTo};

const TOPIC: &str = "orders";
/// Records per `shardlog produce` run, and the bytes of each value: a run is ~200 KiB,
/// so a few fill the 1 MiB segment and the next roll needs new space.
const CHUNK: usize = 1000;
const VALUE_BYTES: usize = 200;
/// Bound on the runs that fill the disk up to the refusal.
const CHUNKS_MAX: usize = 200;
/// How long the partition may take to come back once space is freed (the reopen backoff
/// is at most 30 s; a loaded machine gets headroom).
const RESUME_MAX: Duration = Duration::from_secs(90);

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_writes_resume_once_space_is_freed() {
    let disk = match SmallDisk::mount(64) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipped: no small filesystem to fill: {why}");
            return;
        }
    };
    let tail = LogTail::new(5_000);
    let mut server = start(&disk, &tail);
    let brokers = server.brokers();
    create_topic(&brokers);
    let mut acked = BTreeMap::new();
    let mut next = 0;
    assert!(produce(&brokers, &mut next, &mut acked).status.success());
    disk.fill();
    let refusal = produce_until_refused(&brokers, &mut next, &mut acked);
    let said = stderr(&refusal);
    assert!(said.contains("StorageError"), "{}", describe(&refusal));
    assert!(said.contains("disk is full"), "{}", describe(&refusal));
    // Reads go on from the stopped log.
    check_all_there(&brokers, &acked);
    disk.free();
    let started = Instant::now();
    loop {
        let output = produce(&brokers, &mut next, &mut acked);
        if output.status.success() {
            break;
        }
        assert!(
            started.elapsed() < RESUME_MAX,
            "writes never resumed after space was freed: {}\n{}",
            describe(&output),
            tail.lines().join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "writes resumed {:?} after the filler was deleted; {} records acknowledged",
        started.elapsed(),
        acked.len()
    );
    check_all_there(&brokers, &acked);
    // The stopped partition logged its error once, not every upkeep (100 ms).
    let lines = tail.lines();
    let upkeep = lines
        .iter()
        .filter(|l| l.contains("partition upkeep failed"))
        .count();
    assert!(upkeep <= 1, "{upkeep} upkeep errors:\n{}", lines.join("\n"));
    let status = server.terminate().unwrap();
    assert!(status.success(), "{status}\n{}", tail.lines().join("\n"));
}

#[test]
fn sigterm_on_a_full_disk_reports_the_partition_and_exits_non_zero() {
    let disk = match SmallDisk::mount(64) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipped: no small filesystem to fill: {why}");
            return;
        }
    };
    let tail = LogTail::new(5_000);
    let mut server = start(&disk, &tail);
    let brokers = server.brokers();
    create_topic(&brokers);
    let (mut acked, mut next) = (BTreeMap::new(), 0);
    assert!(produce(&brokers, &mut next, &mut acked).status.success());
    disk.fill();
    produce_until_refused(&brokers, &mut next, &mut acked);
    let status = server.terminate().unwrap();
    let lines = tail.lines();
    let log = lines.join("\n");
    assert!(!status.success(), "exit {status} on a full disk:\n{log}");
    assert!(
        !lines.iter().any(|l| l.contains("stopped cleanly")),
        "claims a clean stop:\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("did not close cleanly") && l.contains(&format!("{TOPIC}/0"))),
        "does not say which partition failed to close:\n{log}"
    );
}

/// One node with one shard on the small disk, its stderr kept in `tail`.
fn start(disk: &SmallDisk, tail: &LogTail) -> Shardlogd {
    let data = disk.path().join("data");
    Shardlogd::launch(&Launch {
        data_dir: &data,
        listen: "127.0.0.1:0",
        args: &["--shards", "1", "--flush", "always"],
        stderr: StderrTo::Tail(tail.clone()),
    })
    .unwrap()
}

fn create_topic(brokers: &str) {
    let args = [
        "topic",
        "create",
        TOPIC,
        "--partitions",
        "1",
        "--segment-bytes",
        "1048576",
    ];
    let output = run_against(brokers, &args, "");
    assert!(output.status.success(), "{}", describe(&output));
}

/// Runs `shardlog produce` on `CHUNK` new records (one batch in flight, so the
/// acknowledged ones are a prefix of the input); records each acknowledged offset.
fn produce(brokers: &str, next: &mut usize, acked: &mut BTreeMap<u64, String>) -> Output {
    let values: Vec<String> = (*next..*next + CHUNK).map(value).collect();
    *next += CHUNK;
    let input = values.join("\n") + "\n";
    let args = [
        "produce",
        "--topic",
        TOPIC,
        "--partition",
        "0",
        "--acks",
        "all",
        "--report-offsets",
        "--inflight",
        "1",
        "--batch-records",
        "100",
    ];
    let output = run_against(brokers, &args, &input);
    let reported = String::from_utf8_lossy(&output.stdout);
    for (line, value) in reported.lines().zip(&values) {
        let (_, offset) = line.split_once('\t').expect("partition<TAB>offset");
        acked.insert(offset.parse().unwrap(), value.clone());
    }
    output
}

/// Produces until a run fails (the disk is full); that run's output.
fn produce_until_refused(
    brokers: &str,
    next: &mut usize,
    acked: &mut BTreeMap<u64, String>,
) -> Output {
    for _ in 0..CHUNKS_MAX {
        let output = produce(brokers, next, acked);
        if !output.status.success() {
            return output;
        }
    }
    panic!("{CHUNKS_MAX} runs of {CHUNK} records fit on a full 64 MiB disk");
}

fn value(n: usize) -> String {
    let mut value = format!("record-{n}-");
    value.extend(std::iter::repeat_n('x', VALUE_BYTES - value.len()));
    value
}

/// Every acknowledged record is read back at its offset.
fn check_all_there(brokers: &str, acked: &BTreeMap<u64, String>) {
    let args = [
        "consume",
        "--topic",
        TOPIC,
        "--partition",
        "0",
        "--from",
        "beginning",
        "--format",
        "full",
    ];
    let output = run_against(brokers, &args, "");
    assert!(output.status.success(), "{}", describe(&output));
    let read: BTreeMap<u64, String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            (fields[1].parse().unwrap(), fields[4].to_owned())
        })
        .collect();
    for (offset, value) in acked {
        assert_eq!(
            read.get(offset),
            Some(value),
            "acknowledged record at offset {offset} (of {} acknowledged, {} read)",
            acked.len(),
            read.len()
        );
    }
}
