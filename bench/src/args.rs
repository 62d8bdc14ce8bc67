//! Command-line arguments of `shardlog-bench` (clap derive): the engine alone, and the
//! network workloads (`produce`, `consume`, `e2e`) against a running `shardlogd`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shardlog_engine::FlushPolicy;
use shardlog_net::client::{ClientConfig, ClientTls, ClientTlsFiles};

/// shardlog's load generator.
#[derive(Debug, Parser)]
#[command(name = "shardlog-bench", version, about)]
pub struct Cli {
    /// What to measure.
    #[command(subcommand)]
    pub command: Command,
}

/// Workloads.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The storage engine alone, no network: concurrent appenders on partition logs.
    Engine(EngineArgs),
    /// Producers over the network: throughput and produce latency.
    Produce(NetArgs),
    /// Consumers over the network: read throughput.
    Consume(NetArgs),
    /// Producers and consumers at once: end-to-end latency per record.
    E2e(NetArgs),
    /// Kill a partition's leader again and again: time until a new leader acknowledges.
    Failover(FailoverArgs),
    /// Fault-injection soak: real nodes, idempotent producers, consumers, a seeded
    /// nemesis; checks the history at the end (exit 1 on any violation).
    Soak(SoakArgs),
    /// Check a soak's history file again (offline).
    SoakCheck(SoakCheckArgs),
}

/// `shardlog-bench soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Nodes (3 or 5), started by the soak on 127.0.0.1.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Nemesis seed: the same seed gives the same faults, targets and durations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of load and faults (the heal, settle and final read come after).
    #[arg(long, default_value_t = 120.0)]
    pub duration: f64,
    /// Stop after this many faults (whichever of it and --duration comes first).
    #[arg(long)]
    pub max_faults: Option<u64>,
    /// Fault kinds, comma-separated (retention: small segments and short retention).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,stop,restart,partition,oneway,isolate,disk,retention"
    )]
    pub faults: Vec<crate::soak::nemesis::FaultKind>,
    /// How long a fault holds, ms: MIN..MAX.
    #[arg(long, default_value = "500..3000", value_parser = parse_range)]
    pub hold_ms: std::ops::Range<u64>,
    /// Pause between faults, ms: MIN..MAX.
    #[arg(long, default_value = "300..1500", value_parser = parse_range)]
    pub gap_ms: std::ops::Range<u64>,
    /// Partitions of the soak's topic (replication factor 3, min_insync 2).
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Producers (each writes every partition, one batch in flight per partition).
    #[arg(long, default_value_t = 2)]
    pub producers: u32,
    /// Consumers (each reads every partition from its start).
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Records per batch.
    #[arg(long, default_value_t = 5)]
    pub batch_records: u32,
    /// Pause between a producer's batches to one partition, ms.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Bytes of each record's value (at least 16).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Where nodes, logs and the history go (emptied first).
    #[arg(long, default_value = "target/soak")]
    pub dir: PathBuf,
    /// The history file (JSON lines); default DIR/history.jsonl.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// The shardlogd binary; default: next to this one.
    #[arg(long)]
    pub shardlogd: Option<PathBuf>,
    /// Flags added to every node's command line, whitespace-separated.
    #[arg(long, default_value = "--shards 1")]
    pub node_args: String,
    /// Idempotent producers (the client's default). `false` shows what the checker
    /// catches: retries after a failover stored twice.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub idempotence: bool,
}

/// `shardlog-bench soak-check`.
#[derive(Debug, Clone, Args)]
pub struct SoakCheckArgs {
    /// A history a soak wrote.
    pub history: PathBuf,
}

/// `MIN..MAX` (MIN < MAX).
fn parse_range(text: &str) -> Result<std::ops::Range<u64>, String> {
    let (min, max) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?}: expected MIN..MAX"))?;
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
    let (min, max) = (parse(min)?, parse(max)?);
    if min >= max {
        return Err(format!("{text:?}: MIN must be below MAX"));
    }
    Ok(min..max)
}

/// `shardlog-bench failover`.
#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// A broker to bootstrap from, HOST:PORT[,HOST:PORT...] (list several: one will die).
    #[arg(long, env = "SHARDLOG_BROKERS", value_name = "HOST:PORT,...")]
    pub brokers: String,
    /// Topic whose partition 0 is measured; created with one partition when missing.
    #[arg(long, default_value = "failover")]
    pub topic: String,
    /// Rounds: leaders killed.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Shell command killing node `{node}`, e.g. `bench/scripts/cluster.sh kill {node}`.
    #[arg(long)]
    pub kill_cmd: String,
    /// Shell command starting node `{node}` again and waiting until it serves.
    #[arg(long)]
    pub restart_cmd: String,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Idempotent produce (producer id and sequences; `false` sends batches without).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub idempotence: bool,
    /// Write the rounds and summary as JSON to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `shardlog-bench engine`.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Directory for the data (the bench writes under DIR/bench/).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Flush policy: always | interval=MS | never.
    #[arg(long, default_value = "always")]
    pub flush: FlushPolicy,
    /// Concurrent appenders (tasks on one shard), spread over the partitions.
    #[arg(long, default_value_t = 16)]
    pub appenders: usize,
    /// Partition logs to append to.
    #[arg(long, default_value_t = 1)]
    pub partitions: usize,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per batch (one append = one batch).
    #[arg(long, default_value_t = 100)]
    pub batch_records: usize,
    /// Records to append in all (rounded up to whole batches); overrides --duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds to run when no --count is given.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Segment size in bytes (default: the engine's, 128 MiB).
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Write the command line, configuration and results as JSON to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the data afterwards (for `shardlog verify`/`stats`, or `--open-only`).
    #[arg(long)]
    pub keep: bool,
    /// Append nothing: time opening the partitions a `--keep` run left in DATA_DIR.
    #[arg(long)]
    pub open_only: bool,
    /// glommio I/O memory of the shard, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub io_memory: usize,
}

