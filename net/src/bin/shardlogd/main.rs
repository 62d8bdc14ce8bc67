//! `shardlogd`: the shardlog server. Runs in the foreground, logs to stderr, prints
//! `shardlogd kafka: listening on HOST:PORT` (the Kafka listener) and then
//! `shardlogd ready: listening on HOST:PORT` (the shardlog listener) once it serves, and stops cleanly on SIGTERM
//! or SIGINT. Settings: flags, then `SHARDLOGD_*` environment variables, then `--config`
//! (a TOML file), then defaults. Exit codes: 0 after a clean stop, 1 when the server
//! failed, 2 on a usage error.

mod allocator;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use shardlog_net::logging::LogFormat;
use shardlog_net::server::config::Switch;
use shardlog_net::server::{self, ClientAuth, FileConfig, ServerConfig};

/// shardlog's server: a partitioned, append-only log over the network.
#[derive(Debug, Parser)]
#[command(name = "shardlogd", version)]
struct Args {
    /// A TOML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "SHARDLOGD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: one subdirectory per topic, one below it per partition.
    #[arg(long, env = "SHARDLOGD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HOST:PORT to listen on for the shardlog protocol (port 0: any free port; the ready
    /// line names it). Default 127.0.0.1:9095.
    #[arg(long, env = "SHARDLOGD_LISTEN")]
    listen: Option<String>,
    /// HOST:PORT clients are told to connect to. Default: the listen address.
    #[arg(long, env = "SHARDLOGD_ADVERTISE")]
    advertise: Option<String>,
    /// HOST:PORT to listen on for the Kafka protocol (port 0: any free port; the line
    /// `shardlogd kafka: listening on HOST:PORT` names it). Default 127.0.0.1:9092.
    #[arg(long, env = "SHARDLOGD_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// HOST:PORT Kafka clients are told to connect to. Default: the Kafka listen address.
    #[arg(long, env = "SHARDLOGD_KAFKA_ADVERTISE")]
    kafka_advertise: Option<String>,
    /// HOST:PORT of the admin HTTP listener: /metrics (Prometheus), /v1/health, /v1/ready
    /// (port 0: any free port; the line `shardlogd admin: listening on HOST:PORT` names
    /// it), or `off`. Default 127.0.0.1:9644.
    #[arg(long, env = "SHARDLOGD_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Whether Kafka Metadata and Produce requests create the topics they name (true or
    /// false). Default true.
    #[arg(long, env = "SHARDLOGD_KAFKA_AUTO_CREATE_TOPICS")]
    kafka_auto_create_topics: Option<bool>,
    /// Partitions of a topic the Kafka protocol creates (its replication factor is
    /// --replication-factor's). Default 1.
    #[arg(long, env = "SHARDLOGD_KAFKA_AUTO_CREATE_PARTITIONS")]
    kafka_auto_create_partitions: Option<u32>,
    /// Shards (thread-per-core executors). Default: one per core. More shards than cores
    /// run unpinned.
    #[arg(long, env = "SHARDLOGD_SHARDS")]
    shards: Option<usize>,
    /// This node's id.
    #[arg(long, env = "SHARDLOGD_NODE_ID")]
    node_id: Option<u32>,
    /// When an append is acknowledged: always (synced), interval=MS, never. Default always.
    #[arg(long, env = "SHARDLOGD_FLUSH")]
    flush: Option<String>,
    /// Default segment size of new topics, bytes.
    #[arg(long, env = "SHARDLOGD_SEGMENT_BYTES")]
    segment_bytes: Option<u64>,
    /// The active segment's file is preallocated at least this much at a time, ahead of
    /// the writes (4 KiB ..= 1 GiB, a multiple of 4 KiB); under `--flush interval` or
    /// `never`, a partition appended faster preallocates about a second of its appends, up
    /// to the segment size. Default 16 MiB.
    #[arg(long, env = "SHARDLOGD_PREALLOCATION_STEP_BYTES")]
    preallocation_step_bytes: Option<u64>,
    /// The upkeep writes zeros this far ahead of the appends, so that a sync after an
    /// append commits no extent conversion (0 ..= 256 MiB, a multiple of 4 KiB; 0: none).
    /// Default 4 MiB.
    #[arg(long, env = "SHARDLOGD_ZERO_FILL_AHEAD_BYTES")]
    zero_fill_ahead_bytes: Option<u64>,
    /// Default retention by size, bytes per partition.
    #[arg(long, env = "SHARDLOGD_RETENTION_BYTES")]
    retention_bytes: Option<u64>,
    /// Default retention by age, milliseconds.
    #[arg(long, env = "SHARDLOGD_RETENTION_MS")]
    retention_ms: Option<u64>,
    /// Tail cache per partition, bytes. Default 8 MiB.
    #[arg(long, env = "SHARDLOGD_TAIL_CACHE_BYTES")]
    tail_cache_bytes: Option<usize>,
    /// What the tail caches of all partitions hold together on this node, bytes, divided
    /// equally among the shards; past it the batches cached longest ago go first.
    /// Default 256 MiB.
    #[arg(long, env = "SHARDLOGD_TAIL_CACHE_BUDGET_BYTES")]
    tail_cache_budget_bytes: Option<usize>,
    /// glommio io_memory per shard, bytes.
    #[arg(long, env = "SHARDLOGD_IO_MEMORY")]
    io_memory: Option<usize>,
    /// How long, in microseconds, a shard runs its tasks before it submits and reaps I/O
    /// (glommio's preempt timer), 10 to 1000000. Default 100000. Shorter sends log writes
    /// and acknowledgements sooner at the cost of more polling: see the README.
    #[arg(long, env = "SHARDLOGD_TASK_QUOTA_US")]
    task_quota_us: Option<u64>,
    /// The cluster: every node's peer listener as ID=HOST:PORT,... (this one included, the
    /// same list on every node; only nodes connect there). Without it the node is a
    /// cluster of one.
    #[arg(long, env = "SHARDLOGD_PEERS")]
    peers: Option<String>,
    /// Where this node's peer listener binds. Default: its own --peers entry.
    #[arg(long, env = "SHARDLOGD_PEER_LISTEN")]
    peer_listen: Option<String>,
    /// A file holding the cluster's shared secret (at least 32 bytes, readable by this
    /// user only): peers prove who they are with an HMAC challenge over it.
    #[arg(long, env = "SHARDLOGD_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// This node's certificate (PEM) for mutual TLS between peers; it must name
    /// `shardlog-node-<ID>` and be signed by --peer-tls-ca.
    #[arg(long, env = "SHARDLOGD_PEER_TLS_CERT")]
    peer_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --peer-tls-cert.
    #[arg(long, env = "SHARDLOGD_PEER_TLS_KEY")]
    peer_tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM).
    #[arg(long, env = "SHARDLOGD_PEER_TLS_CA")]
    peer_tls_ca: Option<PathBuf>,
    /// TLS on both client listeners (--listen and --kafka-listen): this server's
    /// certificate chain (PEM, leaf first). Needs --tls-key. SIGHUP re-reads the files.
    #[arg(long, env = "SHARDLOGD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert, readable by this user only.
    #[arg(long, env = "SHARDLOGD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Ask TLS clients for a certificate signed by this CA (PEM); a verified certificate
    /// names the connection's principal (its subject CN, else its first DNS name).
    #[arg(long, env = "SHARDLOGD_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: whether a client without a certificate is refused
    /// (required) or let in without a principal (optional). Default required.
    #[arg(long, env = "SHARDLOGD_TLS_CLIENT_AUTH", value_enum)]
    tls_client_auth: Option<ClientAuth>,
    /// Default replication factor of new topics. Default min(3, nodes).
    #[arg(long, env = "SHARDLOGD_REPLICATION_FACTOR")]
    replication_factor: Option<u16>,
    /// Default min_insync of new topics. Default min(2, replication factor).
    #[arg(long, env = "SHARDLOGD_MIN_INSYNC")]
    min_insync: Option<u16>,
    /// A node whose heartbeats stop for this long is fenced and loses its leaderships, ms
    /// (300 to 60000). Default 400.
    #[arg(long, env = "SHARDLOGD_SESSION_TIMEOUT_MS")]
    session_timeout_ms: Option<u64>,
    /// A follower this far behind leaves the ISR, ms. Default 10000.
    #[arg(long, env = "SHARDLOGD_REPLICA_LAG_MS")]
    replica_lag_ms: Option<u64>,
    /// Bytes per second this node, leading a partition, ships to the replicas a move
    /// (`shardlog partition reassign`) adds while they catch up; 0: unthrottled. In-sync
    /// followers are never throttled. Default 67108864 (64 MiB/s).
    #[arg(long, env = "SHARDLOGD_MOVE_THROTTLE_BYTES")]
    move_throttle_bytes: Option<u64>,
    /// A node fenced (down) this long has its replicas re-placed on the other nodes, so
    /// every partition gets back to its replication factor, seconds (0: never; at most
    /// 604800). Default 900.
    #[arg(
        long = "replace-dead-node-after",
        env = "SHARDLOGD_REPLACE_DEAD_NODE_AFTER"
    )]
    replace_dead_node_after_secs: Option<u64>,
    /// Even out replica counts over the nodes on their own (a node that joined gets its
    /// share), instead of on `shardlog cluster rebalance`.
    #[arg(long, env = "SHARDLOGD_AUTO_REBALANCE", num_args = 0..=1, default_missing_value = "true")]
    auto_rebalance: Option<bool>,
    /// At most this many partitions move at once by re-placement, decommission or
    /// rebalancing; more start as moves finish (1 to 10000). An operator's `shardlog
    /// partition reassign` is never held back, but counts. Default 50 (Redpanda's).
    #[arg(long, env = "SHARDLOGD_MAX_CONCURRENT_MOVES")]
    max_concurrent_moves: Option<usize>,
    /// Partitions of the internal topic __consumer_offsets, when it is created (1 to
    /// 1000). Default 16.
    #[arg(long, env = "SHARDLOGD_OFFSETS_PARTITIONS")]
    offsets_partitions: Option<u32>,
    /// segment.bytes of __consumer_offsets (each partition preallocates up to this
    /// much). Default 1 MiB.
    #[arg(long, env = "SHARDLOGD_OFFSETS_SEGMENT_BYTES")]
    offsets_segment_bytes: Option<u64>,
    /// How long the first rebalance of an empty consumer group waits for more members,
    /// ms (Kafka's group.initial.rebalance.delay.ms). Default 3000.
    #[arg(long, env = "SHARDLOGD_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// An offsets partition's snapshot after this many commit records. Default 1000.
    #[arg(long, env = "SHARDLOGD_GROUP_SNAPSHOT_EVERY_COMMITS")]
    group_snapshot_every_commits: Option<u64>,
    /// Client connections open at once on this node; a connection past it is accepted
    /// and closed at once. Default 10000.
    #[arg(long, env = "SHARDLOGD_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// A client connection with no request in flight and no byte received for this long
    /// is closed, ms (0: never). Default 600000.
    #[arg(long, env = "SHARDLOGD_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// Reply bytes a client connection may owe (a fetch counts its max bytes from when it
    /// is read until its reply is written) before the server stops reading its requests,
    /// 1 MiB to 1 GiB. Default 64 MiB.
    #[arg(long, env = "SHARDLOGD_CONNECTION_REPLY_BYTES")]
    connection_reply_bytes: Option<usize>,
    /// Log lines on stderr: text, or json (one object per line with stable field names:
    /// ts, level, target, msg, and node, shard, topic, partition, epoch, offset, peer where
    /// known). Default text.
    #[arg(long, env = "SHARDLOGD_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Client authentication: none (default: any client is served), or sasl (a client
    /// connection must authenticate with SASL SCRAM-SHA-256/512, or PLAIN over TLS, before
    /// any request but ApiVersions and the SASL handshake).
    #[arg(long, env = "SHARDLOGD_AUTHENTICATION", value_parser = ["none", "sasl"])]
    authentication: Option<String>,
    /// A file holding one line `user:password`: that user is created at start if it does
    /// not exist (else SHARDLOG_SUPERUSER and SHARDLOG_SUPERUSER_PASSWORD, if set).
    #[arg(long, env = "SHARDLOGD_SUPERUSER_FILE")]
    superuser_file: Option<PathBuf>,
    /// Authorize client requests against the ACLs (`shardlog acl`): on, or off (every
    /// request allowed). With it on, nothing is allowed that no ACL allows, except to
    /// superusers; a connection that has not authenticated is `User:ANONYMOUS`.
    /// Default off.
    #[arg(long, env = "SHARDLOGD_AUTHORIZATION")]
    authorization: Option<Switch>,
    /// Users allowed everything whatever the ACLs say, comma-separated (`admin` or
    /// `User:admin`).
    #[arg(long, env = "SHARDLOGD_SUPERUSERS", value_delimiter = ',')]
    superusers: Option<Vec<String>>,
}

