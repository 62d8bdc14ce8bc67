//! ACLs enforced by a real `shardlogd` (`--authorization on`) on real clients: kcat
//! (librdkafka) on the Kafka listener and the shipped `shardlog` CLI on the shardlog
//! protocol. Until authentication lands every connection is `User:ANONYMOUS`, so the
//! ACLs are written while authorization is off (or by a superuser) and judged after a
//! restart with it on: ANONYMOUS allowed to read topic `a` reads it, may not write it
//! (TOPIC_AUTHORIZATION_FAILED) and may not read `b`; allowed to read group `readers`, it
//! consumes in that group and not in another (GROUP_AUTHORIZATION_FAILED), by kcat and
//! by confluent-kafka (`kafka_clients/confluent_acl.py`, in the clients' virtualenv). The ACLs live in the controller's
//! replicated metadata: they survive a full restart and, on 3 nodes, a SIGKILL of the
//! controller leader, after which the new leader takes ACL changes.
//!
//! kcat is installed with apt-get when missing (`common::kcat`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

mod common;
#[path = "../../net/tests/common/mod.rs"]
mod net_common;
#[path = "kafka_clients/nodes.rs"]
#[allow(dead_code)]
mod nodes;
#[path = "kafka_clients/script.rs"]
#[allow(dead_code)]
mod script;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shardlog_net::testing::{Shardlogd, output_with_stdin};

use common::{describe, ok_against, run_against, stderr, test_dir};
use net_common::cluster::{Cluster, Links};

const WAIT_MAX: Duration = Duration::from_secs(60);

/// kcat with `args` and `stdin`, bounded to 30 s; success or not is the caller's to judge.
fn kcat(args: &[&str], stdin: &str) -> Output {
    common::kcat::ensure_kcat();
    let mut command = Command::new("timeout");
    command.arg("30").arg("kcat").args(args);
    output_with_stdin(&mut command, stdin.as_bytes()).unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Everything in topic `topic` from the start, by kcat; `Err` with kcat's words if it
/// failed.
fn kcat_read(broker: &str, topic: &str) -> Result<String, String> {
    let args = [
        "-b",
        broker,
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
    ];
    let output = kcat(&args, "");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(text(&output))
    }
}

/// `lines` produced to `topic` by kcat; `Err` with kcat's words if it failed.
fn kcat_write(broker: &str, topic: &str, lines: &str) -> Result<(), String> {
    let output = kcat(&["-b", broker, "-P", "-t", topic], lines);
    // kcat reports a failed delivery on stderr and may still exit 0: both count.
    let failed = String::from_utf8_lossy(&output.stderr).contains("Delivery failed");
    if output.status.success() && !failed {
        Ok(())
    } else {
        Err(text(&output))
    }
}

fn authorization_failed(why: &str) -> bool {
    why.to_ascii_lowercase().contains("authorization failed")
}

/// `shardlog acl add` of ANONYMOUS's read on `a`.
const ADD: [&str; 8] = [
    "acl",
    "add",
    "--principal",
    "User:ANONYMOUS",
    "--operation",
    "read",
    "--topic",
    "a",
];

/// With authorization off, anyone sets up topics `a` and `b`, their records, and the ACL.
fn set_up(dir: &std::path::Path) {
    let mut server = Shardlogd::start(dir, &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    let b = brokers.as_str();
    for topic in ["a", "b"] {
        ok_against(b, &["topic", "create", topic, "--partitions", "1"], "");
    }
    ok_against(b, &["produce", "--topic", "a"], "one\ntwo\n");
    ok_against(b, &["produce", "--topic", "b"], "secret\n");
    let said = ok_against(b, &ADD, "");
    assert!(
        said.contains("added: User:ANONYMOUS allow read on topic a"),
        "{said}"
    );
    // A principal without `User:` is a usage error; a name the bounds refuse, the server's.
    let unnamed = [&ADD[..3], &["alice"], &ADD[4..]].concat();
    assert_eq!(run_against(b, &unnamed, "").status.code(), Some(2));
    let spaced = [&ADD[..7], &["a b"]].concat();
    let output = run_against(b, &spaced, "");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("invalid ACL"),
        "{}",
        describe(&output)
    );
    let group = [&ADD[..6], &["--group", "readers"]].concat();
    ok_against(b, &group, "");
    let listed = ok_against(b, &["acl", "list"], "");
    assert_eq!(
        listed,
        "User:ANONYMOUS allow read on topic a\nUser:ANONYMOUS allow read on group readers\n"
    );
    server.terminate().unwrap();
}

