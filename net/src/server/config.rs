//! `ServerConfig`: what `shardlogd` runs with. Built from defaults, then a TOML file, then
//! environment variables, then flags (each later one wins; the binary merges env and
//! flags with clap). Every key of the file is optional:
//!
//! ```toml
//! data_dir = "/var/lib/shardlog"
//! listen = "0.0.0.0:9095"              # the shardlog protocol
//! advertise = "broker1.example:9095"   # what clients are told to connect to
//! kafka_listen = "0.0.0.0:9092"        # the Kafka protocol
//! kafka_advertise = "broker1.example:9092"
//! admin_listen = "127.0.0.1:9644"      # /metrics, /v1/health, /v1/ready; "off": none
//! kafka_auto_create_topics = true      # Metadata and Produce create unknown topics
//! kafka_auto_create_partitions = 1     # partitions of a topic created so
//! shards = 4                           # default: one per core
//! node_id = 0
//! flush = "always"                     # always | interval=MS | never
//! segment_bytes = 134217728
//! preallocation_step_bytes = 16777216  # the active segment is preallocated at least this much at a time
//! zero_fill_ahead_bytes = 4194304      # zeros written ahead of the appends; 0: none
//! retention_bytes = 10737418240        # per partition; default: none
//! retention_ms = 604800000
//! tail_cache_bytes = 8388608           # per partition
//! tail_cache_budget_bytes = 268435456  # every partition's tail cache together, per node
//! io_memory = 10485760                 # per shard, for glommio's registered buffers
//! task_quota_us = 100000               # a shard's tasks run this long between I/O polls
//! # a cluster (every node lists the same peers, itself included: each node's peer
//! # listener, where only nodes connect; without peers the node is a cluster of one):
//! peers = "0=10.0.0.1:9093,1=10.0.0.2:9093,2=10.0.0.3:9093"
//! cluster_secret_file = "/etc/shardlog/cluster.secret"   # proves a peer's identity
//! # or mutual TLS (certificates naming `shardlog-node-<id>`, signed by the cluster CA):
//! # peer_tls_cert = "node.pem"  peer_tls_key = "node.key"  peer_tls_ca = "ca.pem"
//! # TLS on both client listeners (shardlog and Kafka protocols); SIGHUP re-reads the files:
//! # tls_cert = "server.pem"  tls_key = "server.key"
//! # tls_client_ca = "clients-ca.pem"  tls_client_auth = "required"  # or "optional"
//! replication_factor = 3               # default of new topics: min(3, nodes)
//! min_insync = 2                       # default of new topics: min(2, replication_factor)
//! session_timeout_ms = 400             # a node silent this long is fenced
//! replica_lag_ms = 10000               # a follower this far behind leaves the ISR
//! move_throttle_bytes = 67108864       # bytes/s a leader ships to replicas a move adds
//!                                      # (catching up, not yet in sync); 0: unthrottled
//! replace_dead_node_after_secs = 900   # a node fenced this long has its replicas
//!                                      # re-placed on the other nodes (0: never)
//! auto_rebalance = false               # even out replica counts on its own (a node
//!                                      # that joined gets its share)
//! max_concurrent_moves = 50            # partitions moving at once by re-placement,
//!                                      # decommission or rebalance (more as they finish)
//! offsets_partitions = 16              # partitions of __consumer_offsets, at its creation
//! offsets_segment_bytes = 1048576      # its segment.bytes (each preallocates up to it)
//! group_initial_rebalance_delay_ms = 3000  # a new group's first rebalance waits this long
//! group_snapshot_every_commits = 1000  # an offsets partition's snapshot every N commits
//! max_connections = 10000              # client connections of the node; past it: closed
//! idle_timeout_ms = 600000             # a client connection silent this long is closed
//! connection_reply_bytes = 67108864    # replies a client connection may owe before
//!                                      # the server stops reading its requests
//! log_format = "text"                  # text | json (one object per line, stable fields)
//! # SASL (see README "Authentication (SASL)"):
//! authentication = "sasl"              # none (default) | sasl: clients must authenticate
//! superuser_file = "/etc/shardlog/superuser"  # user:password, created at first start
//! # authorization (ACLs; see `shardlog acl`):
//! authorization = "off"                # on: nothing is allowed that no ACL allows
//! superusers = ["admin"]               # user names allowed everything (ACLs or not)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shardlog_engine::{EngineConfig, FlushPolicy};

use crate::logging::LogFormat;
use crate::server::groups::GroupConfig;
use crate::server::security::tls::{ClientAuth, ClientTlsFiles};