impl Args {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let flags = FileConfig {
            data_dir: self.data_dir,
            listen: self.listen,
            advertise: self.advertise,
            kafka_listen: self.kafka_listen,
            admin_listen: self.admin_listen,
            kafka_advertise: self.kafka_advertise,
            kafka_auto_create_topics: self.kafka_auto_create_topics,
            kafka_auto_create_partitions: self.kafka_auto_create_partitions,
            shards: self.shards,
            node_id: self.node_id,
            flush: self.flush,
            segment_bytes: self.segment_bytes,
            preallocation_step_bytes: self.preallocation_step_bytes,
            zero_fill_ahead_bytes: self.zero_fill_ahead_bytes,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            tail_cache_bytes: self.tail_cache_bytes,
            tail_cache_budget_bytes: self.tail_cache_budget_bytes,
            io_memory: self.io_memory,
            task_quota_us: self.task_quota_us,
            peers: self.peers,
            peer_listen: self.peer_listen,
            cluster_secret_file: self.cluster_secret_file,
            peer_tls_cert: self.peer_tls_cert,
            peer_tls_key: self.peer_tls_key,
            peer_tls_ca: self.peer_tls_ca,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            tls_client_auth: self.tls_client_auth,
            replication_factor: self.replication_factor,
            min_insync: self.min_insync,
            session_timeout_ms: self.session_timeout_ms,
            replica_lag_ms: self.replica_lag_ms,
            move_throttle_bytes: self.move_throttle_bytes,
            replace_dead_node_after_secs: self.replace_dead_node_after_secs,
            auto_rebalance: self.auto_rebalance,
            max_concurrent_moves: self.max_concurrent_moves,
            offsets_partitions: self.offsets_partitions,
            offsets_segment_bytes: self.offsets_segment_bytes,
            group_initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            group_snapshot_every_commits: self.group_snapshot_every_commits,
            max_connections: self.max_connections,
            idle_timeout_ms: self.idle_timeout_ms,
            connection_reply_bytes: self.connection_reply_bytes,
            log_format: self.log_format,
            authentication: self.authentication,
            superuser_file: self.superuser_file,
            authorization: self.authorization,
            superusers: self.superusers,
        };
        ServerConfig::try_from(file.overridden_by(flags))
    }
}

fn main() -> ExitCode {
    allocator::configure();
    let config = match Args::parse().into_config() {
        Ok(config) => config,
        Err(e) => {
            // A usage error, reported the way clap reports its own.
            eprintln!(
                "shardlogd: {e:#}\n\n{}\n\nFor more information, try '--help'.",
                Args::command().render_usage()
            );
            return ExitCode::from(2);
        }
    };
    // After the settings: they choose the format. Nothing before logs.
    let format = config.log_format;
    shardlog_net::logging::init(format, "info");
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if format == LogFormat::Json {
                tracing::error!(error = format!("{e:#}"), "shardlogd failed");
            } else {
                eprintln!("shardlogd: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}
