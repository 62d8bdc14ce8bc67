//! Safety checkers, run after every simulation step. Read-only over the cluster and
//! drawing no randomness, so checking never changes a run.
//!
//! (a) every batch acknowledged under `acks=all` is at its offset, byte for byte, in the
//!     log of every later leader; (b) every batch a consumer read stays: later reads of
//!     that offset and every later leader return the same bytes; (c) replicas' committed
//!     prefixes (below each one's high watermark) agree byte for byte with one reference
//!     log, and no replica loses a verified committed offset except its unsynced suffix in
//!     a crash; (d) a consumer reads only below the serving replica's high watermark, and
//!     only batches durable on at least `min_insync` replicas; (e) no (producer id,
//!     sequence) appears twice in the committed log, and a retry is acknowledged with the
//!     original offsets.
//!
//! Under retention, (a) and (b) hold for the offsets a leader still holds: below its log
//! start the batches were deleted, and retention never passes the high watermark.
//!
//! "Later leader" means one of the newest leader epoch seen so far. The cluster names the
//! leader from the running voter that applied the most, which goes back in time when the
//! voters ahead of it are down: a voter partitioned away (or just restarted) still shows
//! an old epoch's leader, whose replica may still think it leads and hold uncommitted
//! batches of that epoch above its high watermark. Such a stale leader can commit nothing
//! (its followers fence its epoch), and (c) and (d) still check what it serves.

use std::collections::BTreeMap;

use shardlog_engine::batch::BatchHeader;
use shardlog_engine::{LeaderEpoch, Offset};

use crate::ids::NodeId;
use crate::sim::storage::SimLog;

/// What the checker reads of a node.
pub struct NodeView<'a> {
    /// The node.
    pub id: NodeId,
    /// Its replica's high watermark (0 while the node is down: nothing is checked there
    /// but its log keeping what it synced).
    pub high_watermark: Offset,
    /// The epoch its replica leads, if it leads.
    pub leading: Option<LeaderEpoch>,
    /// Its log.
    pub log: &'a SimLog,
}

/// The checkers' memory of the run.
#[derive(Debug, Default)]
pub struct Checker {
    reference: BTreeMap<Offset, Vec<u8>>,
    reference_end: Offset,
    sequences: BTreeMap<(i64, i32), Offset>,
    acked: BTreeMap<Offset, Vec<u8>>,
    acked_by_sequence: BTreeMap<(i64, i32), Offset>,
    consumed: BTreeMap<Offset, Vec<u8>>,
    new_checks: Vec<Offset>,
    verified: BTreeMap<NodeId, Offset>,
    leader_checked: Option<(NodeId, LeaderEpoch)>,
    /// The newest leader epoch the cluster named so far.
    newest_epoch: Option<LeaderEpoch>,
    /// Batches acknowledged under acks=all, read by consumers, leaders fully checked.
    pub counts: [u64; 3],
}

fn sequence_of(bytes: &[u8]) -> Option<(i64, i32)> {
    let header = BatchHeader::parse(bytes).ok()?;
    (header.producer_id >= 0).then_some((header.producer_id, header.base_sequence))
}

impl Checker {
    /// An `acks=all` acknowledgement of the batch at `base` from `leader`'s log.
    pub fn acked(
        &mut self,
        leader: &SimLog,
        base: Offset,
        sequence: (i64, i32),
    ) -> Result<(), String> {
        if base < leader.log_start() {
            // A retry of a batch retention has deleted since, answered with its original
            // offsets: the bytes are gone, the offsets must still be the first answer's.
            return match self.acked_by_sequence.get(&sequence) {
                Some(first) if *first != base => {
                    Err(format!("{sequence:?} acked at {first} and again at {base}"))
                }
                _ => Ok(()),
            };
        }
        let bytes = leader
            .batch_at(base, false)
            .ok_or_else(|| format!("acked offset {base} not in the acking leader's log"))?;
        if sequence_of(&bytes) != Some(sequence) {
            return Err(format!(
                "acked {sequence:?} at {base}, log holds {:?}",
                sequence_of(&bytes)
            ));
        }
        if let Some(first) = self.acked_by_sequence.insert(sequence, base) {
            if first != base {
                return Err(format!("{sequence:?} acked at {first} and again at {base}"));
            }
        }
        if let Some(old) = self.acked.insert(base, bytes.to_vec()) {
            if old != bytes {
                return Err(format!("offset {base} acked twice with different batches"));
            }
        } else {
            self.counts[0] += 1;
        }
        self.new_checks.push(base);
        Ok(())
    }

