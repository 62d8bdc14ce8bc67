//! The soak's cluster: real `shardlogd` processes on 127.0.0.1, every node-to-node link
//! through a fault-injecting [`Proxy`] (node A's `--peers` names, for node B, the proxy of
//! the directed pair A->B), and with disk faults each node's data directory inside a small
//! loop-mounted ext4 filesystem of its own, which the nemesis fills and frees. The shared
//! disk is never filled: the filler writes only inside a node's mount.
//!
//! Cleanup (nodes killed, mounts unmounted, images removed) runs when [`Nodes`] is dropped,
//! which the run does on every path, a failure or a Ctrl-C included.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shardlog_net::testing::proxy::Proxy;
use shardlog_net::testing::{Launch, Shardlogd, StderrTo};

/// Each node's loop filesystem.
const IMAGE_BYTES: &str = "256M";
/// Node ports are picked here: below Linux's ephemeral range, so no outgoing connection
/// takes a node's port while the node is down.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// How long a killed node's port may keep answering.
const PORT_RELEASE_MAX: Duration = Duration::from_secs(10);
/// How long a clean stop (SIGTERM) may take before the node is SIGKILLed.
const CLEAN_STOP_MAX: Duration = Duration::from_secs(30);
/// The filler's write size.
const FILL_CHUNK: usize = 1 << 20;

/// What a node is doing, as far as the soak made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Up,
    /// SIGSTOPped.
    Paused,
    /// Killed or stopped.
    Down,
}

/// The nodes; see the module docs.
pub struct Nodes {
    dir: PathBuf,
    binary: PathBuf,
    ports: Vec<u16>,
    peer_ports: Vec<u16>,
    peers: Vec<String>,
    extra_args: Vec<String>,
    procs: Vec<Option<Shardlogd>>,
    logs: Vec<Arc<Mutex<File>>>,
    /// `proxies[from][to]` (`None` on the diagonal).
    proxies: Vec<Vec<Option<Proxy>>>,
    /// Each node's loop mount, with disk faults.
    mounts: Vec<PathBuf>,
}

