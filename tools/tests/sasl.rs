//! The shardlog CLI against a `shardlogd` run with `--authentication sasl` (the bootstrap
//! superuser from `--superuser-file`): without `--user`
//! every command is refused with an authentication error, a wrong password is refused,
//! `--user` with the password on stdin or in `SHARDLOG_PASSWORD` works for produce and
//! consume; `user create|list|delete`; users survive a restart of the node.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shardlog_net::testing::{Shardlogd, output_with_stdin};

const ADMIN_PASSWORD: &str = "admin-secret";

/// A node requiring SASL on `dir`, with the superuser `admin` created at its first start
/// from a `--superuser-file` (`SHARDLOG_SUPERUSER`/`SHARDLOG_SUPERUSER_PASSWORD` work
/// alike; a file keeps the test's environment untouched).
fn start(dir: &std::path::Path) -> Shardlogd {
    let server =
        Shardlogd::start_with_superuser(dir, ("admin", ADMIN_PASSWORD), &["--shards", "2"])
            .unwrap();
    // The superuser is created once the node serves: wait until it authenticates.
    let started = Instant::now();
    while !cli(&server, ADMIN, &["user", "list"], "").status.success() {
        assert!(started.elapsed() < Duration::from_secs(30), "no superuser");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// Who a command runs as: a user and its password (in `SHARDLOG_PASSWORD`), or no one.
type As<'a> = Option<(&'a str, &'a str)>;

const ADMIN: As<'static> = Some(("admin", ADMIN_PASSWORD));
const BOB: As<'static> = Some(("bob", "bobs password"));

/// `shardlog ARGS --brokers B [--user U --sasl-mechanism M]` with `stdin`; a new user's
/// password is bob's (`SHARDLOG_NEW_PASSWORD`).
fn cli(server: &Shardlogd, who: As<'_>, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    command.args(args).args(["--brokers", &server.brokers()]);
    command
        .env_remove("SHARDLOG_PASSWORD")
        .env_remove("SHARDLOG_USER")
        .env("SHARDLOG_NEW_PASSWORD", "bobs password");
    if let Some((user, password)) = who {
        command
            .args(["--user", user])
            .env("SHARDLOG_PASSWORD", password);
    }
    output_with_stdin(&mut command, stdin.as_bytes()).unwrap()
}

/// `shardlog ...` that must succeed: its stdout.
fn ok(server: &Shardlogd, who: As<'_>, args: &[&str]) -> String {
    let out = cli(server, who, args, "");
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// `shardlog ...` that must fail: its stderr.
fn refused(server: &Shardlogd, who: As<'_>, args: &[&str]) -> String {
    let out = cli(server, who, args, "");
    assert!(!out.status.success(), "{args:?} succeeded");
    stderr(&out)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_cli_authenticates_with_user_and_is_refused_without() {
    let dir = common::test_dir("tools-sasl-");
    let server = start(dir.path());
    // Without --user: refused, saying why.
    let why = refused(&server, None, &["topic", "list"]);
    assert!(why.contains("AuthenticationFailed"), "{why}");
    assert!(why.contains("requires SASL authentication"), "{why}");
    // A wrong password: refused.
    let why = refused(&server, Some(("admin", "wrong")), &["topic", "list"]);
    assert!(why.contains("invalid credentials"), "{why}");
    ok(
        &server,
        ADMIN,
        &["topic", "create", "t", "--partitions", "1"],
    );
    // The password on stdin's first line, the records after it.
    let args = [
        "produce",
        "--topic",
        "t",
        "--user",
        "admin",
        "--password-stdin",
    ];
    let stdin = format!("{ADMIN_PASSWORD}\none\ntwo\nthree\n");
    let out = cli(&server, None, &args, &stdin);
    assert!(out.status.success(), "{}", stderr(&out));
    let consumed = ok(&server, ADMIN, &["consume", "--topic", "t", "--count", "3"]);
    assert_eq!(consumed, "one\ntwo\nthree\n");
}

#[test]
fn users_are_created_listed_deleted_and_survive_a_restart() {
    let dir = common::test_dir("tools-sasl-users-");
    let mut server = start(dir.path());
    // bob: SCRAM-SHA-512 only, 8192 iterations.
    let create = ["user", "create", "bob", "--mechanism", "SCRAM-SHA-512"];
    ok(
        &server,
        ADMIN,
        &[&create[..], &["--iterations", "8192"]].concat(),
    );
    let as_512 = ["topic", "list", "--sasl-mechanism", "SCRAM-SHA-512"];
    ok(&server, BOB, &as_512);
    // bob has no SCRAM-SHA-256 credential.
    refused(&server, BOB, &["topic", "list"]);
    assert_eq!(
        ok(&server, ADMIN, &["user", "list"]),
        "admin\tSCRAM-SHA-256,SCRAM-SHA-512\nbob\tSCRAM-SHA-512\n"
    );
    // Users survive a restart of the node (the controller's Raft log).
    server.terminate().unwrap();
    let server = start(dir.path());
    ok(&server, BOB, &as_512);
    ok(&server, ADMIN, &["user", "delete", "bob"]);
    let why = refused(&server, BOB, &as_512);
    assert!(why.contains("invalid credentials"), "{why}");
    // Bad input is refused clearly: a name with a comma, too few iterations.
    let why = refused(&server, ADMIN, &["user", "create", "a,b"]);
    assert!(why.contains("user name"), "{why}");
    let why = refused(
        &server,
        ADMIN,
        &["user", "create", "c", "--iterations", "100"],
    );
    assert!(why.contains("iteration count 100"), "{why}");
}