/// The settings a config file may hold; all optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen address.
    pub listen: Option<String>,
    /// Address told to clients.
    pub advertise: Option<String>,
    /// The Kafka listener's address.
    pub kafka_listen: Option<String>,
    /// The admin HTTP listener's address, or `off`.
    pub admin_listen: Option<String>,
    /// The Kafka address told to clients.
    pub kafka_advertise: Option<String>,
    /// Whether Kafka Metadata and Produce requests create the topics they name.
    pub kafka_auto_create_topics: Option<bool>,
    /// Partitions of a topic the Kafka front end creates.
    pub kafka_auto_create_partitions: Option<u32>,
    /// Shards (executors).
    pub shards: Option<usize>,
    /// Node id.
    pub node_id: Option<u32>,
    /// Flush policy.
    pub flush: Option<String>,
    /// Segment size.
    pub segment_bytes: Option<u64>,
    /// The active segment's preallocation step.
    pub preallocation_step_bytes: Option<u64>,
    /// Zeros written ahead of the appends by the upkeep.
    pub zero_fill_ahead_bytes: Option<u64>,
    /// Retention by size, per partition.
    pub retention_bytes: Option<u64>,
    /// Retention by age.
    pub retention_ms: Option<u64>,
    /// Tail cache per partition.
    pub tail_cache_bytes: Option<usize>,
    /// Tail caches of every partition together, per node.
    pub tail_cache_budget_bytes: Option<usize>,
    /// glommio io_memory per shard.
    pub io_memory: Option<usize>,
    /// How long a shard's tasks run before it submits and reaps I/O, microseconds.
    pub task_quota_us: Option<u64>,
    /// Every node's peer listener, `ID=HOST:PORT,...`; absent: a cluster of one.
    pub peers: Option<String>,
    /// Where this node's peer listener binds; default: its own `peers` entry.
    pub peer_listen: Option<String>,
    /// A file holding the shared cluster secret (HMAC handshake between peers).
    pub cluster_secret_file: Option<PathBuf>,
    /// This node's peer certificate (PEM), for mutual TLS between peers.
    pub peer_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub peer_tls_key: Option<PathBuf>,
    /// The cluster CA (PEM) that signs every node's certificate.
    pub peer_tls_ca: Option<PathBuf>,
    /// The client listeners' certificate chain (PEM): with `tls_key`, both speak TLS.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) client certificates must be signed by; set: clients are asked for one.
    pub tls_client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (with `tls_client_ca`). Default required.
    pub tls_client_auth: Option<ClientAuth>,
    /// Default replication factor of new topics.
    pub replication_factor: Option<u16>,
    /// Default `min_insync` of new topics.
    pub min_insync: Option<u16>,
    /// Controller session timeout.
    pub session_timeout_ms: Option<u64>,
    /// Replica lag allowed before a follower leaves the ISR.
    pub replica_lag_ms: Option<u64>,
    /// Bytes per second this node, leading, ships to catching-up replicas (0: none).
    pub move_throttle_bytes: Option<u64>,
    /// A node fenced this long has its replicas re-placed (0: never).
    pub replace_dead_node_after_secs: Option<u64>,
    /// Rebalance replica counts on its own.
    pub auto_rebalance: Option<bool>,
    /// Partitions moving at once by the controller's planners.
    pub max_concurrent_moves: Option<usize>,
    /// Partitions of `__consumer_offsets` when it is created.
    pub offsets_partitions: Option<u32>,
    /// `segment.bytes` of `__consumer_offsets`.
    pub offsets_segment_bytes: Option<u64>,
    /// The first rebalance of an empty group waits this long for more members.
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// A snapshot of an offsets partition after this many commit records.
    pub group_snapshot_every_commits: Option<u64>,
    /// Client connections open at once, per node.
    pub max_connections: Option<usize>,
    /// A client connection with nothing in flight and silent this long is closed.
    pub idle_timeout_ms: Option<u64>,
    /// Reply bytes a client connection may owe before its requests are no longer read.
    pub connection_reply_bytes: Option<usize>,
    /// Log lines on stderr: `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Client authentication: `none` or `sasl`.
    pub authentication: Option<String>,
    /// A file `user:password`: the superuser created at first start.
    pub superuser_file: Option<PathBuf>,
    /// Whether requests are authorized against the ACLs (`on` or `off`).
    pub authorization: Option<Switch>,
    /// User names allowed everything.
    pub superusers: Option<Vec<String>>,
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn read(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// `other`'s values where it has them, else this one's.
    #[must_use]
    pub fn overridden_by(self, other: FileConfig) -> FileConfig {
        FileConfig {
            data_dir: other.data_dir.or(self.data_dir),
            listen: other.listen.or(self.listen),
            advertise: other.advertise.or(self.advertise),
            kafka_listen: other.kafka_listen.or(self.kafka_listen),
            admin_listen: other.admin_listen.or(self.admin_listen),
            kafka_advertise: other.kafka_advertise.or(self.kafka_advertise),
            kafka_auto_create_topics: other
                .kafka_auto_create_topics
                .or(self.kafka_auto_create_topics),
            kafka_auto_create_partitions: other
                .kafka_auto_create_partitions
                .or(self.kafka_auto_create_partitions),
            shards: other.shards.or(self.shards),
            node_id: other.node_id.or(self.node_id),
            flush: other.flush.or(self.flush),
            segment_bytes: other.segment_bytes.or(self.segment_bytes),
            preallocation_step_bytes: other
                .preallocation_step_bytes
                .or(self.preallocation_step_bytes),
            zero_fill_ahead_bytes: other.zero_fill_ahead_bytes.or(self.zero_fill_ahead_bytes),
            retention_bytes: other.retention_bytes.or(self.retention_bytes),
            retention_ms: other.retention_ms.or(self.retention_ms),
            tail_cache_bytes: other.tail_cache_bytes.or(self.tail_cache_bytes),
            tail_cache_budget_bytes: other
                .tail_cache_budget_bytes
                .or(self.tail_cache_budget_bytes),
            io_memory: other.io_memory.or(self.io_memory),
            task_quota_us: other.task_quota_us.or(self.task_quota_us),
            peers: other.peers.or(self.peers),
            peer_listen: other.peer_listen.or(self.peer_listen),
            cluster_secret_file: other.cluster_secret_file.or(self.cluster_secret_file),
            peer_tls_cert: other.peer_tls_cert.or(self.peer_tls_cert),
            peer_tls_key: other.peer_tls_key.or(self.peer_tls_key),
            peer_tls_ca: other.peer_tls_ca.or(self.peer_tls_ca),
            tls_cert: other.tls_cert.or(self.tls_cert),
            tls_key: other.tls_key.or(self.tls_key),
            tls_client_ca: other.tls_client_ca.or(self.tls_client_ca),
            tls_client_auth: other.tls_client_auth.or(self.tls_client_auth),
            replication_factor: other.replication_factor.or(self.replication_factor),
            min_insync: other.min_insync.or(self.min_insync),
            session_timeout_ms: other.session_timeout_ms.or(self.session_timeout_ms),
            replica_lag_ms: other.replica_lag_ms.or(self.replica_lag_ms),
            move_throttle_bytes: other.move_throttle_bytes.or(self.move_throttle_bytes),
            replace_dead_node_after_secs: other
                .replace_dead_node_after_secs
                .or(self.replace_dead_node_after_secs),
            auto_rebalance: other.auto_rebalance.or(self.auto_rebalance),
            max_concurrent_moves: other.max_concurrent_moves.or(self.max_concurrent_moves),
            offsets_partitions: other.offsets_partitions.or(self.offsets_partitions),
            offsets_segment_bytes: other.offsets_segment_bytes.or(self.offsets_segment_bytes),
            group_initial_rebalance_delay_ms: other
                .group_initial_rebalance_delay_ms
                .or(self.group_initial_rebalance_delay_ms),
            group_snapshot_every_commits: other
                .group_snapshot_every_commits
                .or(self.group_snapshot_every_commits),
            max_connections: other.max_connections.or(self.max_connections),
            idle_timeout_ms: other.idle_timeout_ms.or(self.idle_timeout_ms),
            connection_reply_bytes: other.connection_reply_bytes.or(self.connection_reply_bytes),
            log_format: other.log_format.or(self.log_format),
            authentication: other.authentication.or(self.authentication),
            superuser_file: other.superuser_file.or(self.superuser_file),
            authorization: other.authorization.or(self.authorization),
            superusers: other.superusers.or(self.superusers),
        }
    }
}

