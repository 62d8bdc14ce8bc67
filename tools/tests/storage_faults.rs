//! Storage faults with the shipped binaries, on a small loop-mounted ext4 filesystem
//! (`net/tests/common/small_disk.rs`) that a filler file fills for real:
//!
//! - one node: with the disk full, `shardlog produce` is refused with `StorageError`
//!   saying the disk is full, `shardlog consume` still reads every acknowledged record,
//!   and once the filler is deleted writes go on without a restart; every acknowledged
//!   record is at the offset its acknowledgement named;
//! - SIGTERM on a full disk: the partition that cannot close is reported and the server
//!   exits non-zero, never "stopped cleanly";
//! - 3 nodes, replication factor 3, the leader's data directory on the small filesystem
//!   (but for its controller log, which stays on the big disk: a node whose controller
//!   log cannot be written stops, which is another item): when it fills, leadership moves to another in-sync
//!   replica, `--acks all` producers go on, nothing acknowledged is lost, and once space
//!   is freed the replica rejoins the ISR.
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
use net_common::cluster::{Cluster, Links, partition};
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
/// Bound on every wait for the cluster to reach a state.
const WAIT_MAX: Duration = Duration::from_secs(30);

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

#[test]
fn leadership_moves_off_a_full_disk_and_the_replica_rejoins_once_space_is_freed() {
    let disk = match SmallDisk::mount(64) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipped: no small filesystem to fill: {why}");
            return;
        }
    };
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    move_to_small_disk(&mut cluster, 0, &disk);
    cluster.wait_for_controller(WAIT_MAX);
    let brokers = cluster.brokers();
    let args = [
        "topic",
        "create",
        TOPIC,
        "--partitions",
        "3",
        "--segment-bytes",
        "1048576",
    ];
    let created = run_against(&brokers, &args, "");
    assert!(created.status.success(), "{}", describe(&created));
    let (meta, _) = cluster.wait_for("every partition led and in sync", WAIT_MAX, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        for id in 0..3 {
            let p = partition(&meta, TOPIC, id).ok_or("no partition yet")?;
            if p.leader.is_none() || p.isr.len() != 3 {
                return Err(format!("{p:?}"));
            }
        }
        Ok(meta.clone())
    });
    let Some(led) = (0..3).find(|&id| partition(&meta, TOPIC, id).unwrap().leader == Some(0))
    else {
        panic!("node 0 leads no partition: {meta:?}");
    };
    let (mut acked, mut next) = (BTreeMap::new(), 0);
    let first = produce_to(&brokers, led, &mut next, &mut acked);
    assert!(first.status.success(), "{}", describe(&first));
    disk.fill();
    // Well past what the active segment holds: the roll on node 0 fails.
    for _ in 0..12 {
        let output = produce_to(&brokers, led, &mut next, &mut acked);
        if !output.status.success() {
            cluster.print_logs();
            panic!("acks=all producer stopped: {}", describe(&output));
        }
    }
    let meta = cluster.metadata_any().unwrap().1;
    let state = partition(&meta, TOPIC, led).unwrap().clone();
    assert!(
        state.leader.is_some_and(|l| l != 0) && !state.isr.contains(&0),
        "node 0 still leads or is in sync: {state:?}"
    );
    check_all_there_in(&brokers, led, &acked);
    disk.free();
    let (_, took) = cluster.wait_for("node 0 back in the ISR", RESUME_MAX, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        let p = partition(&meta, TOPIC, led).ok_or("no partition")?;
        if p.isr.contains(&0) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
    eprintln!("node 0 back in the ISR {took:?} after space was freed");
    let last = produce_to(&brokers, led, &mut next, &mut acked);
    assert!(last.status.success(), "{}", describe(&last));
    check_all_there_in(&brokers, led, &acked);
    eprintln!("{} records acknowledged, all read back", acked.len());
}

/// Moves `node`'s data directory onto the small disk (its path becomes a symbolic link
/// there), but for its controller log, which stays on the big disk: a node whose
/// controller log cannot be written stops, which is not what this test is about. The
/// node is SIGKILLed for the move and restarted (its data directory must be on the
/// small disk when it starts: glommio finds out per device at the first file whether
/// reads may use the poll ring, and the server warms that on its data directory).
fn move_to_small_disk(cluster: &mut Cluster, node: usize, disk: &SmallDisk) {
    cluster.kill(&[node]);
    let dir = cluster.data_dir(node);
    let big = dir.with_extension("big");
    std::fs::rename(&dir, &big).unwrap();
    let small = disk.path().join("data");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&big)
        .arg(&small)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::remove_dir_all(small.join("controller")).unwrap();
    std::os::unix::fs::symlink(big.join("controller"), small.join("controller")).unwrap();
    std::os::unix::fs::symlink(&small, &dir).unwrap();
    cluster.restart(node);
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
fn produce_to(
    brokers: &str,
    partition: u32,
    next: &mut usize,
    acked: &mut BTreeMap<u64, String>,
) -> Output {
    let values: Vec<String> = (*next..*next + CHUNK).map(value).collect();
    *next += CHUNK;
    let input = values.join("\n") + "\n";
    let partition = partition.to_string();
    let args = [
        "produce",
        "--topic",
        TOPIC,
        "--partition",
        &partition,
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

fn produce(brokers: &str, next: &mut usize, acked: &mut BTreeMap<u64, String>) -> Output {
    produce_to(brokers, 0, next, acked)
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
    check_all_there_in(brokers, 0, acked);
}

fn check_all_there_in(brokers: &str, partition: u32, acked: &BTreeMap<u64, String>) {
    let partition = partition.to_string();
    let args = [
        "consume",
        "--topic",
        TOPIC,
        "--partition",
        &partition,
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
