//! End-to-end tests of the online `shardlog` commands (topic, produce, consume, cluster)
//! against a real `shardlogd` child process (`shardlog_net::testing::Shardlogd`, on
//! 127.0.0.1 with an ephemeral port). Data directories live under `SHARDLOG_TEST_DIR`
//! (default `<repo>/target/shardlog-test`): O_DIRECT needs a real filesystem, not tmpfs.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`,
//! which `cargo nextest run --workspace` does) or named by `SHARDLOGD_BIN`.
#![cfg(test)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{Server, describe, shardlog};

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// `partition<TAB>offset` lines of `--report-offsets`.
fn reported(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .map(|line| {
            let (p, o) = line.split_once('\t').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}

#[test]
fn topic_create_list_describe_delete() {
    let server = Server::start();
    server.ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--segment-bytes",
            "1048576",
            "--retention-ms",
            "86400000",
        ],
        "",
    );
    server.create("audit", 1);

    let again = server.run(&["topic", "create", "orders", "--partitions", "3"], "");
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("TopicExists"),
        "{}",
        describe(&again)
    );
    server.ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--if-not-exists",
        ],
        "",
    );

    assert_eq!(
        lines(&server.ok(&["topic", "list"], "")),
        ["audit", "orders"]
    );

    server.ok(
        &["produce", "--topic", "orders", "--partition", "1"],
        "a\nb\n",
    );
    check_describe(&server);

    server.ok(&["topic", "delete", "orders"], "");
    assert_eq!(lines(&server.ok(&["topic", "list"], "")), ["audit"]);
    for args in [
        &["topic", "describe", "orders"][..],
        &["topic", "delete", "orders"],
    ] {
        let gone = server.run(args, "");
        assert_eq!(gone.status.code(), Some(1), "{args:?}: {}", describe(&gone));
        assert!(String::from_utf8_lossy(&gone.stderr).contains("UnknownTopic"));
    }
    server.ok(&["topic", "delete", "orders", "--if-exists"], "");

    let bad_name = server.run(&["topic", "create", "a/b", "--partitions", "1"], "");
    assert_eq!(bad_name.status.code(), Some(2), "{}", describe(&bad_name));
}

/// `topic describe orders` after two records went to partition 1 of its 3.
fn check_describe(server: &Server) {
    let described = server.ok(&["topic", "describe", "orders"], "");
    let rows = lines(&described);
    assert_eq!(rows.len(), 5, "{described}");
    assert!(rows[0].contains("orders") && rows[0].contains("3 partitions"));
    assert_eq!(
        rows[1],
        "partition\tleader\tepoch\treplicas\tisr\tlog_start\thigh_watermark"
    );
    for (partition, row) in rows[2..].iter().enumerate() {
        let fields: Vec<&str> = row.split('\t').collect();
        assert_eq!(fields.len(), 7, "{row}");
        assert_eq!(fields[0], partition.to_string());
        assert_eq!(fields[3].split(',').count(), 1, "one replica: {row}");
        assert_eq!(fields[5], "0", "log start: {row}");
        let high_watermark = if partition == 1 { "2" } else { "0" };
        assert_eq!(fields[6], high_watermark, "{row}");
    }
}

#[test]
fn topic_create_min_insync_and_server_default_replication() {
    let server = Server::start();
    // No --replication-factor: the server picks (1 on a node without peers), and the
    // line reports what the metadata shows.
    let created = server.ok(
        &[
            "topic",
            "create",
            "safe",
            "--partitions",
            "2",
            "--min-insync",
            "1",
        ],
        "",
    );
    assert_eq!(
        created,
        "created topic safe (2 partitions, replication factor 1, min insync 1)\n"
    );
    let described = server.ok(&["topic", "describe", "safe"], "");
    assert_eq!(
        lines(&described)[0],
        "topic safe: 2 partitions, replication factor 1",
        "{described}"
    );

    for (args, why) in [
        (
            &["--min-insync", "2", "--replication-factor", "1"][..],
            "more than --replication-factor",
        ),
        (&["--min-insync", "0"], "--min-insync"),
        (&["--replication-factor", "0"], "--replication-factor"),
    ] {
        let mut full = vec!["topic", "create", "other", "--partitions", "1"];
        full.extend(args);
        let output = server.run(&full, "");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(why),
            "{args:?}: {}",
            describe(&output)
        );
    }
    assert_eq!(lines(&server.ok(&["topic", "list"], "")), ["safe"]);
}

