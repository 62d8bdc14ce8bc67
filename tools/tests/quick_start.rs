//! The README's quick start, run as written: its `sh` block is read from README.md and
//! run with bash against a real `shardlogd` started the way `scripts/run.sh` starts it
//! (defaults, a fresh data directory). Only what a test must change is changed: the
//! server's address (an ephemeral port instead of 9095), the directory of the binaries
//! (this build's), and the bench's length (2 s and 20,000 records instead of 10 s and
//! a million). Every command must succeed, and its output must say what the README says.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

/// The quick start's `sh` block.
fn quick_start() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let section = readme
        .split("\n## Quick start")
        .nth(1)
        .expect("a Quick start section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("an sh block in the quick start");
    block.to_owned()
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let server = Server::start_plain();
    let bin = Path::new(env!("CARGO_BIN_EXE_shardlog"))
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    assert!(
        bin.join("shardlog-bench").exists(),
        "shardlog-bench is not built beside shardlog (cargo build --workspace)"
    );
    let script = quick_start();
    for needed in [
        "127.0.0.1:9095",
        "$PWD/target/release",
        "--duration 10",
        "--count 1000000",
    ] {
        assert!(
            script.contains(needed),
            "the quick start no longer says {needed:?}"
        );
    }
    let script = script
        .replace("127.0.0.1:9095", &server.brokers())
        .replace("$PWD/target/release", &bin.display().to_string())
        .replace("--duration 10", "--duration 2")
        .replace("--count 1000000", "--count 20000");
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env_remove("SHARDLOG_BROKERS")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the quick start failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let expected = [
        "created topic orders (3 partitions",
        "topic orders: 3 partitions",
        "user-1\tlogin",
        "user-2\tlogout",
        "later",
    ];
    for line in expected {
        assert!(
            stdout.contains(line) || stderr.contains(line),
            "no {line:?} in the output:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    // Five records, each reported as partition<TAB>offset.
    let reported = stdout
        .lines()
        .filter(|l| {
            let mut fields = l.split('\t');
            let (Some(p), Some(o), None) = (fields.next(), fields.next(), fields.next()) else {
                return false;
            };
            p.parse::<u32>().is_ok_and(|p| p < 3) && o.parse::<u64>().is_ok()
        })
        .count();
    assert!(reported >= 5, "offsets not reported:\n{stdout}");
    assert!(
        stdout.contains("records/s") || stderr.contains("records/s"),
        "no bench table:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