/// The resolved configuration of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data directory: one subdirectory per topic.
    pub data_dir: PathBuf,
    /// `HOST:PORT` to listen on; port 0 picks a free one (the ready line names it).
    pub listen: String,
    /// `HOST:PORT` clients are told to use; default: the listen address (127.0.0.1 for
    /// an unspecified host).
    pub advertise: Option<String>,
    /// The Kafka protocol's listener.
    pub kafka: KafkaConfig,
    /// `HOST:PORT` of the admin HTTP listener (`/metrics`, health); `None`: none.
    pub admin_listen: Option<String>,
    /// Shards; default one per core.
    pub shards: usize,
    /// This node's id.
    pub node_id: u32,
    /// Engine settings of partitions whose topic sets nothing else.
    pub engine: EngineConfig,
    /// glommio io_memory per shard.
    pub io_memory: usize,
    /// How long a shard's tasks run before its executor submits and reaps I/O (glommio's
    /// preempt timer); connections' read loops yield there between requests.
    pub task_quota: Duration,
    /// The cluster this node belongs to (a cluster of one without `--peers`).
    pub cluster: ClusterConfig,
    /// The consumer-group coordinator's settings.
    pub groups: GroupConfig,
    /// Client connections open at once on this node (all shards); a connection past it
    /// is accepted and closed at once.
    pub max_connections: usize,
    /// A client connection with no request in flight and no byte received for this long
    /// is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// What the tail caches of all partitions hold together on this node, divided
    /// equally among the shards.
    pub tail_cache_budget_bytes: usize,
    /// Reply bytes a client connection may owe (counted from when a request is read until
    /// its reply is written) before the server stops reading its requests.
    pub connection_reply_bytes: usize,
    /// The format of the log lines on stderr. Default text.
    pub log_format: LogFormat,
    /// Client authentication and the superusers.
    pub security: SecurityConfig,
    /// Whether client requests are authorized against the ACLs. Default off.
    pub authorization: bool,
    /// TLS on both client listeners (`--tls-*`); `None`: plain TCP.
    pub client_tls: Option<ClientTlsFiles>,
}

/// How clients authenticate (SASL) and who is a superuser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Whether a client connection must authenticate before any request but the
    /// handshake ones. Default off (`authentication = "none"`).
    pub sasl_required: bool,
    /// Users no ACL restricts (`superusers`), the bootstrap superuser included.
    pub superusers: Vec<String>,
    /// The superuser created at first start if absent: from `superuser_file`, else from
    /// `SHARDLOG_SUPERUSER` and `SHARDLOG_SUPERUSER_PASSWORD`.
    pub bootstrap_superuser: Option<BootstrapUser>,
}

/// A user and password to create at start if the user does not exist.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapUser {
    /// The user name.
    pub name: String,
    /// The password (kept only until its credentials are made).
    pub password: String,
}