    /// A consumer read `bytes` at `base` from `node`.
    pub fn consumed(
        &mut self,
        node: &NodeView<'_>,
        all: &[NodeView<'_>],
        base: Offset,
        bytes: &[u8],
        min_insync: usize,
    ) -> Result<(), String> {
        let header = BatchHeader::parse(bytes).map_err(|e| format!("consumed garbage: {e}"))?;
        let high_watermark = node.high_watermark;
        if header.next_offset() > high_watermark {
            return Err(format!(
                "{} served {base} at/above its high watermark {high_watermark}",
                node.id
            ));
        }
        // A replica whose retention deleted it held it once it was committed (retention
        // stops at the high watermark).
        let durable = all
            .iter()
            .filter(|n| {
                base < n.log.log_start() || n.log.batch_at(base, true).as_deref() == Some(bytes)
            })
            .count();
        if durable < min_insync {
            return Err(format!(
                "read of {base} durable on {durable} < {min_insync} replicas"
            ));
        }
        if let Some(old) = self.consumed.insert(base, bytes.to_vec()) {
            if old != bytes {
                return Err(format!("offset {base} read with two different batches"));
            }
        } else {
            self.counts[1] += 1;
            self.new_checks.push(base);
        }
        Ok(())
    }

    /// A node crashed: it may lose what it had not synced.
    pub fn crashed(&mut self, node: NodeId, durable_end: Offset) {
        if let Some(verified) = self.verified.get_mut(&node) {
            *verified = (*verified).min(durable_end);
        }
    }

    /// Runs (a), (b), (c) and (e) over the cluster.
    pub fn after_step(
        &mut self,
        nodes: &[NodeView<'_>],
        leader: Option<(NodeId, LeaderEpoch)>,
    ) -> Result<(), String> {
        for node in nodes {
            self.check_prefix(node)?;
        }
        let Some((id, epoch)) = leader else {
            return Ok(());
        };
        if self.newest_epoch.is_some_and(|newest| epoch < newest) {
            return Ok(());
        }
        self.newest_epoch = Some(epoch);
        let Some(node) = nodes
            .iter()
            .find(|n| n.id == id && n.leading == Some(epoch))
        else {
            return Ok(());
        };
        if self.leader_checked == Some((id, epoch)) {
            let checks = std::mem::take(&mut self.new_checks);
            for base in checks {
                self.check_in_leader(node, base)?;
            }
        } else {
            self.new_checks.clear();
            let all: Vec<Offset> = self
                .acked
                .keys()
                .chain(self.consumed.keys())
                .copied()
                .collect();
            for base in all {
                self.check_in_leader(node, base)?;
            }
            self.leader_checked = Some((id, epoch));
            self.counts[2] += 1;
        }
        Ok(())
    }

    fn check_in_leader(&self, node: &NodeView<'_>, base: Offset) -> Result<(), String> {
        if base < node.log.log_start() {
            // Deleted by retention, which stops at the high watermark: committed, and
            // checked in every leader until then.
            return Ok(());
        }
        let expected = self.acked.get(&base).or_else(|| self.consumed.get(&base));
        let found = node.log.batch_at(base, false);
        if expected.map(Vec::as_slice) != found.as_deref() {
            return Err(format!(
                "leader {} (epoch {:?}) lost or changed committed offset {base}",
                node.id, node.leading
            ));
        }
        Ok(())
    }

    /// (c) and (e): extends the node's verified committed prefix up to its high watermark.
    fn check_prefix(&mut self, node: &NodeView<'_>) -> Result<(), String> {
        let verified = self.verified.entry(node.id).or_default();
        if node.log.log_end() < *verified {
            return Err(format!(
                "{} lost committed data: log end {} < {}",
                node.id,
                node.log.log_end(),
                verified
            ));
        }
        let high_watermark = node.high_watermark;
        let mut at = *verified;
        for (base, bytes) in &node.log.batches_from(at) {
            if *base >= high_watermark {
                break;
            }
            match self.reference.get(base) {
                Some(reference) if reference == bytes => {}
                Some(_) => return Err(format!("{} committed offset {base} differs", node.id)),
                None if *base == self.reference_end => {
                    if let Some(sequence) = sequence_of(bytes) {
                        if let Some(first) = self.sequences.insert(sequence, *base) {
                            return Err(format!("duplicate {sequence:?} at {first} and {base}"));
                        }
                    }
                    let header = BatchHeader::parse(bytes).map_err(|e| e.to_string())?;
                    self.reference.insert(*base, bytes.clone());
                    self.reference_end = header.next_offset();
                }
                None => return Err(format!("{} committed offset {base} out of place", node.id)),
            }
            at = BatchHeader::parse(bytes)
                .map_err(|e| e.to_string())?
                .next_offset();
        }
        self.verified.insert(node.id, at);
        Ok(())
    }

    /// End of the reference committed log.
    #[must_use]
    pub fn committed_end(&self) -> Offset {
        self.reference_end
    }
}
