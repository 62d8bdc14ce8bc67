//! kcat (librdkafka 2.0, Debian's package) against the shipped `shardlogd`'s Kafka
//! listener: `-L` lists the broker, `-P` produces keyed records (plain and `-z lz4`) to a
//! topic it creates by producing, `-C -e` reads back exactly what was written, and `-Q`
//! finds offsets by time. kcat is installed with apt-get when missing (CI runs on a clean
//! machine); the test fails, naming why, when it cannot be.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Server;

/// kcat, installed if missing.
fn kcat() -> &'static str {
    let present = || {
        Command::new("kcat")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !present() {
        let install = |args: &[&str]| {
            let status = Command::new("apt-get").args(args).status();
            status.is_ok_and(|s| s.success())
        };
        let installed = install(&["install", "-y", "kcat"])
            || (install(&["update"]) && install(&["install", "-y", "kcat"]));
        assert!(
            installed && present(),
            "kcat is missing and apt-get could not install it"
        );
    }
    "kcat"
}

/// Runs kcat with `args` and `stdin`; it must succeed within a minute.
fn run(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(kcat())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let started = std::time::Instant::now();
    let output: Output = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "kcat {args:?} did not finish: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kcat {args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn kcat_lists_produces_consumes_and_queries_by_time() {
    let server = Server::start();
    let broker = server.shardlogd.kafka_addr.to_string();
    let b = broker.as_str();
    let listed = run(&["-b", b, "-L"], "");
    assert!(listed.contains(&format!("broker 0 at {b}")), "{listed}");
    let before_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 1;
    let plain: String = (0..50).map(|i| format!("key-{i}:value {i}\n")).collect();
    run(&["-b", b, "-P", "-t", "events", "-K:"], &plain);
    let middle_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::thread::sleep(Duration::from_millis(20));
    let compressed: String = (50..60).map(|i| format!("key-{i}:lz4 {i}\n")).collect();
    run(
        &["-b", b, "-P", "-t", "events", "-K:", "-z", "lz4"],
        &compressed,
    );
    let listed = run(&["-b", b, "-L", "-t", "events"], "");
    assert!(
        listed.contains("topic \"events\" with 1 partitions"),
        "{listed}"
    );
    let consumed = run(
        &[
            "-b",
            b,
            "-C",
            "-t",
            "events",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %k=%s\n",
        ],
        "",
    );
    let expected: String = (0..50)
        .map(|i| format!("{i} key-{i}=value {i}\n"))
        .chain((50..60).map(|i| format!("{i} key-{i}=lz4 {i}\n")))
        .collect();
    assert_eq!(consumed, expected);
    let earliest = run(&["-b", b, "-Q", "-t", &format!("events:0:{before_ms}")], "");
    assert!(earliest.contains("events [0] offset 0"), "{earliest}");
    let later = run(
        &["-b", b, "-Q", "-t", &format!("events:0:{}", middle_ms + 10)],
        "",
    );
    assert!(later.contains("events [0] offset 50"), "{later}");
    let future = run(
        &[
            "-b",
            b,
            "-Q",
            "-t",
            &format!("events:0:{}", middle_ms + 3_600_000),
        ],
        "",
    );
    assert!(future.contains("events [0] offset -1"), "{future}");
}