impl std::fmt::Debug for BootstrapUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The security settings of `file`, with the bootstrap superuser from `superuser_file` or,
/// without one, from the environment (`SHARDLOG_SUPERUSER`, `SHARDLOG_SUPERUSER_PASSWORD`).
fn security_config(file: &FileConfig) -> anyhow::Result<SecurityConfig> {
    let sasl_required = match file.authentication.as_deref() {
        None | Some("none") => false,
        Some("sasl") => true,
        Some(other) => anyhow::bail!("authentication {other:?}: none or sasl"),
    };
    let mut superusers = superusers(file.superusers.as_deref().unwrap_or_default())?;
    for user in &superusers {
        if !shardlog_replicator::controller::valid_user_name(user) {
            anyhow::bail!("superusers: {user:?} is not a valid user name (1-128 of A-Za-z0-9._@-)");
        }
    }
    let bootstrap = match &file.superuser_file {
        Some(path) => {
            // A password every user of the machine can read protects nothing.
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(path)
                    .map_err(|e| anyhow::anyhow!("superuser file {}: {e}", path.display()))?
                    .permissions(),
            );
            if mode & 0o004 != 0 {
                anyhow::bail!(
                    "superuser file {} is readable by every user (mode {:o}): chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("superuser file {}: {e}", path.display()))?;
            let line = text.lines().next().unwrap_or_default();
            let Some((name, password)) = line.split_once(':') else {
                anyhow::bail!(
                    "superuser file {}: expected one line user:password",
                    path.display()
                );
            };
            Some(bootstrap_user(name, password)?)
        }
        None => match (
            std::env::var("SHARDLOG_SUPERUSER").ok(),
            std::env::var("SHARDLOG_SUPERUSER_PASSWORD").ok(),
        ) {
            (Some(name), Some(password)) => Some(bootstrap_user(&name, &password)?),
            (None, None) => None,
            _ => anyhow::bail!(
                "SHARDLOG_SUPERUSER and SHARDLOG_SUPERUSER_PASSWORD go together: set both or neither"
            ),
        },
    };
    if let Some(user) = &bootstrap {
        if !superusers.contains(&user.name) {
            superusers.push(user.name.clone());
        }
    }
    Ok(SecurityConfig {
        sasl_required,
        superusers,
        bootstrap_superuser: bootstrap,
    })
}

fn bootstrap_user(name: &str, password: &str) -> anyhow::Result<BootstrapUser> {
    if !shardlog_replicator::controller::valid_user_name(name) {
        anyhow::bail!("superuser {name:?}: not a valid user name (1-128 of A-Za-z0-9._@-)");
    }
    // The credential is made at start: refuse a password it cannot be made of now.
    crate::scram::ScramCredential::new(
        crate::scram::Mechanism::Sha256,
        password,
        b"check",
        crate::scram::ITERATIONS_MIN,
    )
    .map_err(|e| anyhow::anyhow!("superuser password: {e}"))?;
    if password.is_empty() {
        anyhow::bail!("superuser password is empty");
    }
    Ok(BootstrapUser {
        name: name.to_owned(),
        password: password.to_owned(),
    })
}

/// `on` or `off`, in a config file or a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

impl std::str::FromStr for Switch {
    type Err = String;

    fn from_str(text: &str) -> Result<Switch, String> {
        match text {
            "on" => Ok(Switch::On),
            "off" => Ok(Switch::Off),
            other => Err(format!("{other:?}: on or off")),
        }
    }
}

/// The superusers of `names` (`alice` or `User:alice`), as user names.
fn superusers(names: &[String]) -> anyhow::Result<Vec<String>> {
    let mut users = Vec::with_capacity(names.len());
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let user = name.strip_prefix("User:").unwrap_or(name);
        let bounded =
            (1..=shardlog_replicator::controller::acls::MAX_PRINCIPAL_NAME).contains(&user.len());
        if !bounded || !user.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!("superuser {name:?}: 1 to 255 printable characters, no spaces");
        }
        users.push(user.to_owned());
    }
    Ok(users)
}

/// The Kafka protocol's listener (`protocol::kafka`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `HOST:PORT` to listen on; port 0 picks a free one (a line before the ready line
    /// names it). Default `127.0.0.1:9092`.
    pub listen: String,
    /// `HOST:PORT` Kafka clients are told to use (Metadata); default: the listen address
    /// (127.0.0.1 for an unspecified host).
    pub advertise: Option<String>,
    /// Whether Metadata and Produce requests create the topics they name (Kafka's
    /// `auto.create.topics.enable`). Default true.
    pub auto_create_topics: bool,
    /// Partitions of a topic created so (Kafka's `num.partitions`), 1 to 10000; its
    /// replication factor is the cluster's default. Default 1.
    pub auto_create_partitions: u32,
}

/// The cluster: its nodes, how they prove who they are, and the replication defaults.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: u32,
    /// Every node (this one included) by id: its peer listener. Empty for a cluster of
    /// one.
    pub peers: BTreeMap<u32, String>,
    /// Where this node's peer listener binds (its own `peers` entry unless set).
    pub peer_listen: Option<String>,
    /// How peers prove their identity.
    pub security: PeerSecurityConfig,
    /// Default replication factor of new topics.
    pub replication_factor: u16,
    /// Default `min_insync` of new topics.
    pub min_insync: u16,
    /// A node whose heartbeats stop for this long is fenced and loses its leaderships.
    pub session_timeout_ms: u64,
    /// A follower behind the leader's log end this long leaves the ISR.
    pub replica_lag_ms: u64,
    /// Bytes per second this node ships, as a leader, to the replicas a move adds while
    /// they catch up (split evenly over its shards); 0: unthrottled. In-sync followers
    /// are never throttled. A move's own throttle (`shardlog partition reassign
    /// --throttle-bytes`) replaces it for that partition.
    pub move_throttle_bytes: u64,
    /// A node fenced this long has its replicas re-placed on the others; `None`: never.
    pub replace_dead_node_after: Option<Duration>,
    /// The controller leader evens out replica counts on its own.
    pub auto_rebalance: bool,
    /// At most this many partitions move at once by re-placement, decommission or
    /// rebalancing (an operator's `shardlog partition reassign` is not held back, but
    /// counts).
    pub max_concurrent_moves: usize,
}

/// Default of [`ClusterConfig::move_throttle_bytes`]: 64 MiB/s.
pub const MOVE_THROTTLE_BYTES_DEFAULT: u64 = 64 << 20;

/// Where peer credentials come from; all `None`: peers prove nothing (a loud warning).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSecurityConfig {
    /// The shared cluster secret's file.
    pub secret_file: Option<PathBuf>,
    /// Certificate, key and CA files for mutual TLS.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl ClusterConfig {
    /// The controller's voters: every node of `peers`, or this one alone.
    #[must_use]
    pub fn voters(&self) -> Vec<u32> {
        if self.peers.is_empty() {
            vec![self.node_id]
        } else {
            self.peers.keys().copied().collect()
        }
    }

    /// How many nodes the cluster has.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.peers.len().max(1)
    }

    /// Whether this node runs with others (and so has a peer listener).
    #[must_use]
    pub fn has_peers(&self) -> bool {
        self.peers.len() > 1 || self.peers.keys().any(|id| *id != self.node_id)
    }
}

