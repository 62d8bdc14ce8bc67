//! `shardlog-bench engine` runs end to end: a short counted run writes a JSON report with
//! the configuration and exactly the records asked for, `--keep` leaves data that
//! `--open-only` reopens, and a bad flag is a usage error. No timing is asserted.

use std::process::Command;

fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(shardlog_net::testing::test_root().expect("test dir")).expect("temp dir")
}

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(args)
        .args(["--io-memory", "1048576"])
        .output()
        .expect("run shardlog-bench")
}

#[test]
fn counted_run_reports_exact_records_and_reopens() {
    let dir = test_dir();
    let data = dir.path().to_str().unwrap();
    let json = dir.path().join("report.json");
    let out = bench(&[
        "engine",
        "--data-dir",
        data,
        "--count",
        "2000",
        "--batch-records",
        "10",
        "--record-size",
        "200",
        "--appenders",
        "4",
        "--partitions",
        "2",
        "--segment-bytes",
        "262144",
        "--keep",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["config"]["flush"], "always");
    assert_eq!(report["config"]["partitions"], 2);
    let batch = report["config"]["batch_bytes"].as_u64().unwrap();
    let results = &report["results"];
    assert_eq!(results["records"], 2000);
    assert_eq!(results["batches"], 200);
    assert_eq!(results["append_latency_us"]["count"], 200);
    assert!(results["syncs"].as_u64().unwrap() > 0);
    assert!(
        results["syncs"].as_u64().unwrap() <= 200 + 2 * 16,
        "{results}"
    );
    for key in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        assert!(
            results["append_latency_us"][key].as_u64().unwrap() > 0,
            "{key}"
        );
    }

    let out = bench(&[
        "engine",
        "--data-dir",
        data,
        "--open-only",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["open"]["partitions"], 2);
    assert_eq!(report["open"]["data_bytes"].as_u64().unwrap(), 200 * batch);
}

#[test]
fn bad_flush_policy_is_a_usage_error() {
    let dir = test_dir();
    let out = bench(&[
        "engine",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--flush",
        "sometimes",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flush policy"));
}

#[test]
fn a_closed_stdout_is_a_normal_end() {
    let dir = test_dir();
    let json = dir.path().join("report.json");
    // The write end of a pipe whose reader is gone, as after `| head -1`.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors of the array we pass.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the read end is ours and never used again.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the write end is ours alone; the File owns it from here.
    let stdout = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(["engine", "--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--count",
            "100",
            "--batch-records",
            "10",
            "--io-memory",
            "1048576",
        ])
        .args(["--json", json.to_str().unwrap()])
        .stdout(std::process::Stdio::from(stdout))
        .output()
        .expect("run shardlog-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    // The run went on past the table: its JSON report is there.
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["results"]["records"], 100);
}
