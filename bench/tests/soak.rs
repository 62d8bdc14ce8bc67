//! `shardlog-bench soak`, the shipped binary, as CI runs it: 3 real nodes, a fixed seed,
//! the fault kinds that pass on the current code (see `CI_FAULTS`), about two minutes of
//! faults. It must exit 0 and its summary must show faults injected, records acknowledged
//! and consumed, and no violation. And the checker, on a history with a lost record, must
//! exit 1 and say so (`soak-check`).
//!
//! `shardlogd` must be built in the same target directory (`cargo build --workspace`) or
//! named by `SHARDLOGD_BIN`. Data lives under `SHARDLOG_TEST_DIR`; with disk faults the
//! soak mounts a small loop filesystem per node (root only; otherwise it skips them).

use std::process::Command;

use shardlog_net::testing::{Shardlogd, test_root};

/// The seed of the CI run.
const CI_SEED: &str = "11";
/// Seconds of faults in the CI run (the heal, settle and final read follow).
const CI_DURATION: &str = "100";
/// The fault kinds of the CI run; the README's Soak section says which are left out and
/// why.
const CI_FAULTS: &str = "kill,stop,restart,partition,oneway,isolate,retention";

fn bench(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(args)
        .output()
        .expect("run shardlog-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stdout, stderr)
}

/// The number after `prefix` on the line that starts with `line_start`.
fn figure(stdout: &str, line_start: &str, prefix: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no line {line_start:?} in:\n{stdout}"));
    let rest = &line[line
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} in {line:?}"))
        + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a number after {prefix:?} in {line:?}"))
}

#[test]
fn the_ci_soak_injects_faults_and_finds_no_violation() {
    let dir = tempfile::Builder::new()
        .prefix("soak-")
        .tempdir_in(test_root().expect("test dir"))
        .expect("temp dir");
    let binary = Shardlogd::binary();
    let (code, stdout, stderr) = bench(&[
        "soak",
        "--seed",
        CI_SEED,
        "--duration",
        CI_DURATION,
        "--faults",
        CI_FAULTS,
        "--dir",
        dir.path().to_str().expect("utf-8 path"),
        "--shardlogd",
        binary.to_str().expect("utf-8 path"),
    ]);
    let tail: String = stderr.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert_eq!(
        code,
        Some(0),
        "stdout:\n{stdout}\nstderr (last lines, reversed):\n{tail}"
    );
    assert!(stdout.contains("soak passed: no violation"), "{stdout}");
    assert!(
        figure(&stdout, "violations:", "not in sync after healing ") == 0,
        "{stdout}"
    );
    let violations = stdout
        .lines()
        .find(|l| l.starts_with("violations:"))
        .expect("a violations line");
    for kind in [
        "lost",
        "duplicated",
        "out of order",
        "gaps",
        "read then lost",
    ] {
        assert!(violations.contains(&format!("{kind} 0,")), "{violations}");
    }
    assert!(
        figure(&stdout, "faults injected:", "injected: ") >= 15,
        "{stdout}"
    );
    assert!(
        figure(&stdout, "records:", "acknowledged ") >= 10_000,
        "{stdout}"
    );
    assert!(
        figure(&stdout, "records:", "consumed ") >= 10_000,
        "{stdout}"
    );
    let history = std::fs::read_to_string(dir.path().join("history.jsonl")).expect("history");
    for kind in [
        "\"send\"",
        "\"ack\"",
        "\"read\"",
        "\"fault\"",
        "\"final\"",
        "\"final_end\"",
    ] {
        assert!(
            history.contains(&format!("\"ev\":{kind}")),
            "no {kind} event"
        );
    }
}

#[test]
fn the_checker_fails_a_history_with_a_lost_record() {
    let dir = tempfile::tempdir_in(test_root().expect("test dir")).expect("temp dir");
    let path = dir.path().join("history.jsonl");
    // Two records acknowledged at offsets 0 and 1; the final log holds only offset 0.
    let lines = [
        r#"{"ev":"send","t":1.0,"producer":0,"partition":0,"seq":0,"count":2}"#,
        r#"{"ev":"ack","t":2.0,"producer":0,"partition":0,"seq":0,"count":2,"offset":0}"#,
        r#"{"ev":"final","t":3.0,"partition":0,"records":[[0,0,0]]}"#,
        r#"{"ev":"final_end","t":4.0,"partition":0,"log_start":0,"hw":1,"error":null}"#,
    ];
    std::fs::write(&path, lines.join("\n")).expect("write history");
    let (code, stdout, stderr) = bench(&["soak-check", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("violations: lost 1,"), "{stdout}");
    assert!(stderr.contains("soak FAILED: 1 violations"), "{stderr}");
}
