//! The real-client compatibility suite: unmodified Kafka clients against a real
//! `shardlogd` (one node, and a 3-node cluster) through `--kafka-listen`. The client
//! side is Python scripts in `kafka_clients/` (confluent-kafka, kafka-python, aiokafka,
//! and kcat driven from Python) that check what they see and print a JSON summary, which
//! these tests check again; a script asks the test to SIGKILL and restart nodes.
//!
//! The clients are installed on first use, idempotently (`kafka_clients/setup.sh`:
//! Debian's kcat, a virtualenv under `target/kafka-clients` with the PyPI packages).
//! When the package registries cannot be reached the tests fail, naming the install
//! that failed: they never pass without their clients.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`)
//! or named by `SHARDLOGD_BIN`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "common/admin.rs"]
mod admin;
#[path = "kafka_clients/nodes.rs"]
mod nodes;
#[path = "kafka_clients/script.rs"]
mod script;

use std::time::Duration;

use nodes::Nodes;
use script::python_script;

/// A consumer group member's session timeout: short, so that a dead member's partitions
/// move on within seconds.
const SESSION_MS: &str = "6000";
/// How long one script may run (its own waits are shorter).
const SCRIPT_MAX: Duration = Duration::from_secs(200);

/// One record at a time to each of two partitions in turn: the producer's connection
/// moves to each partition's shard (3 or 4 moves over 4 turns: the first may find it
/// there), and nothing is lost or reordered.
#[test]
fn confluent_kafka_producing_one_at_a_time_moves_to_each_partitions_shard() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(&mut nodes, "confluent_moving.py", &[&bootstrap], SCRIPT_MAX);
    eprintln!("summary: {summary}");
    assert_eq!(summary["partition 0"], 80);
    assert_eq!(summary["partition 1"], 80);
    let page = admin::get(nodes.admin(0), "/metrics").body;
    let moved = admin::sample(&page, "shardlog_connections_moved_total", "").unwrap();
    assert!((3.0..=4.0).contains(&moved), "{moved} moves");
}

#[test]
fn confluent_kafka_admin_idempotent_keyed_headers_and_every_codec() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(
        &mut nodes,
        "confluent_produce.py",
        &[&bootstrap],
        SCRIPT_MAX,
    );
    eprintln!("summary: {summary}");
    assert_eq!(summary["idempotent"]["records"], 400);
    assert_eq!(summary["idempotent"]["partitions_used"], 4);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        assert_eq!(summary["codecs"][codec], 60, "{codec}");
    }
}

#[test]
fn confluent_kafka_group_splits_rebalances_takes_over_and_commits_survive_a_broker_sigkill() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let args = [bootstrap.as_str(), SESSION_MS, "range,roundrobin"];
    let summary = python_script(&mut nodes, "confluent_group.py", &args, SCRIPT_MAX);
    eprintln!("summary: {summary}");
    let members = |step: &str| summary[step].as_object().unwrap().len();
    assert_eq!(members("two"), 2);
    assert_eq!(members("three"), 3);
    // 120 + 60 + 60 + 40 records, each consumed (some twice only where no commit had
    // covered them yet).
    assert_eq!(summary["records"], 280);
    assert_eq!(summary["consumed"], 280);
    let takeover = summary["takeover_s"].as_f64().unwrap();
    eprintln!("survivors took the dead member's partitions in {takeover} s");
}

#[test]
fn kafka_python_produces_consumes_and_resumes_after_its_group_commit() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(
        &mut nodes,
        "kafka_python_client.py",
        &[&bootstrap],
        SCRIPT_MAX,
    );
    eprintln!("summary: {summary}");
    assert_eq!(summary["produced"], 60);
}

#[test]
fn aiokafka_produces_consumes_and_resumes_after_its_group_commit() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(&mut nodes, "aiokafka_client.py", &[&bootstrap], SCRIPT_MAX);
    eprintln!("summary: {summary}");
    assert_eq!(summary["produced"], 60);
}

#[test]
fn kcat_lists_produces_consumes_queries_by_time_and_commits_as_a_group() {
    let mut nodes = Nodes::start(1);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(&mut nodes, "kcat_client.py", &[&bootstrap], SCRIPT_MAX);
    eprintln!("summary: {summary}");
    assert_eq!(summary["group_reads"], serde_json::json!([30, 0, 5]));
}

