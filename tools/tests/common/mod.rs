//! Shared by the `shardlog` binary's tests against a real `shardlogd` child process
//! (`shardlog_net::testing::Shardlogd`, on 127.0.0.1 with an ephemeral port): a server on
//! a data directory of its own under `SHARDLOG_TEST_DIR` (O_DIRECT needs a real
//! filesystem), and running `shardlog` with stdin and collecting what it printed.
//!
//! `shardlogd` must be built in the same target directory (`cargo build -p shardlog-net`,
//! which `cargo nextest run --workspace` does) or named by `SHARDLOGD_BIN`.
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use shardlog_net::testing::{Shardlogd, output_with_stdin, test_root};

pub mod admin;
pub mod kcat;

/// A fresh directory under the test root, named `<prefix>...`.
pub fn test_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(test_root().expect("test dir"))
        .unwrap()
}

/// A running server and its data directory (removed when dropped, after the server).
pub struct Server {
    pub shardlogd: Shardlogd,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// A server with 2 shards on a fresh data directory.
    pub fn start() -> Server {
        let dir = test_dir("tools-online-");
        let shardlogd = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
        Server { shardlogd, dir }
    }

    /// A server as `scripts/run.sh` starts one: no flags but the data directory (and an
    /// ephemeral port).
    #[allow(dead_code)] // one test binary uses it
    pub fn start_plain() -> Server {
        let dir = test_dir("tools-plain-");
        let shardlogd = Shardlogd::start(dir.path(), &[]).unwrap();
        Server { shardlogd, dir }
    }

    /// A server with 2 shards on `data_dir`, which outlives it.
    pub fn start_on(data_dir: &Path) -> Shardlogd {
        Shardlogd::start(data_dir, &["--shards", "2"]).unwrap()
    }

    pub fn brokers(&self) -> String {
        self.shardlogd.brokers()
    }

    /// `shardlog SUBCOMMAND... --brokers B ARGS...` with `stdin` as input.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_against(&self.brokers(), args, stdin)
    }

    /// Like `run`, and the command must succeed.
    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        ok_against(&self.brokers(), args, stdin)
    }

    pub fn create(&self, topic: &str, partitions: u32) {
        let partitions = partitions.to_string();
        self.ok(&["topic", "create", topic, "--partitions", &partitions], "");
    }
}

/// `shardlog ARGS... --brokers BROKERS` with `stdin` as input.
pub fn run_against(brokers: &str, args: &[&str], stdin: &str) -> Output {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--brokers", brokers]);
    shardlog(&full, stdin)
}

/// Like `run_against`, and the command must succeed; its stdout.
pub fn ok_against(brokers: &str, args: &[&str], stdin: &str) -> String {
    let output = run_against(brokers, args, stdin);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `shardlog ARGS...` with `stdin` as input.
pub fn shardlog(args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    output_with_stdin(command.args(args), stdin.as_bytes()).unwrap()
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The text of stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The write end of a pipe whose read end is already closed: a child given it as stdout
/// gets `EPIPE` on its first write, as `cmd | head` gives once `head` has exited.
pub fn closed_pipe() -> File {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors of the array we pass.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: closing the read end, which we own and never use again.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the write end is ours alone; the File now owns it.
    unsafe { File::from_raw_fd(fds[1]) }
}

/// `shardlog ARGS...` with stdout closed by its reader and no stdin.
pub fn shardlog_into_closed_stdout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(closed_pipe()))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}
