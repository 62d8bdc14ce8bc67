//! A data directory of the previous release, served by the new `shardlogd`: a node
//! alone kept each topic as `DATA/<topic>/topic.json` (pretty JSON, `null` for a setting
//! left to the server) beside one engine log per partition (`DATA/<topic>/<partition>/`),
//! every batch at leader epoch 0. Started alone on it, the new server adopts each topic
//! through its controller (settings kept) into `DATA/<topic>-<id>`, and serves every
//! record at its old offset; a node with peers refuses such a directory without touching
//! it. The old layout is written here with the engine's API, as the previous release's
//! server wrote it (`git show main:net/src/server/catalog.rs` and `shard.rs`).
//!
//! `tests/backup_restore.rs` covers a directory `shardlog import` wrote; this one adds
//! several topics, a log start above 0 (retention already deleted segments), the
//! settings and end offsets carried over, a restart of the adopted directory, the refusal
//! with peers, and an adoption cut by a crash before its rename.
#![cfg(test)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use common::{ok_against, test_dir};
use serde_json::{Value, json};
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{DirLock, DmaStorage, EngineConfig, LeaderEpoch, PartitionLog, TimestampMs};
use shardlog_net::testing::{Launch, LogTail, Shardlogd, StderrTo, refused_start};

/// `orders`' settings in its topic.json (the previous release kept them there).
const SEGMENT_BYTES: u64 = 65_536;
const RETENTION_BYTES: u64 = 1 << 30;
const RETENTION_MS: u64 = 86_400_000;
/// Records stamped this long ago are past `orders`' retention.
const THREE_DAYS_MS: i64 = 3 * 86_400_000;

/// One partition as written: `values[i]` at offset `i`, of which retention deleted the
/// ones below `start`.
#[derive(Clone, Debug)]
struct Partition {
    topic: &'static str,
    partition: u32,
    start: u64,
    values: Vec<String>,
}

impl Partition {
    fn end(&self) -> u64 {
        self.values.len() as u64
    }
}

/// What a partition of the legacy directory holds.
struct Plan {
    topic: &'static str,
    partition: u32,
    /// Records stamped three days ago (retention deletes the segments holding only
    /// these), then records stamped now.
    old: usize,
    new: usize,
    value_bytes: usize,
}

const PLANS: [Plan; 4] = [
    plan("orders", 0, 0, 30, 100),
    // About five 64 KiB segments; the first ones hold only old records.
    plan("orders", 1, 200, 100, 1000),
    plan("orders", 2, 0, 7, 10),
    plan("events", 0, 0, 12, 50),
];

const fn plan(topic: &'static str, partition: u32, old: usize, new: usize, bytes: usize) -> Plan {
    Plan {
        topic,
        partition,
        old,
        new,
        value_bytes: bytes,
    }
}

/// The topic.json of each legacy topic, as the previous release wrote it.
fn legacy_topic_files() -> Vec<Value> {
    vec![
        json!({"name": "events", "partitions": 1, "segment_bytes": null,
               "retention_bytes": null, "retention_ms": null}),
        json!({"name": "orders", "partitions": 3, "segment_bytes": SEGMENT_BYTES,
               "retention_bytes": RETENTION_BYTES, "retention_ms": RETENTION_MS}),
    ]
}

/// The engine configuration the previous release gave a topic's partitions.
fn engine_config(topic: &str) -> EngineConfig {
    let mut config = EngineConfig::default();
    if topic == "orders" {
        config.segment_bytes = SEGMENT_BYTES;
        config.retention_bytes = Some(RETENTION_BYTES);
        config.retention_age = Some(Duration::from_millis(RETENTION_MS));
    }
    config
}

