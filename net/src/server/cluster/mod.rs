//! The node as a member of its cluster. Every node is one: without `--peers` it is a
//! cluster of one, running the same controller, replicas and drivers as any other.
//!
//! ```text
//!  shard 0: ControllerService (raft-rs voter) --view--> every shard's inbox
//!  every shard: reconcile(view) opens/closes replicas, hands them leadership
//!               tick loop: replica timers, ISR proposals --> shard 0 --> controller leader
//!  Replicate frames (peer listener) --> owner shard --> driver.receive
//! ```
//!
//! The view ([`ClusterView`]) is the controller's applied metadata and its leader, sent
//! whole after every change: shards reconcile against the newest view (level-triggered),
//! so a lost or coalesced change never leaves a replica behind.
//!
//! Partition data lives in `DATA/<topic>-<topic id>/<partition>`: a topic deleted while a
//! node was down and created again under the same name gets a fresh directory.

pub(crate) mod adopt;
mod change_log;
pub(crate) mod controller;
pub(crate) mod disk_space;
mod offline;
pub(crate) mod open_outcomes;
pub(crate) mod producer_ids;
mod replicas;
mod shared_sessions;
mod topic_config;
mod upkeeps;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use shardlog_engine::Offset;
use shardlog_replicator::controller::Metadata;
use shardlog_replicator::throttle::MoveThrottle;
use shardlog_replicator::{Incarnation, NodeId, Tick};

use crate::peer::Peers;
use crate::server::config::ClusterConfig;
use crate::server::shard::Log;

/// A peer's `Replicate` frames of another version are logged once in this many.
const REFUSED_VERSION_LOG_EVERY: u64 = 1000;

pub(crate) use replicas::{Driver, Placement};
pub(crate) use topic_config::TopicSettings;

/// What the controller has applied, as one node knows it.
#[derive(Debug, Default)]
pub(crate) struct ClusterView {
    /// Nodes, topics, assignments, leaders and ISRs.
    pub(crate) metadata: Metadata,
    /// The controller leader, if known.
    pub(crate) controller: Option<NodeId>,
    /// The controller's applied Raft index this view shows.
    pub(crate) applied: u64,
    /// Whether the controller has this run of the node registered and live (the
    /// registration fenced any previous run): only then may its replicas lead. See
    /// `ControllerService::rejoined`.
    pub(crate) rejoined: bool,
}

/// One partition replica on this shard.
pub(crate) struct Replica {
    pub(crate) topic: Rc<str>,
    pub(crate) partition: u32,
    pub(crate) topic_id: u64,
    pub(crate) driver: Rc<Driver>,
    /// Ships to followers not yet acknowledged (the replication latency metric).
    ships: Rc<crate::server::metrics::ShipTimes>,
    /// The (leader epoch, partition epoch) last handed to the driver.
    applied: std::cell::Cell<Option<(shardlog_engine::LeaderEpoch, u64)>>,
    run: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// The throttle of this partition's move when the move set its own (its rate).
    own_throttle: RefCell<Option<(u64, Rc<MoveThrottle>)>>,
}

impl Replica {
    /// The log.
    pub(crate) fn log(&self) -> &Rc<Log> {
        self.driver.log()
    }

    /// Offsets below it are committed and readers may be told so: the high watermark,
    /// or `None` while a new leader's high watermark is below its epoch start (telling it
    /// would take a reader's high watermark back; see `served_high_watermark`).
    pub(crate) fn visible_end(&self) -> Option<Offset> {
        let high_watermark = self.driver.served_high_watermark()?;
        Some(high_watermark.min(self.log().log_end()))
    }
}

