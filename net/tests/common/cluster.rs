//! A cluster of real `shardlogd` nodes on 127.0.0.1, for replication tests: start, SIGKILL,
//! SIGSTOP/SIGCONT and restart single nodes on their own data, optionally with every
//! node-to-node link running through a fault-injecting [`Proxy`] (one per directed pair)
//! so a test can partition a node away while clients still reach it at its real address.
//!
//! Each node listens on a fixed port (a restart must come back where its peers expect
//! it), picked below the kernel's ephemeral range so that no outgoing connection can hold
//! it while the node is down. Its stderr is kept in a [`LogTail`] that survives restarts;
//! a test that panics prints every node's tail (the full logs of three nodes under load
//! would drown the cause).
//!
//! Metadata is read with a blocking one-shot request ([`Cluster::metadata`]), so the
//! thread that injects faults needs no executor and never waits on the one that carries
//! the load.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use shardlog_net::ErrorCode;
use shardlog_net::api::{
    Api, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetSpec,
    PartitionMetadata, VERSION,
};
use shardlog_net::frame::{FLAG_ERROR, decode_meta};
use shardlog_net::testing::{Launch, LogTail, Shardlogd, StderrTo};

use super::proxy::Proxy;

/// Lines of stderr kept per node (for [`Cluster::log_lines`]).
const TAIL_LINES: usize = 5_000;
/// Lines of each node's stderr a failing test prints: the full logs of three nodes under
/// load would drown the cause.
const PRINTED_LINES: usize = 120;
/// How long a metadata request may take (a paused node never answers).
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a killed node's port may keep answering (see `Cluster::kill`).
const PORT_RELEASE_MAX: Duration = Duration::from_secs(10);
/// Ports for nodes are picked from here: below Linux's default ephemeral range
/// (32768-60999), so that no outgoing connection takes a node's port while it is down.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The cluster secret every node proves itself with, and its file under the root.
pub const CLUSTER_SECRET: &[u8] = b"the test cluster's secret, long enough to count";
const SECRET_FILE: &str = "cluster.secret";

/// Flags every node gets besides its id, address, peers and data directory.
pub const NODE_ARGS: &[&str] = &[
    "--session-timeout-ms",
    "1000",
    "--replica-lag-ms",
    "10000",
    "--shards",
    "2",
    "--flush",
    "always",
];

/// Where node-to-node traffic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Straight to each node's listen address.
    Direct,
    /// Through a [`Proxy`] per directed pair of nodes.
    Proxied,
}

/// What the test did to a node last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Running,
    Paused,
    Down,
}

