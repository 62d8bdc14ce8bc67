//! A real `shardlogd` child process for tests of every crate: started on 127.0.0.1 with an
//! ephemeral port, its ready line awaited, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The line prefix `shardlogd` prints on stderr once every shard listens.
pub const READY_PREFIX: &str = "shardlogd ready: listening on ";

/// How long `start` waits for the ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where tests of every crate put their data: `$SHARDLOG_TEST_DIR`, else the workspace's
/// `target/shardlog-test` (O_DIRECT needs a real filesystem, which `/tmp` may not be).
/// Created if missing.
pub fn test_root() -> std::io::Result<PathBuf> {
    let root = std::env::var_os("SHARDLOG_TEST_DIR").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/shardlog-test"
            ))
        },
        PathBuf::from,
    );
    std::fs::create_dir_all(&root)?;
    Ok(root)
}

/// A running `shardlogd`.
#[derive(Debug)]
pub struct Shardlogd {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl Shardlogd {
    /// The binary: `$SHARDLOGD_BIN`, else `shardlogd` in the target directory of the
    /// running test (`target/<profile>/`, the parent of the test's `deps/`).
    #[must_use]
    pub fn binary() -> PathBuf {
        if let Some(path) = std::env::var_os("SHARDLOGD_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        dir.join("shardlogd")
    }

    /// Starts `shardlogd --data-dir DATA_DIR --listen 127.0.0.1:0 EXTRA_ARGS...` and waits
    /// for its ready line. Its stderr is copied to this process's stderr.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> std::io::Result<Shardlogd> {
        let binary = Shardlogd::binary();
        let mut child = Command::new(&binary)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let hint = "build it first (cargo build -p shardlog-net) or set SHARDLOGD_BIN";
                let message = format!("starting {}: {e}; {hint}", binary.display());
                std::io::Error::new(e.kind(), message)
            })?;
        let stderr = child.stderr.take().ok_or_else(|| other("no stderr pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[shardlogd] {line}");
                if let Some(addr) = line.strip_prefix(READY_PREFIX)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                return Err(other(&format!("shardlogd never became ready ({status})")));
            }
        };
        let addr = addr
            .parse()
            .map_err(|e| other(&format!("ready line address {addr:?}: {e}")))?;
        Ok(Shardlogd {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// `HOST:PORT` for clients.
    #[must_use]
    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::io::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| other("pid range"))?;
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.child.wait()
    }
}

impl Drop for Shardlogd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn other(message: &str) -> std::io::Error {
    std::io::Error::other(message.to_owned())
}