#[test]
fn cluster_status_on_one_node() {
    let server = Server::start();
    let status = server.ok(&["cluster", "status"], "");
    let rows = lines(&status);
    assert_eq!(rows.len(), 3, "{status}");
    // A node without peers has no controller today; cluster mode may name itself.
    assert!(
        ["controller: none", "controller: 0"].contains(&rows[0]),
        "{status}"
    );
    assert_eq!(rows[1], "node\taddress\tlive\treplicas\tleaders\tstate");
    assert_eq!(
        rows[2],
        format!("0\t{}\tyes\t0\t0\tserving", server.brokers())
    );
}

#[test]
fn produce_reports_offsets_in_order_and_consume_reads_them_back() {
    let server = Server::start();
    server.create("events", 1);
    let input: String = (0..250).map(|i| format!("value-{i}\n")).collect();
    let out = server.ok(
        &[
            "produce",
            "--topic",
            "events",
            "--report-offsets",
            "--batch-records",
            "16",
            "--inflight",
            "4",
        ],
        &input,
    );
    let expected: Vec<(u32, u64)> = (0..250).map(|i| (0, i)).collect();
    assert_eq!(reported(&out), expected);

    let all = server.ok(&["consume", "--topic", "events", "--from", "beginning"], "");
    assert_eq!(all, input);
    let tail = server.ok(&["consume", "--topic", "events", "--from", "245"], "");
    assert_eq!(
        lines(&tail),
        [
            "value-245",
            "value-246",
            "value-247",
            "value-248",
            "value-249"
        ]
    );
    let counted = server.ok(
        &[
            "consume", "--topic", "events", "--from", "10", "--count", "3",
        ],
        "",
    );
    assert_eq!(lines(&counted), ["value-10", "value-11", "value-12"]);
    let at_end = server.ok(&["consume", "--topic", "events", "--from", "end"], "");
    assert_eq!(at_end, "");

    let full = server.ok(
        &[
            "consume", "--topic", "events", "--from", "7", "--count", "1", "--format", "full",
        ],
        "",
    );
    let fields: Vec<&str> = full.trim_end_matches('\n').split('\t').collect();
    assert_eq!(fields.len(), 5, "{full}");
    assert_eq!(
        (fields[0], fields[1], fields[3], fields[4]),
        ("0", "7", "", "value-7")
    );
    assert!(
        fields[2].parse::<i64>().unwrap() > 1_600_000_000_000,
        "{full}"
    );
}