/// What confluent-kafka (`kafka_clients/confluent_acl.py`) got from `bootstrap`.
fn confluent(bootstrap: &str) -> serde_json::Value {
    let output = Command::new("timeout")
        .arg("120")
        .arg(script::python())
        .arg(script::dir().join("confluent_acl.py"))
        .arg(bootstrap)
        .current_dir(script::dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "confluent_acl.py: {}",
        text(&output)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find_map(|l| l.strip_prefix("@result "));
    serde_json::from_str(line.expect("an @result line")).unwrap()
}

/// What kcat and confluent-kafka get on Kafka listener `k` (see the test).
fn kafka_clients_see_the_acls(k: &str) {
    assert_eq!(kcat_read(k, "a").unwrap(), "one\ntwo\n");
    let refused = kcat_write(k, "a", "three\n").unwrap_err();
    assert!(authorization_failed(&refused), "{refused}");
    let refused = kcat_read(k, "b").unwrap_err();
    assert!(authorization_failed(&refused), "{refused}");
    // Metadata for every topic lists only those ANONYMOUS may describe.
    let listed = String::from_utf8(kcat(&["-b", k, "-L"], "").stdout).unwrap();
    assert!(listed.contains("topic \"a\""), "{listed}");
    assert!(!listed.contains("topic \"b\""), "{listed}");
    // Consumer groups: read on the group is needed too (kcat's balanced consumer).
    let group = |g: &str| {
        let args = [
            "-b",
            k,
            "-G",
            g,
            "-e",
            "-q",
            "-X",
            "auto.offset.reset=earliest",
            "a",
        ];
        kcat(&args, "")
    };
    let joined = group("readers");
    assert!(joined.status.success(), "{}", text(&joined));
    assert_eq!(String::from_utf8(joined.stdout).unwrap(), "one\ntwo\n");
    let refused = text(&group("others"));
    assert!(refused.contains("Group authorization failed"), "{refused}");
    // confluent-kafka gets the same codes (its group `readers` starts where kcat's
    // commits left it: at the end).
    let seen = confluent(k);
    eprintln!("confluent-kafka: {seen}");
    assert_eq!(seen["produce"], "TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(seen["create"], "TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(seen["others"]["error"], "GROUP_AUTHORIZATION_FAILED");
    assert!(seen["readers"].get("error").is_none(), "{seen}");
}

/// What the shipped CLI gets from the shardlog listener `b` (see the test).
fn the_cli_sees_the_acls(b: &str) {
    let read = ok_against(b, &["consume", "--topic", "a", "--partition", "0"], "");
    assert_eq!(read, "one\ntwo\n");
    for args in [
        &["produce", "--topic", "a"][..],
        &["consume", "--topic", "b", "--partition", "0"],
        &["topic", "create", "c", "--partitions", "1"],
        &["acl", "list"],
        &ADD,
    ] {
        let output = run_against(b, args, "three\n");
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            describe(&output)
        );
        let why = stderr(&output);
        // The server's message where the reply carries one, else the code's name.
        let refused = why.contains("not authorized") || why.contains("AuthorizationFailed");
        assert!(refused, "{args:?}: {why}");
    }
    let topics = ok_against(b, &["topic", "list"], "");
    assert_eq!(topics, "a\n");
}

#[test]
fn anonymous_may_read_a_but_not_write_it_nor_read_b() {
    let dir = test_dir("acl-");
    set_up(dir.path());

    // Authorization on, nobody a superuser: the ACL decides, after a restart.
    let mut server =
        Shardlogd::start(dir.path(), &["--shards", "2", "--authorization", "on"]).unwrap();
    kafka_clients_see_the_acls(&server.kafka_addr.to_string());
    // The shardlog protocol, by the shipped CLI: the same answers.
    the_cli_sees_the_acls(&server.brokers());
    server.terminate().unwrap();

    // A superuser is allowed everything, ACLs or not.
    let mut server = Shardlogd::start(
        dir.path(),
        &[
            "--shards",
            "2",
            "--authorization",
            "on",
            "--superusers",
            "User:ANONYMOUS",
        ],
    )
    .unwrap();
    let kafka = server.kafka_addr.to_string();
    kcat_write(&kafka, "b", "more\n").unwrap();
    assert_eq!(kcat_read(&kafka, "b").unwrap(), "secret\nmore\n");
    let brokers = server.brokers();
    let remove = [&ADD[..1], &["remove"], &ADD[2..]].concat();
    ok_against(&brokers, &remove, "");
    let left = ok_against(&brokers, &["acl", "list"], "");
    assert_eq!(left, "User:ANONYMOUS allow read on group readers\n");
    server.terminate().unwrap();
}

/// The controller leader as the first node that answers names it.
fn controller(cluster: &Cluster) -> Result<usize, String> {
    let (_, meta) = cluster.metadata_any().ok_or("no node answers")?;
    let leader = meta.controller.ok_or("no controller leader")?;
    Ok(usize::try_from(leader).unwrap())
}

#[test]
fn acls_survive_a_full_restart_and_a_controller_failover() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    let brokers = cluster.brokers();
    let b = brokers.as_str();
    for topic in ["a", "b"] {
        ok_against(b, &["topic", "create", topic, "--partitions", "1"], "");
    }
    ok_against(b, &["produce", "--topic", "a"], "one\n");
    let anonymous = ["acl", "add", "--principal", "User:ANONYMOUS", "--operation"];
    for what in [
        &["read", "--topic", "a"][..],
        &["alter", "--cluster"],
        &["describe", "--cluster"],
    ] {
        ok_against(b, &[&anonymous[..], what].concat(), "");
    }

    // Every node killed and started again, now with authorization on.
    cluster.kill(&[0, 1, 2]);
    cluster.set_extra_args(&["--authorization", "on"]);
    cluster.start_nodes(&[0, 1, 2]);
    cluster.wait_for_controller(WAIT_MAX);
    let kafka = cluster.kafka_addr(0).to_string();
    assert_eq!(kcat_read(&kafka, "a").unwrap(), "one\n");
    let refused = kcat_write(&kafka, "a", "two\n").unwrap_err();
    assert!(authorization_failed(&refused), "{refused}");

    // The controller leader dies; the next one has the ACLs and takes a change.
    let old = cluster
        .wait_for("a controller leader", WAIT_MAX, controller)
        .0;
    cluster.kill(&[old]);
    let killed = Instant::now();
    let (new, took) = cluster.wait_for("a new controller leader", WAIT_MAX, |c| {
        let live: Vec<usize> = (0..3).filter(|n| *n != old).collect();
        let (_, meta) = c.metadata_from(&live).ok_or("no node answers")?;
        match meta.controller.map(|l| usize::try_from(l).unwrap()) {
            Some(l) if l != old => Ok(l),
            other => Err(format!("controller {other:?}")),
        }
    });
    eprintln!("controller {old} killed; node {new} leads after {took:?}");
    let survivors: Vec<String> = (0..3)
        .filter(|n| *n != old)
        .map(|n| cluster.addr(n))
        .collect();
    let survivors = survivors.join(",");
    let listed = ok_against(&survivors, &["acl", "list"], "");
    assert_eq!(
        listed,
        "User:ANONYMOUS allow read on topic a\nUser:ANONYMOUS allow alter on cluster\n\
         User:ANONYMOUS allow describe on cluster\n",
    );
    ok_against(
        &survivors,
        &[&anonymous[..], &["write", "--topic", "a"]].concat(),
        "",
    );
    let kafka = cluster.kafka_addr(new).to_string();
    // The new ACL reaches every node's view in a moment: retried until it has.
    loop {
        match kcat_write(&kafka, "a", "two\n") {
            Ok(()) => break,
            Err(why) => {
                assert!(killed.elapsed() < WAIT_MAX, "{why}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    assert_eq!(kcat_read(&kafka, "a").unwrap(), "one\ntwo\n");
    let refused = kcat_read(&kafka, "b").unwrap_err();
    assert!(authorization_failed(&refused), "{refused}");
}
