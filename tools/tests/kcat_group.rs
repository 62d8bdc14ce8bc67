//! `kcat -G` (librdkafka 2.0's balanced consumer, Debian's kcat) against the shipped
//! `shardlogd`: a group consumes a two-partition topic from the beginning and commits on
//! exit; run again after more records, the group resumes after its commits and prints
//! only the new records. Installs kcat (`apt-get install -y kcat`) when it is missing.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use common::kcat::{ensure_kcat, kcat};
use shardlog_net::testing::Shardlogd;

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
