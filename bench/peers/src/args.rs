//! Command-line arguments of `peers-bench` (clap derive): one subcommand per server, and
//! the load options they share, named as in `shardlog-bench produce`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A load generator for NATS JetStream and Redis Streams in shardlog-bench's shapes.
#[derive(Debug, Parser)]
#[command(name = "peers-bench", version, about)]
pub struct Cli {
    /// The server to load.
    #[command(subcommand)]
    pub command: Command,
}

/// Servers.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// NATS JetStream: one PUB per record, each acknowledged by the stream (`{"stream":..,
    /// "seq":..}`) on a reply inbox.
    Nats(NatsArgs),
    /// Redis Streams: XADD per record, or MULTI + XADD per record + EXEC per batch.
    Redis(RedisArgs),
}

/// `peers-bench nats`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// The cluster's client addresses, HOST:PORT[,HOST:PORT...]. The load goes over one
    /// connection: to the stream leader's server with one stream, else to the first.
    #[arg(long, value_delimiter = ',', required = true)]
    pub servers: Vec<String>,
    /// Streams to create (STREAM0.. on subjects `SUBJECT.0`..); records go round-robin.
    #[arg(long, default_value_t = 1)]
    pub streams: u32,
    /// Prefix of the stream names.
    #[arg(long, default_value = "PEERS")]
    pub stream: String,
    /// Replicas of each stream (1 or 3; acknowledged by a quorum when 3).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// The load.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `peers-bench redis`.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// The server, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// The stream key (deleted first, so that XLEN counts this run only).
    #[arg(long, default_value = "peers")]
    pub key: String,
    /// Records per request: 1 sends a plain XADD; more wrap that many XADDs in
    /// MULTI/EXEC, stored and acknowledged all or none, as a shardlog batch is.
    #[arg(long, default_value_t = 1)]
    pub batch_records: usize,
    /// The load.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// What both servers get: the names and defaults of `shardlog-bench produce`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Requests outstanding on the connection (pipelined).
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    /// Seconds to run (warm-up included).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds at the start left out of the results.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Longest wait for a request to complete while any is outstanding before the run
    /// fails, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub reply_timeout: f64,
    /// Write the configuration and results as JSON to FILE (the keys of shardlog-bench's
    /// report that apply).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl LoadArgs {
    /// Refuses what cannot run, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.record_size == 0 || self.record_size > MAX_RECORD_SIZE {
            return Err(format!("--record-size must be 1..={MAX_RECORD_SIZE}"));
        }
        if self.inflight == 0 || self.inflight > MAX_INFLIGHT {
            return Err(format!("--inflight must be 1..={MAX_INFLIGHT}"));
        }
        if !(self.duration > 0.0 && self.duration.is_finite()) {
            return Err("--duration must be positive".to_string());
        }
        if !(self.warmup >= 0.0 && self.warmup < self.duration) {
            return Err("--warmup must be at least 0 and below --duration".to_string());
        }
        if !(self.reply_timeout > 0.0 && self.reply_timeout.is_finite()) {
            return Err("--reply-timeout must be positive".to_string());
        }
        Ok(())
    }
}

/// NATS's default max_payload is 1 MiB; Redis would take more, but the shapes are 1 KiB.
pub const MAX_RECORD_SIZE: usize = 1 << 20;
/// Outstanding requests: each holds one slot (a send time).
pub const MAX_INFLIGHT: usize = 1 << 16;
/// Records per MULTI/EXEC batch: the reply parser reads the EXEC array up to this length.
pub const MAX_BATCH_RECORDS: usize = 10_000;
