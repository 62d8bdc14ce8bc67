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

use shardlog_engine::batch;
use shardlog_replicator::controller::{AdoptedData, Command, Metadata};

use crate::server::cluster::TopicSettings;
use crate::server::cluster::replicas::replica_dir;
use crate::server::topic_file::{self, TOPIC_FILE, TopicFile};

/// A topic to adopt: its description, and what its data holds that the controller must
/// not contradict.
#[derive(Clone, Debug)]
pub(crate) struct Adoptee {
    pub(crate) topic: TopicFile,
    /// What the topic's batches carry.
    pub(crate) held: Held,
}

/// What a topic's batches carry that outlives the node that wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    /// The newest leader epoch (-1: no batch). The partitions must be led at that epoch
    /// at least: a replica never leads an epoch older than its log's (a topic exported
    /// from a node that restarted carries the epochs it had there).
    pub(crate) leader_epoch: i32,
    /// The largest producer id (-1: none). New producer ids must be above it, or a new
    /// producer's first batch would be taken for a retry of an adopted one.
    pub(crate) producer_id: i64,
}

impl Held {
    const NOTHING: Held = Held {
        leader_epoch: -1,
        producer_id: -1,
    };

    fn and(self, other: Held) -> Held {
        Held {
            leader_epoch: self.leader_epoch.max(other.leader_epoch),
            producer_id: self.producer_id.max(other.producer_id),
        }
    }
}

/// The topics of `data_dir` to adopt (blocking, before the shards start). Every batch
/// header of theirs is read once (adoption happens once per topic).
pub(crate) fn scan(data_dir: &Path) -> anyhow::Result<Vec<Adoptee>> {
    let topics = topic_file::load(data_dir).map_err(|e| {
        anyhow::anyhow!("reading the topics of {} to adopt: {e}", data_dir.display())
    })?;
    topics
        .into_iter()
        .map(|topic| {
            let dir = topic_file::topic_dir(data_dir, &topic.name);
            let held = (0..topic.partitions)
                .map(|p| held_by(&dir.join(p.to_string())))
                .try_fold(Held::NOTHING, |all, held| held.map(|h| all.and(h)))
                .map_err(|e| anyhow::anyhow!("reading {} to adopt it: {e}", dir.display()))?;
            Ok(Adoptee { topic, held })
        })
        .collect()
}

/// What the whole batches of a partition directory's segments carry; each segment is
/// read up to its first batch that does not validate (a torn tail, which opening the log
/// cuts, or the zeros after its end).
fn held_by(partition_dir: &Path) -> std::io::Result<Held> {
    let entries = match std::fs::read_dir(partition_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Held::NOTHING),
        Err(e) => return Err(e),
    };
    let mut held = Held::NOTHING;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name
            .strip_suffix(".log")
            .is_none_or(|base| base.parse::<u64>().is_err())
        {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        let mut at = 0usize;
        while let Some(rest) = bytes.get(at..) {
            let Some(whole) = batch::BatchHeader::parse(rest)
                .ok()
                .and_then(|header| rest.get(..header.size as usize))
            else {
                break;
            };
            let Ok(header) = batch::validate(whole) else {
                break;
            };
            held = held.and(Held {
                leader_epoch: header.leader_epoch.0,
                producer_id: header.producer_id,
            });
            at += whole.len();
        }
    }
    Ok(held)
}

/// The command that creates `adoptee`'s topic, if the controller does not have it yet.
pub(crate) fn create_command(adoptee: &Adoptee, metadata: &Metadata) -> Option<Command> {
    let topic = &adoptee.topic;
    if metadata.topics().contains_key(&topic.name) {
        return None;
    }
    let settings = TopicSettings {
        segment_bytes: topic.segment_bytes,
        retention_bytes: topic.retention_bytes,
        retention_ms: topic.retention_ms,
    };
    Some(Command::AdoptTopic {
        name: topic.name.clone(),
        partitions: topic.partitions,
        config: settings.to_pairs(),
        held: Box::new(AdoptedData {
            leader_epoch: adoptee.held.leader_epoch.max(0),
            producer_id_floor: u64::try_from(adoptee.held.producer_id.saturating_add(1))
                .unwrap_or(0),
        }),
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
