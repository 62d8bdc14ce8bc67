//! Command-line arguments of `shardlog-bench` (clap derive). The network workloads
//! (`produce`, `consume`, `e2e`) join this enum with the server.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use shardlog_engine::FlushPolicy;

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
