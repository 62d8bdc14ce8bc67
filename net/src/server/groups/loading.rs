//! Rebuilding an offsets partition's committed offsets when this node becomes its
//! leader: from the newest snapshot (named by the newest record's `snapshot_base`, see
//! `record`) up to the high watermark. Meanwhile the coordinator answers
//! `CoordinatorLoadInProgress`.
//!
//! [`Replay`] is the pure part (batches in, offsets out), tested without a disk;
//! [`load`] reads the replica's log. A batch that is compressed, a control batch, or a
//! record that does not decode is skipped with a warning: the topic is a topic, and a
//! stray client write must not stop its groups from loading.

use std::collections::BTreeMap;
use std::time::Duration;

use shardlog_engine::Offset;
use shardlog_engine::batch::{BatchHeader, Compression};
use shardlog_engine::record::RecordIter;

use crate::server::cluster::Replica;
use crate::server::groups::group::OffsetEntry;
use crate::server::groups::record::{self, OffsetsRecord};

/// Committed offsets of one group, by (topic, partition).
pub(crate) type GroupOffsets = BTreeMap<(String, u32), OffsetEntry>;

/// Bytes read per step of a load.
const READ_BYTES: usize = 1 << 20;

/// Offsets rebuilt from a partition's batches, in log order.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub(crate) groups: BTreeMap<String, GroupOffsets>,
    /// The newest snapshot's batch offset seen (-1: none).
    pub(crate) snapshot_base: i64,
    /// Offset records applied since that snapshot.
    pub(crate) records_since_snapshot: u64,
    /// Records skipped (undecodable, unknown).
    pub(crate) skipped: u64,
}

impl Replay {
    /// An empty replay.
    pub(crate) fn new() -> Replay {
        Replay {
            snapshot_base: -1,
            ..Replay::default()
        }
    }

    /// Applies one whole batch (validated by the log).
    pub(crate) fn batch(&mut self, header: &BatchHeader, bytes: &[u8]) {
        if header.is_control() || header.compression() != Compression::None {
            self.skipped += u64::from(header.record_count);
            return;
        }
        let mut in_snapshot = false;
        for (index, item) in RecordIter::new(header, bytes).enumerate() {
            let decoded = match item {
                Ok(r) => record::decode(r.key, r.value).map(|d| (d, r.offset(header))),
                Err(_) => {
                    self.skipped += 1;
                    break;
                }
            };
            match decoded {
                Ok((OffsetsRecord::SnapshotStart { .. }, _)) if index == 0 => {
                    self.groups.clear();
                    self.snapshot_base = i64::try_from(header.base_offset.0).unwrap_or(-1);
                    self.records_since_snapshot = 0;
                    in_snapshot = true;
                }
                Ok((
                    OffsetsRecord::Offset {
                        group,
                        topic,
                        partition,
                        offset,
                        leader_epoch,
                        commit_timestamp,
                        metadata,
                        ..
                    },
                    at,
                )) => {
                    let entry = OffsetEntry {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp,
                        record_offset: at.0,
                    };
                    self.groups
                        .entry(group)
                        .or_default()
                        .insert((topic, partition), entry);
                    // A snapshot's own entries are not what the next snapshot compacts.
                    if !in_snapshot {
                        self.records_since_snapshot += 1;
                    }
                }
                Ok(_) | Err(_) => self.skipped += 1,
            }
        }
    }
}

/// Where the newest snapshot is, by the last batch below `end`: its own offset if it is
/// a snapshot, else the newest `snapshot_base` its records name.
fn newest_snapshot(header: &BatchHeader, bytes: &[u8]) -> Option<u64> {
    if header.compression() != Compression::None {
        return None;
    }
    let mut newest = None;
    for (index, item) in RecordIter::new(header, bytes).enumerate() {
        let Ok(r) = item else { break };
        match record::decode(r.key, r.value) {
            Ok(OffsetsRecord::SnapshotStart { .. }) if index == 0 => {
                return Some(header.base_offset.0);
            }
            Ok(OffsetsRecord::Offset { snapshot_base, .. }) => {
                newest = newest.max(u64::try_from(snapshot_base).ok());
            }
            _ => {}
        }
    }
    newest
}

/// Why a load stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("the replica is no longer leading")]
    NotLeading,
    #[error("reading the offsets partition: {0}")]
    Read(#[from] shardlog_engine::Error),
}

