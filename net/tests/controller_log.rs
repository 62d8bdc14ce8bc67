//! The controller's Raft log (`DATA/controller/raft.log`) at start, with the real binary:
//! damage inside records that later ones follow stops `shardlogd` (exit 1) with a message
//! naming the file, the byte and the fix, and leaves the file as it was; the fix works,
//! for a node alone and for one with peers; a torn tail is cut, and the node serves the
//! topics committed before it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links};
use shardlog_net::api::{Acks, TopicConfig};
use shardlog_net::client::{Client, ClientConfig, FetchOptions};
use shardlog_net::testing::{Launch, LogTail, Shardlogd, StderrTo};
use shardlog_replicator::controller::{Command as ControllerCommand, raft_file};

const TOPICS: [&str; 3] = ["alpha", "beta", "gamma"];

fn raft_file_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("controller").join("raft.log")
}

fn value(topic: &str, round: u32) -> Vec<u8> {
    format!("{topic}, round {round}").into_bytes()
}

/// Each topic's values after `rounds` rounds, in topic order.
fn expected(rounds: u32) -> Vec<Vec<Vec<u8>>> {
    TOPICS
        .iter()
        .map(|t| (0..rounds).map(|r| value(t, r)).collect())
        .collect()
}

/// Creates the topics (round 0: a controller record or more each), then writes one record
/// to each.
fn write_round(brokers: String, round: u32) {
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        for topic in TOPICS {
            if round == 0 {
                client
                    .create_topic(topic, 1, 1, TopicConfig::default())
                    .await
                    .unwrap();
            }
            let batch = common::batch(&[value(topic, round)]);
            let mut tries = 0;
            // The partition may still be opening, or its leadership moving after a
            // start: try again.
            while let Err(e) = client.produce(topic, 0, Acks::Leader, batch.clone()).await {
                tries += 1;
                assert!(tries < 250, "{topic}: {e}");
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        }
    });
}

/// Each topic's record values (partition 0), once each holds `count` (a started node
/// serves once it has caught up and opened its partitions).
fn read_back(brokers: String, count: usize) -> Vec<Vec<Vec<u8>>> {
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut all = Vec::new();
        for topic in TOPICS {
            loop {
                let fetched = client.fetch(topic, 0, 0, FetchOptions::default()).await;
                let mut values = Vec::new();
                if let Ok(fetched) = &fetched {
                    for batch in fetched.batches() {
                        let (header, bytes) = batch.unwrap();
                        for record in shardlog_engine::record::RecordIter::new(&header, bytes) {
                            values.push(record.unwrap().value.unwrap().to_vec());
                        }
                    }
                }
                if values.len() >= count {
                    all.push(values);
                    break;
                }
                assert!(Instant::now() < deadline, "{topic}: {fetched:?}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
        all
    })
}

/// Where each record of a Raft file starts (`len | crc | kind | payload`).
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        starts.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 9 + len;
    }
    assert_eq!(at, bytes.len(), "the file ends with a whole record");
    starts
}

/// A lone node with the topics and their records, written in two runs (the second under
/// higher leader epochs: a start fences the previous run), stopped by SIGTERM: its Raft
/// file.
fn stopped_node(dir: &Path) -> Vec<u8> {
    for round in 0..2 {
        let mut server = Shardlogd::start(dir, &["--shards", "1"]).unwrap();
        write_round(server.brokers(), round);
        assert!(server.terminate().unwrap().success());
    }
    std::fs::read(raft_file_path(dir)).unwrap()
}

/// Starts `shardlogd` on `dir`, expecting it to exit before it is ready: its exit code
/// and stderr. Fails if it still runs after 30 s.
fn start_expecting_exit(dir: &Path) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(Shardlogd::binary())
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--shards", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            panic!("shardlogd still runs after 30 s on a damaged controller log:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr, started.elapsed())
}

#[test]
fn damage_inside_the_controller_log_stops_the_start_and_names_the_fix() {
    let dir = common::data_dir();
    let file = stopped_node(dir.path());
    let starts = record_starts(&file);
    assert!(starts.len() >= 4, "{} records", starts.len());
    // A byte inside the payload of the record that creates the second topic: others
    // follow it.
    let damaged_record = *starts
        .iter()
        .find(|&&start| {
            let end = starts
                .iter()
                .find(|&&s| s > start)
                .copied()
                .unwrap_or(file.len());
            created_topics(&file[..end]).len() == 2
        })
        .unwrap();
    assert!(damaged_record < *starts.last().unwrap());
    let mut damaged = file.clone();
    damaged[damaged_record + 9] ^= 0x40;
    let path = raft_file_path(dir.path());
    std::fs::write(&path, &damaged).unwrap();

    let (code, stderr, took) = start_expecting_exit(dir.path());
    eprintln!("exit {code:?} after {took:?}:\n{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    for expected in [
        path.display().to_string(),
        format!("record at byte {damaged_record}: crc mismatch"),
        format!("truncate -s {damaged_record} {}", path.display()),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} in {stderr}");
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged,
        "the damaged file is left as it was"
    );

    // As the message says, a node alone started without its controller directory does
    // not get its topics back (only DATA/<topic>/topic.json is adopted, not the cluster
    // layout DATA/<topic>-<id>).
    let controller_dir = path.parent().unwrap().to_path_buf();
    let aside = dir.path().join("controller.damaged");
    std::fs::rename(&controller_dir, &aside).unwrap();
    let mut server = Shardlogd::start(dir.path(), &["--shards", "1"]).unwrap();
    assert_eq!(topics(server.brokers(), 0), Vec::<String>::new());
    assert!(server.terminate().unwrap().success());
    std::fs::remove_dir_all(&controller_dir).unwrap();
    std::fs::rename(&aside, &controller_dir).unwrap();

    // The fix it names: the file cut before the damaged record. The node starts from the
    // records before it, with the topics created there.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(damaged_record as u64).unwrap();
    drop(file);
    let kept = created_topics(&damaged[..damaged_record]);
    assert_eq!(kept, [TOPICS[0]]);
    let server = Shardlogd::start(dir.path(), &["--shards", "1"]).unwrap();
    assert_eq!(topics(server.brokers(), kept.len()), kept);
}

