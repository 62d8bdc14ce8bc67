//! TLS on the client listeners with the shipped binaries and real clients: `shardlogd
//! --tls-cert/--tls-key` (and `--tls-client-ca` for mutual TLS) serving the `shardlog`
//! CLI (`topic create`, `produce`, `consume` with `--tls-ca`, and `--tls-cert/--tls-key`),
//! `shardlog-bench produce`/`consume`, kcat (`security.protocol=SSL`) and confluent-kafka
//! over the Kafka listener. Certificates are made with rcgen in a temporary directory.
//!
//! kcat and confluent-kafka are installed on first use as `tests/kafka_clients.rs` does
//! (`kafka_clients/setup.sh`); `shardlog-bench` must be built beside `shardlog`
//! (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

#[path = "../../net/tests/common/certs.rs"]
mod certs;
mod common;
#[allow(dead_code)]
#[path = "kafka_clients/nodes.rs"]
mod nodes;
#[allow(dead_code)]
#[path = "kafka_clients/script.rs"]
mod script;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use certs::{Ca, Pair};
use common::{describe, shardlog};
use shardlog_net::testing::Shardlogd;

/// A TLS server, its CA, and a client certificate (user `alice`) signed by the client CA
/// it requires when `mutual`.
struct Tls {
    server: Shardlogd,
    ca: Ca,
    alice: Pair,
    _keys: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Tls {
    fn start(mutual: bool) -> Tls {
        let keys = tempfile::tempdir().unwrap();
        let data = common::test_dir("tools-tls-");
        let ca = Ca::new(keys.path(), "servers");
        let clients = Ca::new(keys.path(), "clients");
        let pair = ca.server(keys.path(), "server");
        let alice = clients.client(keys.path(), "alice", "alice");
        let (cert, key) = (path(&pair.cert), path(&pair.key));
        let mut args = vec!["--shards", "2", "--tls-cert", &cert, "--tls-key", &key];
        let client_ca = path(&clients.pem);
        if mutual {
            args.extend(["--tls-client-ca", &client_ca]);
        }
        let server = Shardlogd::start(data.path(), &args).unwrap();
        Tls {
            server,
            ca,
            alice,
            _keys: keys,
            _data: data,
        }
    }

    /// `--brokers B --tls-ca CA` (and alice's certificate when `as_alice`).
    fn flags(&self, as_alice: bool) -> Vec<String> {
        let mut flags = vec![
            "--brokers".to_owned(),
            self.server.brokers(),
            "--tls-ca".to_owned(),
            path(&self.ca.pem),
        ];
        if as_alice {
            flags.extend([
                "--tls-cert".to_owned(),
                path(&self.alice.cert),
                "--tls-key".to_owned(),
                path(&self.alice.key),
            ]);
        }
        flags
    }

    /// `shardlog ARGS... FLAGS...`, which must succeed; its stdout.
    fn shardlog_ok(&self, args: &[&str], as_alice: bool, stdin: &str) -> String {
        let flags = self.flags(as_alice);
        let mut full: Vec<&str> = args.to_vec();
        full.extend(flags.iter().map(String::as_str));
        let output = shardlog(&full, stdin);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{full:?}: {}",
            describe(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Creates `topic`, produces three lines and consumes them back with the CLI.
fn cli_round_trip(tls: &Tls, topic: &str, as_alice: bool) {
    tls.shardlog_ok(
        &["topic", "create", topic, "--partitions", "1"],
        as_alice,
        "",
    );
    tls.shardlog_ok(
        &["produce", "--topic", topic],
        as_alice,
        "one\ntwo\nthree\n",
    );
    let read = tls.shardlog_ok(&["consume", "--topic", topic, "--count", "3"], as_alice, "");
    assert_eq!(read, "one\ntwo\nthree\n");
}

#[test]
fn the_cli_produces_and_consumes_over_tls_and_a_plain_cli_is_refused() {
    let tls = Tls::start(false);
    cli_round_trip(&tls, "cli-tls", false);
    // Without --tls-ca the CLI speaks plain TCP to a TLS port: a connection error
    // (exit 2), quickly.
    let started = std::time::Instant::now();
    let output = shardlog(&["topic", "list", "--brokers", &tls.server.brokers()], "");
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // A CA that did not sign the server's certificate: refused, naming TLS, exit 2.
    let keys = tempfile::tempdir().unwrap();
    let other = Ca::new(keys.path(), "other");
    let output = shardlog(
        &[
            "topic",
            "list",
            "--brokers",
            &tls.server.brokers(),
            "--tls-ca",
            &path(&other.pem),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        common::stderr(&output).contains("TLS"),
        "{}",
        describe(&output)
    );
}

#[test]
fn the_cli_presents_its_certificate_when_the_server_requires_one() {
    let tls = Tls::start(true);
    cli_round_trip(&tls, "cli-mtls", true);
    let flags = tls.flags(false);
    let mut args = vec!["topic", "list"];
    args.extend(flags.iter().map(String::as_str));
    let output = shardlog(&args, "");
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

/// `shardlog-bench`, built beside `shardlog`.
fn bench_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_shardlog"))
        .parent()
        .unwrap()
        .join("shardlog-bench");
    assert!(
        bin.exists(),
        "shardlog-bench is not built beside shardlog (cargo build --workspace --bins)"
    );
    bin
}

#[test]
fn the_bench_produces_and_consumes_over_mutual_tls() {
    let tls = Tls::start(true);
    let flags = tls.flags(true);
    for (workload, extra) in [
        ("produce", &["--partitions", "2"][..]),
        ("consume", &["--from", "beginning"][..]),
    ] {
        let output = Command::new(bench_binary())
            .arg(workload)
            .args(&flags)
            .args([
                "--topic",
                "bench-tls",
                "--count",
                "2000",
                "--record-size",
                "256",
            ])
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{workload}: {}", describe(&output));
        assert!(text.contains("records/s"), "{workload}: {text}");
        eprintln!("bench {workload} over mutual TLS:\n{text}");
    }
}

/// kcat over `security.protocol=SSL` to the Kafka listener: produce, then consume.
fn kcat_round_trip(tls: &Tls, topic: &str, mutual: bool) {
    let broker = tls.server.kafka_addr.to_string();
    let ca = format!("ssl.ca.location={}", path(&tls.ca.pem));
    let mut args = vec![
        "-b".to_owned(),
        broker,
        "-X".to_owned(),
        "security.protocol=SSL".to_owned(),
        "-X".to_owned(),
        ca,
    ];
    if mutual {
        args.extend([
            "-X".to_owned(),
            format!("ssl.certificate.location={}", path(&tls.alice.cert)),
            "-X".to_owned(),
            format!("ssl.key.location={}", path(&tls.alice.key)),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut produce = args.clone();
    produce.extend(["-P", "-t", topic]);
    common::kcat::kcat(&produce, "red\ngreen\nblue\n");
    let mut consume = args.clone();
    consume.extend(["-C", "-t", topic, "-o", "beginning", "-e", "-q"]);
    let read = String::from_utf8(common::kcat::kcat(&consume, "").stdout).unwrap();
    assert_eq!(read, "red\ngreen\nblue\n");
}

#[test]
fn kcat_produces_and_consumes_over_tls() {
    let tls = Tls::start(false);
    kcat_round_trip(&tls, "kcat-tls", false);
}

#[test]
fn kcat_produces_and_consumes_over_mutual_tls() {
    let tls = Tls::start(true);
    kcat_round_trip(&tls, "kcat-mtls", true);
}

/// confluent-kafka's producer and consumer over TLS (`kafka_clients/confluent_tls.py`).
fn confluent_round_trip(tls: &Tls, topic: &str, mutual: bool) {
    let mut args = vec![
        script::dir().join("confluent_tls.py").display().to_string(),
        tls.server.kafka_addr.to_string(),
        topic.to_owned(),
        path(&tls.ca.pem),
    ];
    if mutual {
        args.extend([path(&tls.alice.cert), path(&tls.alice.key)]);
    }
    let output = Command::new("timeout")
        .arg("120")
        .arg(script::python())
        .args(&args)
        .current_dir(script::dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("@result "))
        .unwrap_or_else(|| panic!("no @result line in {stdout}"));
    let summary: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!(summary["produced"], 50);
    assert_eq!(summary["consumed"], 50);
    assert_eq!(summary["mutual"], mutual);
}

#[test]
fn confluent_kafka_produces_and_consumes_over_tls_and_mutual_tls() {
    let tls = Tls::start(false);
    confluent_round_trip(&tls, "cf-tls", false);
    let mutual = Tls::start(true);
    confluent_round_trip(&mutual, "cf-mtls", true);
}
