//! `shardlogd`'s command line: a malformed address is a usage error (exit 2, with the
//! usage line), named before anything starts or touches the data directory.

use std::process::Command;

#[test]
fn a_listen_address_without_host_or_port_is_a_usage_error() {
    let root = shardlog_net::testing::test_root().unwrap();
    let dir = tempfile::tempdir_in(root).unwrap();
    let data = dir.path().join("never-created");
    for (flag, address) in [
        ("--listen", "32001"),
        ("--listen", "localhost"),
        ("--listen", "127.0.0.1:port"),
        ("--advertise", "broker1"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_shardlogd"))
            .arg("--data-dir")
            .arg(&data)
            .args([flag, address])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {address}: {stderr}");
        assert!(
            stderr.contains(&format!("{flag} \"{address}\": expected HOST:PORT")),
            "{stderr}"
        );
        assert!(stderr.contains("Usage: shardlogd"), "{stderr}");
        assert!(
            !data.exists(),
            "{flag} {address}: the data directory was created"
        );
    }
}
