//! A real `shardlogd` child process for tests of every crate: started on 127.0.0.1 (an
//! ephemeral port unless told otherwise), its ready line awaited, killed when dropped.
//! Its stderr is copied to the test's stderr, or kept as a [`LogTail`] that a test prints
//! when it fails (cluster tests run several nodes whose full logs would drown the cause).
//! [`proxy`]: a fault-injecting TCP proxy for the links between nodes.

pub mod proxy;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use crate::logging::announced;

/// The line prefix `shardlogd` prints on stderr once every shard listens.
pub const READY_PREFIX: &str = "shardlogd ready: listening on ";
/// The line prefix `shardlogd` prints on stderr, just before the ready line, naming the
/// Kafka listener's address.
pub const KAFKA_PREFIX: &str = "shardlogd kafka: listening on ";

/// The line prefix `shardlogd` prints on stderr, before the Kafka line, naming the admin
/// HTTP listener's address (when it has one).
pub const ADMIN_PREFIX: &str = "shardlogd admin: listening on ";

/// How long `start` waits for the ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `command` with `stdin` as its input and collects what it printed. The input is
/// written from a thread: a command that prints before it has read everything, or exits
/// without reading (a usage error), cannot leave the test stuck on a full pipe.
pub fn output_with_stdin(
    command: &mut Command,
    stdin: &[u8],
) -> std::io::Result<std::process::Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    // A broken pipe (the command did not read it all) is the command's business.
    let writer = std::thread::spawn(move || drop(pipe.write_all(&input)));
    let output = child.wait_with_output();
    writer.join().expect("the stdin writer does not panic");
    output
}

/// The value of the unlabelled metric `name` on the metrics page of the admin listener
/// at `admin` (`GET /metrics`).
pub fn metric(admin: std::net::SocketAddr, name: &str) -> std::io::Result<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    sample(&page, name, "")
        .ok_or_else(|| std::io::Error::other(format!("no {name} on the metrics page")))
}

/// The value of the sample `name{labels}` on a metrics page (labels exactly as the page
/// writes them, in its order; `""` for none), if the page has it.
#[must_use]
pub fn sample(page: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(key.as_str())?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

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

/// The last lines a child printed on stderr, shared with the thread reading them. One tail
/// may outlive its child: a restarted node appends to the tail of the one before it.
#[derive(Clone, Debug)]
pub struct LogTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    lines_max: usize,
}

impl LogTail {
    /// A tail that keeps the last `lines_max` lines.
    #[must_use]
    pub fn new(lines_max: usize) -> LogTail {
        LogTail {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(lines_max))),
            lines_max,
        }
    }

    /// Appends a line, dropping the oldest past `lines_max`.
    pub fn push(&self, line: String) {
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lines.len() == self.lines_max {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The lines kept, oldest first.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.iter().cloned().collect()
    }
}

/// Where a child's stderr goes.
#[derive(Clone, Debug)]
pub enum StderrTo {
    /// Copied to this process's stderr, each line prefixed with `[shardlogd]`.
    Echo,
    /// Kept in a tail (and not copied).
    Tail(LogTail),
    /// Appended to a file (shared by a node's successive processes), one line at a time.
    File(Arc<Mutex<std::fs::File>>),
}

/// How to start a `shardlogd`: [`Shardlogd::launch`].
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    /// Its data directory.
    pub data_dir: &'a Path,
    /// `--listen`: `127.0.0.1:0` picks a free port (the ready line names it).
    pub listen: &'a str,
    /// Further flags.
    pub args: &'a [&'a str],
    /// Where its stderr goes.
    pub stderr: StderrTo,
}

/// `--kafka-listen 127.0.0.1:0` unless `args` name a Kafka listener: test servers never
/// take the default port 9092 (servers of concurrent tests would clash on it).
fn kafka_listen_args(args: &[&str]) -> &'static [&'static str] {
    if args.contains(&"--kafka-listen") {
        &[]
    } else {
        &["--kafka-listen", "127.0.0.1:0"]
    }
}

/// `--admin-listen 127.0.0.1:0` unless `args` name the admin listener: tests run many
/// servers at once, which must not all claim the default port.
fn admin_listen_args(args: &[&str]) -> &'static [&'static str] {
    if args.contains(&"--admin-listen") {
        &[]
    } else {
        &["--admin-listen", "127.0.0.1:0"]
    }
}

/// Notes the Kafka or admin listener's address if `line` names one.
fn note_listeners(line: &str, kafka: &mut Option<String>, admin: &mut Option<String>) {
    if let Some(addr) = announced(line, KAFKA_PREFIX) {
        *kafka = Some(addr.to_owned());
    }
    if let Some(addr) = announced(line, ADMIN_PREFIX) {
        *admin = Some(addr.to_owned());
    }
}

/// The admin line's address, if there was one.
fn parse_admin_addr(addr: Option<String>) -> std::io::Result<Option<SocketAddr>> {
    addr.map(|a| a.parse())
        .transpose()
        .map_err(|e| other(&format!("admin line address: {e}")))
}

