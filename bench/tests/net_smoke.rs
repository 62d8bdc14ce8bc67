//! `shardlog-bench produce | consume | e2e` against a real `shardlogd` child process
//! (`shardlog_net::testing::Shardlogd` on 127.0.0.1, ephemeral port): small counted runs
//! exit 0, print the table, and write a JSON report with exactly the records asked for and
//! an SVG plot. A failed run exits 1. No timing is asserted.
//!
//! The per-second timeline: each side's `timeline` in the JSON adds up to the side's
//! totals (counted runs have no warm-up, so every request is measured), its seconds are
//! consecutive from 0, and both SVGs (the percentile plot and the timeline beside it)
//! parse as XML with a real parser.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`,
//! which `cargo nextest run --workspace` does) or named by `SHARDLOGD_BIN`. Data lives
//! under `SHARDLOG_TEST_DIR` (default `<repo>/target/shardlog-test`): O_DIRECT needs a real
//! filesystem, not tmpfs.

use std::path::Path;
use std::process::{Command, Output};

use shardlog_net::testing::{Shardlogd, test_root};

/// A running server and its data directory (removed after the server, when dropped).
struct Server {
    shardlogd: Shardlogd,
    _dir: tempfile::TempDir,
}

fn start_server() -> Server {
    let dir = tempfile::Builder::new()
        .prefix("bench-net-")
        .tempdir_in(test_root().expect("test dir"))
        .expect("temp dir");
    let shardlogd = Shardlogd::start(dir.path(), &["--shards", "2"]).expect("start shardlogd");
    Server {
        shardlogd,
        _dir: dir,
    }
}

fn bench(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(args)
        .args(["--brokers", &server.shardlogd.brokers()])
        .output()
        .expect("run shardlog-bench")
}

/// Runs a workload that must succeed; returns its stdout and parsed JSON report.
fn run_ok(server: &Server, dir: &Path, name: &str, args: &[&str]) -> (String, serde_json::Value) {
    let json = dir.join(format!("{name}.json"));
    let plot = dir.join(format!("{name}.svg"));
    let mut full = args.to_vec();
    full.extend([
        "--json",
        json.to_str().expect("utf-8 path"),
        "--plot",
        plot.to_str().expect("utf-8 path"),
    ]);
    let out = bench(server, &full);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{full:?}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for column in [
        "records/s",
        "MiB/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
    ] {
        assert!(stdout.contains(column), "{column} missing from:\n{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json report")).expect("valid json");
    assert_eq!(report["workload"], name.split('-').next().expect("name"));
    assert!(report["command"].as_array().is_some_and(|c| !c.is_empty()));
    let svg = std::fs::read_to_string(&plot).expect("svg plot");
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    assert!(svg.contains("99.9%"), "percentile axis labels missing");
    assert_svg(&svg);
    let timeline = std::fs::read_to_string(dir.join(format!("{name}.timeline.svg")))
        .expect("timeline svg beside the plot");
    assert_svg(&timeline);
    for label in ["records/s", "latency (ms)", "seconds from the start"] {
        assert!(
            timeline.contains(label),
            "{label} missing from the timeline"
        );
    }
    for side in ["produce", "consume"] {
        if !report[side].is_null() && report["config"]["warmup_s"] == 0.0 {
            assert_timeline_adds_up(&report[side]);
        }
    }
    (stdout, report)
}

/// Parses `svg` as XML (a real parser): its root is an `svg` element with children.
fn assert_svg(svg: &str) {
    let document = roxmltree::Document::parse(svg)
        .unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{svg}"));
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert!(root.children().any(|n| n.is_element()), "an empty svg");
}