/// Writes the previous release's layout into `data` (which must not hold topics yet): each
/// topic.json first (atomically, as its catalog did), then each partition's log, closed
/// cleanly with its high watermark at its end.
fn write_legacy(data: &Path) -> Vec<Partition> {
    fs::create_dir_all(data).unwrap();
    drop(DirLock::acquire(data).unwrap());
    for file in legacy_topic_files() {
        let dir = data.join(file["name"].as_str().unwrap());
        fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join("topic.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
        fs::rename(&tmp, dir.join("topic.json")).unwrap();
    }
    let data = data.to_path_buf();
    let written = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut written = Vec::new();
            for plan in &PLANS {
                written.push(write_partition(&data, plan).await);
            }
            written
        })
        .unwrap()
        .join()
        .unwrap();
    let trimmed = &written[1];
    assert!(trimmed.start > 0, "retention deleted nothing: {trimmed:?}");
    written
}

/// One partition's log, as the previous release's shard appended and closed it.
async fn write_partition(data: &Path, plan: &Plan) -> Partition {
    let dir = data.join(plan.topic).join(plan.partition.to_string());
    let log = PartitionLog::open(DmaStorage, &dir, engine_config(plan.topic))
        .await
        .unwrap();
    let now = TimestampMs::now().0;
    let values: Vec<String> = (0..plan.old + plan.new)
        .map(|i| {
            let pad = "v".repeat(plan.value_bytes);
            format!("{}/{}/{i}/{pad}", plan.topic, plan.partition)
        })
        .collect();
    for (chunk, first) in values.chunks(10).zip((0..).step_by(10)) {
        let mut batch = BatchBuilder::new();
        for (i, value) in (first..).zip(chunk) {
            let at = if i < plan.old {
                now - THREE_DAYS_MS
            } else {
                now
            };
            let key = format!("k{i}");
            batch.push(
                TimestampMs(at + i as i64),
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[],
            );
        }
        let bytes = BytesMut::from(&batch.finish()[..]);
        log.append(bytes, LeaderEpoch(0)).await.unwrap();
    }
    log.set_high_watermark(log.acked_end());
    log.apply_retention(TimestampMs::now()).await.unwrap();
    let start = log.log_start().0;
    assert_eq!(log.log_end().0, values.len() as u64);
    log.close().await.unwrap();
    Partition {
        topic: plan.topic,
        partition: plan.partition,
        start,
        values,
    }
}

/// A `shardlogd` with default settings and its stderr, printed if the test fails.
struct Node {
    server: Shardlogd,
    tail: LogTail,
}

impl Node {
    fn start(data: &Path, args: &[&str]) -> Node {
        let tail = LogTail::new(2000);
        let launched = Shardlogd::launch(&Launch {
            data_dir: data,
            listen: "127.0.0.1:0",
            args,
            stderr: StderrTo::Tail(tail.clone()),
        });
        match launched {
            Ok(server) => Node { server, tail },
            Err(e) => panic!("shardlogd did not start: {e}\n{}", tail.lines().join("\n")),
        }
    }

    fn brokers(&self) -> String {
        self.server.brokers()
    }

    /// How many "topic adopted" lines it logged.
    fn adopted(&self) -> usize {
        let lines = self.tail.lines();
        lines.iter().filter(|l| l.contains("topic adopted")).count()
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        let status = self.server.terminate().unwrap();
        assert!(
            status.success(),
            "{status}\n{}",
            self.tail.lines().join("\n")
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for line in self.tail.lines() {
                eprintln!("[shardlogd] {line}");
            }
        }
    }
}

/// Every record of `topic` as `shardlog consume --format json` prints it from the
/// beginning: (partition, offset, key, value).
fn consume(brokers: &str, topic: &str) -> Vec<(u64, u64, String, String)> {
    let out = ok_against(
        brokers,
        &["consume", "--topic", topic, "--format", "json"],
        "",
    );
    out.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            let text = |field: &str| record[field].as_str().unwrap().to_owned();
            let number = |field: &str| record[field].as_u64().unwrap();
            (
                number("partition"),
                number("offset"),
                text("key"),
                text("value"),
            )
        })
        .collect()
}