/// Parses `ID=HOST:PORT,...`.
pub fn parse_peers(text: &str) -> anyhow::Result<BTreeMap<u32, String>> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, address) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("peer {item:?}: expected ID=HOST:PORT"))?;
        let id: u32 = id
            .parse()
            .map_err(|e| anyhow::anyhow!("peer {item:?}: node id: {e}"))?;
        if address
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            anyhow::bail!("peer {item:?}: expected ID=HOST:PORT");
        }
        if peers.insert(id, address.to_owned()).is_some() {
            anyhow::bail!("peer {id} listed twice");
        }
    }
    Ok(peers)
}

/// Default of `replace_dead_node_after_secs`.
pub const REPLACE_DEAD_NODE_AFTER_SECS: u64 = 900;

/// Default of `max_concurrent_moves`: Redpanda's `partition_autobalancing_concurrent_moves`
/// (the controller's own default).
pub const MAX_CONCURRENT_MOVES_DEFAULT: usize =
    shardlog_replicator::controller::MAX_CONCURRENT_MOVES_DEFAULT;

fn cluster_config(file: &FileConfig, node_id: u32) -> anyhow::Result<ClusterConfig> {
    let peers = match &file.peers {
        Some(text) => parse_peers(text)?,
        None => BTreeMap::new(),
    };
    if !peers.is_empty() && !peers.contains_key(&node_id) {
        anyhow::bail!("--peers must list this node ({node_id}) too");
    }
    if peers.is_empty() && file.peer_listen.is_some() {
        anyhow::bail!("--peer-listen without --peers: a node alone has no peer listener");
    }
    let nodes = u16::try_from(peers.len().max(1)).unwrap_or(u16::MAX);
    let replication_factor = file.replication_factor.unwrap_or(nodes.min(3));
    let min_insync = file.min_insync.unwrap_or(replication_factor.min(2));
    if !(1..=nodes).contains(&replication_factor) {
        anyhow::bail!("replication factor {replication_factor}: 1 to {nodes} (the nodes)");
    }
    if !(1..=replication_factor).contains(&min_insync) {
        anyhow::bail!("min_insync {min_insync}: 1 to {replication_factor}");
    }
    // Eight heartbeats (every 50 ms), sent and received on a lane of their own (see
    // `cluster::controller`): a failover about 0.4 s after a death, and no fence of a node
    // that is only busy.
    let session_timeout_ms = file.session_timeout_ms.unwrap_or(400);
    if !(300..=60_000).contains(&session_timeout_ms) {
        anyhow::bail!("session_timeout_ms {session_timeout_ms}: 300 to 60000");
    }
    // Redpanda's node availability timeout (15 min): longer than a restart or an upgrade,
    // so only a node that is gone moves its data.
    let replace_after = file
        .replace_dead_node_after_secs
        .unwrap_or(REPLACE_DEAD_NODE_AFTER_SECS);
    if replace_after > 7 * 24 * 3600 {
        anyhow::bail!("replace_dead_node_after_secs {replace_after}: 0 (never) to 604800");
    }
    let replace_dead_node_after = (replace_after > 0).then(|| Duration::from_secs(replace_after));
    let max_concurrent_moves = file
        .max_concurrent_moves
        .unwrap_or(MAX_CONCURRENT_MOVES_DEFAULT);
    if !(1..=10_000).contains(&max_concurrent_moves) {
        anyhow::bail!("max_concurrent_moves {max_concurrent_moves}: 1 to 10000");
    }
    let tls = match (&file.peer_tls_cert, &file.peer_tls_key, &file.peer_tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some((cert.clone(), key.clone(), ca.clone())),
        (None, None, None) => None,
        _ => {
            anyhow::bail!("peer TLS needs all of --peer-tls-cert, --peer-tls-key and --peer-tls-ca")
        }
    };
    Ok(ClusterConfig {
        node_id,
        peers,
        peer_listen: file.peer_listen.clone(),
        security: PeerSecurityConfig {
            secret_file: file.cluster_secret_file.clone(),
            tls,
        },
        replication_factor,
        min_insync,
        session_timeout_ms,
        replica_lag_ms: file.replica_lag_ms.unwrap_or(10_000),
        move_throttle_bytes: file
            .move_throttle_bytes
            .unwrap_or(MOVE_THROTTLE_BYTES_DEFAULT),
        replace_dead_node_after,
        auto_rebalance: file.auto_rebalance.unwrap_or(false),
        max_concurrent_moves,
    })
}