/// Cluster state of one shard.
pub(crate) struct ClusterNode {
    pub(crate) id: NodeId,
    pub(crate) config: ClusterConfig,
    /// Links to the other nodes, for this shard's replicas (and shard 0's controller).
    pub(crate) peers: Rc<Peers>,
    /// `None` until shard 0's controller has caught up after start.
    view: RefCell<Option<Arc<ClusterView>>>,
    view_changed: mpsc::UnboundedSender<()>,
    view_changes: RefCell<Option<mpsc::UnboundedReceiver<()>>>,
    /// The Raft index of the last entry this node's controller applied that changed the
    /// metadata, shared by every shard and set before the proposals applied there are
    /// answered: a shard whose view shows less has a newer view on its way (a topic whose
    /// creation was just answered, say).
    pub(crate) applied: Arc<AtomicU64>,
    /// Told after the next reconcile (requests for a replica this shard is opening).
    reconciled: RefCell<Vec<oneshot::Sender<()>>>,
    /// Told once the first view is reconciled (the node serves from then on).
    first_view: RefCell<Option<oneshot::Sender<()>>>,
    first_view_rx: RefCell<Option<oneshot::Receiver<()>>>,
    replicas: RefCell<HashMap<(String, u32), Rc<Replica>>>,
    started: Instant,
    incarnation: Incarnation,
    /// Shard 0 only; set right after `new` (the service has links of its own).
    pub(crate) controller: Option<Rc<controller::ControllerService>>,
    /// Shard 0's controller lane: where this shard sends controller messages.
    pub(crate) controller_lane: controller::ControllerLane,
    /// Replication messages dropped for naming another sender than the proven one.
    forged: std::cell::Cell<u64>,
    /// Replication messages refused as invalid: an archive that fails validation, another
    /// version, or shipped data that disagrees with its envelope (lengths, batch
    /// boundaries, CRCs).
    refused: std::cell::Cell<u64>,
    /// Of those, frames of another `Replicate` version (a node of another release).
    refused_versions: std::cell::Cell<u64>,
    /// Topics (by id) whose `topic.json` this shard wrote in this run.
    described: RefCell<std::collections::HashSet<u64>>,
    /// Replicas whose log stopped or that could not be opened (see `offline`).
    offline: offline::OfflineMap,
    /// The node's replicas that could not open, shared by every shard.
    pub(crate) open_outcomes: Arc<open_outcomes::OpenOutcomes>,
    /// What this shard's leaders ship to catching-up replicas (`move_throttle_bytes`
    /// split over the shards), shared by its replicas' drivers.
    pub(crate) move_throttle: Rc<MoveThrottle>,
}

impl ClusterNode {
    pub(crate) fn new(
        config: ClusterConfig,
        peers: Rc<Peers>,
        incarnation: Incarnation,
        started: Instant,
        (applied, open_outcomes): (Arc<AtomicU64>, Arc<open_outcomes::OpenOutcomes>),
        controller_lane: controller::ControllerLane,
    ) -> ClusterNode {
        let (view_changed, view_changes) = mpsc::unbounded();
        let (first_view, first_view_rx) = oneshot::channel();
        ClusterNode {
            id: NodeId(config.node_id),
            config,
            peers,
            view: RefCell::new(None),
            view_changed,
            view_changes: RefCell::new(Some(view_changes)),
            applied,
            reconciled: RefCell::new(Vec::new()),
            first_view: RefCell::new(Some(first_view)),
            first_view_rx: RefCell::new(Some(first_view_rx)),
            replicas: RefCell::new(HashMap::new()),
            started,
            incarnation,
            controller: None,
            controller_lane,
            forged: std::cell::Cell::new(0),
            refused: std::cell::Cell::new(0),
            refused_versions: std::cell::Cell::new(0),
            described: RefCell::new(std::collections::HashSet::new()),
            offline: RefCell::new(HashMap::new()),
            open_outcomes,
            move_throttle: Rc::new(MoveThrottle::new(0)),
        }
    }

