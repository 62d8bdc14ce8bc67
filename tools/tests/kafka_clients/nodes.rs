//! `shardlogd` nodes with a Kafka listener for the real-client suite: one node, or a
//! 3-node cluster, each on fixed ports (a restarted node comes back where the clients and
//! its peers expect it) picked below the kernel's ephemeral range, so that no outgoing
//! connection holds one while its node is down. Each node's stderr is kept in a
//! [`LogTail`] across restarts and printed when a test fails.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shardlog_net::testing::{Launch, LogTail, Shardlogd, StderrTo, test_root};

/// Ports for nodes come from here (below Linux's default ephemeral range 32768-60999).
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// How long a killed node's ports may keep answering (io_uring requests in flight hold
/// a listening socket until the kernel tears the ring down, after the exit).
const PORT_RELEASE_MAX: Duration = Duration::from_secs(10);
const TAIL_LINES: usize = 4_000;
const PRINTED_LINES: usize = 150;
/// The cluster secret every node proves itself with.
const CLUSTER_SECRET: &[u8] = b"the kafka client suite's cluster secret, long enough";

/// One node's ports and its running process.
struct Node {
    listen: u16,
    peer: u16,
    kafka: u16,
    server: Option<Shardlogd>,
    tail: LogTail,
}

/// Nodes `0..n` of one cluster (one node: no peers); see the module docs.
pub struct Nodes {
    root: tempfile::TempDir,
    nodes: Vec<Node>,
    /// Flags every node gets besides the cluster's (e.g. `--authentication sasl`).
    extra: Vec<String>,
}

impl Nodes {
    /// Starts `n` nodes (1 or 3) with 2 shards each, and waits for their ready lines.
    pub fn start(n: usize) -> Nodes {
        Nodes::start_with(n, &[])
    }

    /// [`Nodes::start`] with `extra` flags for every node.
    pub fn start_with(n: usize, extra: &[&str]) -> Nodes {
        let root = tempfile::Builder::new()
            .prefix("kafka-clients-")
            .tempdir_in(test_root().unwrap())
            .unwrap();
        let ports = free_ports(3 * n);
        let nodes = (0..n)
            .map(|i| Node {
                listen: ports[3 * i],
                peer: ports[3 * i + 1],
                kafka: ports[3 * i + 2],
                server: None,
                tail: LogTail::new(TAIL_LINES),
            })
            .collect();
        let secret = root.path().join("cluster.secret");
        std::fs::write(&secret, CLUSTER_SECRET).unwrap();
        let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&secret, owner_only).unwrap();
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut cluster = Nodes { root, nodes, extra };
        let started = Instant::now();
        cluster.start_nodes(&(0..n).collect::<Vec<_>>());
        eprintln!(
            "{n} node(s) ready in {:?}; Kafka bootstrap {}",
            started.elapsed(),
            cluster.bootstrap()
        );
        cluster
    }

    /// Every node's Kafka listener, comma-separated (the clients' bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.kafka))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s admin listener (it must be running).
    pub fn admin(&self, i: usize) -> SocketAddr {
        let server = self.nodes[i].server.as_ref().expect("the node runs");
        server.admin_addr.expect("an admin listener")
    }

    /// Every node's shardlog-protocol listener, comma-separated (the CLI's `--brokers`).
    pub fn brokers(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.listen))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn args(&self, i: usize) -> Vec<String> {
        let n = self.nodes.len();
        let node = &self.nodes[i];
        let mut args: Vec<String> = ["--shards", "2", "--session-timeout-ms", "1000"]
            .map(str::to_owned)
            .to_vec();
        args.extend(["--kafka-listen".into(), format!("127.0.0.1:{}", node.kafka)]);
        if n > 1 {
            let peers = (0..n)
                .map(|j| format!("{j}=127.0.0.1:{}", self.nodes[j].peer))
                .collect::<Vec<_>>()
                .join(",");
            let secret = self.root.path().join("cluster.secret");
            args.extend([
                "--node-id".into(),
                i.to_string(),
                "--peers".into(),
                peers,
                "--peer-listen".into(),
                format!("127.0.0.1:{}", node.peer),
                "--cluster-secret-file".into(),
                secret.display().to_string(),
                "--replication-factor".into(),
                "3".into(),
                "--min-insync".into(),
                "2".into(),
                "--replica-lag-ms".into(),
                "10000".into(),
            ]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("node-{i}"))
    }

    /// Starts the (down) nodes `which` in parallel on their data, and waits for each
    /// one's ready line.
    pub fn start_nodes(&mut self, which: &[usize]) {
        let launched: Vec<_> = which
            .iter()
            .map(|&i| {
                assert!(self.nodes[i].server.is_none(), "node {i} is running");
                let (data_dir, args) = (self.data_dir(i), self.args(i));
                let listen = format!("127.0.0.1:{}", self.nodes[i].listen);
                let tail = self.nodes[i].tail.clone();
                tail.push(format!("---- test: starting node {i} ----"));
                let handle = std::thread::spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    Shardlogd::launch(&Launch {
                        data_dir: &data_dir,
                        listen: &listen,
                        args: &args,
                        stderr: StderrTo::Tail(tail),
                    })
                });
                (i, handle)
            })
            .collect();
        for (i, handle) in launched {
            let server = handle.join().unwrap();
            let server = server.unwrap_or_else(|e| {
                self.print_logs();
                panic!("node {i} did not start: {e}")
            });
            self.nodes[i].server = Some(server);
        }
    }

    /// SIGKILLs node `i` and waits until its ports refuse connections.
    pub fn kill(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let mut server = node.server.take().ok_or(format!("node {i} is down"))?;
        node.tail.push(format!("---- test: SIGKILL node {i} ----"));
        server.kill();
        for port in [node.listen, node.peer, node.kafka] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let started = Instant::now();
            while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                if started.elapsed() > PORT_RELEASE_MAX {
                    return Err(format!(
                        "node {i}'s port {port} still answers after SIGKILL"
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Starts node `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.start_nodes(&[i]);
    }

    /// What a client script asked for: `kill N`, `restart N` or `kill-restart N`.
    pub fn control(&mut self, command: &str) -> Result<(), String> {
        let (verb, node) = command
            .split_once(' ')
            .ok_or(format!("unknown command {command:?}"))?;
        let node: usize = node.parse().map_err(|e| format!("{command:?}: {e}"))?;
        if node >= self.nodes.len() {
            return Err(format!("no node {node}"));
        }
        eprintln!("test: {command}");
        match verb {
            "kill" => self.kill(node),
            "restart" => {
                self.restart(node);
                Ok(())
            }
            "kill-restart" => {
                self.kill(node)?;
                self.restart(node);
                Ok(())
            }
            _ => Err(format!("unknown command {command:?}")),
        }
    }

    /// Panics, naming the node, if one the test left running has exited by itself.
    pub fn assert_running(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(server) = node.server.as_mut() {
                assert!(server.is_running(), "node {i} exited by itself");
            }
        }
    }

    /// The last lines of every node's stderr.
    pub fn print_logs(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            eprintln!("==== node {i}: last stderr lines ====");
            let lines = node.tail.lines();
            for line in &lines[lines.len().saturating_sub(PRINTED_LINES)..] {
                eprintln!("[node {i}] {line}");
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for node in &mut self.nodes {
            node.server = None;
        }
    }
}

/// `n` distinct ports in `NODE_PORTS` that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut seed = (u64::from(std::process::id()) << 32 ^ u64::from(nanos)) | 1;
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
