//! Cluster mode (`--peers`): every partition is a set of replicas on distinct nodes, each
//! replica a [`ReplicaDriver`] on the shard that owns the partition.
//!
//! ```text
//!  shard 0: ControllerService (raft-rs voter) --view--> every shard's inbox
//!  every shard: reconcile(view) opens/closes replicas, hands them leadership
//!               tick loop: replica timers, ISR proposals --> shard 0 --> controller leader
//!  Replicate frames --> owner shard --> driver.receive
//! ```
//!
//! The view ([`ClusterView`]) is the controller's applied metadata and its leader, sent
//! whole after every change: shards reconcile against the newest view (level-triggered),
//! so a lost or coalesced change never leaves a replica behind.
//!
//! Partition data lives in `DATA/<topic>-<topic id>/<partition>`: a topic deleted while a
//! node was down and created again under the same name gets a fresh directory.

pub(crate) mod controller;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::channel::mpsc;
use shardlog_engine::{
    DmaStorage, EngineConfig, FlushPolicy, LeaderEpoch, Offset, PartitionLog, TimestampMs,
};
use shardlog_replicator::controller::{Metadata, PartitionState, TopicInfo};
use shardlog_replicator::driver::ReplicaDriver;
use shardlog_replicator::{Incarnation, NodeId, ReplicaConfig, Tick};

use crate::api::ControllerRequest;
use crate::peer::{PartitionTransport, Peers};
use crate::server::catalog::{self, TopicSpec};
use crate::server::config::ClusterConfig;
use crate::server::inbox::ShardMsg;
use crate::server::shard::{Log, finish_log};

/// A replica's driver on a shard.
pub(crate) type Driver = ReplicaDriver<DmaStorage, PartitionTransport>;

/// How often replica timers run (their own periods are 50 ms and up).
const TICK_EVERY: Duration = Duration::from_millis(10);
/// How often each replica's log does its upkeep (interval syncs, rolls).
const LOG_UPKEEP_EVERY: Duration = Duration::from_millis(100);
/// A produce request waiting for replication longer than this is answered `Timeout`.
const PRODUCE_TIMEOUT_MS: u64 = 10_000;

/// What the controller has applied, as one node knows it.
#[derive(Debug, Default)]
pub(crate) struct ClusterView {
    /// Nodes, topics, assignments, leaders and ISRs.
    pub(crate) metadata: Metadata,
    /// The controller leader, if known.
    pub(crate) controller: Option<NodeId>,
    /// Whether the session of this node's previous run is over (it was fenced, or this
    /// is its first run): only then may its replicas lead. See
    /// `ControllerService::may_heartbeat`.
    pub(crate) rejoined: bool,
}

/// One partition replica on this shard.
pub(crate) struct Replica {
    pub(crate) topic: Rc<str>,
    pub(crate) partition: u32,
    pub(crate) topic_id: u64,
    pub(crate) driver: Rc<Driver>,
    /// The (leader epoch, partition epoch) last handed to the driver.
    applied: Cell<Option<(LeaderEpoch, u64)>>,
    run: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

impl Replica {
    /// The log.
    pub(crate) fn log(&self) -> &Rc<Log> {
        self.driver.log()
    }