impl Nodes {
    /// Sets up `n` nodes under `dir` (loop mounts when `disk`; an error if mounting fails,
    /// which the caller reports and goes on without) without starting them.
    pub fn prepare(
        dir: &Path,
        n: usize,
        binary: PathBuf,
        extra_args: Vec<String>,
        disk: bool,
    ) -> anyhow::Result<Nodes> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let secret = dir.join("cluster.secret");
        write_secret(&secret)?;
        let all = free_ports(2 * n)?;
        let (ports, peer_ports) = (all[..n].to_vec(), all[n..].to_vec());
        let mut proxies = Vec::with_capacity(n);
        for from in 0..n {
            let mut row = Vec::with_capacity(n);
            for (to, &port) in peer_ports.iter().enumerate() {
                let target = SocketAddr::from(([127, 0, 0, 1], port));
                row.push(if from == to {
                    None
                } else {
                    Some(Proxy::start(target).context("starting a link proxy")?)
                });
            }
            proxies.push(row);
        }
        let peers = (0..n)
            .map(|from| peers_of(from, &peer_ports, &proxies))
            .collect();
        let mut nodes = Nodes {
            dir: dir.to_path_buf(),
            binary,
            ports,
            peer_ports,
            peers,
            extra_args,
            procs: (0..n).map(|_| None).collect(),
            logs: Vec::with_capacity(n),
            proxies,
            mounts: Vec::new(),
        };
        let mut common = vec!["--cluster-secret-file".to_owned()];
        common.push(secret.display().to_string());
        common.append(&mut nodes.extra_args);
        nodes.extra_args = common;
        for node in 0..n {
            let node_dir = nodes.node_dir(node);
            std::fs::create_dir_all(&node_dir)?;
            let log = File::options()
                .create(true)
                .append(true)
                .open(node_dir.join("log"))?;
            nodes.logs.push(Arc::new(Mutex::new(log)));
        }
        if disk {
            for node in 0..n {
                let mount = nodes.node_dir(node).join("mnt");
                loop_mount(&nodes.node_dir(node).join("disk.img"), &mount)?;
                nodes.mounts.push(mount);
            }
        }
        for node in 0..n {
            std::fs::create_dir_all(nodes.data_dir(node))?;
        }
        Ok(nodes)
    }

    /// The node count.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Every node's client address, comma-separated.
    pub fn brokers(&self) -> String {
        let all: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        all.join(",")
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node-{node}"))
    }

    fn data_dir(&self, node: usize) -> PathBuf {
        match self.mounts.get(node) {
            Some(mount) => mount.join("data"),
            None => self.node_dir(node).join("data"),
        }
    }

    /// The state of a node.
    pub fn state(&mut self, node: usize) -> NodeState {
        let Some(proc) = self.procs.get_mut(node).and_then(Option::as_mut) else {
            return NodeState::Down;
        };
        if !proc.is_running() {
            return NodeState::Down;
        }
        match proc_state(proc.pid()) {
            Some('T' | 't') => NodeState::Paused,
            _ => NodeState::Up,
        }
    }

    /// Starts the down `nodes` in parallel and waits for their ready lines.
    pub fn start(&mut self, nodes: &[usize]) -> anyhow::Result<()> {
        let mut launched = Vec::new();
        for &node in nodes {
            if let Some(mut old) = self.procs.get_mut(node).and_then(Option::take) {
                old.kill();
            }
            self.wait_ports_free(node)?;
            let mut args = vec![
                "--node-id".to_owned(),
                node.to_string(),
                "--peers".to_owned(),
                self.peers[node].clone(),
                "--peer-listen".to_owned(),
                format!("127.0.0.1:{}", self.peer_ports[node]),
            ];
            args.extend(self.extra_args.iter().cloned());
            let data_dir = self.data_dir(node);
            let listen = format!("127.0.0.1:{}", self.ports[node]);
            let log = self.logs[node].clone();
            note(&log, &format!("---- soak: starting node {node} ----"));
            let binary = self.binary.clone();
            launched.push((
                node,
                std::thread::spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    launch(&binary, &data_dir, &listen, &args, log)
                }),
            ));
        }
        for (node, handle) in launched {
            let proc = handle
                .join()
                .map_err(|_| anyhow::anyhow!("starting node {node}: the thread panicked"))?
                .with_context(|| format!("starting node {node}"))?;
            self.procs[node] = Some(proc);
        }
        Ok(())
    }

    /// SIGKILLs a node and waits until its ports refuse connections.
    pub fn kill(&mut self, node: usize) -> anyhow::Result<()> {
        note(
            &self.logs[node],
            &format!("---- soak: SIGKILL node {node} ----"),
        );
        if let Some(mut proc) = self.procs[node].take() {
            proc.kill();
        }
        self.wait_ports_free(node)
    }

    /// SIGTERM, waits for the exit (a clean stop). A node still running
    /// [`CLEAN_STOP_MAX`] later is SIGKILLed and the hang is the error returned (the fault
    /// goes on: the node is down either way).
    pub fn terminate(&mut self, node: usize) -> anyhow::Result<()> {
        note(
            &self.logs[node],
            &format!("---- soak: SIGTERM node {node} ----"),
        );
        let Some(mut proc) = self.procs[node].take() else {
            return self.wait_ports_free(node);
        };
        let pid = libc::pid_t::try_from(proc.pid()).context("pid range")?;
        // SAFETY: kill(2) on our own child, not reaped yet (its pid is still its own).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        let mut hung = None;
        while proc.is_running() {
            if started.elapsed() > CLEAN_STOP_MAX {
                hung = Some(format!(
                    "node {node} still ran {CLEAN_STOP_MAX:?} after SIGTERM; SIGKILLed"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        proc.kill();
        let took = started.elapsed();
        let line = format!("---- soak: node {node} down {took:?} after SIGTERM ----");
        note(&self.logs[node], &line);
        self.wait_ports_free(node)?;
        match hung {
            Some(why) => bail!(why),
            None => Ok(()),
        }
    }

    /// SIGSTOP.
    pub fn pause(&mut self, node: usize) -> anyhow::Result<()> {
        note(
            &self.logs[node],
            &format!("---- soak: SIGSTOP node {node} ----"),
        );
        match self.procs[node].as_mut() {
            Some(proc) => proc.pause().context("SIGSTOP"),
            None => bail!("node {node} is down"),
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, node: usize) -> anyhow::Result<()> {
        note(
            &self.logs[node],
            &format!("---- soak: SIGCONT node {node} ----"),
        );
        match self.procs[node].as_mut() {
            Some(proc) => proc.resume().context("SIGCONT"),
            None => bail!("node {node} is down"),
        }
    }

    /// Cuts (or heals) the directed link `from` -> `to`: `from`'s connections to `to`.
    pub fn set_link(&self, from: usize, to: usize, cut: bool) {
        if let Some(proxy) = self
            .proxies
            .get(from)
            .and_then(|r| r.get(to))
            .and_then(Option::as_ref)
        {
            for node in [from, to] {
                let what = if cut { "cut" } else { "heal" };
                note(
                    &self.logs[node],
                    &format!("---- soak: {what} link {from}->{to} ----"),
                );
            }
            if cut { proxy.cut() } else { proxy.heal() }
        }
    }

    /// Heals every link.
    pub fn heal_all_links(&self) {
        for row in &self.proxies {
            for proxy in row.iter().flatten() {
                if proxy.is_cut() {
                    proxy.heal();
                }
            }
        }
    }

    /// Fills node's filesystem: writes a file of zeros until ENOSPC. Returns bytes written.
    pub fn fill_disk(&self, node: usize) -> anyhow::Result<u64> {
        let mount = self
            .mounts
            .get(node)
            .context("no loop mount (disk faults off)")?;
        note(
            &self.logs[node],
            &format!("---- soak: filling node {node}'s disk ----"),
        );
        let mut file = File::create(mount.join("fill"))?;
        let chunk = vec![0u8; FILL_CHUNK];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e).context("filling the disk"),
            }
        }
        // What the page cache holds is not on the disk yet: ENOSPC may come at the sync.
        let _ = file.sync_all();
        Ok(written)
    }

    /// Frees what `fill_disk` took.
    pub fn free_disk(&self, node: usize) -> anyhow::Result<()> {
        let Some(mount) = self.mounts.get(node) else {
            return Ok(());
        };
        note(
            &self.logs[node],
            &format!("---- soak: freeing node {node}'s disk ----"),
        );
        match std::fs::remove_file(mount.join("fill")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("freeing"),
            _ => Ok(()),
        }
    }

    /// Ends every fault: resumes paused nodes, heals links, frees disks, starts down nodes.
    pub fn heal_everything(&mut self) -> anyhow::Result<()> {
        self.heal_all_links();
        let mut down = Vec::new();
        for node in 0..self.len() {
            self.free_disk(node)?;
            match self.state(node) {
                NodeState::Paused => self.resume(node)?,
                NodeState::Down => down.push(node),
                NodeState::Up => {}
            }
        }
        self.start(&down)
    }

    fn wait_ports_free(&self, node: usize) -> anyhow::Result<()> {
        for port in [self.ports[node], self.peer_ports[node]] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let started = Instant::now();
            while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                if started.elapsed() > PORT_RELEASE_MAX {
                    bail!("node {node}'s port {port} still answers after {PORT_RELEASE_MAX:?}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for proc in self.procs.iter_mut().filter_map(Option::take) {
            let mut proc = proc;
            proc.kill();
        }
        for mount in &self.mounts {
            let _ = std::fs::remove_file(mount.join("fill"));
            if let Err(e) = unmount(mount) {
                eprintln!("soak: {e:#}");
            }
        }
        self.mounts.clear();
    }
}

fn launch(
    binary: &Path,
    data_dir: &Path,
    listen: &str,
    args: &[&str],
    log: Arc<Mutex<File>>,
) -> std::io::Result<Shardlogd> {
    // `Shardlogd::launch` runs `$SHARDLOGD_BIN`, which `soak::run` set to `binary` before
    // it started any thread.
    debug_assert_eq!(Shardlogd::binary(), binary);
    Shardlogd::launch(&Launch {
        data_dir,
        listen,
        args,
        stderr: StderrTo::File(log),
    })
}

fn note(log: &Arc<Mutex<File>>, line: &str) {
    let mut file = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = writeln!(file, "{line}");
}

/// Node `from`'s `--peers`: itself at its real peer address, every other node at the
/// proxy of the pair.
fn peers_of(from: usize, peer_ports: &[u16], proxies: &[Vec<Option<Proxy>>]) -> String {
    let list: Vec<String> = peer_ports
        .iter()
        .enumerate()
        .map(|(to, port)| {
            match proxies
                .get(from)
                .and_then(|r| r.get(to))
                .and_then(Option::as_ref)
            {
                Some(proxy) => format!("{to}={}", proxy.addr),
                None => format!("{to}=127.0.0.1:{port}"),
            }
        })
        .collect();
    list.join(",")
}

fn write_secret(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = [0u8; 48];
    getrandom_bytes(&mut secret)?;
    let text: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let _ = std::fs::remove_file(path);
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn getrandom_bytes(out: &mut [u8]) -> anyhow::Result<()> {
    let mut file = File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut file, out).context("reading /dev/urandom")
}

/// `n` distinct free ports of [`NODE_PORTS`], spread by pid and time.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut seed = (u64::from(std::process::id()) << 32 | u64::from(nanos)) | 1;
    let span = u64::from(NODE_PORTS.end - NODE_PORTS.start);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..100_000 {
        if ports.len() == n {
            return Ok(ports);
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = NODE_PORTS.start + u16::try_from(seed % span)?;
        if !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    bail!("no {n} free ports in {NODE_PORTS:?}")
}

/// The one-letter state of a process from /proc/PID/stat.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.chars().next()
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Makes an ext4 image of [`IMAGE_BYTES`] at `image` and mounts it on `mount`.
fn loop_mount(image: &Path, mount: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(mount)?;
    let _ = std::fs::remove_file(image);
    run(Command::new("truncate")
        .args(["-s", IMAGE_BYTES])
        .arg(image))?;
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))?;
    let mounted = run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(image)
        .arg(mount));
    if mounted.is_err() {
        let _ = std::fs::remove_file(image);
    }
    mounted
}

fn unmount(mount: &Path) -> anyhow::Result<()> {
    // The killed nodes' io_uring may hold files for a moment after they were reaped.
    let mut last = None;
    for _ in 0..50 {
        match run(Command::new("umount").arg(mount)) {
            Ok(()) => {
                if let Some(dir) = mount.parent() {
                    let _ = std::fs::remove_file(dir.join("disk.img"));
                }
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("umount {}", mount.display())))
        .with_context(|| format!("unmounting {} (unmount it by hand)", mount.display()))
}