/// The side's per-second series: consecutive seconds from 0, each with p50 <= p99 where
/// it has requests, adding up to the side's totals.
fn assert_timeline_adds_up(side: &serde_json::Value) {
    let timeline = side["timeline"].as_array().expect("timeline array");
    assert!(!timeline.is_empty(), "{side}");
    let sum = |key: &str| -> u64 { timeline.iter().map(|s| s[key].as_u64().expect(key)).sum() };
    assert_eq!(
        sum("records"),
        side["records"].as_u64().expect("records"),
        "{side}"
    );
    assert_eq!(
        sum("requests"),
        side["requests"].as_u64().expect("requests"),
        "{side}"
    );
    assert_eq!(
        sum("bytes"),
        side["bytes"].as_u64().expect("bytes"),
        "{side}"
    );
    assert_eq!(sum("errors"), 0);
    assert_eq!(side["errors"], 0);
    for (i, second) in timeline.iter().enumerate() {
        assert_eq!(second["second"], i as u64, "{second}");
        let span = second["span_s"].as_f64().expect("span_s");
        assert!(span > 0.0 && span <= 1.0, "{second}");
        if i + 1 < timeline.len() {
            assert_eq!(span, 1.0, "only the last second is partial: {second}");
        }
        if second["requests"].as_u64().expect("requests") > 0 {
            let (p50, p99) = (second["p50_us"].as_u64(), second["p99_us"].as_u64());
            assert!(p50.is_some_and(|p| p > 0) && p50 <= p99, "{second}");
        } else {
            assert!(second["p99_us"].is_null(), "{second}");
        }
    }
}

fn assert_latency(latency: &serde_json::Value, count: u64) {
    assert_eq!(latency["count"], count, "{latency}");
    for key in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        assert!(
            latency[key].as_u64().is_some_and(|v| v > 0),
            "{key}: {latency}"
        );
    }
}

#[test]
fn produce_then_consume_then_e2e() {
    let server = start_server();
    let dir = tempfile::tempdir_in(test_root().expect("test dir")).expect("temp dir");
    produce_runs(&server, dir.path());
    produce_seconds_run(&server, dir.path());
    consume_run(&server, dir.path());
    e2e_run(&server, dir.path());
}

/// 2000 records closed loop creating the topic, then 500 more open loop.
fn produce_runs(server: &Server, dir: &Path) {
    let (stdout, report) = run_ok(
        server,
        dir,
        "produce",
        &[
            "produce",
            "--topic",
            "smoke",
            "--partitions",
            "3",
            "--count",
            "2000",
            "--batch-records",
            "10",
            "--record-size",
            "100",
            "--producers",
            "3",
            "--threads",
            "2",
            "--inflight",
            "4",
            "--acks",
            "leader",
        ],
    );
    assert!(stdout.contains("produce"), "{stdout}");
    assert_eq!(report["config"]["partitions"], 3);
    assert_eq!(report["config"]["acks"], "leader");
    assert_eq!(report["config"]["load"], "closed");
    let produce = &report["produce"];
    assert_eq!(produce["records"], 2000);
    assert_eq!(produce["requests"], 200);
    assert_eq!(
        produce["bytes"].as_u64(),
        report["config"]["batch_bytes"].as_u64().map(|b| b * 200)
    );
    assert_latency(&produce["latency_us"], 200);
    assert!(report["consume"].is_null());

    // The topic exists now: a second produce is fine (open loop this time).
    let (_, report) = run_ok(
        server,
        dir,
        "produce-again",
        &[
            "produce",
            "--topic",
            "smoke",
            "--count",
            "500",
            "--batch-records",
            "10",
            "--record-size",
            "100",
            "--rate",
            "20000",
        ],
    );
    assert_eq!(report["config"]["load"], "open");
    assert_eq!(report["send_lag_us"]["count"], 50);
    assert_eq!(report["config"]["partitions"], 3);
    assert_eq!(report["produce"]["records"], 500);
}

/// A few seconds, open loop, no warm-up: a timeline of several seconds (its own topic: the
/// consumers of `consume_run` read all of "smoke").
fn produce_seconds_run(server: &Server, dir: &Path) {
    let (_, report) = run_ok(
        server,
        dir,
        "produce-seconds",
        &[
            "produce",
            "--topic",
            "seconds",
            "--duration",
            "2.5",
            "--warmup",
            "0",
            "--batch-records",
            "10",
            "--record-size",
            "100",
            "--rate",
            "5000",
        ],
    );
    let seconds = report["produce"]["timeline"]
        .as_array()
        .expect("timeline")
        .len();
    assert!(seconds >= 3, "{seconds} seconds in a 2.5 s run: {report}");
}