    /// Milliseconds since the process started: the replicas' and controller's clock.
    pub(crate) fn now(&self) -> Tick {
        Tick(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The newest view; `None` while the node is catching up after start.
    pub(crate) fn view(&self) -> Option<Arc<ClusterView>> {
        self.view.borrow().clone()
    }

    /// A new view from shard 0: reconcile against it.
    pub(crate) fn set_view(&self, view: Arc<ClusterView>) {
        *self.view.borrow_mut() = Some(view);
        let _ = self.view_changed.unbounded_send(());
    }

    /// Resolves once the first view has arrived and this shard has opened its replicas
    /// and handed them their roles (at most once).
    pub(crate) async fn first_view(&self) {
        let rx = self.first_view_rx.borrow_mut().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
    }

    /// Whether this node's controller has applied more than this shard's view shows.
    pub(crate) fn view_behind(&self) -> bool {
        let applied = self.applied.load(Ordering::Acquire);
        self.view().is_some_and(|view| view.applied < applied)
    }

    /// Resolves after this shard's next reconcile with a view.
    pub(crate) fn next_reconcile(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.reconciled.borrow_mut().push(tx);
        rx
    }

    /// This shard's replica of `partition` of `topic`, if it has one. Looked up by
    /// borrowed key: every produce, fetch and replication message asks, so the lookup
    /// must not allocate the topic's name.
    pub(crate) fn replica(&self, topic: &str, partition: u32) -> Option<Rc<Replica>> {
        let key: &dyn ReplicaKey = &(topic, partition);
        self.replicas.borrow().get(key).cloned()
    }

    /// Every replica on this shard (for the admin listener's scrape).
    pub(crate) fn all_replicas(&self) -> Vec<Rc<Replica>> {
        self.replicas.borrow().values().cloned().collect()
    }

    /// The leader of a partition as the view says, for `NotLeader` hints.
    pub(crate) fn leader_of(&self, topic: &str, partition: u32) -> Option<u32> {
        self.view
            .borrow()
            .as_ref()?
            .metadata
            .partition(topic, partition)
            .and_then(|p| p.leader)
            .map(|n| n.0)
    }

    /// A `Replicate` frame from peer `from` (proven by the peer listener) for a replica
    /// on this shard: decoded (meta validated, shipped batches checked against it) and
    /// handed over, or logged, counted and dropped. An envelope naming another sender is
    /// forged: dropped and counted too.
    pub(crate) fn receive_frame(&self, from: NodeId, frame: crate::wire::Frame) {
        match crate::peer::decode(frame) {
            Ok((_, received)) if received.from != from.0 => {
                self.forged.set(self.forged.get() + 1);
                let dropped = self.forged.get();
                tracing::warn!(
                    peer = from.0,
                    claimed = received.from,
                    dropped,
                    "replication message naming another node; dropped"
                );
            }
            Ok((topic, received)) => self.receive(&topic, received),
            Err(e) => {
                self.refused.set(self.refused.get() + 1);
                let dropped = self.refused.get();
                tracing::warn!(
                    peer = from.0,
                    error = %e,
                    dropped,
                    "invalid replication message; dropped"
                );
            }
        }
    }

    /// A `Replicate` frame of another version from `from` (the peer listener refused it):
    /// counted, and logged the first time and then once in `REFUSED_VERSION_LOG_EVERY`
    /// (a node of another release sends one per ship and ack).
    pub(crate) fn refuse_version(&self, from: NodeId, message: &str) {
        self.refused.set(self.refused.get() + 1);
        let refused = self.refused_versions.get() + 1;
        self.refused_versions.set(refused);
        if refused % REFUSED_VERSION_LOG_EVERY == 1 {
            tracing::warn!(
                peer = from.0,
                refused,
                "replication frame of another release refused: {message}; replication \
                 with that node stops until both run the same release"
            );
        }
    }

    /// A replication message for a replica on this shard.
    pub(crate) fn receive(&self, topic: &str, envelope: shardlog_replicator::message::Received) {
        if envelope.to != self.id.0 {
            tracing::debug!(
                to = envelope.to,
                "replication message for another node; dropped"
            );
            return;
        }
        let replica = self.replica(topic, envelope.partition);
        match replica {
            Some(replica) => {
                if let shardlog_replicator::message::Message::ShipAck(ack) = &envelope.message {
                    replica.ships.acked(envelope.from, ack.log_end);
                }
                replica
                    .driver
                    .receive(NodeId(envelope.from), envelope.message);
            }
            None => tracing::debug!(
                topic,
                partition = envelope.partition,
                "no such replica here; dropped"
            ),
        }
    }
}

/// A replica map key, owned `(String, u32)` or borrowed `(&str, u32)`, so the map is
/// searched without building a `String` (the std `HashMap` looks up by `Borrow`).
/// Both hash as the tuple `(topic, partition)` does: `str` and `String` hash alike.
trait ReplicaKey {
    fn key(&self) -> (&str, u32);
}

impl ReplicaKey for (String, u32) {
    fn key(&self) -> (&str, u32) {
        (self.0.as_str(), self.1)
    }
}

impl ReplicaKey for (&str, u32) {
    fn key(&self) -> (&str, u32) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn ReplicaKey + 'a> for (String, u32) {
    fn borrow(&self) -> &(dyn ReplicaKey + 'a) {
        self
    }
}

impl std::hash::Hash for dyn ReplicaKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for dyn ReplicaKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn ReplicaKey + '_ {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_key_finds_the_owned_one() {
        let mut map: HashMap<(String, u32), u32> = HashMap::new();
        let topics = ["orders", "payments", "a", ""];
        for (i, topic) in (0u32..).zip(topics) {
            for partition in 0..3 {
                map.insert((topic.to_owned(), partition), i * 10 + partition);
            }
        }
        for (i, topic) in (0u32..).zip(topics) {
            for partition in 0..3 {
                let key: &dyn ReplicaKey = &(topic, partition);
                assert_eq!(map.get(key), Some(&(i * 10 + partition)));
            }
        }
        let missing: &dyn ReplicaKey = &("orders", 3);
        assert_eq!(map.get(missing), None);
        let missing: &dyn ReplicaKey = &("order", 0);
        assert_eq!(map.get(missing), None);
    }
}
