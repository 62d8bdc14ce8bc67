//! The web console in a real browser: a live 3-node cluster of the shipped `shardlogd`
//! (the cluster harness of `net/tests/common`: session timeout 1 s), a topic with three
//! partitions and some records, and the console of the controller leader opened in
//! Debian's chromium, headless, driven by Playwright for Python (`console/browser.py`;
//! `console/setup.sh` installs both when missing, never `playwright install`).
//!
//! The page must render every node live and every partition with its leader and an ISR
//! of three; then another node is SIGKILLed, and the page, never reloaded, must show it
//! down and out of every ISR once the controller fences it. A screenshot of that page is
//! left at `target/console-browser/console.png` (the README's `docs/console.png`).
//!
//! `shardlogd` must be built in the same target directory (`cargo build --workspace`) or
//! named by `SHARDLOGD_BIN`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "../../net/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::cluster::{Cluster, Links, partition};

const TOPIC: &str = "console";
const PARTITIONS: u32 = 3;
/// Bound on every wait for the cluster or the browser (a loaded two-core machine).
const WAIT_MAX: Duration = Duration::from_secs(120);

#[test]
fn the_console_shows_the_cluster_and_a_killed_node_turns_down_without_a_reload() {
    let python = browser_python();
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    let brokers = cluster.brokers();
    let partitions = PARTITIONS.to_string();
    let args = ["topic", "create", TOPIC, "--partitions", &partitions];
    let created = shardlog(&[&args[..], &["--brokers", &brokers]].concat(), "");
    assert_eq!(created.status.code(), Some(0), "{}", describe(&created));
    let (controller, _) = cluster.wait_for("every partition led and in sync", WAIT_MAX, |c| {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        for id in 0..PARTITIONS {
            let p = partition(&meta, TOPIC, id).ok_or("no partition yet")?;
            if p.leader.is_none() || p.isr.len() != 3 {
                return Err(format!("{p:?}"));
            }
        }
        meta.controller.ok_or_else(|| "no controller".to_owned())
    });
    let lines: String = (0..300).map(|i| format!("record {i}\n")).collect();
    let produced = shardlog(
        &["produce", "--topic", TOPIC, "--brokers", &brokers],
        &lines,
    );
    assert_eq!(produced.status.code(), Some(0), "{}", describe(&produced));
    // Records every second meanwhile, for the charts (not checked: the kill may fail some).
    let load = Load::start(&brokers);

    // The console of the controller leader; the victim is another node.
    let watched = controller as usize;
    let victim = (0..3).rev().find(|n| *n != watched).unwrap();
    let admin = cluster.admin_addr(watched);
    let screenshot = browser_dir().join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut browser = Command::new(&python)
        .arg(script("browser.py"))
        .args([
            format!("http://{admin}/"),
            victim.to_string(),
            TOPIC.to_owned(),
            partitions.clone(),
            screenshot.display().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut to_browser = browser.stdin.take().unwrap();
    let said = lines_of(browser.stdout.take().unwrap());
    let rendered = expect_line(&said, "RENDERED", &mut cluster);
    eprintln!("console of node {watched}: {rendered}");

    cluster.kill(&[victim]);
    writeln!(to_browser, "killed {victim}").unwrap();
    let down = expect_line(&said, "DOWN", &mut cluster);
    eprintln!("after SIGKILL of node {victim}: {down}");
    load.stop();
    let status = browser.wait().unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}

/// The first line the browser script prints that starts with `prefix`; fails (with the
/// nodes' logs) when it exits first or says nothing within `WAIT_MAX`.
fn expect_line(said: &mpsc::Receiver<String>, prefix: &str, cluster: &mut Cluster) -> String {
    loop {
        match said.recv_timeout(WAIT_MAX) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(line) => eprintln!("browser: {line}"),
            Err(e) => {
                cluster.print_logs();
                panic!("the browser script never printed {prefix} ({e}); see its stderr above");
            }
        }
    }
}

/// `shardlog produce` of 200 records, every second, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(brokers: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (brokers, stopped) = (brokers.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let lines: String = (0..200).map(|i| format!("load {i}\n")).collect();
            while !stopped.load(Ordering::Relaxed) {
                // Bounded, so that stopping never waits on a client stuck on the killed node.
                let _ = Command::new("timeout")
                    .args([
                        "20",
                        env!("CARGO_BIN_EXE_shardlog"),
                        "produce",
                        "--topic",
                        TOPIC,
                    ])
                    .args(["--brokers", &brokers])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .and_then(|mut child| {
                        child.stdin.take().unwrap().write_all(lines.as_bytes())?;
                        child.wait()
                    });
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Load { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// A child's stdout as lines, read on a thread of their own.
fn lines_of(stdout: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The virtualenv's python with Playwright, chromium installed (`console/setup.sh`).
fn browser_python() -> PathBuf {
    let output = Command::new("bash")
        .arg(script("setup.sh"))
        .arg(browser_dir())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "console/setup.sh failed (above)");
    let stdout = String::from_utf8(output.stdout).unwrap();
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("setup.sh names the python")
            .trim(),
    )
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/console")
        .join(name)
}

/// `target/console-browser`: the virtualenv and the screenshot.
fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-browser")
}

fn shardlog(args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    shardlog_net::testing::output_with_stdin(command.args(args), stdin.as_bytes()).unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