fn group_config(file: &FileConfig) -> anyhow::Result<GroupConfig> {
    let defaults = GroupConfig::default();
    let config = GroupConfig {
        offsets_partitions: file
            .offsets_partitions
            .unwrap_or(defaults.offsets_partitions),
        offsets_segment_bytes: file
            .offsets_segment_bytes
            .unwrap_or(defaults.offsets_segment_bytes),
        initial_rebalance_delay_ms: file
            .group_initial_rebalance_delay_ms
            .unwrap_or(defaults.initial_rebalance_delay_ms),
        snapshot_every_commits: file
            .group_snapshot_every_commits
            .unwrap_or(defaults.snapshot_every_commits),
        ..defaults
    };
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// The client listener's address (and `advertise` checked), and the admin listener's.
fn listen_addresses(file: &FileConfig) -> anyhow::Result<(String, Option<String>)> {
    let listen = file
        .listen
        .clone()
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    check_host_port("--listen", &listen)?;
    if let Some(advertise) = &file.advertise {
        check_host_port("--advertise", advertise)?;
    }
    Ok((listen, admin_listen(file.admin_listen.as_deref())?))
}

/// The admin listener's address: the default, the one given, or none for `off`.
fn admin_listen(admin_listen: Option<&str>) -> anyhow::Result<Option<String>> {
    let admin_listen = match admin_listen {
        Some("off") => None,
        Some(addr) => Some(addr.to_owned()),
        None => Some(DEFAULT_ADMIN_LISTEN.to_owned()),
    };
    if let Some(addr) = &admin_listen {
        check_host_port("--admin-listen", addr)?;
    }
    Ok(admin_listen)
}

/// A usage error unless `address` is `HOST:PORT` (a host, and a port number): `--listen
/// 32001` is a mistake to name at once, not a name to resolve at start.
fn check_host_port(flag: &str, address: &str) -> anyhow::Result<()> {
    let well_formed = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !well_formed {
        anyhow::bail!(
            "{flag} {address:?}: expected HOST:PORT, e.g. 127.0.0.1:9095 or 0.0.0.0:9095 \
             (port 0: any free port)"
        );
    }
    Ok(())
}

fn kafka_config(file: &FileConfig) -> anyhow::Result<KafkaConfig> {
    let listen = file
        .kafka_listen
        .clone()
        .unwrap_or_else(|| DEFAULT_KAFKA_LISTEN.to_owned());
    check_host_port("--kafka-listen", &listen)?;
    if let Some(advertise) = &file.kafka_advertise {
        check_host_port("--kafka-advertise", advertise)?;
    }
    let auto_create_partitions = file.kafka_auto_create_partitions.unwrap_or(1);
    let most = shardlog_replicator::controller::metadata::MAX_PARTITIONS;
    if !(1..=most).contains(&auto_create_partitions) {
        anyhow::bail!("kafka_auto_create_partitions {auto_create_partitions}: 1 to {most}");
    }
    Ok(KafkaConfig {
        listen,
        advertise: file.kafka_advertise.clone(),
        auto_create_topics: file.kafka_auto_create_topics.unwrap_or(true),
        auto_create_partitions,
    })
}

/// Default client connections per node.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default idle timeout of a client connection (Kafka's `connections.max.idle.ms`).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 600_000;

/// Default of what every tail cache of a node holds together.
pub const DEFAULT_TAIL_CACHE_BUDGET_BYTES: usize = 256 << 20;
/// Default reply bytes a client connection may owe.
pub const DEFAULT_CONNECTION_REPLY_BYTES: usize = 64 << 20;

/// Defaults: listen 127.0.0.1:9095, one shard per core, node 0, flush always.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9095";
/// The admin HTTP listener's default address: Redpanda's admin port, local only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9644";
/// glommio's own preempt timer, 100 ms. A shorter quota makes a shard send a log write
/// and its acknowledgements sooner, but polls I/O more often: with 30 us one connection
/// of small produce requests ran faster on one node, and replicated ones slower, both by
/// about a quarter (README, "Issue 15, a sixth sitting"), so it is left to the operator.
pub const DEFAULT_TASK_QUOTA_US: u64 = 100_000;
/// The Kafka listener's default address: Kafka's port.
pub const DEFAULT_KAFKA_LISTEN: &str = "127.0.0.1:9092";

impl TryFrom<FileConfig> for ServerConfig {
    type Error = anyhow::Error;

    fn try_from(file: FileConfig) -> anyhow::Result<ServerConfig> {
        let node_id = file.node_id.unwrap_or(0);
        let cluster = cluster_config(&file, node_id)?;
        let (groups, kafka) = (group_config(&file)?, kafka_config(&file)?);
        let engine = engine_config(&file)?;
        let client_tls = client_tls(&file)?;
        let (listen, admin_listen) = listen_addresses(&file)?;
        let security = security_config(&file)?;
        let data_dir = file
            .data_dir
            .ok_or_else(|| anyhow::anyhow!("no data directory: pass --data-dir DIR"))?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let shards = file.shards.unwrap_or(cores);
        if !(1..=256).contains(&shards) {
            anyhow::bail!("shards {shards}: 1 to 256");
        }
        let task_quota_us = file.task_quota_us.unwrap_or(DEFAULT_TASK_QUOTA_US);
        if !(10..=1_000_000).contains(&task_quota_us) {
            anyhow::bail!("task_quota_us {task_quota_us}: 10 to 1000000");
        }
        let max_connections = file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            anyhow::bail!("max_connections 0: at least 1");
        }
        let idle_timeout = match file.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        };
        let tail_cache_budget_bytes = file
            .tail_cache_budget_bytes
            .unwrap_or(DEFAULT_TAIL_CACHE_BUDGET_BYTES);
        if tail_cache_budget_bytes > 1 << 40 {
            anyhow::bail!("tail_cache_budget_bytes {tail_cache_budget_bytes}: at most 1 TiB");
        }
        let connection_reply_bytes = file
            .connection_reply_bytes
            .unwrap_or(DEFAULT_CONNECTION_REPLY_BYTES);
        if !(1 << 20..=1 << 30).contains(&connection_reply_bytes) {
            anyhow::bail!("connection_reply_bytes {connection_reply_bytes}: 1 MiB to 1 GiB");
        }
        Ok(ServerConfig {
            data_dir,
            listen,
            advertise: file.advertise,
            kafka,
            admin_listen,
            shards,
            node_id,
            engine,
            io_memory: file.io_memory.unwrap_or(10 << 20),
            task_quota: Duration::from_micros(task_quota_us),
            cluster,
            groups,
            max_connections,
            idle_timeout,
            tail_cache_budget_bytes,
            connection_reply_bytes,
            log_format: file.log_format.unwrap_or_default(),
            security,
            authorization: file.authorization == Some(Switch::On),
            client_tls,
        })
    }
}