/// Nodes `0..n` of one cluster; see the module docs.
pub struct Cluster {
    root: tempfile::TempDir,
    /// Each node's client port.
    ports: Vec<u16>,
    /// Each node's peer listener port.
    peer_ports: Vec<u16>,
    /// Each node's `--peers` value.
    peers: Vec<String>,
    nodes: Vec<Option<Shardlogd>>,
    states: Vec<NodeState>,
    tails: Vec<LogTail>,
    /// `proxies[from][to]`, with `Links::Proxied`.
    proxies: Vec<Vec<Option<Proxy>>>,
    /// Flags every node gets after [`NODE_ARGS`] (`start_with`).
    extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes and waits until each printed its ready line (not until the
    /// controller has a leader: see [`Cluster::wait_for`]).
    pub fn start(n: usize, links: Links) -> Cluster {
        Cluster::start_with(n, links, &[])
    }

    /// [`Cluster::start`], every node with `extra_args` too.
    pub fn start_with(n: usize, links: Links, extra_args: &[&str]) -> Cluster {
        let root = super::data_dir();
        let all_ports = free_ports(2 * n);
        let (ports, peer_ports) = (all_ports[..n].to_vec(), all_ports[n..].to_vec());
        let secret = root.path().join(SECRET_FILE);
        std::fs::write(&secret, CLUSTER_SECRET).unwrap();
        // Readable by this user only: a node refuses a secret anyone may read.
        let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&secret, owner_only).unwrap();
        let real = |node: usize| SocketAddr::from(([127, 0, 0, 1], peer_ports[node]));
        let proxies: Vec<Vec<Option<Proxy>>> = (0..n)
            .map(|from| {
                (0..n)
                    .map(|to| {
                        (links == Links::Proxied && from != to)
                            .then(|| Proxy::start(real(to)).unwrap())
                    })
                    .collect()
            })
            .collect();
        let peers = (0..n)
            .map(|from| {
                (0..n)
                    .map(|to| {
                        let addr = proxies[from][to].as_ref().map_or(real(to), |p| p.addr);
                        format!("{to}={addr}")
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let mut cluster = Cluster {
            root,
            ports,
            peer_ports,
            peers,
            nodes: (0..n).map(|_| None).collect(),
            states: vec![NodeState::Down; n],
            tails: (0..n).map(|_| LogTail::new(TAIL_LINES)).collect(),
            proxies,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        let started = Instant::now();
        cluster.start_nodes(&(0..n).collect::<Vec<_>>());
        eprintln!(
            "cluster: {n} nodes ready in {:?} (ports {:?}, links {links:?})",
            started.elapsed(),
            cluster.ports
        );
        cluster
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// A node's real address, `127.0.0.1:PORT`.
    pub fn addr(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.ports[node])
    }

    /// A running node's Kafka listener address.
    pub fn kafka_addr(&self, node: usize) -> SocketAddr {
        self.nodes[node]
            .as_ref()
            .unwrap_or_else(|| panic!("node {node} is down"))
            .kafka_addr
    }

    /// A running node's admin HTTP listener address (each run of a node gets a free port).
    pub fn admin_addr(&self, node: usize) -> SocketAddr {
        self.nodes[node]
            .as_ref()
            .unwrap_or_else(|| panic!("node {node} is down"))
            .admin_addr
            .unwrap_or_else(|| panic!("node {node} has no admin listener"))
    }

    /// A node's real peer listener address, `127.0.0.1:PORT`.
    pub fn peer_addr(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.peer_ports[node])
    }

    /// The file every node reads the cluster secret from.
    pub fn secret_file(&self) -> std::path::PathBuf {
        self.root.path().join(SECRET_FILE)
    }

    /// Every node's real address, comma-separated (a client's bootstrap list).
    pub fn brokers(&self) -> String {
        (0..self.len())
            .map(|node| self.addr(node))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts the (down) `nodes` again on their data, in parallel, and waits for each
    /// one's ready line.
    pub fn start_nodes(&mut self, nodes: &[usize]) {
        let launched: Vec<(usize, std::thread::JoinHandle<std::io::Result<Shardlogd>>)> = nodes
            .iter()
            .map(|&node| {
                assert_eq!(
                    self.states[node],
                    NodeState::Down,
                    "node {node} is not down"
                );
                let data_dir = self.data_dir(node);
                let listen = self.addr(node);
                let tail = self.tails[node].clone();
                tail.push(format!("---- test: starting node {node} ----"));
                let args = self.node_args(node);
                let handle = std::thread::spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    Shardlogd::launch(&Launch {
                        data_dir: &data_dir,
                        listen: &listen,
                        args: &args,
                        stderr: StderrTo::Tail(tail),
                    })
                });
                (node, handle)
            })
            .collect();
        for (node, handle) in launched {
            let server = handle
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("node {node} did not start: {e}"));
            self.nodes[node] = Some(server);
            self.states[node] = NodeState::Running;
        }
    }

    /// A node's data directory.
    pub fn data_dir(&self, node: usize) -> std::path::PathBuf {
        self.root.path().join(format!("node-{node}"))
    }

    /// The flags a node starts with besides `--data-dir` and `--listen`: its id, the
    /// peers, its peer listener, the secret, replication factor 3 and min_insync 2 (fewer
    /// on a smaller cluster), and [`NODE_ARGS`].
    pub fn node_args(&self, node: usize) -> Vec<String> {
        let n = self.nodes.len();
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            node.to_string(),
            "--peers".into(),
            self.peers[node].clone(),
            "--peer-listen".into(),
            self.peer_addr(node),
            "--cluster-secret-file".into(),
            self.secret_file().display().to_string(),
            "--replication-factor".into(),
            n.min(3).to_string(),
            "--min-insync".into(),
            n.min(2).to_string(),
        ];
        args.extend(NODE_ARGS.iter().map(|a| (*a).to_owned()));
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Replaces the flags every node gets after [`NODE_ARGS`] from its next start on.
    pub fn set_extra_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
    }

    /// Starts a node that is down again on its data.
    pub fn restart(&mut self, node: usize) {
        self.start_nodes(&[node]);
    }

    /// SIGKILLs the (running or paused) `nodes` at once, and waits until their ports
    /// refuse connections.
    ///
    /// A killed process is reaped before its listening sockets are gone: io_uring
    /// requests in flight (a pending accept) hold the socket until the kernel tears the
    /// ring down, after the exit. Meanwhile the port still completes handshakes; a node
    /// restarted on it waits (up to 10 s) for it to close. Waiting here instead keeps
    /// that wait out of the restart the test times.
    pub fn kill(&mut self, nodes: &[usize]) {
        for &node in nodes {
            self.tails[node].push(format!("---- test: SIGKILL node {node} ----"));
            if let Some(mut server) = self.nodes[node].take() {
                server.kill();
            }
            self.states[node] = NodeState::Down;
        }
        for &node in nodes {
            for port in [self.ports[node], self.peer_ports[node]] {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let started = Instant::now();
                while TcpStream::connect_timeout(&addr, METADATA_TIMEOUT).is_ok() {
                    assert!(
                        started.elapsed() < PORT_RELEASE_MAX,
                        "node {node}'s port {port} still answers {PORT_RELEASE_MAX:?} after SIGKILL"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                let took = started.elapsed();
                if took > Duration::from_millis(10) {
                    eprintln!(
                        "node {node}: port {port} released {took:?} after its process was reaped"
                    );
                }
            }
        }
    }

    /// SIGSTOPs a node.
    pub fn pause(&mut self, node: usize) {
        self.tails[node].push(format!("---- test: SIGSTOP node {node} ----"));
        self.server(node).pause().unwrap();
        self.states[node] = NodeState::Paused;
    }

    /// SIGCONTs a paused node.
    pub fn resume(&mut self, node: usize) {
        assert_eq!(self.states[node], NodeState::Paused, "node {node}");
        self.tails[node].push(format!("---- test: SIGCONT node {node} ----"));
        self.server(node).resume().unwrap();
        self.states[node] = NodeState::Running;
    }

    fn server(&mut self, node: usize) -> &mut Shardlogd {
        self.nodes[node]
            .as_mut()
            .unwrap_or_else(|| panic!("node {node} is down"))
    }

    /// Cuts every link between `node` and the others, both ways (needs `Links::Proxied`).
    pub fn isolate(&self, node: usize) {
        for other in (0..self.len()).filter(|&o| o != node) {
            self.tails[node].push(format!("---- test: cut {node} <-> {other} ----"));
            self.proxy(node, other).cut();
            self.proxy(other, node).cut();
        }
    }

    /// Heals every cut link.
    pub fn heal(&self) {
        for (from, row) in self.proxies.iter().enumerate() {
            self.tails[from].push("---- test: links healed ----".to_owned());
            for proxy in row.iter().flatten() {
                proxy.heal();
            }
        }
    }

    fn proxy(&self, from: usize, to: usize) -> &Proxy {
        self.proxies[from][to]
            .as_ref()
            .expect("a proxied cluster (Links::Proxied)")
    }

    /// Panics, naming the node, if one the test left running has exited by itself.
    pub fn assert_running(&mut self) {
        for node in 0..self.len() {
            if let Some(server) = self.nodes[node].as_mut()
                && !server.is_running()
            {
                panic!("node {node} exited by itself");
            }
        }
    }

    /// Metadata of every topic as `node` knows it.
    pub fn metadata(&self, node: usize) -> std::io::Result<MetadataResponse> {
        if self.states[node] != NodeState::Running {
            return Err(std::io::Error::other(format!("node {node} is not running")));
        }
        metadata(&self.addr(node))
    }

    /// Metadata from the first running node in `nodes` that answers.
    pub fn metadata_from(&self, nodes: &[usize]) -> Option<(usize, MetadataResponse)> {
        nodes
            .iter()
            .find_map(|&node| self.metadata(node).ok().map(|m| (node, m)))
    }

    /// Metadata from the first running node that answers.
    pub fn metadata_any(&self) -> Option<(usize, MetadataResponse)> {
        self.metadata_from(&(0..self.len()).collect::<Vec<_>>())
    }

    /// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`; panics
    /// naming `what` (and `check`'s last word) otherwise. Returns the value and how long
    /// it took.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Cluster) -> Result<T, String>,
    ) -> (T, Duration) {
        let started = Instant::now();
        loop {
            self.assert_running();
            let last = match check(self) {
                Ok(value) => return (value, started.elapsed()),
                Err(why) => why,
            };
            assert!(
                started.elapsed() < timeout,
                "waited {timeout:?} for {what}; last: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the controller leader itself says it leads and sees every node
    /// registered and live, and every running node's `/v1/ready` agrees.
    ///
    /// Another node's word is not enough: a node just restarted answers from the
    /// metadata it replayed, which can still show it live while the controller has
    /// fenced it and will move its partitions away once it hears of a new topic.
    pub fn wait_for_controller(&mut self, timeout: Duration) -> Duration {
        let n = self.len();
        let (_, took) = self.wait_for("a controller with every node live", timeout, |c| {
            let (_, meta) = c
                .metadata_any()
                .ok_or_else(|| "no node answers".to_owned())?;
            let controller = meta.controller.ok_or("no controller")?;
            let node = usize::try_from(controller).map_err(|_| "bad controller id")?;
            let meta = c
                .metadata(node)
                .map_err(|e| format!("controller {controller}: {e}"))?;
            let live = meta.brokers.iter().filter(|b| b.live).count();
            if meta.controller != Some(controller) || live != n {
                return Err(format!(
                    "controller {controller} says controller {:?}, {live} of {n} live",
                    meta.controller
                ));
            }
            // Live may still be a previous run of a restarted node: each running node
            // says whether the controller has registered this run.
            for node in (0..n).filter(|&node| c.states[node] == NodeState::Running) {
                let Some(admin) = c.nodes[node].as_ref().and_then(|s| s.admin_addr) else {
                    continue;
                };
                admin_ready(admin).map_err(|why| format!("node {node}: {why}"))?;
            }
            Ok(())
        });
        took
    }

    /// Prints the last lines of every node's stderr.
    pub fn print_logs(&self) {
        for (node, tail) in self.tails.iter().enumerate() {
            eprintln!(
                "==== node {node} ({}): last stderr lines ====",
                self.addr(node)
            );
            let lines = tail.lines();
            for line in &lines[lines.len().saturating_sub(PRINTED_LINES)..] {
                eprintln!("[node {node}] {line}");
            }
        }
    }

    /// The last lines of `node`'s stderr (across its restarts), oldest first, with the
    /// test's own notes (`---- test: ... ----`) among them.
    pub fn log_lines(&self, node: usize) -> Vec<String> {
        self.tails[node].lines()
    }

    /// Writes a note into `node`'s log tail, to find the lines that follow it.
    pub fn note(&self, node: usize, note: &str) {
        self.tails[node].push(format!("---- test: {note} ----"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // SIGKILL even paused nodes: Shardlogd's drop does.
        self.nodes.clear();
    }
}

/// The partition's state in `meta`.
pub fn partition<'a>(
    meta: &'a MetadataResponse,
    topic: &str,
    partition: u32,
) -> Option<&'a PartitionMetadata> {
    meta.topics
        .iter()
        .find(|t| t.name == topic)?
        .partitions
        .iter()
        .find(|p| p.partition == partition)
}

/// One Metadata request on a fresh blocking connection.
pub fn metadata(addr: &str) -> std::io::Result<MetadataResponse> {
    let request = MetadataRequest { topics: Vec::new() };
    call(addr, Api::Metadata, &request)
}

/// The high watermark of a partition as `addr` serves it (it must lead the partition).
pub fn high_watermark(addr: &str, topic: &str, partition: u32) -> std::io::Result<u64> {
    let request = ListOffsetsRequest {
        topic: topic.to_owned(),
        partition,
        spec: OffsetSpec::Latest,
    };
    let response: ListOffsetsResponse = call(addr, Api::ListOffsets, &request)?;
    match (ErrorCode::from(response.error), response.offset) {
        (ErrorCode::None, Some(offset)) => Ok(offset),
        (code, _) => Err(std::io::Error::other(format!(
            "list offsets at {addr}: {code:?} {}",
            response.message
        ))),
    }
}

/// One request on a fresh blocking connection, and its decoded reply.
pub fn call<Req, Resp>(addr: &str, api: Api, request: &Req) -> std::io::Result<Resp>
where
    Req: shardlog_net::frame::Meta,
    Resp: rkyv::Archive,
    Resp::Archived: for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, rkyv::rancor::Error>>
        + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&addr, METADATA_TIMEOUT)?;
    stream.set_read_timeout(Some(METADATA_TIMEOUT))?;
    stream.set_write_timeout(Some(METADATA_TIMEOUT))?;
    stream.write_all(&super::frame(api as u16, VERSION, 1, request, &[]))?;
    let (header, frame) = super::read_frame(&mut stream)?;
    if header.flags & FLAG_ERROR != 0 {
        return Err(std::io::Error::other(format!(
            "{api:?} answered with an error frame"
        )));
    }
    decode_meta::<Resp>(&header, &frame).map_err(std::io::Error::other)
}

/// `n` distinct ports in `NODE_PORTS` that were free a moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut seed = u64::from(std::process::id())
        ^ u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % u128::from(u64::MAX),
        )
        .unwrap()
        | 1;
    let span = u64::from(NODE_PORTS.end - NODE_PORTS.start);
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        // xorshift64: spreads concurrent test processes over the range.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = NODE_PORTS.start + u16::try_from(seed % span).unwrap();
        if !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// `GET /v1/ready` from a node's admin listener: `Ok` on 200, the answer otherwise.
fn admin_ready(admin: SocketAddr) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&admin, METADATA_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(METADATA_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /v1/ready HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(answer.lines().last().unwrap_or("no answer").to_owned())
    }
}
