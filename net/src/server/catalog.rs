//! The topic catalog: which topics exist, with how many partitions and which settings,
//! and which shard owns each partition.
//!
//! On disk each topic is `DATA/<topic>/topic.json`, written atomically (temporary file,
//! fsync, rename, fsync of the directory) before any partition of it exists, and removed
//! first when the topic is deleted: a crash in between leaves either a whole topic or
//! partition directories without a `topic.json`, which start-up ignores (with a warning).
//! Every shard holds its own copy of the catalog; shard 0 changes it and tells the others.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shardlog_engine::EngineConfig;

use crate::api::TopicConfig;

/// The file naming a topic inside its directory.
pub const TOPIC_FILE: &str = "topic.json";
/// The most partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;

/// One topic as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions `0..partitions`.
    pub partitions: u32,
    /// `segment.bytes`, if set for this topic.
    pub segment_bytes: Option<u64>,
    /// `retention.bytes` per partition, if set.
    pub retention_bytes: Option<u64>,
    /// `retention.ms`, if set.
    pub retention_ms: Option<u64>,
}

impl TopicSpec {
    /// A spec from a create request's fields.
    #[must_use]
    pub fn new(name: &str, partitions: u32, config: &TopicConfig) -> TopicSpec {
        TopicSpec {
            name: name.to_owned(),
            partitions,
            segment_bytes: config.segment_bytes,
            retention_bytes: config.retention_bytes,
            retention_ms: config.retention_ms,
        }
    }

    /// The engine configuration of its partitions: the server's defaults with this
    /// topic's settings on top.
    #[must_use]
    pub fn engine_config(&self, defaults: &EngineConfig) -> EngineConfig {
        let mut config = defaults.clone();
        if let Some(bytes) = self.segment_bytes {
            config.segment_bytes = bytes;
        }
        if let Some(bytes) = self.retention_bytes {
            config.retention_bytes = Some(bytes);
        }
        if let Some(ms) = self.retention_ms {
            config.retention_age = Some(std::time::Duration::from_millis(ms));
        }
        config
    }
}

/// The shard that owns `partition` of `topic` among `shards`: partitions of one topic go
/// round-robin over the shards, starting at a shard picked by the topic's name, so topics
/// with few partitions do not all land on shard 0. Stable across restarts.
#[must_use]
pub fn owner_shard(topic: &str, partition: u32, shards: usize) -> usize {
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    (start.wrapping_add(partition as usize)) % shards.max(1)
}

/// The directory of a topic.
#[must_use]
pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join(topic)
}

/// The directory of one partition.
#[must_use]
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    topic_dir(data_dir, topic).join(partition.to_string())
}

/// Every topic in `data_dir` (blocking; run before the shards start, or off them).
pub fn load(data_dir: &Path) -> std::io::Result<BTreeMap<String, TopicSpec>> {
    let mut topics = BTreeMap::new();
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let spec = match read_topic_file(&entry.path()) {
            Ok(spec) => spec,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %entry.path().display(), "no {TOPIC_FILE}: not a topic, ignored");
                continue;
            }
            Err(e) => return Err(e),
        };
        topics.insert(spec.name.clone(), spec);
    }
    Ok(topics)
}

/// The topic whose directory is `dir` (blocking): its `topic.json`, which must name the
/// directory's own name. `NotFound` when there is no `topic.json`.
pub fn read_topic_file(dir: &Path) -> std::io::Result<TopicSpec> {
    let file = dir.join(TOPIC_FILE);
    let bytes = std::fs::read(&file)?;
    let spec: TopicSpec = serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", file.display()),
        )
    })?;
    if dir.file_name().and_then(|n| n.to_str()) != Some(spec.name.as_str()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} names topic {:?}", file.display(), spec.name),
        ));
    }
    Ok(spec)
}

/// Writes a topic's file atomically (blocking).
pub fn store(data_dir: &Path, spec: &TopicSpec) -> std::io::Result<()> {
    let dir = topic_dir(data_dir, &spec.name);
    std::fs::create_dir_all(&dir)?;
    write_topic_file(&dir, spec)?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Writes `spec` as `dir/topic.json` atomically and durably (temporary file, fsync,
/// rename, fsync of `dir`; blocking). `dir` need not be named after the topic yet: an
/// import builds a topic under a temporary name and renames it whole.
pub fn write_topic_file(dir: &Path, spec: &TopicSpec) -> std::io::Result<()> {
    let tmp = dir.join(format!("{TOPIC_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(TOPIC_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes a topic and its data (blocking): the topic file first, durably, then the rest.
pub fn remove(data_dir: &Path, topic: &str) -> std::io::Result<()> {
    let dir = topic_dir(data_dir, topic);
    match std::fs::remove_file(dir.join(TOPIC_FILE)) {
        Ok(()) => std::fs::File::open(&dir)?.sync_all()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_dir_all(&dir)?;
    std::fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_over_shards() {
        let mut per_shard = [0u32; 4];
        for p in 0..16 {
            per_shard[owner_shard("orders", p, 4)] += 1;
        }
        assert_eq!(per_shard, [4, 4, 4, 4]);
        assert_eq!(owner_shard("orders", 3, 1), 0);
    }

    #[test]
    fn store_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TopicSpec::new(
            "t",
            3,
            &TopicConfig {
                segment_bytes: Some(1 << 20),
                ..TopicConfig::default()
            },
        );
        store(dir.path(), &spec).unwrap();
        std::fs::create_dir_all(dir.path().join("stray")).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded["t"], spec);
        remove(dir.path(), "t").unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
    }
}
