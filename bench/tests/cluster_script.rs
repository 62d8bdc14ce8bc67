//! `bench/scripts/cluster.sh` driven as an operator does, with a stand-in for
//! `shardlogd` (a shell script that prints the ready line and then much more log), so
//! the script's own logic is tested without servers: a node that logs more than a pipe
//! holds after its ready line is still taken as ready, on `start` and on `restart`.

use std::path::Path;
use std::process::{Command, Output};

/// A fake `shardlogd`: ready line, 200 KiB of log at once, then it idles (as a bash
/// loop, so that its command line still names its data directory).
const FAKE_SHARDLOGD: &str = r#"#!/usr/bin/env bash
while [ $# -gt 0 ]; do
  case "$1" in --listen) listen="$2"; shift ;; esac
  shift
done
echo "shardlogd ready: listening on $listen"
head -c 204800 /dev/zero | tr '\0' 'x' | fold -w 100
while :; do sleep 1; done
"#;

fn cluster_sh(dir: &Path, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
    Command::new("bash")
        .arg(script)
        .args(args)
        .env("CLUSTER_DIR", dir.join("cluster"))
        .env("CLUSTER_BASE_PORT", "29731")
        .env("SHARDLOGD", dir.join("fake-shardlogd"))
        .output()
        .expect("run cluster.sh")
}

fn ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_node_that_logs_much_after_its_ready_line_is_ready() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("fake-shardlogd");
    std::fs::write(&fake, FAKE_SHARDLOGD).expect("write the fake");
    let chmod = Command::new("chmod").arg("+x").arg(&fake).status();
    assert!(chmod.is_ok_and(|s| s.success()));

    let started = cluster_sh(dir.path(), &["start", "1"]);
    ok(&started, "start");
    assert_eq!(
        String::from_utf8_lossy(&started.stdout).trim(),
        "127.0.0.1:29731"
    );
    ok(&cluster_sh(dir.path(), &["kill", "0"]), "kill");
    ok(&cluster_sh(dir.path(), &["restart", "0"]), "restart");
    let status = cluster_sh(dir.path(), &["status"]);
    ok(&status, "status");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("running"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    ok(&cluster_sh(dir.path(), &["stop"]), "stop");
}
