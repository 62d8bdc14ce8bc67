//! `ServerConfig`: what `shardlogd` runs with. Built from defaults, then a TOML file, then
//! environment variables, then flags (each later one wins; the binary merges env and
//! flags with clap). Every key of the file is optional:
//!
//! ```toml
//! data_dir = "/var/lib/shardlog"
//! listen = "0.0.0.0:9092"
//! advertise = "broker1.example:9092"   # what clients are told to connect to
//! shards = 4                           # default: one per core
//! node_id = 0
//! flush = "always"                     # always | interval=MS | never
//! segment_bytes = 134217728
//! retention_bytes = 10737418240        # per partition; default: none
//! retention_ms = 604800000
//! tail_cache_bytes = 8388608           # per partition
//! io_memory = 10485760                 # per shard, for glommio's registered buffers
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shardlog_engine::{EngineConfig, FlushPolicy};

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
    /// Shards (executors).
    pub shards: Option<usize>,
    /// Node id.
    pub node_id: Option<u32>,
    /// Flush policy.
    pub flush: Option<String>,
    /// Segment size.
    pub segment_bytes: Option<u64>,
    /// Retention by size, per partition.
    pub retention_bytes: Option<u64>,
    /// Retention by age.
    pub retention_ms: Option<u64>,
    /// Tail cache per partition.
    pub tail_cache_bytes: Option<usize>,
    /// glommio io_memory per shard.
    pub io_memory: Option<usize>,
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
            shards: other.shards.or(self.shards),
            node_id: other.node_id.or(self.node_id),
            flush: other.flush.or(self.flush),
            segment_bytes: other.segment_bytes.or(self.segment_bytes),
            retention_bytes: other.retention_bytes.or(self.retention_bytes),
            retention_ms: other.retention_ms.or(self.retention_ms),
            tail_cache_bytes: other.tail_cache_bytes.or(self.tail_cache_bytes),
            io_memory: other.io_memory.or(self.io_memory),
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
    /// Shards; default one per core.
    pub shards: usize,
    /// This node's id.
    pub node_id: u32,
    /// Engine settings of partitions whose topic sets nothing else.
    pub engine: EngineConfig,
    /// glommio io_memory per shard.
    pub io_memory: usize,
}

/// Defaults: listen 127.0.0.1:9092, one shard per core, node 0, flush always.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9092";

impl TryFrom<FileConfig> for ServerConfig {
    type Error = anyhow::Error;

    fn try_from(file: FileConfig) -> anyhow::Result<ServerConfig> {
        let data_dir = file
            .data_dir
            .ok_or_else(|| anyhow::anyhow!("no data directory: pass --data-dir DIR"))?;
        let mut engine = EngineConfig::default();
        if let Some(flush) = file.flush {
            engine.flush = flush.parse::<FlushPolicy>().map_err(anyhow::Error::msg)?;
        }
        if let Some(bytes) = file.segment_bytes {
            engine.segment_bytes = bytes;
        }
        engine.retention_bytes = file.retention_bytes.or(engine.retention_bytes);
        if let Some(ms) = file.retention_ms {
            engine.retention_age = Some(Duration::from_millis(ms));
        }
        if let Some(bytes) = file.tail_cache_bytes {
            engine.tail_cache_bytes = bytes;
        }
        engine.validate()?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let shards = file.shards.unwrap_or(cores);
        if !(1..=256).contains(&shards) {
            anyhow::bail!("shards {shards}: 1 to 256");
        }
        Ok(ServerConfig {
            data_dir,
            listen: file.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            advertise: file.advertise,
            shards,
            node_id: file.node_id.unwrap_or(0),
            engine,
            io_memory: file.io_memory.unwrap_or(10 << 20),
        })
    }
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
    }
}