#[test]
fn keyed_records_of_one_key_share_a_partition() {
    let server = Server::start();
    server.create("keyed", 4);
    let keys = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
    let input: String = (0..300)
        .map(|i| format!("{}\tv{i}\n", keys[i % keys.len()]))
        .collect();
    let out = server.ok(
        &[
            "produce",
            "--topic",
            "keyed",
            "--keyed",
            "--report-offsets",
            "--batch-records",
            "7",
        ],
        &input,
    );
    let offsets = reported(&out);
    assert_eq!(offsets.len(), 300);
    let mut partition_of_key = BTreeMap::new();
    let mut next_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut expected_values: BTreeMap<(u32, u64), String> = BTreeMap::new();
    for (i, &(partition, offset)) in offsets.iter().enumerate() {
        let key = keys[i % keys.len()];
        assert_eq!(*partition_of_key.entry(key).or_insert(partition), partition);
        // One producer, in order: each partition's offsets run 0, 1, 2, ... in input order.
        let next = next_offset.entry(partition).or_insert(0);
        assert_eq!(offset, *next, "line {i}");
        *next += 1;
        expected_values.insert((partition, offset), format!("{key}\tv{i}"));
    }
    assert!(
        partition_of_key.values().collect::<BTreeSet<_>>().len() > 1,
        "six keys all hashed to one partition: {partition_of_key:?}"
    );

    let full = server.ok(&["consume", "--topic", "keyed", "--format", "full"], "");
    let mut seen = BTreeMap::new();
    for line in full.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let at = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
        seen.insert(at, format!("{}\t{}", fields[3], fields[4]));
    }
    assert_eq!(seen, expected_values);

    // A line without a TAB fails alone: exit 1, no offset for it, the others reported.
    let output = server.run(
        &["produce", "--topic", "keyed", "--keyed", "--report-offsets"],
        "alpha\tx\nno-tab-here\nbeta\ty\n",
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(reported(&String::from_utf8_lossy(&output.stdout)).len(), 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 2"));
}

#[test]
fn consume_follow_receives_records_produced_later() {
    let server = Server::start();
    server.create("live", 2);
    server.ok(
        &["produce", "--topic", "live", "--partition", "0"],
        "old-0\nold-1\n",
    );

    // From offset 2 of partition 0 (its end now): only records produced after this start.
    let brokers = server.brokers();
    let follower = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["consume", "--brokers", &brokers, "--topic", "live"])
        .args([
            "--partition",
            "0",
            "--from",
            "2",
            "--follow",
            "--count",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    server.ok(
        &["produce", "--topic", "live", "--partition", "0"],
        "new-0\n",
    );
    server.ok(
        &["produce", "--topic", "live", "--partition", "0"],
        "new-1\nnew-2\n",
    );
    let output = follower.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "new-0\nnew-1\nnew-2\n"
    );

    // All partitions, from the end, until SIGTERM.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["consume", "--brokers", &brokers, "--topic", "live"])
        .args(["--from", "end", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let first = produce_until_seen(&server, &mut follower);
    assert!(first.starts_with("tick-"), "{first}");
    terminate(&follower);
    let status = follower.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Produces a record to every partition now and then until the follower prints a line
/// (it may start after the first ones: `--from end` is read when it starts). Bounded so a
/// broken follower fails instead of hanging.
fn produce_until_seen(server: &Server, follower: &mut Child) -> String {
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
    });
    for i in 0..600 {
        for partition in ["0", "1"] {
            server.ok(
                &["produce", "--topic", "live", "--partition", partition],
                &format!("tick-{i}\n"),
            );
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            return line;
        }
    }
    panic!("the follower printed nothing");
}

fn terminate(child: &Child) {
    let pid = i32::try_from(child.id()).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn unknown_topic_fails_with_exit_code_1() {
    let server = Server::start();
    for args in [
        &["produce", "--topic", "nope"][..],
        &["consume", "--topic", "nope"],
        &["topic", "describe", "nope"],
    ] {
        let output = server.run(args, "x\n");
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("nope") && stderr.contains("UnknownTopic"),
            "{args:?}: {stderr}"
        );
    }
    server.create("small", 2);
    let output = server.run(&["consume", "--topic", "small", "--partition", "5"], "");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
}

#[test]
fn usage_and_connection_errors_exit_2() {
    // Port 1 on localhost: nothing listens there.
    for brokers in ["127.0.0.1:1", "not-an-address"] {
        let output = shardlog(&["topic", "list", "--brokers", brokers], "");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{brokers}: {}",
            describe(&output)
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
    }
    let output = shardlog(
        &[
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--acks",
            "none",
            "--report-offsets",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let output = shardlog(
        &[
            "consume",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--from",
            "later",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

/// A field of a `--format json` line: text, base64 in `<name>_b64`, or null.
fn json_bytes(object: &serde_json::Value, name: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if let Some(b64) = object.get(format!("{name}_b64")).and_then(|v| v.as_str()) {
        return Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        );
    }
    object[name].as_str().map(|text| text.as_bytes().to_vec())
}

#[test]
fn consume_format_json_gives_back_newlines_tabs_binary_and_headers() {
    type Headers = Vec<(Vec<u8>, Option<Vec<u8>>)>;
    /// Key, value, headers.
    type Sent = (Option<Vec<u8>>, Option<Vec<u8>>, Headers);
    let server = Server::start();
    server.create("raw", 1);
    let sent: Vec<Sent> = vec![
        (
            Some(b"k\t1".to_vec()),
            Some(b"two\nlines\tand a tab".to_vec()),
            vec![],
        ),
        (
            None,
            Some(vec![0xff, 0x00, b'\n', 0xfe]),
            vec![(b"h".to_vec(), Some(b"x\ny".to_vec()))],
        ),
        (Some(vec![0xc3]), None, vec![(vec![0x80], None)]),
        (Some(Vec::new()), Some(Vec::new()), vec![]),
    ];
    let (brokers, batch) = (server.brokers(), sent.clone());
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let client = shardlog_net::client::Client::connect(&brokers, Default::default())
                .await
                .unwrap();
            let mut builder = shardlog_engine::record::BatchBuilder::new();
            for (key, value, headers) in &batch {
                let headers: Vec<(&[u8], Option<&[u8]>)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_deref()))
                    .collect();
                builder.push(
                    shardlog_engine::TimestampMs(1_700_000_000_000),
                    key.as_deref(),
                    value.as_deref(),
                    &headers,
                );
            }
            let bytes = bytes::Bytes::from(builder.finish());
            let acks = shardlog_net::api::Acks::All;
            client.produce("raw", 0, acks, bytes).await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();

    let out = server.ok(&["consume", "--topic", "raw", "--format", "json"], "");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), sent.len(), "{out}");
    for (offset, (line, (key, value, headers))) in lines.iter().zip(&sent).enumerate() {
        assert_eq!(line["partition"], 0, "{line}");
        assert_eq!(line["offset"], offset, "{line}");
        assert_eq!(line["timestamp"], 1_700_000_000_000_i64, "{line}");
        assert_eq!(&json_bytes(line, "key"), key, "{line}");
        assert_eq!(&json_bytes(line, "value"), value, "{line}");
        let got: Headers = line["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (json_bytes(h, "key").unwrap(), json_bytes(h, "value")))
            .collect();
        assert_eq!(&got, headers, "{line}");
    }
}

#[test]
fn a_closed_stdout_ends_every_online_command_quietly() {
    let server = Server::start();
    server.create("piped", 2);
    let input: String = (0..2000).map(|i| format!("value-{i}\n")).collect();
    server.ok(&["produce", "--topic", "piped"], &input);
    let brokers = server.brokers();
    for args in [
        &["topic", "list"][..],
        &["topic", "describe", "piped"],
        &["cluster", "status"],
        &["consume", "--topic", "piped"],
        &["consume", "--topic", "piped", "--format", "json"],
        &["consume", "--topic", "piped", "--from", "end", "--follow"],
        &["produce", "--topic", "piped", "--report-offsets"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(args)
            .args(["--brokers", &brokers])
            .stdin(Stdio::piped())
            .stdout(Stdio::from(common::closed_pipe()))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let text = input.clone();
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, text.as_bytes());
        });
        if args.contains(&"--follow") {
            // A follower learns stdout is gone from its first write: give it records
            // until it has seen one (it reads `--from end` when it starts).
            for _ in 0..600 {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                server.ok(&["produce", "--topic", "piped"], "one\n");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            describe(&output)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "",
            "{args:?}: nothing to report"
        );
    }
}

#[test]
fn one_node_refuses_min_insync_above_its_replication_factor_like_a_cluster() {
    let server = Server::start();
    let output = server.run(
        &[
            "topic",
            "create",
            "strict",
            "--partitions",
            "1",
            "--min-insync",
            "5",
        ],
        "",
    );
    // Refused by the server (exit 1), in the words a cluster uses.
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("InvalidRequest")
            && stderr.contains("min_insync 5: 1 to the replication factor 1"),
        "{stderr}"
    );
    assert_eq!(server.ok(&["topic", "list"], ""), "");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    use shardlog_net::testing::{Launch, LogTail, Shardlogd, StderrTo};
    let dir = common::test_dir("tools-colour-");
    let tail = LogTail::new(1000);
    let shardlogd = Shardlogd::launch(&Launch {
        data_dir: dir.path(),
        listen: "127.0.0.1:0",
        args: &["--shards", "1"],
        stderr: StderrTo::Tail(tail.clone()),
    })
    .unwrap();
    let brokers = shardlogd.brokers();
    common::ok_against(
        &brokers,
        &["topic", "create", "plain", "--partitions", "1"],
        "",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !tail.lines().iter().any(|l| l.contains("topic created")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", tail.lines());
        std::thread::sleep(Duration::from_millis(20));
    }
    for line in tail.lines() {
        assert!(!line.contains('\u{1b}'), "shardlogd: {line:?}");
    }

    let output = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["topic", "list", "--brokers", &brokers])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TRACE"), "no log lines to check: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "shardlog: {stderr:?}");
}

