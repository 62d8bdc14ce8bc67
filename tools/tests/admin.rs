//! The admin HTTP listener of a real `shardlogd` (its own port, `--admin-listen
//! 127.0.0.1:0`): `/metrics` passes `promtool check metrics` and its counters move as the
//! shipped `shardlog produce` and `shardlog consume` write and read records; health and
//! readiness answer 200; malformed, oversized, slow and surplus requests get an error
//! status or a closed connection, and the server keeps serving. Each metric moves for its
//! own cause: kcat's requests count under `protocol="kafka"` per api (and not under the
//! shardlog protocol), a group's lag is the high watermark minus what it committed, and
//! the connections gauge follows the client connections held open.
//!
//! `shardlogd` and `shardlog` must be built in the same target directory
//! (`cargo build --workspace`).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Server;
use common::admin::{check_histograms, exchange, get, promtool_check, sample};

fn admin(server: &Server) -> SocketAddr {
    server.shardlogd.admin_addr.expect("the admin line")
}

fn metrics(addr: SocketAddr) -> String {
    let answer = get(addr, "/metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

fn value(page: &str, name: &str, labels: &str) -> f64 {
    sample(page, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in:\n{page}"))
}

/// Scrapes `addr` every 50 ms until `check` of the page holds, for at most 30 s (the
/// server may take a moment to apply a commit or notice a closed connection); the page.
fn metrics_until(addr: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = metrics(addr);
        if check(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "waited 30 s for {what}:\n{page}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_pass_promtool_and_move_as_records_are_produced_and_fetched() {
    let server = Server::start();
    let addr = admin(&server);
    assert_eq!(get(addr, "/v1/health").status, 200);
    assert_eq!(get(addr, "/v1/ready").status, 200);
    server.create("metered", 2);
    let before = metrics(addr);
    let (code, printed) = promtool_check(&before);
    assert_eq!(code, Some(0), "promtool check metrics: {printed}\n{before}");
    let records: String = (0..50).map(|i| format!("record-{i}\n")).collect();
    server.ok(
        &["produce", "--topic", "metered", "--partition", "1"],
        &records,
    );
    let consumed = server.ok(
        &[
            "consume",
            "--topic",
            "metered",
            "--partition",
            "1",
            "--from",
            "beginning",
            "--count",
            "50",
        ],
        "",
    );
    assert_eq!(consumed.lines().count(), 50);
    let after = metrics(addr);
    let (code, printed) = promtool_check(&after);
    assert_eq!(code, Some(0), "promtool check metrics: {printed}\n{after}");
    check_histograms(&after);
    let produce = r#"protocol="shardlog",api="produce""#;
    let fetch = r#"protocol="shardlog",api="fetch""#;
    let moved =
        |name: &str, labels: &str| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(moved("shardlog_records_total", produce), 50.0);
    assert!(moved("shardlog_requests_total", produce) >= 1.0);
    assert!(moved("shardlog_bytes_total", produce) >= 50.0 * 8.0);
    assert!(moved("shardlog_records_total", fetch) >= 50.0);
    assert!(moved("shardlog_requests_total", fetch) >= 1.0);
    assert!(moved("shardlog_produce_latency_seconds_count", "") >= 1.0);
    assert!(moved("shardlog_fetch_latency_seconds_count", "") >= 1.0);
    // --flush always (the default): every acknowledged append was written O_DSYNC.
    assert!(moved("shardlog_durable_write_latency_seconds_count", "") >= 1.0);
    assert!(moved("shardlog_durable_write_latency_seconds_sum", "") > 0.0);
    // 50 records of 8 or 9 bytes went to disk, in batches with their headers.
    assert!(moved("shardlog_disk_used_bytes", "") >= 50.0 * 8.0);
    let partition = r#"topic="metered",partition="1""#;
    assert_eq!(
        value(&after, "shardlog_partition_log_end_offset", partition),
        50.0
    );
    assert_eq!(
        value(&after, "shardlog_partition_high_watermark", partition),
        50.0
    );
    assert_eq!(value(&after, "shardlog_partition_leader", partition), 1.0);
    assert!(value(&after, "shardlog_disk_used_bytes", "") > 0.0);
    assert!(value(&after, "shardlog_disk_free_bytes", "") > 0.0);
    assert_eq!(
        value(&after, "shardlog_under_replicated_partitions", ""),
        0.0
    );
    assert_eq!(value(&after, "shardlog_leaderless_partitions", ""), 0.0);
    let buckets_ok = after
        .lines()
        .any(|l| l.starts_with("shardlog_produce_latency_seconds_bucket{le=\"+Inf\"}"));
    assert!(buckets_ok, "{after}");
}

#[test]
fn bad_requests_get_an_error_or_a_closed_connection_and_the_server_serves_on() {
    let server = Server::start();
    let addr = admin(&server);
    let status = |request: &[u8]| exchange(addr, request).map(|a| a.status);
    assert_eq!(status(b"GET /nowhere HTTP/1.1\r\n\r\n"), Some(404));
    assert_eq!(
        status(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        Some(405)
    );
    assert_eq!(status(b"DELETE /metrics HTTP/1.1\r\n\r\n"), Some(405));
    assert_eq!(
        status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"),
        Some(400)
    );
    assert_eq!(
        status(b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
        Some(400)
    );
    // A head past 8 KiB: 431, or closed (the server may close before we finish writing).
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    assert!(matches!(status(huge.as_bytes()), Some(431) | None));
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
    assert_eq!(status(many.as_bytes()), Some(431));
    // A head that never ends is cut off by the read timeout (5 s), unanswered.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    // Connections past the limit (64) are closed at once; those held stay served.
    let held: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut surplus = TcpStream::connect(addr).unwrap();
    surplus
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = surplus.write_all(b"GET /v1/health HTTP/1.1\r\n\r\n");
    let mut answer = Vec::new();
    let _ = surplus.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(held);
    // Still serving, on every port.
    let deadline = Instant::now() + Duration::from_secs(30);
    while exchange(addr, b"GET /v1/health HTTP/1.1\r\n\r\n").map(|a| a.status) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the admin listener stopped answering"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(addr, "/metrics").status, 200);
    server.create("after-abuse", 1);
    server.ok(&["produce", "--topic", "after-abuse"], "x\n");
}

#[test]
fn kafka_requests_records_and_bytes_count_per_api_under_the_kafka_protocol() {
    let server = Server::start();
    let addr = admin(&server);
    server.create("kafka-metered", 1);
    let broker = server.shardlogd.kafka_addr.to_string();
    let before = metrics(addr);
    let records: String = (0..50).map(|i| format!("value-{i:03}\n")).collect();
    common::kcat::kcat(&["-b", &broker, "-P", "-t", "kafka-metered"], &records);
    let consumed = common::kcat::kcat(
        &[
            "-b",
            &broker,
            "-C",
            "-t",
            "kafka-metered",
            "-o",
            "beginning",
            "-e",
        ],
        "",
    );
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout).lines().count(),
        50
    );
    let after = metrics(addr);
    let (code, printed) = promtool_check(&after);
    assert_eq!(code, Some(0), "promtool check metrics: {printed}\n{after}");
    let moved =
        |name: &str, labels: &str| value(&after, name, labels) - value(&before, name, labels);
    let kafka = |api: &str| format!(r#"protocol="kafka",api="{api}""#);
    let shardlog = |api: &str| format!(r#"protocol="shardlog",api="{api}""#);
    // Produced: 50 records of 9 bytes each, in record batches (61-byte header, and per
    // record at least a length, attributes, deltas and key/value lengths).
    assert_eq!(moved("shardlog_records_total", &kafka("produce")), 50.0);
    assert!(moved("shardlog_requests_total", &kafka("produce")) >= 1.0);
    assert!(moved("shardlog_bytes_total", &kafka("produce")) >= 61.0 + 50.0 * 9.0);
    // Fetched: the offsets the consumer advanced over, once each.
    assert_eq!(moved("shardlog_records_total", &kafka("fetch")), 50.0);
    assert!(moved("shardlog_requests_total", &kafka("fetch")) >= 1.0);
    assert!(moved("shardlog_bytes_total", &kafka("fetch")) >= 61.0 + 50.0 * 9.0);
    // librdkafka asks for api versions and metadata before anything else.
    assert!(moved("shardlog_requests_total", &kafka("other")) >= 2.0);
    assert!(moved("shardlog_requests_total", &kafka("metadata")) >= 2.0);
    // Nothing of it counts under the shardlog protocol.
    for api in ["produce", "fetch", "metadata"] {
        assert_eq!(
            moved("shardlog_requests_total", &shardlog(api)),
            0.0,
            "{api}"
        );
        assert_eq!(
            moved("shardlog_records_total", &shardlog(api)),
            0.0,
            "{api}"
        );
    }
    assert!(moved("shardlog_connections_accepted_total", "") >= 2.0);
    assert!(moved("shardlog_produce_latency_seconds_count", "") >= 1.0);
    assert!(moved("shardlog_fetch_latency_seconds_count", "") >= 1.0);
}

#[test]
fn group_lag_is_the_high_watermark_minus_the_committed_offset() {
    let server = Server::start();
    let addr = admin(&server);
    server.create("lagged", 1);
    let records: String = (0..50).map(|i| format!("record-{i}\n")).collect();
    server.ok(&["produce", "--topic", "lagged"], &records);
    let reset = |to: &str| {
        let args = ["group", "reset-offsets", "lagging", "--topic", "lagged"];
        server.ok(&[&args[..], &["--to", to]].concat(), "");
    };
    let lag = |page: &str| {
        sample(
            page,
            "shardlog_group_lag_records",
            r#"group="lagging",topic="lagged",partition="0""#,
        )
    };
    let page = metrics(addr);
    assert_eq!(lag(&page), None, "no commit yet: no lag sample\n{page}");
    reset("20");
    metrics_until(addr, "lag 30 after a commit at 20", |p| {
        lag(p) == Some(30.0)
    });
    // The log grows: so does the lag of the group that stays behind.
    server.ok(&["produce", "--topic", "lagged"], "one\ntwo\nthree\n");
    metrics_until(addr, "lag 33 after 3 more records", |p| {
        lag(p) == Some(33.0)
    });
    reset("latest");
    let page = metrics_until(addr, "lag 0 at the end", |p| lag(p) == Some(0.0));
    let (code, printed) = promtool_check(&page);
    assert_eq!(code, Some(0), "promtool check metrics: {printed}\n{page}");
}

#[test]
fn the_connections_gauge_follows_the_client_connections_held_open() {
    let server = Server::start();
    let addr = admin(&server);
    let connections = |page: &str| value(page, "shardlog_connections", "");
    let accepted = |page: &str| value(page, "shardlog_connections_accepted_total", "");
    let before = metrics(addr);
    let base = connections(&before);
    // Two on the shardlog listener, one on the Kafka listener (admin ones do not count).
    let held: Vec<TcpStream> = [
        server.shardlogd.addr,
        server.shardlogd.addr,
        server.shardlogd.kafka_addr,
    ]
    .iter()
    .map(|a| TcpStream::connect(a).unwrap())
    .collect();
    let page = metrics_until(addr, "3 more connections", |p| connections(p) == base + 3.0);
    assert!(accepted(&page) - accepted(&before) >= 3.0, "{page}");
    drop(held);
    metrics_until(addr, "the connections closed", |p| connections(p) == base);
}
