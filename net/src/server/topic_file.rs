//! `topic.json`: a topic described on disk, beside its partition directories
//! (`DIR/<topic>/topic.json`, `DIR/<topic>/<partition>/`). It is the layout of a data
//! directory written by a one-node shardlog before every node became a cluster member,
//! and the layout `shardlog import` restores a topic into. A node running alone adopts
//! such topics at start (`cluster::adopt`): the controller creates each, and its
//! directory moves to the cluster layout.
//!
//! The file is written atomically (temporary file, fsync, rename, fsync of the directory)
//! before any partition of it exists, so a directory holding one names a whole topic.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shardlog_engine::EngineConfig;

/// The file naming a topic inside its directory.
pub const TOPIC_FILE: &str = "topic.json";
/// The most partitions a topic may have (the controller's limit).
pub const PARTITIONS_MAX: u32 = shardlog_replicator::controller::metadata::MAX_PARTITIONS;

/// One topic as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicFile {
    /// Name (the directory's name).
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

impl TopicFile {
    /// The engine configuration of the topic's partitions: `defaults` with the topic's
    /// settings on top.
    #[must_use]
    pub fn engine_config(&self, defaults: &EngineConfig) -> EngineConfig {
        settings_over(
            defaults,
            self.segment_bytes,
            self.retention_bytes,
            self.retention_ms,
        )
    }
}

/// `defaults` with a topic's settings on top (the ones it sets).
#[must_use]
pub fn settings_over(
    defaults: &EngineConfig,
    segment_bytes: Option<u64>,
    retention_bytes: Option<u64>,
    retention_ms: Option<u64>,
) -> EngineConfig {
    let mut config = defaults.clone();
    if let Some(bytes) = segment_bytes {
        config.segment_bytes = bytes;
    }
    if let Some(bytes) = retention_bytes {
        config.retention_bytes = Some(bytes);
    }
    if let Some(ms) = retention_ms {
        config.retention_age = Some(std::time::Duration::from_millis(ms));
    }
    config
}

/// The directory of a topic in this layout.
#[must_use]
pub fn topic_dir(dir: &Path, topic: &str) -> PathBuf {
    dir.join(topic)
}

/// The topic whose directory is `dir` (blocking): its `topic.json`, which must name the
/// directory (`<topic>`, or `<topic>-<id>` in a server's data directory, where the
/// server writes one for the offline tools). `NotFound` when there is no `topic.json`.
pub fn read(dir: &Path) -> std::io::Result<TopicFile> {
    let file = dir.join(TOPIC_FILE);
    let topic = parse(&file, &std::fs::read(&file)?)?;
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let id_suffix = dir_name
        .strip_prefix(topic.name.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if dir_name != topic.name && !id_suffix {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} names topic {:?}", file.display(), topic.name),
        ));
    }
    Ok(topic)
}

/// The directory in `dir` that holds topic `name` (blocking): `<name>` as written here,
/// or `<name>-<id>` where a server keeps it; `None` if there is none.
pub fn find(dir: &Path, name: &str) -> std::io::Result<Option<PathBuf>> {
    let plain = topic_dir(dir, name);
    if plain.exists() {
        return Ok(Some(plain));
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if read(&path).is_ok_and(|topic| topic.name == name) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Every topic described in `dir` (blocking): directories holding a `topic.json` that
/// names the directory itself. A `topic.json` naming another topic is skipped: a crash
/// can leave one in a directory adoption already renamed to `<topic>-<id>`.
pub fn load(dir: &Path) -> std::io::Result<Vec<TopicFile>> {
    let mut topics = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let file = entry.path().join(TOPIC_FILE);
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let topic = parse(&file, &bytes)?;
        if entry.file_name().to_str() == Some(topic.name.as_str()) {
            topics.push(topic);
        }
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

fn parse(file: &Path, bytes: &[u8]) -> std::io::Result<TopicFile> {
    serde_json::from_slice(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", file.display()),
        )
    })
}

/// Writes a topic's file atomically (blocking), creating its directory.
pub fn store(dir: &Path, topic: &TopicFile) -> std::io::Result<()> {
    let topic_dir = topic_dir(dir, &topic.name);
    std::fs::create_dir_all(&topic_dir)?;
    write(&topic_dir, topic)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `topic` as `dir/topic.json` atomically and durably (temporary file, fsync,
/// rename, fsync of `dir`; blocking). `dir` need not be named after the topic yet: an
/// import builds a topic under a temporary name and renames it whole.
pub fn write(dir: &Path, topic: &TopicFile) -> std::io::Result<()> {
    let tmp = dir.join(format!("{TOPIC_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(topic).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(TOPIC_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let topic = TopicFile {
            name: "t".into(),
            partitions: 3,
            segment_bytes: Some(1 << 20),
            retention_bytes: None,
            retention_ms: None,
        };
        store(dir.path(), &topic).unwrap();
        std::fs::create_dir_all(dir.path().join("stray")).unwrap();
        std::fs::create_dir_all(dir.path().join("t-4/0")).unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![topic]);
    }
}