#[test]
fn an_offset_past_the_end_starts_at_the_end_with_and_without_follow() {
    let server = Server::start();
    server.create("short", 1);
    server.ok(&["produce", "--topic", "short"], "a\nb\nc\nd\ne\n");

    let output = server.run(&["consume", "--topic", "short", "--from", "99"], "");
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    let note = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        note.contains("offset 99 is outside [0, 5]") && note.contains("starting at the end"),
        "{note}"
    );

    // The same position with --follow: the next record to arrive, not an error.
    let brokers = server.brokers();
    let follower = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["consume", "--brokers", &brokers, "--topic", "short"])
        .args([
            "--from", "99", "--follow", "--count", "1", "--format", "full",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It may start after a record: produce until it has printed one and exited.
    let output = produce_until_exit(&server, follower, "short", "later\n");
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    let fields: Vec<&str> = printed.trim_end().split('\t').collect();
    // At the end when it started: offset 5, or later if a "later" landed before it did.
    let offset: u64 = fields[1].parse().unwrap();
    assert_eq!((fields[0], fields[4]), ("0", "later"), "{printed}");
    assert!(offset >= 5, "{printed}");
}

/// Produces `line` to `topic` every 100 ms until `child` exits (at most a minute); its
/// output.
fn produce_until_exit(server: &Server, child: Child, topic: &str, line: &str) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    for _ in 0..600 {
        server.ok(&["produce", "--topic", topic], line);
        if let Ok(output) = rx.recv_timeout(Duration::from_millis(100)) {
            return output.unwrap();
        }
    }
    panic!("the child never exited");
}

