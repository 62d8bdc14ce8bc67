//! Adopting topics described by `topic.json` (`server::topic_file`): a data directory of
//! an earlier release, where a node alone kept its topics outside any controller, or a
//! topic `shardlog import` restored. At start a node running alone creates each such
//! topic through its controller (settings kept, replication factor 1, the node as its
//! only replica), then renames its directory to the cluster layout `DATA/<topic>-<id>`,
//! before it publishes its first view, so no replica ever opens the topic empty.
//!
//! Every step can be cut by a crash and redone: a topic the controller already has (its
//! create was applied) is only renamed; a renamed one no longer has its `topic.json`
//! under its name. A node with peers refuses such a directory at start: its topics
//! would have one replica here and none elsewhere.

use std::path::{Path, PathBuf};

use shardlog_replicator::controller::{Command, Metadata};

use crate::server::cluster::TopicSettings;
use crate::server::cluster::replicas::replica_dir;
use crate::server::topic_file::{self, TOPIC_FILE, TopicFile};

/// The topics of `data_dir` to adopt (blocking, before the shards start).
pub(crate) fn scan(data_dir: &Path) -> anyhow::Result<Vec<TopicFile>> {
    topic_file::load(data_dir)
        .map_err(|e| anyhow::anyhow!("reading the topics of {} to adopt: {e}", data_dir.display()))
}

/// The command that creates `topic`, if the controller does not have it yet.
pub(crate) fn create_command(topic: &TopicFile, metadata: &Metadata) -> Option<Command> {
    if metadata.topics().contains_key(&topic.name) {
        return None;
    }
    let settings = TopicSettings {
        segment_bytes: topic.segment_bytes,
        retention_bytes: topic.retention_bytes,
        retention_ms: topic.retention_ms,
    };
    Some(Command::CreateTopic {
        name: topic.name.clone(),
        partitions: topic.partitions,
        replication_factor: 1,
        min_insync: 1,
        config: settings.to_pairs(),
    })
}

/// Where the controller's topic `topic` lives, once created: its directory in the
/// cluster layout. `Err` if the controller's topic does not match the one on disk.
pub(crate) fn target(
    data_dir: &Path,
    topic: &TopicFile,
    metadata: &Metadata,
) -> Result<PathBuf, String> {
    let info = metadata
        .topics()
        .get(&topic.name)
        .ok_or_else(|| format!("the controller has no topic {:?}", topic.name))?;
    let partitions = u32::try_from(info.partitions.len()).unwrap_or(u32::MAX);
    if partitions != topic.partitions {
        return Err(format!(
            "the controller's topic {:?} has {partitions} partitions, the directory {}",
            topic.name, topic.partitions
        ));
    }
    let first = replica_dir(data_dir, &topic.name, info.id, 0);
    first
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "no topic directory".to_owned())
}

/// Moves an adopted topic's directory into place (blocking): rename, then drop its
/// `topic.json`, then sync the data directory.
pub(crate) fn move_into_place(data_dir: &Path, name: &str, target: &Path) -> std::io::Result<()> {
    let from = topic_file::topic_dir(data_dir, name);
    if target.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} and {} both exist; move one away",
                from.display(),
                target.display()
            ),
        ));
    }
    std::fs::rename(&from, target)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    match std::fs::remove_file(target.join(TOPIC_FILE)) {
        Ok(()) => std::fs::File::open(target)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
