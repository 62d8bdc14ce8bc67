//! `shardlog-bench produce --protocol kafka` against a real `shardlogd`'s Kafka listener:
//! counted runs in the per-record and batched shapes (idempotent, acks=all), and acks=0,
//! report exactly the records asked for, and the records are there: the native consume
//! workload reads every one back from the same topic. No timing is asserted.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`)
//! or named by `SHARDLOGD_BIN`. Data lives under `SHARDLOG_TEST_DIR`.

use std::process::{Command, Output};

use shardlog_net::testing::{Shardlogd, test_root};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(args)
        .output()
        .expect("run shardlog-bench")
}

fn run_ok(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    let mut full = args.to_vec();
    full.extend(["--json", json.to_str().expect("utf-8 path")]);
    let out = bench(&full);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{full:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).expect("json report")).expect("valid json")
}

#[test]
fn kafka_produce_stores_every_record_it_reports() {
    let dir = tempfile::Builder::new()
        .prefix("bench-kafka-")
        .tempdir_in(test_root().expect("test dir"))
        .expect("temp dir");
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).expect("start shardlogd");
    let total = produce_shapes(dir.path(), &server.kafka_addr.to_string());
    // acks=0 is not waited for: read until every record is there.
    let json = dir.path().join("consume.json");
    let brokers = server.brokers();
    let total_text = total.to_string();
    let report = run_ok(
        &[
            "consume",
            "--brokers",
            &brokers,
            "--topic",
            "kb",
            "--from",
            "beginning",
            "--count",
            &total_text,
            "--duration",
            "60",
        ],
        &json,
    );
    assert_eq!(report["consume"]["records"], total, "{report}");
}

/// Runs `produce --protocol kafka` in three shapes to topic `kb`; returns the records.
fn produce_shapes(dir: &std::path::Path, kafka: &str) -> u64 {
    let shapes: [(&str, &[&str], u64); 3] = [
        (
            "record",
            &["--batch-records", "1", "--inflight", "32", "--count", "300"],
            300,
        ),
        (
            "batched",
            &[
                "--batch-records",
                "50",
                "--producers",
                "2",
                "--inflight",
                "4",
                "--count",
                "2000",
            ],
            2000,
        ),
        (
            "acks-none",
            &["--batch-records", "10", "--acks", "none", "--count", "100"],
            100,
        ),
    ];
    let mut total = 0;
    for (name, shape, count) in shapes {
        let json = dir.join(format!("{name}.json"));
        let mut args = vec![
            "produce",
            "--protocol",
            "kafka",
            "--brokers",
            kafka,
            "--topic",
            "kb",
            "--partitions",
            "3",
            "--record-size",
            "200",
        ];
        args.extend_from_slice(shape);
        let report = run_ok(&args, &json);
        assert_eq!(report["config"]["protocol"], "kafka", "{report}");
        assert_eq!(report["produce"]["records"], count, "{name}: {report}");
        total += count;
    }
    total
}

#[test]
fn kafka_protocol_is_refused_where_it_is_not_spoken() {
    let out = bench(&[
        "consume",
        "--protocol",
        "kafka",
        "--brokers",
        "127.0.0.1:1",
        "--topic",
        "t",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("produce only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
