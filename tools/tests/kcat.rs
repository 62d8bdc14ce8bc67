//! kcat (librdkafka 2.0, Debian's package) against the shipped `shardlogd`'s Kafka
//! listener: `-L` lists the broker, `-P` produces keyed records (plain and `-z lz4`) to a
//! topic it creates by producing, `-C -e` reads back exactly what was written, and `-Q`
//! finds offsets by time. kcat is installed with apt-get when missing (CI runs on a clean
//! machine); the test fails, naming why, when it cannot be.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::Server;

/// Runs kcat with `args` and `stdin`; what it printed (it must succeed within a minute).
fn run(args: &[&str], stdin: &str) -> String {
    String::from_utf8(common::kcat::kcat(args, stdin).stdout).unwrap()
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
    std::thread::sleep(std::time::Duration::from_millis(20));
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
