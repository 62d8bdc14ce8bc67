//! One writer per data directory: a second `shardlogd` on a directory a running one holds
//! exits 1 naming the holder's pid and touches nothing (the first goes on serving), and
//! `shardlog repair --apply` and `shardlog import` refuse it too, while the read-only
//! tools still read it. Real binaries, real server (see `common/mod.rs`).
#![cfg(test)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, describe, shardlog, stderr};
use shardlog_net::testing::Shardlogd;

/// Every path under `dir`, relative, but for the `checkpoint.tmp` the server itself may
/// hold for a moment while it replaces a checkpoint.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            if !path.ends_with("checkpoint.tmp") {
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// Runs a second `shardlogd` on `dir` and waits for its exit (killing it after 60 s: a
/// server that did not refuse would run forever).
fn second_server(dir: &Path) -> Output {
    let mut child = Command::new(Shardlogd::binary())
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--shards", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Waits until `path` exists (the server's upkeep prepares the next segment).
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_held_data_directory_is_refused_by_a_second_server_and_by_writing_tools() {
    let server = Server::start();
    let data = server.dir.path();
    let pid = server.shardlogd.pid();
    let held = format!("in use by process {pid}");
    server.ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "2",
            "--segment-bytes",
            "65536",
        ],
        "",
    );
    // Past half a segment, the server prepares the next one: the file a second server
    // once removed as a leftover, breaking the first one's next roll.
    let half: String = (0..40)
        .map(|i| format!("{i:04}-{}\n", "x".repeat(1000)))
        .collect();
    server.ok(&["produce", "--topic", "orders", "--partition", "0"], &half);
    let prepared = data.join("orders-0").join("0").join("next-segment.log.tmp");
    wait_for(&prepared);
    let before = listing(data);

    let refused = second_server(data);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(stderr(&refused).contains(&held), "{}", describe(&refused));
    assert!(
        !String::from_utf8_lossy(&refused.stderr).contains("ready"),
        "{}",
        describe(&refused)
    );
    assert_eq!(
        listing(data),
        before,
        "the refused server changed the directory"
    );

    // The first server goes on: more records roll onto the prepared segment.
    server.ok(&["produce", "--topic", "orders", "--partition", "0"], &half);
    server.ok(
        &["produce", "--topic", "orders", "--partition", "1"],
        "after\n",
    );
    let values = server.ok(&["consume", "--topic", "orders", "--partition", "0"], "");
    assert_eq!(values.lines().count(), 80);
    let values = server.ok(&["consume", "--topic", "orders", "--partition", "1"], "");
    assert_eq!(values, "after\n");

    check_tools_refuse(data, &held);
    assert!(server.shardlogd.brokers().contains("127.0.0.1"));
}

/// `repair --apply` and `import` refuse a held directory; dump, verify, stats and export
/// read it.
fn check_tools_refuse(data: &Path, held: &str) {
    let data_arg = data.to_str().unwrap();
    let partition = data.join("orders-0").join("0");
    let partition_arg = partition.to_str().unwrap();
    for args in [
        vec!["repair", data_arg, "--apply"],
        vec!["repair", partition_arg, "--apply"],
    ] {
        let output = shardlog(&args, "");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            stderr(&output).contains(held),
            "{args:?}: {}",
            describe(&output)
        );
    }

    let topic = data.join("orders-0");
    let exported = shardlog(&["export", topic.to_str().unwrap()], "");
    assert_eq!(exported.status.code(), Some(0), "{}", describe(&exported));
    let text = String::from_utf8(exported.stdout).unwrap();
    // Under another name, so only the lock can refuse it.
    let renamed = text.replacen("\"name\":\"orders\"", "\"name\":\"copy\"", 1);
    let import = shardlog(&["import", data_arg], &renamed);
    assert_eq!(import.status.code(), Some(2), "{}", describe(&import));
    assert!(stderr(&import).contains(held), "{}", describe(&import));
    assert!(!data.join("copy").exists() && !data.join("copy~import").exists());

    let one = shardlog(&["export", partition_arg], "");
    assert_eq!(one.status.code(), Some(0), "{}", describe(&one));
    let new_partition = data.join("other").join("0");
    let import = shardlog(
        &["import", new_partition.to_str().unwrap()],
        &String::from_utf8(one.stdout).unwrap(),
    );
    assert_eq!(import.status.code(), Some(2), "{}", describe(&import));
    assert!(stderr(&import).contains(held), "{}", describe(&import));
    assert!(!data.join("other").exists());

    for args in [
        vec!["verify", data_arg],
        vec!["stats", data_arg],
        vec!["dump", partition_arg, "--count", "1"],
        vec!["repair", data_arg],
    ] {
        let output = shardlog(&args, "");
        assert!(
            !stderr(&output).contains("in use"),
            "{args:?}: {}",
            describe(&output)
        );
        assert_ne!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
    }
}
