//! The shardlog CLI against a `shardlogd` run with `--authentication sasl` (the bootstrap
//! superuser from `--superuser-file`): without `--user`
//! every command is refused with an authentication error, a wrong password is refused,
//! `--user` with the password on stdin or in `SHARDLOG_PASSWORD` works for produce and
//! consume; `user create|list|delete`; users survive a restart of the node.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shardlog_net::testing::{Launch, Shardlogd, StderrTo, output_with_stdin};

const ADMIN_PASSWORD: &str = "admin-secret";

/// A node requiring SASL on `dir`, with the superuser `admin` created at its first start
/// from a `--superuser-file` (`SHARDLOG_SUPERUSER`/`SHARDLOG_SUPERUSER_PASSWORD` work
/// alike; a file keeps the test's environment untouched).
fn start(dir: &std::path::Path) -> Shardlogd {
    let file = dir.join("superuser");
    std::fs::write(&file, format!("admin:{ADMIN_PASSWORD}\n")).unwrap();
    let file = file.display().to_string();
    let data = dir.join("data");
    let args = ["--shards", "2", "--authentication", "sasl", "--superuser-file", &file];
    let server = Shardlogd::launch(&Launch {
        data_dir: &data,
        listen: "127.0.0.1:0",
        args: &args,
        stderr: StderrTo::Echo,
    })
    .unwrap();
    // The superuser is created once the node serves: wait until it authenticates.
    let started = Instant::now();
    while !shardlog(&server, &["user", "list"], Some(ADMIN_PASSWORD), "").status.success() {
        assert!(started.elapsed() < Duration::from_secs(30), "no superuser");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// `shardlog ARGS --brokers B [--user admin]`, the password in `SHARDLOG_PASSWORD`.
fn shardlog(server: &Shardlogd, args: &[&str], password: Option<&str>, stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    command.args(args).args(["--brokers", &server.brokers()]);
    command.env_remove("SHARDLOG_PASSWORD").env_remove("SHARDLOG_USER");
    if let Some(password) = password {
        command.args(["--user", "admin"]).env("SHARDLOG_PASSWORD", password);
    }
    output_with_stdin(&mut command, stdin.as_bytes()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_cli_authenticates_with_user_and_is_refused_without() {
    let dir = common::test_dir("tools-sasl-");
    let mut server = start(dir.path());
    // Without --user: refused, saying why.
    let out = shardlog(&server, &["topic", "list"], None, "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("AuthenticationFailed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("requires SASL authentication"), "{}", stderr(&out));
    // A wrong password: refused.
    let out = shardlog(&server, &["topic", "list"], Some("wrong"), "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid credentials"), "{}", stderr(&out));
    let out = shardlog(&server, &["topic", "create", "t", "--partitions", "1"], Some(ADMIN_PASSWORD), "");
    assert!(out.status.success(), "{}", stderr(&out));
    // The password on stdin's first line, the records after it.
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    command
        .args(["produce", "--topic", "t", "--brokers", &server.brokers()])
        .args(["--user", "admin", "--password-stdin"])
        .env_remove("SHARDLOG_PASSWORD");
    let stdin = format!("{ADMIN_PASSWORD}\none\ntwo\nthree\n");
    let out = output_with_stdin(&mut command, stdin.as_bytes()).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let args = ["consume", "--topic", "t", "--count", "3"];
    let out = shardlog(&server, &args, Some(ADMIN_PASSWORD), "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "one\ntwo\nthree\n");
    // A user of its own, SCRAM-SHA-512 only.
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    command
        .args(["user", "create", "bob", "--mechanism", "SCRAM-SHA-512"])
        .args(["--iterations", "8192", "--new-password-stdin"])
        .args(["--brokers", &server.brokers(), "--user", "admin"])
        .env("SHARDLOG_PASSWORD", ADMIN_PASSWORD);
    let out = output_with_stdin(&mut command, b"bobs password\n").unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bob = |server: &Shardlogd, mechanism: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
        command
            .args(["topic", "list", "--brokers", &server.brokers(), "--user", "bob"])
            .args(["--sasl-mechanism", mechanism])
            .env("SHARDLOG_PASSWORD", "bobs password");
        command.output().unwrap()
    };
    let out = bob(&server, "SCRAM-SHA-512");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "t\n");
    // bob has no SCRAM-SHA-256 credential.
    assert!(!bob(&server, "SCRAM-SHA-256").status.success());
    let listed = shardlog(&server, &["user", "list"], Some(ADMIN_PASSWORD), "");
    assert_eq!(
        String::from_utf8(listed.stdout).unwrap(),
        "admin\tSCRAM-SHA-256,SCRAM-SHA-512\nbob\tSCRAM-SHA-512\n"
    );
    // Users survive a restart of the node (the controller's Raft log).
    server.terminate().unwrap();
    let server = start(dir.path());
    assert!(bob(&server, "SCRAM-SHA-512").status.success());
    let out = shardlog(&server, &["user", "delete", "bob"], Some(ADMIN_PASSWORD), "");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bob(&server, "SCRAM-SHA-512");
    assert!(stderr(&out).contains("invalid credentials"), "{}", stderr(&out));
    // Bad input is refused clearly: a name with a comma, a short iteration count.
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    command
        .args(["user", "create", "a,b", "--brokers", &server.brokers(), "--user", "admin"])
        .env("SHARDLOG_PASSWORD", ADMIN_PASSWORD)
        .env("SHARDLOG_NEW_PASSWORD", "pw");
    let out = command.output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("user name"), "{}", stderr(&out));
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    command
        .args(["user", "create", "c", "--iterations", "100"])
        .args(["--brokers", &server.brokers(), "--user", "admin"])
        .env("SHARDLOG_PASSWORD", ADMIN_PASSWORD)
        .env("SHARDLOG_NEW_PASSWORD", "pw");
    let out = command.output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("iteration count 100"), "{}", stderr(&out));
}