/// Reads the replica's log from the newest snapshot up to its high watermark. Waits
/// (within the leadership) until a new leader's high watermark is known.
pub(crate) async fn load(replica: &Replica) -> Result<Replay, LoadError> {
    let end = loop {
        if replica.driver.leading().is_none() {
            return Err(LoadError::NotLeading);
        }
        if let Some(end) = replica.visible_end() {
            break end;
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    };
    let log = replica.log();
    let log_start = log.log_start();
    let mut replay = Replay::new();
    if end <= log_start {
        return Ok(replay);
    }
    let last = log.read(Offset(end.0 - 1), 1).await?;
    let snapshot = last
        .batches()
        .last()
        .and_then(|(header, bytes)| newest_snapshot(&header, bytes));
    let mut at = snapshot.map_or(log_start, Offset).clamp(log_start, end);
    while at < end {
        let read = log.read(at, READ_BYTES).await?;
        let mut progressed = false;
        for (header, bytes) in read.batches() {
            if header.base_offset >= end {
                break;
            }
            replay.batch(&header, bytes);
            at = header.next_offset();
            progressed = true;
        }
        if !progressed {
            break;
        }
        // A long load yields: the shard serves its other partitions meanwhile.
        glommio::executor().yield_if_needed().await;
    }
    Ok(replay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::groups::record::{commit_batch, snapshot_batch};
    use shardlog_engine::LeaderEpoch;
    use shardlog_engine::batch::{patch_base, validate_with_records};

    fn entry(offset: i64) -> OffsetEntry {
        OffsetEntry {
            offset,
            leader_epoch: 0,
            metadata: None,
            commit_timestamp: 0,
            record_offset: 0,
        }
    }

    fn apply(replay: &mut Replay, mut batch: Vec<u8>, base: u64) {
        patch_base(&mut batch, Offset(base), LeaderEpoch(0));
        let header = validate_with_records(&batch).expect("valid");
        replay.batch(&header, &batch);
    }

    #[test]
    fn a_snapshot_replaces_what_came_before_and_later_commits_apply() {
        let mut replay = Replay::new();
        let old = entry(5);
        apply(
            &mut replay,
            commit_batch(&[("gone", "t", 0, &old)], -1).expect("b"),
            0,
        );
        apply(
            &mut replay,
            commit_batch(&[("g", "t", 0, &old)], -1).expect("b"),
            1,
        );
        let kept = entry(7);
        apply(
            &mut replay,
            snapshot_batch(&[("g", "t", 0, &kept)]).expect("s"),
            2,
        );
        assert_eq!(replay.snapshot_base, 2);
        assert!(!replay.groups.contains_key("gone"));
        let newer = entry(9);
        apply(
            &mut replay,
            commit_batch(&[("g", "t", 1, &newer)], 2).expect("b"),
            4,
        );
        let g = replay.groups.get("g").expect("group");
        assert_eq!(g.get(&("t".into(), 0)).map(|e| e.offset), Some(7));
        assert_eq!(
            g.get(&("t".into(), 1)).map(|e| (e.offset, e.record_offset)),
            Some((9, 4))
        );
        assert_eq!(replay.records_since_snapshot, 1);
    }

    #[test]
    fn the_newest_record_names_the_newest_snapshot() {
        let mut batch = commit_batch(&[("g", "t", 0, &entry(1))], 17).expect("b");
        patch_base(&mut batch, Offset(30), LeaderEpoch(0));
        let header = validate_with_records(&batch).expect("valid");
        assert_eq!(newest_snapshot(&header, &batch), Some(17));
        let mut snapshot = snapshot_batch(&[]).expect("s");
        patch_base(&mut snapshot, Offset(40), LeaderEpoch(0));
        let header = validate_with_records(&snapshot).expect("valid");
        assert_eq!(newest_snapshot(&header, &snapshot), Some(40));
    }

    #[test]
    fn stray_records_are_skipped() {
        let mut replay = Replay::new();
        let mut builder = shardlog_engine::record::BatchBuilder::new();
        builder.push(
            shardlog_engine::TimestampMs(0),
            Some(b"junk"),
            Some(b"x"),
            &[],
        );
        apply(&mut replay, builder.finish(), 0);
        assert_eq!(replay.skipped, 1);
        assert!(replay.groups.is_empty());
    }
}
