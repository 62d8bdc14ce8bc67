//! Backup and restore that is served: `shardlog export DATA/<topic>` from a live server's
//! data directory, `shardlog import DATA2`, a new `shardlogd` on DATA2 serving the same
//! records at the same offsets with the topic's settings; an export cut short or a topic
//! that exists is refused, leaving nothing behind. Real binaries (see `common/mod.rs`).
#![cfg(test)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Server, describe, ok_against, shardlog, stderr, test_dir};
use serde_json::Value;

/// Every record of `topic` as `consume --format json` prints it, one object per line.
fn records(brokers: &str, topic: &str) -> Vec<Value> {
    ok_against(
        brokers,
        &["consume", "--topic", topic, "--format", "json"],
        "",
    )
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect()
}

fn topic_file(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("topic.json")).unwrap()).unwrap()
}

/// Records for partition `partition`: values with TABs and non-ASCII text, 1 KiB each.
fn input(partition: u32, count: usize) -> String {
    (0..count)
        .map(|i| format!("key-{i}\tp{partition}\tr{i}\u{e9}{}\n", "v".repeat(1000)))
        .collect()
}

#[test]
fn a_topic_exported_from_a_live_server_is_served_after_import() {
    let server = Server::start();
    server.ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "4",
            "--segment-bytes",
            "65536",
            "--retention-ms",
            "86400000",
        ],
        "",
    );
    // Partition 0 spans several segments; partition 3 stays empty.
    for (partition, count) in [(0u32, 150usize), (1, 80), (2, 1)] {
        let p = partition.to_string();
        server.ok(
            &["produce", "--topic", "orders", "--partition", &p, "--keyed"],
            &input(partition, count),
        );
    }
    let before = records(&server.brokers(), "orders");
    assert_eq!(before.len(), 231);

    let work = test_dir("tools-backup-");
    let (restored, text) = export_then_import(server.dir.path(), work.path());
    let second = Server::start_on(&restored);
    let brokers = second.brokers();
    let after = records(&brokers, "orders");
    let count = |records: &[Value], p: u64| records.iter().filter(|r| r["partition"] == p).count();
    let counts = |records: &[Value]| (0..4).map(|p| count(records, p)).collect::<Vec<_>>();
    assert_eq!(counts(&after), counts(&before), "records per partition");
    assert!(after == before, "the restored records differ");
    let described = ok_against(&brokers, &["topic", "describe", "orders"], "");
    assert!(
        described.starts_with("topic orders: 4 partitions"),
        "{described}"
    );
    // Offsets go on where they were.
    for (partition, next) in [("1", "80"), ("3", "0")] {
        let offsets = ok_against(
            &brokers,
            &[
                "produce",
                "--topic",
                "orders",
                "--partition",
                partition,
                "--report-offsets",
            ],
            "later\n",
        );
        assert_eq!(offsets, format!("{partition}\t{next}\n"));
    }

    // Stopped, so that only the existing topic can refuse the next import there.
    drop(second);
    failed_imports_leave_nothing(work.path(), &restored, &text);
}

/// A node that restarted leads its partitions at higher leader epochs, and its batches
/// carry them; an export keeps them. The restored topic must be led (at an epoch no older
/// than its data's) and served, not refused as `NotLeader` forever.
#[test]
fn a_topic_written_across_restarts_is_served_after_import() {
    let dir = test_dir("tools-epochs-");
    let brokers_of = |server: &shardlog_net::testing::Shardlogd| server.brokers();
    let mut server = Server::start_on(dir.path());
    ok_against(
        &brokers_of(&server),
        &["topic", "create", "orders", "--partitions", "2"],
        "",
    );
    for round in 0..3 {
        ok_against(
            &brokers_of(&server),
            &[
                "produce",
                "--topic",
                "orders",
                "--partition",
                "0",
                "--keyed",
            ],
            &input(0, 5 + round),
        );
        server.terminate().unwrap();
        server = Server::start_on(dir.path());
    }
    let before = records(&brokers_of(&server), "orders");
    assert_eq!(before.len(), 18);
    drop(server);

    let work = test_dir("tools-epochs-backup-");
    let (restored, text) = export_then_import(dir.path(), work.path());
    let newest_epoch = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|record| record["leader_epoch"].as_i64())
        .max();
    assert!(
        newest_epoch.is_some_and(|e| e > 0),
        "the export should carry the epochs of later runs: {newest_epoch:?}"
    );
    let second = Server::start_on(&restored);
    let brokers = second.brokers();
    let after = records(&brokers, "orders");
    assert!(after == before, "the restored records differ");
    let offsets = ok_against(
        &brokers,
        &[
            "produce",
            "--topic",
            "orders",
            "--partition",
            "0",
            "--report-offsets",
        ],
        "later\n",
    );
    assert_eq!(offsets, "0\t18\n");
}

/// `export DATA/orders --output FILE` then `import WORK/restored --input FILE`; the
/// restored data directory (whose topic.json matches) and the export's text.
fn export_then_import(data: &Path, work: &Path) -> (PathBuf, String) {
    let backup = work.join("orders.jsonl");
    // A server keeps a topic in `<topic>-<id>`, with a topic.json for the tools.
    let topic_dir = data.join("orders-0");
    let export = shardlog(
        &[
            "export",
            topic_dir.to_str().unwrap(),
            "--output",
            backup.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(export.status.code(), Some(0), "{}", describe(&export));
    let text = fs::read_to_string(&backup).unwrap();

    let restored = work.join("restored");
    let import = shardlog(
        &[
            "import",
            restored.to_str().unwrap(),
            "--input",
            backup.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(import.status.code(), Some(0), "{}", describe(&import));
    assert_eq!(
        topic_file(&restored.join("orders")),
        topic_file(&topic_dir),
        "settings restored"
    );
    assert!(!restored.join("orders~import").exists());
    (restored, text)
}

fn failed_imports_leave_nothing(work: &Path, restored: &Path, text: &str) {
    // Cut short: the last partition's end line is missing.
    let cut: String = text
        .lines()
        .take(text.lines().count() - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let fresh = work.join("cut").join("data");
    let import = shardlog(&["import", fresh.to_str().unwrap()], &cut);
    assert_eq!(import.status.code(), Some(2), "{}", describe(&import));
    assert!(
        stderr(&import).contains("cut short"),
        "{}",
        describe(&import)
    );
    assert!(!work.join("cut").exists(), "a failed import left files");

    // A topic that exists is never replaced.
    let again = shardlog(&["import", restored.to_str().unwrap()], text);
    assert_eq!(again.status.code(), Some(2), "{}", describe(&again));
    assert!(stderr(&again).contains("exists"), "{}", describe(&again));

    // An empty partition comes back at the offset its end line names.
    let last = text.lines().last().unwrap();
    assert_eq!(
        last,
        r#"{"partition_end":{"partition":3,"log_end":0,"records":0}}"#
    );
    let moved = text.replace(
        last,
        r#"{"partition_end":{"partition":3,"log_end":40,"records":0}}"#,
    );
    let other = work.join("moved");
    let import = shardlog(&["import", other.to_str().unwrap()], &moved);
    assert_eq!(import.status.code(), Some(0), "{}", describe(&import));
    let stats = shardlog(
        &["stats", other.join("orders").join("3").to_str().unwrap()],
        "",
    );
    let out = String::from_utf8_lossy(&stats.stdout).into_owned();
    assert!(out.contains("offsets 40..40"), "{}", describe(&stats));
}