    /// Offsets below it are committed: the high watermark, if this replica leads.
    pub(crate) fn visible_end(&self) -> Offset {
        self.driver.high_watermark().min(self.log().log_end())
    }
}

/// Where a partition is, in cluster mode.
pub(crate) enum ClusterRoute {
    UnknownTopic,
    UnknownPartition,
    /// Another shard of this node owns it.
    Shard(usize),
    /// This shard holds a replica of it.
    Replica(Rc<Replica>),
    /// This node holds no replica (yet): the leader, if any.
    Elsewhere(Option<u32>),
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
    replicas: RefCell<HashMap<(String, u32), Rc<Replica>>>,
    started: Instant,
    incarnation: Incarnation,
    /// Shard 0 only; set right after `new` (the service sends through this node's `peers`).
    pub(crate) controller: Option<Rc<controller::ControllerService>>,
}

impl ClusterNode {
    pub(crate) fn new(id: u32, config: ClusterConfig, started: Instant) -> ClusterNode {
        let peers = Peers::new(config.peers.clone());
        let (view_changed, view_changes) = mpsc::unbounded();
        // Each start is a new incarnation (KIP-903): wall-clock ms keeps it increasing.
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ClusterNode {
            id: NodeId(id),
            config,
            peers,
            view: RefCell::new(None),
            view_changed,
            view_changes: RefCell::new(Some(view_changes)),
            replicas: RefCell::new(HashMap::new()),
            started,
            incarnation: Incarnation(incarnation),
            controller: None,
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

    /// Where `partition` of `topic` is.
    pub(crate) fn route(
        &self,
        shard: usize,
        shards: usize,
        topic: &str,
        partition: u32,
    ) -> ClusterRoute {
        let view = self.view.borrow();
        let Some(view) = view.as_ref() else {
            return ClusterRoute::Elsewhere(None);
        };
        let Some(info) = view.metadata.topics().get(topic) else {
            return ClusterRoute::UnknownTopic;
        };
        let Some(state) = usize::try_from(partition)
            .ok()
            .and_then(|p| info.partitions.get(p))
        else {
            return ClusterRoute::UnknownPartition;
        };
        let owner = catalog::owner_shard(topic, partition, shards);
        if owner != shard {
            return ClusterRoute::Shard(owner);
        }
        match self.replicas.borrow().get(&(topic.to_owned(), partition)) {
            Some(replica) if replica.topic_id == info.id => ClusterRoute::Replica(replica.clone()),
            _ => ClusterRoute::Elsewhere(state.leader.map(|n| n.0)),
        }
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

    /// Reconciles this shard's replicas with each new view until the shard stops.
    pub(crate) async fn reconcile_loop(self: Rc<Self>, place: Placement) {
        let Some(mut changes) = self.view_changes.borrow_mut().take() else {
            return;
        };
        while changes.next().await.is_some() {
            while changes.try_recv().is_ok() {}
            self.reconcile(&place).await;
        }
    }

    async fn reconcile(&self, place: &Placement) {
        let Some(view) = self.view() else {
            return;
        };
        let topics = view.metadata.topics();
        let stale: Vec<((String, u32), Rc<Replica>)> = self
            .replicas
            .borrow()
            .iter()
            .filter(|((topic, partition), replica)| {
                !topics.get(topic).is_some_and(|info| {
                    info.id == replica.topic_id
                        && state_of(info, *partition).is_some_and(|s| s.replicas.contains(&self.id))
                })
            })
            .map(|(key, replica)| (key.clone(), replica.clone()))
            .collect();
        for (key, replica) in stale {
            self.replicas.borrow_mut().remove(&key);
            let dir = replica.log().dir().to_path_buf();
            close_replica(replica).await;
            tracing::info!(topic = key.0, partition = key.1, "replica removed");
            remove_dir(dir).await;
        }
        for (name, info) in topics {
            for (partition, state) in (0u32..).zip(&info.partitions) {
                if !state.replicas.contains(&self.id)
                    || catalog::owner_shard(name, partition, place.shards) != place.shard
                {
                    continue;
                }
                let key = (name.clone(), partition);
                let existing = self.replicas.borrow().get(&key).cloned();
                let replica = match existing {
                    Some(replica) => replica,
                    None => match self.open_replica(place, name, info, partition).await {
                        Ok(replica) => {
                            self.replicas.borrow_mut().insert(key, replica.clone());
                            replica
                        }
                        Err(e) => {
                            tracing::error!(topic = name, partition, error = %e, "opening replica failed");
                            continue;
                        }
                    },
                };
                self.apply_leadership(&replica, state, &view);
            }
        }
    }

    async fn open_replica(
        &self,
        place: &Placement,
        name: &str,
        info: &TopicInfo,
        partition: u32,
    ) -> anyhow::Result<Rc<Replica>> {
        let spec = topic_spec(name, info);
        let dir = replica_dir(&place.data_dir, name, info.id, partition);
        let log = Rc::new(
            PartitionLog::open(DmaStorage, &dir, spec.engine_config(&place.defaults)).await?,
        );
        let transport = PartitionTransport::new(self.peers.clone(), name, partition, self.id);
        let config = ReplicaConfig {
            replica_lag_ms: self.config.replica_lag_ms,
            min_insync: usize::from(info.min_insync),
            request_timeout_ms: PRODUCE_TIMEOUT_MS,
            // `never` syncs only when much is unsynced: waiting for syncs would stall
            // acks=all; written (the policy's promise) is what counts there.
            durable_when_acked: place.defaults.flush == FlushPolicy::Never,
            ..ReplicaConfig::default()
        };
        config.validate()?;
        let driver = Rc::new(
            ReplicaDriver::open(
                log,
                transport,
                config,
                self.id,
                self.incarnation,
                self.now(),
            )
            .await?,
        );
        let runner = driver.clone();
        let (topic, id) = (name.to_owned(), self.id);
        let run = glommio::spawn_local(async move {
            if let Err(e) = runner.run().await {
                tracing::error!(%topic, partition, node = %id, error = %e, "replica stopped");
            }
        })
        .detach();
        tracing::info!(topic = name, partition, dir = %dir.display(), "replica opened");
        Ok(Rc::new(Replica {
            topic: Rc::from(name),
            partition,
            topic_id: info.id,
            driver,
            applied: Cell::new(None),
            run: RefCell::new(Some(run)),
        }))
    }

    /// Hands the controller's decision to the replica, once per (leader epoch, partition
    /// epoch).
    fn apply_leadership(&self, replica: &Replica, state: &PartitionState, view: &ClusterView) {
        let rejoined = view.rejoined;
        let now = (state.leader_epoch, state.partition_epoch);
        let before = replica.applied.get();
        if before == Some(now) {
            return;
        }
        let new_epoch = before.is_none_or(|(epoch, _)| epoch != state.leader_epoch);
        let driver = &replica.driver;
        if state.leader == Some(self.id) && !rejoined {
            // A leadership of this node's previous run: the controller moves it once the
            // old session is fenced (see `ClusterView::rejoined`). Not marked applied: a
            // later view decides again.
            return;
        }
        match state.leader {
            Some(leader) if leader == self.id => {
                let offline: Vec<NodeId> = state
                    .replicas
                    .iter()
                    .copied()
                    .filter(|n| !view.metadata.is_live(*n))
                    .collect();
                if new_epoch {
                    driver.become_leader(
                        state.leader_epoch,
                        state.replicas.clone(),
                        state.isr.clone(),
                        state.partition_epoch,
                        offline,
                    );
                } else {
                    driver.isr_updated(
                        state.leader_epoch,
                        state.partition_epoch,
                        state.isr.clone(),
                        offline,
                    );
                }
            }
            Some(leader) if new_epoch => driver.become_follower(state.leader_epoch, leader),
            // Leaderless: follow nobody, so this replica stops leading an old epoch.
            None if new_epoch => driver.become_follower(state.leader_epoch, NO_LEADER),
            _ => {}
        }
        replica.applied.set(Some(now));
    }

    /// Replica timers, their ISR proposals (to shard 0's controller service), and log
    /// upkeep, until the shard stops.
    pub(crate) async fn tick_loop(
        self: Rc<Self>,
        controller_inbox: flume::Sender<ShardMsg>,
        stopped: impl Fn() -> bool,
    ) {
        let mut last_upkeep = Instant::now();
        while !stopped() {
            glommio::timer::sleep(TICK_EVERY).await;
            let now = self.now();
            let replicas: Vec<Rc<Replica>> = self.replicas.borrow().values().cloned().collect();
            for replica in &replicas {
                replica.driver.tick(now);
                for proposal in replica.driver.take_proposals() {
                    let request = ControllerRequest::ChangeIsr {
                        topic: replica.topic.to_string(),
                        partition: replica.partition,
                        leader_epoch: proposal.epoch.0,
                        partition_epoch: proposal.isr_version,
                        isr: proposal.isr.iter().map(|n| n.0).collect(),
                    };
                    // A full inbox drops it: the replica proposes again on its timer.
                    let _ = controller_inbox
                        .try_send(ShardMsg::Controller(request, bytes::Bytes::new()));
                }
            }
            if last_upkeep.elapsed() >= LOG_UPKEEP_EVERY {
                last_upkeep = Instant::now();
                let wall = TimestampMs::now();
                for replica in &replicas {
                    if let Err(e) = replica.log().tick(wall).await {
                        tracing::error!(dir = %replica.log().dir().display(), error = %e, "partition upkeep failed");
                    }
                }
            }
        }
    }

    /// A replication message for a replica on this shard.
    pub(crate) fn receive(&self, topic: &str, envelope: shardlog_replicator::Envelope) {
        if envelope.to != self.id.0 {
            tracing::debug!(
                to = envelope.to,
                "replication message for another node; dropped"
            );
            return;
        }
        let replica = self
            .replicas
            .borrow()
            .get(&(topic.to_owned(), envelope.partition))
            .cloned();
        match replica {
            Some(replica) => replica
                .driver
                .receive(NodeId(envelope.from), envelope.message),
            None => tracing::debug!(
                topic,
                partition = envelope.partition,
                "no such replica here; dropped"
            ),
        }
    }

    /// Stops every replica and closes its log.
    pub(crate) async fn close_all(&self) {
        let all: Vec<Rc<Replica>> = self.replicas.borrow_mut().drain().map(|(_, r)| r).collect();
        for replica in all {
            close_replica(replica).await;
        }
    }
}

/// The replica a leaderless partition "follows": no node has this id.
const NO_LEADER: NodeId = NodeId(u32::MAX);

/// What a shard needs to place and open replicas.
pub(crate) struct Placement {
    pub(crate) shard: usize,
    pub(crate) shards: usize,
    pub(crate) data_dir: PathBuf,
    pub(crate) defaults: EngineConfig,
}

fn state_of(info: &TopicInfo, partition: u32) -> Option<&PartitionState> {
    usize::try_from(partition)
        .ok()
        .and_then(|p| info.partitions.get(p))
}

/// The directory of a replica: see the module docs.
fn replica_dir(data_dir: &std::path::Path, topic: &str, topic_id: u64, partition: u32) -> PathBuf {
    data_dir
        .join(format!("{topic}-{topic_id}"))
        .join(partition.to_string())
}

/// Topic settings travel in the controller's metadata as Kafka-style key-value pairs.
pub(crate) fn topic_config_pairs(config: &crate::api::TopicConfig) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if let Some(v) = config.segment_bytes {
        pairs.push(("segment.bytes".to_owned(), v.to_string()));
    }
    if let Some(v) = config.retention_bytes {
        pairs.push(("retention.bytes".to_owned(), v.to_string()));
    }
    if let Some(v) = config.retention_ms {
        pairs.push(("retention.ms".to_owned(), v.to_string()));
    }
    pairs
}

fn topic_spec(name: &str, info: &TopicInfo) -> TopicSpec {
    let get = |key: &str| {
        info.config
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    TopicSpec {
        name: name.to_owned(),
        partitions: u32::try_from(info.partitions.len()).unwrap_or(u32::MAX),
        segment_bytes: get("segment.bytes"),
        retention_bytes: get("retention.bytes"),
        retention_ms: get("retention.ms"),
    }
}

async fn close_replica(replica: Rc<Replica>) {
    replica.driver.stop();
    let run = replica.run.borrow_mut().take();
    if let Some(run) = run {
        run.await;
    }
    let log = replica.log().clone();
    drop(replica);
    finish_log(log).await;
}

async fn remove_dir(dir: PathBuf) {
    let shown = dir.display().to_string();
    let result = glommio::executor()
        .spawn_blocking(move || {
            std::fs::remove_dir_all(&dir)?;
            if let Some(parent) = dir.parent() {
                // The topic directory goes with its last partition.
                let _ = std::fs::remove_dir(parent);
            }
            std::io::Result::Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(dir = shown, error = %e, "removing a replica's files failed");
    }
}