/// The records of `topic` that `written` kept, as `consume` prints them.
fn kept(written: &[Partition], topic: &str) -> Vec<(u64, u64, String, String)> {
    written
        .iter()
        .filter(|p| p.topic == topic)
        .flat_map(|p| {
            (p.start..p.end()).map(move |offset| {
                let value = p.values[usize::try_from(offset).unwrap()].clone();
                (u64::from(p.partition), offset, format!("k{offset}"), value)
            })
        })
        .collect()
}

/// `topic describe`'s rows: partition -> (replicas, log_start, high_watermark).
fn describe(brokers: &str, topic: &str) -> (String, Vec<(String, String, String)>) {
    let out = ok_against(brokers, &["topic", "describe", topic], "");
    let mut lines = out.lines();
    let head = lines.next().unwrap().to_owned();
    assert_eq!(
        lines.next(),
        Some("partition\tleader\tepoch\treplicas\tisr\tlog_start\thigh_watermark")
    );
    let rows = lines
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            (
                cells[3].to_owned(),
                cells[5].to_owned(),
                cells[6].to_owned(),
            )
        })
        .collect();
    (head, rows)
}

/// The directories directly in `data`.
fn topic_dirs(data: &Path) -> BTreeSet<String> {
    fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect()
}

/// The directory `<topic>-<id>` a server keeps `topic` in.
fn adopted_dir(data: &Path, topic: &str) -> PathBuf {
    let prefix = format!("{topic}-");
    let found: Vec<String> = topic_dirs(data)
        .into_iter()
        .filter(|d| {
            d.strip_prefix(&prefix)
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert_eq!(found.len(), 1, "{topic} in {:?}", topic_dirs(data));
    data.join(&found[0])
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// What the adopted directory serves: every kept record at its old offset, the log
/// starts and ends, the partition counts, the settings (in the topic.json the server
/// writes for the tools, from the controller's metadata).
fn assert_served_as_written(node: &Node, data: &Path, written: &[Partition]) {
    let brokers = node.brokers();
    for topic in ["orders", "events"] {
        assert_eq!(consume(&brokers, topic), kept(written, topic), "{topic}");
    }
    let (head, rows) = describe(&brokers, "orders");
    assert_eq!(head, "topic orders: 3 partitions, replication factor 1");
    let expected: Vec<_> = written
        .iter()
        .filter(|p| p.topic == "orders")
        .map(|p| ("0".to_owned(), p.start.to_string(), p.end().to_string()))
        .collect();
    assert_eq!(rows, expected, "replicas, log start, high watermark");
    let (head, _) = describe(&brokers, "events");
    assert_eq!(head, "topic events: 1 partition, replication factor 1");
    let listed = ok_against(&brokers, &["topic", "list"], "");
    assert_eq!(listed, "events\norders\n");
    for file in legacy_topic_files() {
        let topic = file["name"].as_str().unwrap();
        assert!(!data.join(topic).exists(), "{topic} was not moved");
        let described = json_file(&adopted_dir(data, topic).join("topic.json"));
        assert_eq!(described, file, "{topic}'s settings");
    }
}

/// Produces `count` records of about 1 KiB to `partition` with `shardlog produce`, keyed
/// as the legacy ones (`k<offset>`), and adds them to it; they must start at its end.
fn produce(brokers: &str, partition: &mut Partition, count: u64) {
    let end = partition.end();
    let values: Vec<String> = (end..end + count)
        .map(|i| format!("new/{i}/{}", "n".repeat(1000)))
        .collect();
    let lines: String = (end..)
        .zip(&values)
        .map(|(i, value)| format!("k{i}\t{value}\n"))
        .collect();
    let p = partition.partition.to_string();
    let args = [
        "produce",
        "--topic",
        partition.topic,
        "--partition",
        &p,
        "--keyed",
        "--report-offsets",
        // Batches of about 10 KiB: a batch is never split across segments.
        "--batch-records",
        "10",
    ];
    let out = ok_against(brokers, &args, &lines);
    let first = out.lines().next().unwrap();
    assert_eq!(
        first,
        format!("{p}\t{end}"),
        "{}/{p} goes on at its old end",
        partition.topic
    );
    partition.values.extend(values);
}

fn segment_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".log")
        })
        .count()
}