/// A running `shardlogd`.
#[derive(Debug)]
pub struct Shardlogd {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its Kafka listener listens.
    pub kafka_addr: SocketAddr,
    /// Where its admin HTTP listener listens, if it has one.
    pub admin_addr: Option<SocketAddr>,
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
        Shardlogd::launch(&Launch {
            data_dir,
            listen: "127.0.0.1:0",
            args: extra_args,
            stderr: StderrTo::Echo,
        })
    }

    /// A node on `dir/data` that requires SASL (`--authentication sasl`), whose superuser
    /// `user` with `password` is created at its first start from a `--superuser-file`
    /// (`dir/superuser`, readable by its owner only); `args` are further flags. The
    /// superuser exists only once the node serves: a client retries until it
    /// authenticates.
    pub fn start_with_superuser(
        dir: &Path,
        (user, password): (&str, &str),
        args: &[&str],
    ) -> std::io::Result<Shardlogd> {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.join("superuser");
        std::fs::write(&file, format!("{user}:{password}\n"))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        let file = file.display().to_string();
        let mut all = vec!["--authentication", "sasl", "--superuser-file", &file];
        all.extend_from_slice(args);
        Shardlogd::launch(&Launch {
            data_dir: &dir.join("data"),
            listen: "127.0.0.1:0",
            args: &all,
            stderr: StderrTo::Echo,
        })
    }

    /// Starts `shardlogd --data-dir DATA_DIR --listen LISTEN ARGS...` and waits for its
    /// ready line.
    pub fn launch(launch: &Launch<'_>) -> std::io::Result<Shardlogd> {
        let binary = Shardlogd::binary();
        let data_dir = launch.data_dir;
        let mut child = Command::new(&binary)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", launch.listen])
            .args(kafka_listen_args(launch.args))
            .args(admin_listen_args(launch.args))
            .args(launch.args)
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
        let sink = launch.stderr.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let (mut kafka, mut admin) = (None, None);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                note_listeners(&line, &mut kafka, &mut admin);
                let ready = announced(&line, READY_PREFIX).map(|a| {
                    let kafka = kafka.clone().unwrap_or_default();
                    (a.to_owned(), kafka, admin.clone())
                });
                match &sink {
                    StderrTo::Echo => eprintln!("[shardlogd] {line}"),
                    StderrTo::Tail(tail) => tail.push(line),
                    StderrTo::File(file) => {
                        let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                        // A log line that cannot be written is lost, not the node.
                        let _ = writeln!(file, "{line}");
                    }
                }
                if let Some(addr) = ready
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let (addr, kafka_addr, admin_addr) = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                return Err(other(&format!("shardlogd never became ready ({status})")));
            }
        };
        let addr = addr
            .parse()
            .map_err(|e| other(&format!("ready line address {addr:?}: {e}")))?;
        let kafka_addr = kafka_addr
            .parse()
            .map_err(|e| other(&format!("kafka line address {kafka_addr:?}: {e}")))?;
        let admin_addr = parse_admin_addr(admin_addr)?;
        Ok(Shardlogd {
            child,
            addr,
            kafka_addr,
            admin_addr,
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
        self.signal(libc::SIGTERM)?;
        self.child.wait()
    }

    /// SIGHUP: the server re-reads its TLS files (`--tls-cert`, `--tls-key`,
    /// `--tls-client-ca`).
    pub fn hangup(&mut self) -> std::io::Result<()> {
        self.signal(libc::SIGHUP)
    }

    /// SIGSTOP: the process stays, frozen (its sockets stay open and silent).
    pub fn pause(&mut self) -> std::io::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`Shardlogd::pause`].
    pub fn resume(&mut self) -> std::io::Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&mut self, signal: libc::c_int) -> std::io::Result<()> {
        // A reaped child's pid may name another process by now: never signal it.
        if let Some(status) = self.child.try_wait()? {
            return Err(other(&format!("shardlogd already exited ({status})")));
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| other("pid range"))?;
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// How a `shardlogd` that was expected to refuse its start ended: [`refused_start`].
#[derive(Debug)]
pub struct Exited {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// From spawn to exit.
    pub took: Duration,
}

/// Runs `shardlogd --data-dir DATA_DIR --listen LISTEN ARGS...`, which should refuse to
/// start, and returns how it exited. `Err` (and the process killed) as soon as it prints
/// its ready line, or if it still runs after `timeout`: a refusal must be prompt.
pub fn refused_start(launch: &Launch<'_>, timeout: Duration) -> std::io::Result<Exited> {
    let started = std::time::Instant::now();
    let mut child = Command::new(Shardlogd::binary())
        .arg("--data-dir")
        .arg(launch.data_dir)
        .args(["--listen", launch.listen])
        .args(kafka_listen_args(launch.args))
        .args(admin_listen_args(launch.args))
        .args(launch.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or_else(|| other("no stderr pipe"))?;
    let (served_tx, served) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if announced(&line, READY_PREFIX).is_some() {
                let _ = served_tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let served = served.try_recv().is_ok();
        if served || started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let text = reader.join().unwrap_or_default();
            let what = if served {
                "started and served".to_owned()
            } else {
                format!("still ran {timeout:?} after its start")
            };
            return Err(other(&format!("shardlogd {what}; stderr:\n{text}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let stderr = reader.join().map_err(|_| other("stderr reader panicked"))?;
    if stderr
        .lines()
        .any(|line| announced(line, READY_PREFIX).is_some())
    {
        return Err(other(&format!("shardlogd served, then exited:\n{stderr}")));
    }
    Ok(Exited {
        status,
        stderr,
        took,
    })
}

impl Drop for Shardlogd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn other(message: &str) -> std::io::Error {
    std::io::Error::other(message.to_owned())
}
