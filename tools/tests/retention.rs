//! Issue 11, item 1: retention and replicas. A real 3-node cluster, one partition with
//! replication factor 3, 64 KiB segments and `retention.ms` 1000, fed by the shipped
//! `shardlog produce --acks all`:
//!
//! - a follower is SIGKILLed and the cluster goes on until the leader's log start is past
//!   the follower's log end (retention deleted what it needs); restarted, the follower
//!   must reset to the leader's log start, catch up and rejoin the ISR, and then hold the
//!   leader's records at the same offsets;
//! - a follower restarted on a log whose first segments retention deleted rejoins too.
//!
//! Before the fix the leader's ship read failed (`OffsetOutOfRange`) and the restarted
//! follower was shipped nothing, for good: it never rejoined the ISR.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`)
//! or named by `SHARDLOGD_BIN`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "../../net/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links, call, high_watermark, partition};
use shardlog_net::ErrorCode;
use shardlog_net::api::{Api, ListOffsetsRequest, ListOffsetsResponse, OffsetSpec};

const TOPIC: &str = "kept";
/// Bound on every wait for the cluster to reach a state (a loaded machine is slow).
const WAIT_MAX: Duration = Duration::from_secs(60);
/// Records per produce run, 1 KiB each: about 3 segments.
const RECORDS: usize = 200;

#[test]
fn a_follower_behind_the_leaders_log_start_resets_and_rejoins() {
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
        "--replication-factor",
        "3",
        "--segment-bytes",
        "65536",
        "--retention-ms",
        "1000",
        "--brokers",
        &brokers,
    ]);
    assert!(created.status.success(), "{created:?}");
    wait_in_sync(&mut cluster);
    let mut next = produce(&brokers, 0);
    wait_in_sync(&mut cluster);

    let leader = leader(&mut cluster);
    let follower = (0..3).find(|&n| n != leader).unwrap();
    let other = (0..3).find(|&n| n != leader && n != follower).unwrap();
    // Nothing is being produced and every replica is in sync: the follower's log ends at
    // the high watermark.
    let follower_end = high_watermark(&cluster.addr(leader), TOPIC, 0).unwrap();
    cluster.kill(&[follower]);
    eprintln!("killed follower {follower} with its log ending at {follower_end}");

    // Go on until retention on the leader has deleted past the follower's log end.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        next = produce(&brokers, next);
        let start = log_start(&cluster.addr(leader));
        eprintln!("leader {leader}: log start {start}, {next} records produced");
        if start > follower_end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention never passed {follower_end}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    cluster.restart(follower);
    wait_in_sync(&mut cluster);
    eprintln!(
        "follower {follower} rejoined the ISR after {:?}",
        started.elapsed()
    );
    next = produce(&brokers, next);
    check_holds_leaders_records(&mut cluster, follower, follower_end);

    // A plain restart on a log whose head retention deleted: it opens and rejoins.
    cluster.kill(&[other]);
    let other_start = first_segment(&cluster.data_dir(other));
    assert!(other_start > 0, "retention deleted nothing on node {other}");
    cluster.restart(other);
    wait_in_sync(&mut cluster);
    produce(&brokers, next);
    wait_in_sync(&mut cluster);
    cluster.assert_running();
    eprintln!("test time {:?}", started.elapsed());
}

/// Once every replica is in sync and the follower's log reaches the leader's high
/// watermark, every record the follower holds is the leader's at the same offset, and it
/// holds nothing from before its kill (its log restarted past `follower_end`).
fn check_holds_leaders_records(cluster: &mut Cluster, follower: usize, follower_end: u64) {
    let leader = leader(cluster);
    let end = high_watermark(&cluster.addr(leader), TOPIC, 0).unwrap();
    let dir = partition_dir(&cluster.data_dir(follower));
    let (held, _) = cluster.wait_for("the follower's records on disk", WAIT_MAX, |_| {
        let held = exported(&dir);
        match held.last_key_value() {
            Some((last, _)) if last + 1 >= end => Ok(held),
            last => Err(format!("last {last:?}, high watermark {end}")),
        }
    });
    let stored = consumed(&cluster.brokers());
    let first = *held.first_key_value().unwrap().0;
    assert!(
        first > follower_end,
        "follower starts at {first}, not past its old end {follower_end}"
    );
    let mut compared = 0;
    for (offset, value) in &held {
        if let Some(leaders) = stored.get(offset) {
            assert_eq!(value, leaders, "offset {offset}");
            compared += 1;
        }
    }
    eprintln!(
        "follower {follower}: offsets {first}..={} on disk, {compared} compared with the \
         leader's",
        held.last_key_value().unwrap().0
    );
    // Retention keeps about the active segment (60 records) once a second has passed.
    assert!(compared >= 10, "only {compared} records compared");
}

/// Feeds `RECORDS` lines of 1 KiB to `shardlog produce --acks all`; returns the next index.
fn produce(brokers: &str, from: usize) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["produce", "--brokers", brokers, "--topic", TOPIC])
        .args(["--partition", "0", "--acks", "all", "--batch-records", "16"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let pad = "x".repeat(1000);
    for i in from..from + RECORDS {
        writeln!(stdin, "r{i}-{pad}").unwrap();
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "shardlog produce: {status}");
    from + RECORDS
}

fn leader(cluster: &mut Cluster) -> usize {
    let (_, meta) = cluster.metadata_any().unwrap();
    partition(&meta, TOPIC, 0).unwrap().leader.unwrap() as usize
}

/// The log start of the partition as `addr` (its leader) serves it.
fn log_start(addr: &str) -> u64 {
    let request = ListOffsetsRequest {
        topic: TOPIC.to_owned(),
        partition: 0,
        spec: OffsetSpec::Earliest,
    };
    let response: ListOffsetsResponse = call(addr, Api::ListOffsets, &request).unwrap();
    assert_eq!(
        ErrorCode::from(response.error),
        ErrorCode::None,
        "{response:?}"
    );
    response.offset.unwrap()
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

/// `DATA/<topic>-<id>/0`.
fn partition_dir(data: &Path) -> PathBuf {
    let topic = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{TOPIC}-")))
        })
        .unwrap_or_else(|| panic!("no {TOPIC} directory in {}", data.display()));
    topic.join("0")
}

/// The base offset of the partition's first segment file.
fn first_segment(data: &Path) -> u64 {
    std::fs::read_dir(partition_dir(data))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")?.parse::<u64>().ok()
        })
        .min()
        .unwrap()
}

/// Offset -> value of the records on disk in a partition directory (`shardlog export`,
/// which may run beside the server).
fn exported(dir: &Path) -> BTreeMap<u64, String> {
    let out = shardlog(&["export", dir.to_str().unwrap()]);
    if !out.status.success() {
        // A segment deleted under the export's feet: the caller asks again.
        return BTreeMap::new();
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let offset = field(line, "\"offset\":", ',')?.parse().ok()?;
            Some((offset, field(line, "\"value\":\"", '"')?.to_owned()))
        })
        .collect()
}

/// The text after `key` up to `end`.
fn field<'a>(line: &'a str, key: &str, end: char) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(&rest[..rest.find(end)?])
}

/// Offset -> value of every record the leader serves.
fn consumed(brokers: &str) -> BTreeMap<u64, String> {
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

fn shardlog(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .output()
        .unwrap()
}
