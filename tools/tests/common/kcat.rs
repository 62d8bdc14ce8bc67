//! kcat (Debian's package, librdkafka 2.0) for the tests that drive the Kafka listener
//! with it: installed with apt-get when missing, since CI runs on a clean machine. Every
//! test's apt-get runs under one lock (`APT_LOCK`, also taken by
//! `kafka_clients/setup.sh`): tests run in parallel, and a second apt-get would fail on
//! dpkg's lock instead of waiting.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Command, Output};

use shardlog_net::testing::output_with_stdin;
use std::sync::Once;

/// The lock file every test's apt-get waits on.
pub const APT_LOCK: &str = "/tmp/shardlog-tests-apt.lock";

/// `apt-get ARGS` under `APT_LOCK`; whether it succeeded.
fn apt_get(args: &[&str]) -> bool {
    Command::new("flock")
        .arg(APT_LOCK)
        .args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"])
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs kcat unless it is on the PATH; panics, naming why, when it cannot.
pub fn ensure_kcat() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let present = || {
            Command::new("kcat")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if present() {
            return;
        }
        // An install from a stale or missing package list fails: update once, then retry.
        let installed = apt_get(&["install", "-y", "-qq", "kcat"])
            || (apt_get(&["update", "-qq"]) && apt_get(&["install", "-y", "-qq", "kcat"]));
        assert!(
            installed && present(),
            "kcat is missing and `apt-get install -y kcat` could not install it"
        );
    });
}

/// Runs kcat with `args` and `stdin` (installing it first if needed); it must succeed
/// within a minute.
pub fn kcat(args: &[&str], stdin: &str) -> Output {
    ensure_kcat();
    let mut command = Command::new("timeout");
    command.arg("60").arg("kcat").args(args);
    let output = output_with_stdin(&mut command, stdin.as_bytes()).unwrap();
    assert!(
        output.status.success(),
        "kcat {args:?} failed or ran past 60 s ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
