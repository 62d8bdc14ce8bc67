//! Which replicas of this node opened and which could not (a damaged or unreadable
//! partition directory, a full disk, too many open files), shared by every shard of the
//! node: metadata answered by any shard shows an offline replica (no leader here, not in
//! the ISR), and a topic creation answered here waits until each of its partitions held
//! here opened or failed, and undoes the creation if one failed.
//!
//! Written by the shard that opens the replica, read by metadata and topic creation: the
//! control plane, never the data path, so a plain mutex is enough.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// How opening one replica ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpenOutcome {
    /// It is open and serving.
    Opened,
    /// It could not open, for this reason; it is offline.
    Offline(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// The topic's id (a topic deleted and created again is another topic).
    topic_id: u64,
    outcome: OpenOutcome,
}

/// This node's replicas' open outcomes, by (topic, partition).
#[derive(Debug, Default)]
pub(crate) struct OpenOutcomes {
    replicas: Mutex<BTreeMap<(String, u32), Entry>>,
}

impl OpenOutcomes {
    fn locked(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u32), Entry>> {
        // A shard that panicked while holding it aborts the process (panic = "abort").
        self.replicas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records how opening `topic` (id `topic_id`) partition `partition` ended.
    pub(crate) fn record(&self, topic: &str, topic_id: u64, partition: u32, outcome: OpenOutcome) {
        self.locked()
            .insert((topic.to_owned(), partition), Entry { topic_id, outcome });
    }

    /// The replica is gone (closed and removed): forget it.
    pub(crate) fn forget(&self, topic: &str, partition: u32) {
        self.locked().remove(&(topic.to_owned(), partition));
    }

    /// How opening the replica of `topic` (id `topic_id`) partition `partition` ended,
    /// if it was tried.
    pub(crate) fn outcome(
        &self,
        topic: &str,
        topic_id: u64,
        partition: u32,
    ) -> Option<OpenOutcome> {
        self.locked()
            .get(&(topic.to_owned(), partition))
            .filter(|entry| entry.topic_id == topic_id)
            .map(|entry| entry.outcome.clone())
    }

    /// Why the replica is offline, if it is.
    pub(crate) fn offline_reason(
        &self,
        topic: &str,
        topic_id: u64,
        partition: u32,
    ) -> Option<String> {
        match self.outcome(topic, topic_id, partition) {
            Some(OpenOutcome::Offline(reason)) => Some(reason),
            _ => None,
        }
    }

    /// Every replica tried: (topic, partition, topic id, whether it is offline).
    pub(crate) fn all(&self) -> Vec<(String, u32, u64, bool)> {
        self.locked()
            .iter()
            .map(|((name, partition), entry)| {
                let offline = matches!(entry.outcome, OpenOutcome::Offline(_));
                (name.clone(), *partition, entry.topic_id, offline)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_forgotten_and_scoped_to_the_topic_id() {
        let outcomes = OpenOutcomes::default();
        outcomes.record("t", 7, 1, OpenOutcome::Offline("disk full".into()));
        outcomes.record("t", 7, 2, OpenOutcome::Opened);
        assert_eq!(
            outcomes.offline_reason("t", 7, 1).as_deref(),
            Some("disk full")
        );
        assert_eq!(outcomes.offline_reason("t", 7, 2), None);
        assert_eq!(
            outcomes.outcome("t", 8, 1),
            None,
            "another topic of that name"
        );
        assert_eq!(outcomes.all().len(), 2);
        outcomes.forget("t", 1);
        assert_eq!(outcomes.outcome("t", 7, 1), None);
        assert_eq!(outcomes.outcome("t", 7, 2), Some(OpenOutcome::Opened));
    }
}