/// The topics a Raft file's entries create, in order.
fn created_topics(bytes: &[u8]) -> Vec<String> {
    let recovered = raft_file::recover(bytes).unwrap();
    assert_eq!(recovered.torn, None);
    recovered
        .entries
        .iter()
        .filter_map(|e| match ControllerCommand::decode(&e.data) {
            Ok(ControllerCommand::CreateTopic { name, .. }) => Some(name),
            _ => None,
        })
        .collect()
}

/// The topics a node names in its Metadata answer, sorted, once it names `count` (a
/// started node answers once it has caught up).
fn topics(brokers: String, count: usize) -> Vec<String> {
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = client.metadata(&[]).await;
            if let Ok(meta) = &answer
                && meta.topics.len() >= count
            {
                let mut names: Vec<String> = meta.topics.iter().map(|t| t.name.clone()).collect();
                names.sort();
                return names;
            }
            assert!(Instant::now() < deadline, "{answer:?}");
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[test]
fn a_torn_tail_of_the_controller_log_is_cut_and_the_topics_are_served() {
    let dir = common::data_dir();
    let file = stopped_node(dir.path());
    let path = raft_file_path(dir.path());
    let cut = file.len() - 5;
    std::fs::write(&path, &file[..cut]).unwrap();

    let tail = LogTail::new(400);
    let server = Shardlogd::launch(&Launch {
        data_dir: dir.path(),
        listen: "127.0.0.1:0",
        args: &["--shards", "1"],
        stderr: StderrTo::Tail(tail.clone()),
    })
    .unwrap();
    assert_eq!(read_back(server.brokers(), 2), expected(2));
    let last = *record_starts(&file).last().unwrap();
    let lines = tail.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("controller log") && l.contains(&format!("valid={last}"))),
        "{lines:#?}"
    );
}

/// `node`'s Metadata answer names the topics, three live nodes and a controller leader:
/// that leader.
fn knows_everything(c: &Cluster, node: usize) -> Result<Option<u32>, String> {
    let meta = c.metadata(node).map_err(|e| e.to_string())?;
    let mut names: Vec<&str> = meta.topics.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    let live = meta.brokers.iter().filter(|b| b.live).count();
    if names == TOPICS && live == 3 && meta.controller.is_some() {
        Ok(meta.controller)
    } else {
        Err(format!(
            "{names:?}, {live} live, controller {:?}",
            meta.controller
        ))
    }
}

/// The fix the message names on a node with peers: its controller directory moved away
/// while the others run and have a controller leader, the node starts with an empty
/// controller log, learns the leader, receives the log from it (its registration is the
/// new entry that shows the leader the log short) and knows the topics again.
#[test]
fn a_node_with_peers_whose_controller_directory_is_removed_rejoins() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(Duration::from_secs(30));
    let brokers = cluster.brokers();
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        for topic in TOPICS {
            client
                .create_topic(topic, 1, 0, TopicConfig::default())
                .await
                .unwrap();
        }
    });
    let (leader, _) = cluster.wait_for(
        "every node to know the topics",
        Duration::from_secs(30),
        |c| {
            let mut leader = None;
            for node in 0..3 {
                leader = knows_everything(c, node)?;
            }
            Ok(leader)
        },
    );
    // Not the controller leader: the leader keeps what it last heard this node holds.
    let victim = (leader.unwrap() as usize + 1) % 3;
    cluster.kill(&[victim]);
    let data_dir = cluster.data_dir(victim);
    let old_log = std::fs::read(raft_file_path(&data_dir)).unwrap();
    std::fs::rename(
        data_dir.join("controller"),
        data_dir.join("controller.damaged"),
    )
    .unwrap();
    cluster.restart(victim);
    let (_, took) = cluster.wait_for(
        "the node to know the topics again",
        Duration::from_secs(30),
        |c| knows_everything(c, victim),
    );
    eprintln!("node {victim} rejoined with the cluster's metadata {took:?} after its start");
    // Its new log comes to hold the entries its old one had committed, from the leader.
    let old = raft_file::recover(&old_log).unwrap();
    let committed = usize::try_from(old.hard_state.commit).unwrap();
    assert!(committed > 0);
    let (new, _) = cluster.wait_for(
        "the node's new log to hold what its old one had committed",
        Duration::from_secs(30),
        |_| {
            let bytes = std::fs::read(raft_file_path(&data_dir)).map_err(|e| e.to_string())?;
            let new = raft_file::recover(&bytes).map_err(|e| e.to_string())?;
            if new.entries.len() >= committed {
                Ok(new)
            } else {
                Err(format!("{} of {committed} entries", new.entries.len()))
            }
        },
    );
    assert_eq!(new.entries[..committed], old.entries[..committed]);
}