#[test]
fn cluster_clients_follow_a_killed_coordinator_and_leader_and_lose_nothing_acknowledged() {
    let mut nodes = Nodes::start(3);
    let bootstrap = nodes.bootstrap();
    let summary = python_script(
        &mut nodes,
        "cluster_failover.py",
        &[&bootstrap, SESSION_MS],
        SCRIPT_MAX,
    );
    eprintln!("summary: {summary}");
    let acked = summary["acked"].as_u64().unwrap();
    assert!(acked >= 300, "only {acked} records acknowledged");
    assert!(summary["consumed"].as_u64().unwrap() >= acked);
    assert!(summary["in_log"].as_u64().unwrap() >= acked);
}

/// The bootstrap superuser of the SASL tests' nodes (`--superuser-file`).
const SUPERUSER: &str = "admin";
const SUPERUSER_PASSWORD: &str = "the-admin-password";

/// `n` nodes that require SASL (`--authentication sasl`), with the superuser created at
/// first start from a file; returned once the superuser can authenticate. The directory
/// holds the file.
fn sasl_nodes(n: usize) -> (Nodes, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("kafka-clients-sasl-")
        .tempdir_in(shardlog_net::testing::test_root().unwrap())
        .unwrap();
    let file = dir.path().join("superuser");
    std::fs::write(&file, format!("{SUPERUSER}:{SUPERUSER_PASSWORD}\n")).unwrap();
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&file, owner_only).unwrap();
    let file = file.display().to_string();
    let nodes = Nodes::start_with(n, &["--authentication", "sasl", "--superuser-file", &file]);
    let started = std::time::Instant::now();
    while !shardlog_as_superuser(&nodes, &["user", "list"])
        .status
        .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the bootstrap superuser never authenticated"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (nodes, dir)
}

/// `shardlog ARGS --brokers <nodes> --user admin` (password from SHARDLOG_PASSWORD).
fn shardlog_as_superuser(nodes: &Nodes, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .args(["--brokers", &nodes.brokers(), "--user", SUPERUSER])
        .env("SHARDLOG_PASSWORD", SUPERUSER_PASSWORD)
        .output()
        .unwrap()
}

/// kcat with `args` (and `stdin`), at most 60 s.
fn kcat(args: &[&str], stdin: &str) -> std::process::Output {
    let mut command = std::process::Command::new("timeout");
    command.arg("60").arg("kcat").args(args);
    shardlog_net::testing::output_with_stdin(&mut command, stdin.as_bytes()).unwrap()
}

/// confluent-kafka and kcat with SCRAM over `protocol` (SASL_PLAINTEXT here; SASL_SSL
/// once the Kafka listener has TLS: the same checks).
fn scram_clients(protocol: &str) {
    let (mut nodes, _dir) = sasl_nodes(1);
    let bootstrap = nodes.bootstrap();
    let args = [bootstrap.as_str(), protocol, SUPERUSER, SUPERUSER_PASSWORD];
    let summary = python_script(&mut nodes, "confluent_sasl.py", &args, SCRIPT_MAX);
    eprintln!("summary: {summary}");
    assert_eq!(summary["SCRAM-SHA-256"], 50);
    assert_eq!(summary["SCRAM-SHA-512"], 50);
    assert_eq!(summary["wrong_password"]["authentication_error"], true);
    assert_eq!(summary["unknown_user"]["authentication_error"], true);
    kcat_with_scram(&bootstrap, protocol);
}