/// Everything produced, from the beginning, by two consumers.
fn consume_run(server: &Server, dir: &Path) {
    let (_, report) = run_ok(
        server,
        dir,
        "consume",
        &[
            "consume",
            "--topic",
            "smoke",
            "--from",
            "beginning",
            "--count",
            "2500",
            "--consumers",
            "2",
        ],
    );
    let consume = &report["consume"];
    assert_eq!(consume["records"], 2500);
    assert!(consume["bytes"].as_u64().is_some_and(|b| b >= 2500 * 100));
    assert!(report["produce"].is_null());
}

/// Open-loop e2e on a fresh topic: every record read once, each with its latency.
fn e2e_run(server: &Server, dir: &Path) {
    let (stdout, report) = run_ok(
        server,
        dir,
        "e2e",
        &[
            "e2e",
            "--topic",
            "smoke-e2e",
            "--partitions",
            "2",
            "--count",
            "1000",
            "--batch-records",
            "10",
            "--record-size",
            "64",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--rate",
            "10000",
        ],
    );
    assert!(stdout.contains("e2e"), "{stdout}");
    assert_eq!(report["produce"]["records"], 1000);
    assert_eq!(report["consume"]["records"], 1000);
    assert_eq!(report["e2e_missing_records"], 0);
    assert_latency(&report["e2e_latency_us"], 1000);
}

#[test]
fn failures_exit_1() {
    let server = start_server();
    let out = bench(
        &server,
        &["consume", "--topic", "no-such-topic", "--count", "10"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bench(
        &server,
        &[
            "e2e",
            "--topic",
            "tiny",
            "--count",
            "10",
            "--record-size",
            "4",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("record-size"));
}

/// `shardlog-bench ARGS...` with `SHARDLOG_BROKERS=brokers` and no `--brokers`.
fn bench_with_env(brokers: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(args)
        .env("SHARDLOG_BROKERS", brokers)
        .output()
        .expect("run shardlog-bench")
}

#[test]
fn brokers_come_from_the_environment_and_refusing_ones_fail_at_once() {
    let server = start_server();
    let dir = tempfile::tempdir_in(test_root().expect("test dir")).expect("temp dir");
    let json = dir.path().join("env.json");
    let out = bench_with_env(
        &server.shardlogd.brokers(),
        &[
            "produce",
            "--topic",
            "env",
            "--count",
            "100",
            "--batch-records",
            "10",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json report")).expect("json");
    assert_eq!(report["produce"]["records"], 100);

    let started = std::time::Instant::now();
    let out = bench_with_env(
        "127.0.0.1:1,127.0.0.1:2",
        &["consume", "--topic", "env", "--count", "1"],
    );
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for named in [
        "127.0.0.1:1",
        "127.0.0.1:2",
        "SHARDLOG_BROKERS",
        "--brokers",
    ] {
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "refused connections took {elapsed:?} to fail"
    );
}

#[test]
fn consume_of_a_finite_topic_reports_what_it_read_or_fails() {
    let server = start_server();
    let dir = tempfile::tempdir_in(test_root().expect("test dir")).expect("temp dir");
    let produced = bench(
        &server,
        &[
            "produce",
            "--topic",
            "finite",
            "--partitions",
            "2",
            "--count",
            "500",
            "--batch-records",
            "10",
        ],
    );
    assert_eq!(produced.status.code(), Some(0));
    // Nothing is written meanwhile: every record is read at once, and counted.
    let (_, report) = run_ok(
        &server,
        dir.path(),
        "consume-duration",
        &["consume", "--topic", "finite", "--duration", "2"],
    );
    assert_eq!(report["consume"]["records"], 500);
    assert_eq!(report["config"]["warmup_s"], 0.0);

    // A warm-up that swallows everything measures nothing: a failure that says so.
    let out = bench(
        &server,
        &[
            "consume",
            "--topic",
            "finite",
            "--duration",
            "2",
            "--warmup",
            "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nothing measured") && stderr.contains("500 records"),
        "{stderr}"
    );
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let server = start_server();
    let out = bench(
        &server,
        &[
            "produce",
            "--topic",
            "plain",
            "--count",
            "10",
            "--batch-records",
            "10",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("created the topic"),
        "no log line to check: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