/// Acknowledgement level of the produce requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// No reply awaited beyond the write to the socket.
    None,
    /// The leader appended (and flushed under its policy).
    Leader,
    /// All in-sync replicas have it.
    All,
}

/// The client protocol a network workload speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// shardlog's own (rkyv frames), to `shardlogd --listen`.
    Shardlog,
    /// Kafka's, to `shardlogd --kafka-listen` (produce only).
    Kafka,
}

/// Where consumers start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FromArg {
    /// Each partition's log start.
    Beginning,
    /// Each partition's end when the run starts.
    End,
}

/// How the shardlog-protocol clients reach brokers that speak TLS (`shardlogd --tls-cert`).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Connect over TLS, trusting brokers whose certificate this CA (PEM) signed for the
    /// host dialled.
    #[arg(long, env = "SHARDLOG_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: this client's certificate (PEM), for brokers that ask for one;
    /// needs --tls-key.
    #[arg(
        long,
        env = "SHARDLOG_TLS_CERT",
        value_name = "PEM",
        requires = "tls_ca"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "SHARDLOG_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// With --tls-ca: the name the brokers' certificates must carry, instead of the host
    /// dialled.
    #[arg(
        long,
        env = "SHARDLOG_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "tls_ca"
    )]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The client settings every connection of the run starts from: the defaults with
    /// the SASL credentials (`crate::sasl`), and TLS when --tls-ca is given (the files
    /// read now).
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let Some(ca) = &self.tls_ca else {
            return Ok(crate::sasl::client_config());
        };
        let files = ClientTlsFiles {
            ca: ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        };
        Ok(ClientConfig {
            tls: Some(ClientTls::load(&files)?),
            ..crate::sasl::client_config()
        })
    }
}

/// `shardlog-bench produce|consume|e2e`: one option set; each workload uses what applies.
#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    /// Brokers to bootstrap from, HOST:PORT[,HOST:PORT...] (with `--protocol kafka`: the
    /// Kafka listener, and only the first is used).
    #[arg(long, env = "SHARDLOG_BROKERS", value_name = "HOST:PORT,...")]
    pub brokers: String,
    /// Authenticate every connection as this user (SASL SCRAM; shardlog protocol), for
    /// brokers run with `--authentication sasl`. The password comes from
    /// `--password-stdin` or `SHARDLOG_PASSWORD`.
    #[arg(long, env = "SHARDLOG_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// Read the password of `--user` from the first line of stdin.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// The SASL mechanism of `--user`.
    #[arg(long, default_value = "SCRAM-SHA-256", value_parser = ["SCRAM-SHA-256", "SCRAM-SHA-512"])]
    pub sasl_mechanism: String,
    /// TLS to the brokers (shardlog protocol only).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The protocol spoken: shardlog's own, or Kafka's (produce only: the same workload
    /// as Kafka Produce requests, for comparing the two front ends).
    #[arg(long, value_enum, default_value_t = Protocol::Shardlog)]
    pub protocol: Protocol,
    /// Topic to write or read; created with --partitions (and the server's default
    /// replication factor) when missing.
    #[arg(long)]
    pub topic: String,
    /// Partitions of the topic when the bench creates it.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Bytes of each record's value (e2e: at least 8, the send time).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per batch (one produce request = one batch).
    #[arg(long, default_value_t = 100)]
    pub batch_records: usize,
    /// Records to produce (rounded up to whole batches) or to consume; overrides
    /// --duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds to run when no --count is given (warm-up included).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds at the start left out of the results (default: 0 for --count runs and for
    /// consume --from beginning, 1 for the other duration runs).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Open loop: records per second in total over all producers (default: closed loop).
    /// Latency is timed from each request's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers, each with its own connection; partitions are dealt out among them.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Produce requests outstanding per connection (pipelined).
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Idempotent produce: each producer gets a producer id and numbers its batches per
    /// partition, so retries are stored once (`false` measures without it; `--acks none`
    /// is never idempotent).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub idempotence: bool,
    /// glommio executors (threads) the producers are spread over (consume: the consumers);
    /// in e2e the consumers get one more.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// consume: where to start in each partition.
    #[arg(long, value_enum, default_value_t = FromArg::Beginning)]
    pub from: FromArg,
    /// Largest fetch reply, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub fetch_max_bytes: u32,
    /// Longest a fetch waits at the tail for data (long poll), milliseconds.
    #[arg(long, default_value_t = 100)]
    pub fetch_max_wait_ms: u64,
    /// e2e: seconds consumers keep reading after the producers stop, for stragglers.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Write the command line, configuration and results as JSON to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the latency percentile curve as SVG to FILE, and the per-second timeline
    /// (throughput, p50/p99, errors) beside it as FILE's stem + `.timeline.svg`.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}