#[test]
fn a_legacy_directory_is_adopted_and_served_at_its_old_offsets() {
    let root = test_dir("tools-adopt-");
    let data = root.path().join("data");
    let mut written = write_legacy(&data);
    let node = Node::start(&data, &[]);
    assert_eq!(node.adopted(), 2, "both topics adopted");
    assert_served_as_written(&node, &data, &written);

    // New records go on at the old ends; orders keeps its 64 KiB segments.
    let brokers = node.brokers();
    for partition in &mut written {
        produce(&brokers, partition, 1);
    }
    let first = adopted_dir(&data, "orders").join("0");
    let segments = segment_files(&first);
    produce(&brokers, &mut written[0], 150);
    assert!(
        segment_files(&first) >= segments + 2,
        "150 KiB more rolled fewer than two 64 KiB segments"
    );
    let dirs = topic_dirs(&data);
    node.stop();

    // Restarted: the same directories, nothing adopted again, the same records.
    let node = Node::start(&data, &[]);
    assert_eq!(node.adopted(), 0, "adopted again");
    assert_eq!(topic_dirs(&data), dirs);
    assert_served_as_written(&node, &data, &written);
}

#[test]
fn a_node_with_peers_refuses_a_legacy_directory_and_leaves_it_adoptable() {
    let root = test_dir("tools-adopt-peers-");
    let data = root.path().join("data");
    let written = write_legacy(&data);
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        })
        .collect();
    let peers = format!("0=127.0.0.1:{},1=127.0.0.1:{}", ports[0], ports[1]);
    let launch = Launch {
        data_dir: &data,
        listen: "127.0.0.1:0",
        args: &["--node-id", "1", "--peers", &peers],
        stderr: StderrTo::Echo,
    };
    let exited = refused_start(&launch, Duration::from_secs(30)).unwrap();
    assert!(exited.took < Duration::from_secs(10), "{:?}", exited.took);
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    for words in [
        "holds topics described by topic.json (events, orders)",
        "a node with peers cannot adopt them",
        "Start this node alone (without --peers) to adopt them, or move their directories away",
    ] {
        assert!(
            exited.stderr.contains(words),
            "{words:?}: {}",
            exited.stderr
        );
    }
    let untouched: BTreeSet<String> = ["events", "orders"].map(str::to_owned).into();
    assert_eq!(topic_dirs(&data), untouched);
    assert!(
        !data.join("node.json").exists(),
        "the refused start claimed the directory for node 1"
    );

    // As the refusal says: alone (a node alone is node 0 unless told otherwise).
    let node = Node::start(&data, &[]);
    assert_eq!(node.adopted(), 2);
    assert_served_as_written(&node, &data, &written);
}

/// A crash after the controller created the topic and before the rename: the next start
/// only renames (the topic keeps its id; nothing is created twice).
#[test]
fn an_adoption_cut_before_its_rename_is_finished_at_the_next_start() {
    let root = test_dir("tools-adopt-cut-");
    let data = root.path().join("data");
    let written = write_legacy(&data);
    let node = Node::start(&data, &[]);
    assert_served_as_written(&node, &data, &written);
    node.stop();
    // Back to the state the crash left: the directory under its name, with its topic.json.
    let adopted = adopted_dir(&data, "orders");
    fs::rename(&adopted, data.join("orders")).unwrap();
    let legacy = &legacy_topic_files()[1];
    fs::write(
        data.join("orders").join("topic.json"),
        serde_json::to_vec_pretty(legacy).unwrap(),
    )
    .unwrap();

    let node = Node::start(&data, &[]);
    assert_eq!(node.adopted(), 1, "orders renamed");
    assert_eq!(adopted_dir(&data, "orders"), adopted, "the same topic id");
    assert_served_as_written(&node, &data, &written);
}