/// TLS on the client listeners: certificate and key both or neither; a client CA and
/// client auth only with them.
fn client_tls(file: &FileConfig) -> anyhow::Result<Option<ClientTlsFiles>> {
    let (cert, key) = match (&file.tls_cert, &file.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => {
            if file.tls_client_ca.is_some() || file.tls_client_auth.is_some() {
                anyhow::bail!(
                    "--tls-client-ca and --tls-client-auth need --tls-cert and --tls-key \
                     (client certificates are asked for only over TLS)"
                );
            }
            return Ok(None);
        }
        _ => anyhow::bail!("TLS on the client listeners needs both --tls-cert and --tls-key"),
    };
    if file.tls_client_auth.is_some() && file.tls_client_ca.is_none() {
        anyhow::bail!(
            "--tls-client-auth needs --tls-client-ca (the CA client certificates are checked against)"
        );
    }
    Ok(Some(ClientTlsFiles {
        cert,
        key,
        client_ca: file.tls_client_ca.clone(),
        client_auth: file.tls_client_auth.unwrap_or_default(),
    }))
}

/// The engine settings of partitions whose topic sets nothing else: the defaults with the
/// file's overrides, validated.
fn engine_config(file: &FileConfig) -> anyhow::Result<EngineConfig> {
    let mut engine = EngineConfig::default();
    if let Some(flush) = &file.flush {
        engine.flush = flush.parse::<FlushPolicy>().map_err(anyhow::Error::msg)?;
    }
    if let Some(bytes) = file.segment_bytes {
        engine.segment_bytes = bytes;
    }
    if let Some(bytes) = file.preallocation_step_bytes {
        engine.preallocation_step_bytes = bytes;
    }
    if let Some(bytes) = file.zero_fill_ahead_bytes {
        engine.zero_fill_ahead_bytes = bytes;
    }
    engine.retention_bytes = file.retention_bytes.or(engine.retention_bytes);
    if let Some(ms) = file.retention_ms {
        engine.retention_age = Some(Duration::from_millis(ms));
    }
    if let Some(bytes) = file.tail_cache_bytes {
        engine.tail_cache_bytes = bytes;
    }
    engine.validate()?;
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let file: FileConfig =
            toml::from_str("data_dir = \"/d\"\nshards = 3\nflush = \"never\"\n").unwrap();
        let flags = FileConfig {
            shards: Some(2),
            ..FileConfig::default()
        };
        let config = ServerConfig::try_from(file.overridden_by(flags)).unwrap();
        assert_eq!(config.shards, 2);
        assert_eq!(config.engine.flush, FlushPolicy::Never);
        assert_eq!(config.data_dir, PathBuf::from("/d"));
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.idle_timeout, Some(Duration::from_millis(600_000)));
        let file: FileConfig =
            toml::from_str("data_dir = \"/d\"\nmax_connections = 5\nidle_timeout_ms = 0\n")
                .unwrap();
        let config = ServerConfig::try_from(file).unwrap();
        assert_eq!((config.max_connections, config.idle_timeout), (5, None));
        let zero = FileConfig {
            data_dir: Some("/d".into()),
            max_connections: Some(0),
            ..FileConfig::default()
        };
        assert!(ServerConfig::try_from(zero).is_err());
    }

    #[test]
    fn zero_fill_ahead_is_set_turned_off_and_checked() {
        let engine = |text: &str| {
            let file: FileConfig = toml::from_str(&format!("data_dir = \"/d\"\n{text}")).unwrap();
            ServerConfig::try_from(file).map(|config| config.engine.zero_fill_ahead_bytes)
        };
        assert_eq!(
            engine("").unwrap(),
            EngineConfig::default().zero_fill_ahead_bytes
        );
        assert_eq!(engine("zero_fill_ahead_bytes = 1048576").unwrap(), 1 << 20);
        assert_eq!(engine("zero_fill_ahead_bytes = 0").unwrap(), 0);
        assert!(
            engine("zero_fill_ahead_bytes = 1000").is_err(),
            "not whole blocks"
        );
        assert!(
            engine("zero_fill_ahead_bytes = 536870912").is_err(),
            "over 256 MiB"
        );
    }

    #[test]
    fn the_task_quota_defaults_to_glommio_s_and_is_checked() {
        let config = |toml: &str| {
            let file: FileConfig = toml::from_str(&format!("data_dir = \"/d\"\n{toml}")).unwrap();
            ServerConfig::try_from(file).map(|config| config.task_quota)
        };
        assert_eq!(config("").unwrap(), Duration::from_millis(100));
        assert_eq!(
            config("task_quota_us = 30").unwrap(),
            Duration::from_micros(30)
        );
        for bad in [0, 9, 1_000_001] {
            let error = config(&format!("task_quota_us = {bad}")).unwrap_err();
            assert!(
                error.to_string().contains("10 to 1000000"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
        let file = FileConfig {
            data_dir: Some("/d".into()),
            flush: Some("sometimes".into()),
            ..FileConfig::default()
        };
        assert!(ServerConfig::try_from(file).is_err());
        assert!(ServerConfig::try_from(FileConfig::default()).is_err());
        for listen in ["32001", ":32001", "host:", "host:99999", "[::1]"] {
            let file = FileConfig {
                data_dir: Some("/d".into()),
                listen: Some(listen.into()),
                ..FileConfig::default()
            };
            let error = ServerConfig::try_from(file).unwrap_err().to_string();
            assert!(error.contains("expected HOST:PORT"), "{listen}: {error}");
        }
        for listen in ["127.0.0.1:0", "[::1]:9092", "localhost:9092"] {
            let file = FileConfig {
                data_dir: Some("/d".into()),
                listen: Some(listen.into()),
                ..FileConfig::default()
            };
            assert!(ServerConfig::try_from(file).is_ok(), "{listen}");
        }
    }

    #[test]
    fn authorization_is_off_by_default_and_superusers_are_user_names() {
        let config = ServerConfig::try_from(FileConfig {
            data_dir: Some("/d".into()),
            ..FileConfig::default()
        })
        .unwrap();
        assert!(!config.authorization);
        assert!(config.security.superusers.is_empty());
        let text = "data_dir = \"/d\"\nauthorization = \"on\"\n\
                    superusers = [\"User:root\", \"bob\"]\n";
        let config = ServerConfig::try_from(toml::from_str::<FileConfig>(text).unwrap()).unwrap();
        assert!(config.authorization);
        assert_eq!(config.security.superusers, ["root", "bob"]);
        assert!(toml::from_str::<FileConfig>("authorization = \"yes\"\n").is_err());
        for bad in ["User:", "a b", "\u{e9}t\u{e9}"] {
            let file = FileConfig {
                data_dir: Some("/d".into()),
                superusers: Some(vec![bad.to_owned()]),
                ..FileConfig::default()
            };
            assert!(ServerConfig::try_from(file).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kafka_listener_defaults_and_checks() {
        let file = |kafka: FileConfig| FileConfig {
            data_dir: Some("/d".into()),
            ..kafka
        };
        let config = ServerConfig::try_from(file(FileConfig::default())).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9095");
        assert_eq!(config.kafka.listen, "127.0.0.1:9092");
        assert_eq!(config.kafka.advertise, None);
        assert!(config.kafka.auto_create_topics);
        assert_eq!(config.kafka.auto_create_partitions, 1);
        let text = "data_dir = \"/d\"\nkafka_listen = \"0.0.0.0:19092\"\n\
                    kafka_advertise = \"broker:19092\"\nkafka_auto_create_topics = false\n\
                    kafka_auto_create_partitions = 6\n";
        let config = ServerConfig::try_from(toml::from_str::<FileConfig>(text).unwrap()).unwrap();
        assert_eq!(config.kafka.listen, "0.0.0.0:19092");
        assert_eq!(config.kafka.advertise.as_deref(), Some("broker:19092"));
        assert!(!config.kafka.auto_create_topics);
        assert_eq!(config.kafka.auto_create_partitions, 6);
        for bad in [
            FileConfig {
                kafka_listen: Some("9092".into()),
                ..FileConfig::default()
            },
            FileConfig {
                kafka_advertise: Some("broker".into()),
                ..FileConfig::default()
            },
            FileConfig {
                kafka_auto_create_partitions: Some(0),
                ..FileConfig::default()
            },
        ] {
            assert!(ServerConfig::try_from(file(bad)).is_err());
        }
    }

    #[test]
    fn cluster_defaults_and_checks() {
        let file = |peers: &str, node: u32| FileConfig {
            data_dir: Some("/d".into()),
            node_id: Some(node),
            peers: Some(peers.into()),
            ..FileConfig::default()
        };
        let three = "0=127.0.0.1:1,1=127.0.0.1:2, 2=127.0.0.1:3";
        let cluster = ServerConfig::try_from(file(three, 1)).unwrap().cluster;
        assert_eq!(cluster.peers.len(), 3);
        assert!(cluster.has_peers());
        assert_eq!((cluster.replication_factor, cluster.min_insync), (3, 2));
        let one = ServerConfig::try_from(file("0=h:1", 0)).unwrap().cluster;
        assert_eq!((one.replication_factor, one.min_insync), (1, 1));
        assert!(!one.has_peers());
        let alone = FileConfig {
            data_dir: Some("/d".into()),
            ..FileConfig::default()
        };
        let alone = ServerConfig::try_from(alone).unwrap().cluster;
        assert_eq!(alone.voters(), vec![0]);
        assert_eq!((alone.replication_factor, alone.min_insync), (1, 1));
        assert!(
            ServerConfig::try_from(file(three, 7)).is_err(),
            "self missing"
        );
        assert!(
            ServerConfig::try_from(file("0=h:1,0=h:2", 0)).is_err(),
            "twice"
        );
        assert!(ServerConfig::try_from(file("0=h", 0)).is_err(), "no port");
        let mut rf4 = file(three, 0);
        rf4.replication_factor = Some(4);
        assert!(ServerConfig::try_from(rf4).is_err());
    }

    #[test]
    fn authentication_and_the_superuser_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("superuser");
        std::fs::write(&path, "root:s3cret pass\n").unwrap();
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o644);
        std::fs::set_permissions(&path, open).unwrap();
        let world = format!(
            "data_dir = \"/d\"\nsuperuser_file = {:?}\n",
            path.display().to_string()
        );
        let file: FileConfig = toml::from_str(&world).unwrap();
        let refused = ServerConfig::try_from(file).unwrap_err().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
        let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&path, owner_only).unwrap();
        let text = format!(
            "data_dir = \"/d\"\nauthentication = \"sasl\"\nsuperusers = [\"ops\", \"User:audit\"]\n\
             superuser_file = {:?}\n",
            path.display().to_string()
        );
        let file: FileConfig = toml::from_str(&text).unwrap();
        let config = ServerConfig::try_from(file).unwrap();
        assert!(config.security.sasl_required);
        assert_eq!(config.security.superusers, ["ops", "audit", "root"]);
        let user = config.security.bootstrap_superuser.unwrap();
        assert_eq!(
            (user.name.as_str(), user.password.as_str()),
            ("root", "s3cret pass")
        );
        assert!(!format!("{user:?}").contains("s3cret"));
        let default: FileConfig = toml::from_str("data_dir = \"/d\"").unwrap();
        assert!(
            !ServerConfig::try_from(default)
                .unwrap()
                .security
                .sasl_required
        );
        for bad in [
            "authentication = \"kerberos\"",
            "superusers = [\"a b\"]",
            "superuser_file = \"/nonexistent/superuser\"",
        ] {
            let file: FileConfig = toml::from_str(&format!("data_dir = \"/d\"\n{bad}")).unwrap();
            assert!(ServerConfig::try_from(file).is_err(), "{bad}");
        }
        std::fs::write(&path, "no-colon\n").unwrap();
        let file: FileConfig = toml::from_str(&text).unwrap();
        assert!(ServerConfig::try_from(file).is_err());
    }
}
