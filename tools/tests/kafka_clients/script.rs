//! Installing the clients (`setup.sh`, once per test process) and running a client script
//! of this directory: its `@kill`/`@restart` requests are carried out on the nodes and
//! answered on its stdin, its `@result JSON` line is returned, and a script that does
//! not finish in time is killed with its whole process group (the group members it
//! started too).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use super::nodes::Nodes;

/// This directory: the scripts and `setup.sh`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients")
}

/// Where the virtualenv and the install logs go: `$SHARDLOG_KAFKA_CLIENTS_DIR`, else
/// `target/kafka-clients` of the workspace.
fn install_dir() -> PathBuf {
    std::env::var_os("SHARDLOG_KAFKA_CLIENTS_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kafka-clients"),
        PathBuf::from,
    )
}

/// The virtualenv's python, with confluent-kafka, kafka-python and aiokafka, and kcat on
/// the PATH: installed by `setup.sh` unless present. Panics with the installer's message
/// when it cannot install them (no registry reachable): the suite must not pass without
/// its clients.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = Command::new("bash")
            .arg(dir().join("setup.sh"))
            .arg(install_dir())
            .stdin(Stdio::null())
            .output()
            .expect("running setup.sh");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "installing the Kafka clients failed ({}):\n{stderr}",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("setup.sh names the python")
                .trim(),
        )
    })
}

/// A running script, killed with its process group when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) on the process group our child leads; no memory touched.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// Runs `PROGRAM ARGS...` (a client script: `python SCRIPT`, or a shell command) with
/// `nodes` at its disposal, for at most `timeout`; panics unless it exits 0 after an
/// `@result` line, which it returns parsed.
pub fn run(
    nodes: &mut Nodes,
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    let started = Instant::now();
    eprintln!("test: running {} {args:?}", program.display());
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("starting the client script");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = Running(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut result = None;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "{args:?} still ran after {timeout:?}");
        let line = match lines.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                nodes.assert_running();
                continue;
            }
        };
        if let Some(json) = line.strip_prefix("@result ") {
            result = Some(serde_json::from_str(json).expect("the @result line is JSON"));
        } else if let Some(command) = line.strip_prefix('@') {
            let answer = match nodes.control(command) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error {e}"),
            };
            writeln!(stdin, "{answer}").unwrap();
        } else {
            eprintln!("[client] {line}");
        }
    }
    let status = child.0.wait().unwrap();
    eprintln!(
        "test: {args:?} ended ({status}) after {:?}",
        started.elapsed()
    );
    assert!(
        status.success(),
        "{args:?} failed ({status}); its stderr is above"
    );
    result.unwrap_or_else(|| panic!("{args:?} printed no @result line"))
}

/// Runs the client script `name` of this directory with the virtualenv's python.
pub fn python_script(
    nodes: &mut Nodes,
    name: &str,
    args: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    let mut full = vec![name];
    full.extend(args);
    run(nodes, python(), &full, timeout)
}
