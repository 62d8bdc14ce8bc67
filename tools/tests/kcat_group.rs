//! `kcat -G` (librdkafka 2.0's balanced consumer, Debian's kcat) against the shipped
//! `shardlogd`: a group consumes a two-partition topic from the beginning and commits on
//! exit; run again after more records, the group resumes after its commits and prints
//! only the new records. Installs kcat (`apt-get install -y kcat`) when it is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Server;
use shardlog_net::testing::Shardlogd;

/// Installs kcat if it is not on the PATH (idempotent).
fn ensure_kcat() {
    let present = Command::new("kcat").arg("-V").output().is_ok();
    if present {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "kcat"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !install() {
        let updated = Command::new("apt-get").arg("update").output().unwrap();
        assert!(updated.status.success(), "apt-get update failed");
        assert!(install(), "apt-get install -y kcat failed");
    }
}

fn kcat(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("timeout")
        .arg("60")
        .arg("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// What a group member of `group` prints, reading to the end of every partition.
fn consume(brokers: &str, group: &str) -> Vec<String> {
    let output = kcat(
        &[
            "-b",
            brokers,
            "-G",
            group,
            "-e",
            "-q",
            "-X",
            "auto.offset.reset=earliest",
            "gtest",
        ],
        "",
    );
    let mut lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn produce(brokers: &str, partition: u32, values: &[String]) {
    let mut input = values.join("\n");
    input.push('\n');
    kcat(
        &[
            "-b",
            brokers,
            "-P",
            "-t",
            "gtest",
            "-p",
            &partition.to_string(),
        ],
        &input,
    );
}

#[test]
fn a_kcat_group_resumes_after_its_commits() {
    ensure_kcat();
    let dir = common::test_dir("kcat-group-");
    let args = ["--shards", "2", "--group-initial-rebalance-delay-ms", "0"];
    let server = Server {
        shardlogd: Shardlogd::start(dir.path(), &args).unwrap(),
        dir,
    };
    server.create("gtest", 2);
    let brokers = server.shardlogd.kafka_addr.to_string();
    let first: Vec<String> = (0..20).map(|i| format!("first-{i:02}")).collect();
    produce(&brokers, 0, &first[..10]);
    produce(&brokers, 1, &first[10..]);
    let mut expected = first.clone();
    expected.sort();
    assert_eq!(consume(&brokers, "readers"), expected);
    let second: Vec<String> = (0..5).map(|i| format!("second-{i}")).collect();
    produce(&brokers, 0, &second[..2]);
    produce(&brokers, 1, &second[2..]);
    // The group committed where it stopped: only the new records.
    assert_eq!(consume(&brokers, "readers"), second);
    // Another group starts from the beginning.
    assert_eq!(consume(&brokers, "others").len(), 25);
}
