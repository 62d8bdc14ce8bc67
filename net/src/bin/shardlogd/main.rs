//! `shardlogd`: the shardlog server. Runs in the foreground, logs to stderr, prints
//! `shardlogd ready: listening on HOST:PORT` once it serves, and stops cleanly on SIGTERM
//! or SIGINT. Settings: flags, then `SHARDLOGD_*` environment variables, then `--config`
//! (a TOML file), then defaults. Exit codes: 0 after a clean stop, 1 when the server
//! failed, 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shardlog_net::server::{self, FileConfig, ServerConfig};

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
    /// HOST:PORT to listen on (port 0: any free port; the ready line names it).
    /// Default 127.0.0.1:9092.
    #[arg(long, env = "SHARDLOGD_LISTEN")]
    listen: Option<String>,
    /// HOST:PORT clients are told to connect to. Default: the listen address.
    #[arg(long, env = "SHARDLOGD_ADVERTISE")]
    advertise: Option<String>,
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
    /// Default retention by size, bytes per partition.
    #[arg(long, env = "SHARDLOGD_RETENTION_BYTES")]
    retention_bytes: Option<u64>,
    /// Default retention by age, milliseconds.
    #[arg(long, env = "SHARDLOGD_RETENTION_MS")]
    retention_ms: Option<u64>,
    /// Tail cache per partition, bytes.
    #[arg(long, env = "SHARDLOGD_TAIL_CACHE_BYTES")]
    tail_cache_bytes: Option<usize>,
    /// glommio io_memory per shard, bytes.
    #[arg(long, env = "SHARDLOGD_IO_MEMORY")]
    io_memory: Option<usize>,
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
            shards: self.shards,
            node_id: self.node_id,
            flush: self.flush,
            segment_bytes: self.segment_bytes,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            tail_cache_bytes: self.tail_cache_bytes,
            io_memory: self.io_memory,
        };
        ServerConfig::try_from(file.overridden_by(flags))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Args::parse().into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shardlogd: {e:#}");
            return ExitCode::from(2);
        }
    };
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardlogd: {e:#}");
            ExitCode::from(1)
        }
    }
}