/// kcat over `protocol`: produces and consumes with each SCRAM mechanism; a wrong password
/// and no credentials fail, saying why.
fn kcat_with_scram(bootstrap: &str, protocol: &str) {
    let b = bootstrap;
    let sasl = |mechanism: &'static str, password: &'static str| {
        [
            "-X".to_owned(),
            format!("security.protocol={protocol}"),
            "-X".to_owned(),
            format!("sasl.mechanisms={mechanism}"),
            "-X".to_owned(),
            format!("sasl.username={SUPERUSER}"),
            "-X".to_owned(),
            format!("sasl.password={password}"),
        ]
    };
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let auth = sasl(mechanism, SUPERUSER_PASSWORD);
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let topic = format!("kcat-{}", mechanism.to_lowercase());
        let records: String = (0..20).map(|i| format!("{mechanism} {i}\n")).collect();
        let mut produce = vec!["-b", b, "-P", "-t", &topic];
        produce.extend(&auth);
        let out = kcat(&produce, &records);
        assert!(
            out.status.success(),
            "kcat -P: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut consume = vec!["-b", b, "-C", "-t", &topic, "-o", "beginning", "-e"];
        consume.extend(&auth);
        let out = kcat(&consume, "");
        assert!(
            out.status.success(),
            "kcat -C: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), records);
    }
    // A wrong password: kcat fails, saying authentication failed.
    let auth = sasl("SCRAM-SHA-256", "wrong");
    let mut list = vec!["-b", b, "-L", "-m", "5"];
    list.extend(auth.iter().map(String::as_str));
    let out = kcat(&list, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "kcat with a wrong password listed: {stderr}"
    );
    assert!(stderr.contains("Authentication failed"), "{stderr}");
    // No credentials: the broker closes the connection; kcat fails and says the broker
    // may require SASL.
    let plain = if protocol == "SASL_SSL" {
        "SSL"
    } else {
        "PLAINTEXT"
    };
    let protocol_flag = format!("security.protocol={plain}");
    let out = kcat(&["-b", b, "-L", "-m", "5", "-X", &protocol_flag], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "kcat without credentials listed: {stderr}"
    );
    assert!(
        stderr.contains("might require SASL authentication"),
        "{stderr}"
    );
}

#[test]
fn confluent_kafka_and_kcat_with_scram_over_sasl_plaintext_and_the_unauthenticated_refused() {
    scram_clients("SASL_PLAINTEXT");
}

/// `shardlog ARGS --brokers BROKERS --user USER`, the password in `SHARDLOG_PASSWORD` and
/// carol's (for `user create`) in `SHARDLOG_NEW_PASSWORD`; SCRAM-SHA-512.
fn shardlog_as(
    brokers: &str,
    (user, password): (&str, &str),
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .args(["--brokers", brokers, "--user", user])
        .args(["--sasl-mechanism", "SCRAM-SHA-512"])
        .env("SHARDLOG_PASSWORD", password)
        .env("SHARDLOG_NEW_PASSWORD", CAROL.1)
        .output()
        .unwrap()
}

/// The user the failover test creates.
const CAROL: (&str, &str) = ("carol", "carols-password");

/// `user list` as carol on `broker`, retried until it works (30 s): what it printed.
fn carol_lists(broker: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let out = shardlog_as(broker, CAROL, &["user", "list"]);
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "carol cannot authenticate on {broker}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Users live in the controller's replicated metadata: one created on one node
/// authenticates on every node, and on the survivors after the controller leader is
/// SIGKILLed (where it can be deleted and created again); all of them after the whole
/// cluster restarts.
#[test]
fn users_survive_controller_failover_and_a_full_cluster_restart() {
    let (mut nodes, _dir) = sasl_nodes(3);
    let admin = (SUPERUSER, SUPERUSER_PASSWORD);
    let create = ["user", "create", CAROL.0, "--mechanism", "SCRAM-SHA-512"];
    assert!(
        shardlog_as(&nodes.brokers(), admin, &create)
            .status
            .success()
    );
    let brokers: Vec<String> = nodes.brokers().split(',').map(str::to_owned).collect();
    for broker in &brokers {
        let listed = carol_lists(broker);
        assert!(listed.contains("carol\tSCRAM-SHA-512"), "{listed}");
    }
    // The controller leader, as `cluster status` names it, is killed.
    let status = shardlog_as(&nodes.brokers(), admin, &["cluster", "status"]);
    let status = String::from_utf8(status.stdout).unwrap();
    let leader: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("controller: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no controller in {status}"));
    nodes.kill(leader).unwrap();
    let survivors: Vec<&str> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| brokers[i].as_str())
        .collect();
    for broker in &survivors {
        eprintln!("{broker} after the controller leader {leader} died");
        carol_lists(broker);
    }
    // Changes after the failover go through the new controller leader.
    let survivors = survivors.join(",");
    let delete = shardlog_as(&survivors, admin, &["user", "delete", CAROL.0]);
    assert!(
        delete.status.success(),
        "{}",
        String::from_utf8_lossy(&delete.stderr)
    );
    // Refused once the deletion reached the node asked (a survivor may apply it a moment
    // after the leader answered).
    let started = std::time::Instant::now();
    while shardlog_as(&survivors, CAROL, &["user", "list"])
        .status
        .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "carol still authenticates"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shardlog_as(&survivors, admin, &create).status.success());
    nodes.restart(leader);
    // Every node down, then up again: the users come back from the Raft logs.
    for i in 0..3 {
        nodes.kill(i).unwrap();
    }
    nodes.start_nodes(&[0, 1, 2]);
    for broker in &brokers {
        let listed = carol_lists(broker);
        assert!(
            listed.contains("admin\tSCRAM-SHA-256,SCRAM-SHA-512"),
            "{listed}"
        );
    }
}