/// A port nothing listens on (free when asked).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_follower_waits_out_brokers_that_do_not_answer() {
    use shardlog_net::testing::{Launch, Shardlogd, StderrTo};
    // A data directory holding the topic, served later on a port nobody answers yet.
    let dir = common::test_dir("tools-outage-");
    {
        let first = Server::start_on(dir.path());
        let create = ["topic", "create", "later", "--partitions", "1"];
        common::ok_against(&first.brokers(), &create, "");
    }
    let brokers = format!("127.0.0.1:{}", free_port());
    let follower = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["consume", "--brokers", &brokers, "--topic", "later"])
        .args(["--from", "beginning", "--follow", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(follower.wait_with_output());
    });
    // Past the client's own retries (5.5 s), it is still waiting.
    assert!(
        rx.recv_timeout(Duration::from_secs(7)).is_err(),
        "the follower gave up while no broker answered"
    );
    let server = Shardlogd::launch(&Launch {
        data_dir: dir.path(),
        listen: &brokers,
        args: &["--shards", "1"],
        stderr: StderrTo::Echo,
    })
    .unwrap();
    common::ok_against(
        &server.brokers(),
        &["produce", "--topic", "later"],
        "hello\n",
    );
    let output = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no broker answers") && stderr.contains("answer again"),
        "{stderr}"
    );

    // A signal ends a follower that is waiting for brokers, with exit 0.
    let dead = format!("127.0.0.1:{}", free_port());
    let waiting = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args([
            "consume",
            "--brokers",
            &dead,
            "--topic",
            "later",
            "--follow",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    terminate(&waiting);
    let started = std::time::Instant::now();
    let output = waiting.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_record_over_the_batch_limit_is_refused_as_too_large_naming_the_limit() {
    let server = Server::start();
    server.create("big", 1);
    // Client side: the line fails alone, before anything is sent.
    let input = format!("small\n{}\nafter\n", "x".repeat(17 << 20));
    let output = server.run(&["produce", "--topic", "big", "--report-offsets"], &input);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "0\t0\n0\t1\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2: record too large") && stderr.contains("16 MiB (16777216 bytes)"),
        "{stderr}"
    );
    assert!(!stderr.contains("CorruptBatch"), "{stderr}");

    // Two records that fit alone but not together go in two batches.
    let input = format!(
        "{}\n{}\n",
        "a".repeat(900 << 10),
        "b".repeat((16 << 20) - 1024)
    );
    let offsets = server.ok(&["produce", "--topic", "big", "--report-offsets"], &input);
    assert_eq!(offsets, "0\t2\n0\t3\n");

    // Server side: a batch over the limit sent anyway is refused as too large.
    let brokers = server.brokers();
    let refused = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let client = shardlog_net::client::Client::connect(&brokers, Default::default())
                .await
                .unwrap();
            let mut builder = shardlog_engine::record::BatchBuilder::new();
            let value = vec![b'z'; 17 << 20];
            builder.push(shardlog_engine::TimestampMs(1), None, Some(&value), &[]);
            let bytes = bytes::Bytes::from(builder.finish());
            let acks = shardlog_net::api::Acks::All;
            client.produce("big", 0, acks, bytes).await.unwrap_err()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        refused.code(),
        Some(shardlog_net::ErrorCode::RequestTooLarge),
        "{refused}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("too large") && message.contains("16 MiB (16777216 bytes)"),
        "{message}"
    );
}
