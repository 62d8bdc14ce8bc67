//! A shard's replicas: opened, closed and handed their leadership as the controller's
//! view changes (`reconcile`), their timers and ISR proposals (`tick_loop`), and their
//! logs' upkeep.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use futures::StreamExt;
use shardlog_engine::{
    DmaStorage, EngineConfig, FlushPolicy, PartitionLog, TailCacheBudget, TimestampMs,
};
use shardlog_replicator::controller::{PartitionState, TopicInfo, replica_input};
use shardlog_replicator::driver::ReplicaDriver;
use shardlog_replicator::{NodeId, ReplicaConfig};

use crate::api::ControllerRequest;
use crate::peer::PartitionTransport;
use crate::server::cluster::controller::{ControllerLane, ControllerMsg};
use crate::server::cluster::open_outcomes::OpenOutcome;
use crate::server::cluster::upkeeps::Upkeeps;
use crate::server::cluster::{ClusterNode, ClusterView, Replica, TopicSettings, change_log};
use crate::server::metrics;
use crate::server::shard::{finish_log, owner_shard};
use crate::server::topic_file::{self, TopicFile};

/// A replica's driver on a shard.
pub(crate) type Driver = ReplicaDriver<DmaStorage, PartitionTransport>;

/// How often replica timers run (their own periods are 50 ms and up).
const TICK_EVERY: Duration = Duration::from_millis(10);
/// How often each replica's log does its upkeep (interval syncs, rolls).
const LOG_UPKEEP_EVERY: Duration = Duration::from_millis(100);
/// A produce request waiting for replication longer than this is answered `Timeout`.
const PRODUCE_TIMEOUT_MS: u64 = 10_000;

impl ClusterNode {
    /// Reconciles this shard's replicas with each new view until the shard stops.
    pub(crate) async fn reconcile_loop(self: Rc<Self>, place: Rc<Placement>) {
        let Some(mut changes) = self.view_changes.borrow_mut().take() else {
            return;
        };
        while changes.next().await.is_some() {
            while changes.try_recv().is_ok() {}
            self.reconcile(&place).await;
            for waiter in self.reconciled.take() {
                let _ = waiter.send(());
            }
            if let Some(first) = self.first_view.borrow_mut().take() {
                let _ = first.send(());
            }
        }
    }

    async fn reconcile(&self, place: &Placement) {
        let Some(view) = self.view() else {
            return;
        };
        let topics = view.metadata.topics();
        let shards = u64::try_from(place.shards.max(1)).unwrap_or(1);
        self.move_throttle
            .set_rate(self.config.move_throttle_bytes.div_ceil(shards));
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
            self.offline.borrow_mut().remove(&key);
            if let Err(e) = close_replica(replica).await {
                tracing::error!(dir = %dir.display(), error = %e, "closing partition failed");
            }
            tracing::info!(topic = key.0, partition = key.1, "replica removed");
            remove_dir(dir).await;
        }
        self.forget_offline(place, topics).await;
        for (name, info) in topics {
            for (partition, state) in (0u32..).zip(&info.partitions) {
                if !state.replicas.contains(&self.id)
                    || owner_shard(name, partition, place.shards) != place.shard
                {
                    continue;
                }
                let key = (name.clone(), partition);
                let existing = self.replicas.borrow().get(&key).cloned();
                if existing.is_none() && self.is_offline(&key) {
                    continue; // `offline` reopens it, with backoff.
                }
                let replica = match existing {
                    Some(replica) => replica,
                    None => match self.open_or_mark(place, name, info, partition).await {
                        Ok(replica) => {
                            self.replicas.borrow_mut().insert(key, replica.clone());
                            replica
                        }
                        Err(e) => {
                            self.open_failed(key, &e);
                            continue;
                        }
                    },
                };
                self.set_move_throttle(&replica, state);
                self.apply_leadership(&replica, state, &view);
            }
        }
    }

    /// Opens a replica, or records it offline (metadata shows it so; the node serves the
    /// rest; the caller retries it with backoff, see `offline`). A directory this attempt
    /// created is removed again, so a creation that fails here leaves nothing behind (a
    /// damaged directory of an earlier run stays).
    pub(super) async fn open_or_mark(
        &self,
        place: &Placement,
        name: &str,
        info: &TopicInfo,
        partition: u32,
    ) -> anyhow::Result<Rc<Replica>> {
        let dir = replica_dir(&place.data_dir, name, info.id, partition);
        let probe = dir.clone();
        let existed = glommio::executor()
            .spawn_blocking(move || probe.exists())
            .await;
        let opened = self.open_replica(place, name, info, partition).await;
        let outcome = match &opened {
            Ok(_) => OpenOutcome::Opened,
            Err(e) => OpenOutcome::Offline(format!("{e:#}")),
        };
        self.open_outcomes.record(name, info.id, partition, outcome);
        if opened.is_err() && !existed {
            remove_dir(dir).await;
        }
        opened
    }

    /// Forgets the open outcomes of this shard's replicas whose topic is gone, with the
    /// files of the offline ones (an open replica's files went with it).
    async fn forget_offline(
        &self,
        place: &Placement,
        topics: &std::collections::BTreeMap<String, TopicInfo>,
    ) {
        let mut gone = Vec::new();
        for (topic, partition, topic_id, offline) in self.open_outcomes.all() {
            let mine = owner_shard(&topic, partition, place.shards) == place.shard;
            let exists = topics.get(&topic).is_some_and(|info| {
                info.id == topic_id
                    && state_of(info, partition).is_some_and(|s| s.replicas.contains(&self.id))
            });
            if mine && !exists {
                self.open_outcomes.forget(&topic, partition);
                if offline {
                    gone.push((topic, topic_id, partition));
                }
            }
        }
        for (topic, topic_id, partition) in gone {
            let dir = replica_dir(&place.data_dir, &topic, topic_id, partition);
            let probe = dir.clone();
            if glommio::executor()
                .spawn_blocking(move || probe.exists())
                .await
            {
                remove_dir(dir).await;
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
        let settings = TopicSettings::of(info);
        let engine = settings.engine_config(&place.defaults);
        let dir = replica_dir(&place.data_dir, name, info.id, partition);
        // One shard of the node writes it: the owner of the first partition held here.
        let first_here = (0u32..)
            .zip(&info.partitions)
            .find(|(_, p)| p.replicas.contains(&self.id))
            .map(|(p, _)| p);
        if first_here.is_some_and(|p| owner_shard(name, p, place.shards) == place.shard) {
            self.describe_topic(&dir, name, info, &settings).await;
        }
        let budget = place.cache_budget.clone();
        let log = Rc::new(PartitionLog::open_within(DmaStorage, &dir, engine, budget).await?);
        let ships = Rc::new(metrics::ShipTimes::default());
        let transport = PartitionTransport::new(self.peers.clone(), name, partition, self.id)
            .noting_ships(ships.clone());
        let config = ReplicaConfig {
            replica_lag_ms: self.config.replica_lag_ms,
            min_insync: usize::from(info.min_insync),
            request_timeout_ms: PRODUCE_TIMEOUT_MS,
            // Under `interval` and `never` an append is acknowledged once written (the
            // policy's promise); waiting for their background syncs would stall acks=all
            // (`never` syncs only when much is unsynced).
            durable_when_acked: place.defaults.flush != FlushPolicy::Always,
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
        let topic = name.to_owned();
        let run = glommio::spawn_local(async move {
            if let Err(e) = runner.run().await {
                tracing::error!(%topic, partition, error = %e, "replica stopped");
            }
        })
        .detach();
        let recovery = driver.recovery();
        tracing::info!(
            topic = name,
            partition,
            dir = %dir.display(),
            snapshot = ?recovery.snapshot.map(|o| o.0),
            batches_replayed = recovery.batches_replayed,
            bytes_replayed = recovery.bytes_replayed,
            offset = driver.log_end().0,
            "replica opened"
        );
        Ok(Rc::new(Replica {
            topic: Rc::from(name),
            partition,
            topic_id: info.id,
            driver,
            ships,
            applied: Cell::new(None),
            run: RefCell::new(Some(run)),
            own_throttle: RefCell::new(None),
        }))
    }

    /// Writes `topic.json` beside a topic's partition directories once per run: the
    /// controller's metadata is the authority, this is for the offline tools (`shardlog
    /// export` of a topic reads its name and settings there). A failure is only logged.
    async fn describe_topic(
        &self,
        partition_dir: &std::path::Path,
        name: &str,
        info: &TopicInfo,
        settings: &TopicSettings,
    ) {
        let Some(topic_dir) = partition_dir.parent().map(std::path::Path::to_path_buf) else {
            return;
        };
        if !self.described.borrow_mut().insert(info.id) {
            return;
        }
        let file = TopicFile {
            name: name.to_owned(),
            partitions: u32::try_from(info.partitions.len()).unwrap_or(u32::MAX),
            segment_bytes: settings.segment_bytes,
            retention_bytes: settings.retention_bytes,
            retention_ms: settings.retention_ms,
        };
        let shown = topic_dir.display().to_string();
        let written = glommio::executor()
            .spawn_blocking(move || {
                std::fs::create_dir_all(&topic_dir)?;
                topic_file::write(&topic_dir, &file)
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(dir = shown, error = %e, "writing topic.json for the offline tools failed");
        }
    }

    /// The byte budget of what the replica, leading, ships to catching-up replicas: the
    /// move's own throttle if it set one (kept across views while its rate stays), else
    /// the shard's.
    fn set_move_throttle(&self, replica: &Replica, state: &PartitionState) {
        let own = state.reassignment.as_ref().and_then(|r| r.throttle_bytes);
        let throttle = match own {
            None => {
                replica.own_throttle.borrow_mut().take();
                self.move_throttle.clone()
            }
            Some(rate) => {
                let mut slot = replica.own_throttle.borrow_mut();
                match &*slot {
                    Some((kept, throttle)) if *kept == rate => throttle.clone(),
                    _ => {
                        let throttle =
                            Rc::new(shardlog_replicator::throttle::MoveThrottle::new(rate));
                        *slot = Some((rate, throttle.clone()));
                        throttle
                    }
                }
            }
        };
        replica.driver.set_throttle(Some(throttle));
    }

    /// Hands the controller's decision to the replica, once per (leader epoch, partition
    /// epoch): the rules are `controller::replica_input`'s, which the simulation runs too.
    pub(super) fn apply_leadership(
        &self,
        replica: &Replica,
        state: &PartitionState,
        view: &ClusterView,
    ) {
        let mut applied = replica.applied.get();
        let input = replica_input(&view.metadata, state, self.id, view.rejoined, &mut applied);
        replica.applied.set(applied);
        if let Some(input) = input {
            let (led, isr) = (replica.driver.leading(), replica.driver.isr());
            let log_end = replica.driver.log_end().0;
            change_log::replica_role(&replica.topic, replica.partition, &input, log_end);
            replica.driver.control(input);
            count_leadership_and_isr((led, isr), &replica.driver);
        }
    }

    /// Replica timers and their ISR proposals (to shard 0's controller service), and log
    /// upkeep (interval syncs, rolls, retention), until the shard stops. The two run side
    /// by side, and each log's upkeep apart from the others' (`upkeeps`): a log whose
    /// upkeep waits (a roll's sync under `never`, an interval sync behind the flushes under
    /// way) delays neither the replica timers nor the other logs on the shard.
    pub(crate) async fn tick_loop(
        self: Rc<Self>,
        controller_lane: ControllerLane,
        flush: FlushPolicy,
        stopped: impl Fn() -> bool,
    ) {
        let timers = async {
            while !stopped() {
                glommio::timer::sleep(TICK_EVERY).await;
                self.tick_timers(&controller_lane);
            }
        };
        futures::join!(timers, self.upkeep_loop(flush, &stopped));
    }

    /// Runs every replica's timers once and sends the ISR changes they propose.
    fn tick_timers(&self, controller_lane: &ControllerLane) {
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
                // A full lane drops it: the replica proposes again on its timer.
                let _ = controller_lane.try_send(ControllerMsg {
                    from: None,
                    request,
                    data: bytes::Bytes::new(),
                });
            }
        }
    }

    /// Starts every log's upkeep once per period (a log whose last upkeep is still under
    /// way skips the round) until the shard stops, then waits for those under way.
    async fn upkeep_loop(&self, flush: FlushPolicy, stopped: &impl Fn() -> bool) {
        // An interval policy syncs from the upkeep: run it at least twice per interval.
        let every = match flush {
            FlushPolicy::Interval(every) => (every / 2).clamp(TICK_EVERY, LOG_UPKEEP_EVERY),
            FlushPolicy::Always | FlushPolicy::Never => LOG_UPKEEP_EVERY,
        };
        let mut upkeeps = Upkeeps::new();
        while !stopped() {
            upkeeps.run_until(glommio::timer::sleep(every)).await;
            let wall = TimestampMs::now();
            let replicas = self.replicas.borrow();
            upkeeps.start_round(replicas.values().map(ReplicaKey::of), |key| {
                upkeep(key, wall)
            });
        }
        upkeeps.finish().await;
    }

    /// Stops every replica and closes its log; each partition that failed to close (its
    /// log stopped by a storage failure, or its last flush or checkpoint failed), with why.
    /// A partition offline and already closed counts too: its log stopped in this run.
    pub(crate) async fn close_all(&self) -> Vec<String> {
        let all: Vec<((String, u32), Rc<Replica>)> = self.replicas.borrow_mut().drain().collect();
        let mut failed = Vec::new();
        for ((topic, partition), replica) in all {
            let dir = replica.log().dir().to_path_buf();
            if let Err(e) = close_replica(replica).await {
                tracing::error!(dir = %dir.display(), error = %e, "closing partition failed");
                failed.push(format!("{topic}/{partition}: {e}"));
            }
        }
        for ((topic, partition), offline) in self.offline.borrow_mut().drain() {
            let text = format!("{topic}/{partition}: offline: {}", offline.cause());
            if !failed
                .iter()
                .any(|f| f.starts_with(&format!("{topic}/{partition}:")))
            {
                failed.push(text);
            }
        }
        failed
    }
}

/// A replica as the upkeep loop keys it: by identity, so a partition closed and opened
/// again while its old log's upkeep runs gets its own.
#[derive(Clone)]
struct ReplicaKey(Rc<Replica>);

impl ReplicaKey {
    fn of(replica: &Rc<Replica>) -> Self {
        ReplicaKey(replica.clone())
    }
}

impl PartialEq for ReplicaKey {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ReplicaKey {}

impl std::hash::Hash for ReplicaKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Rc::as_ptr(&self.0).hash(state);
    }
}

/// One log's upkeep; resolves to its key.
async fn upkeep(key: ReplicaKey, wall: TimestampMs) -> ReplicaKey {
    let replica = &key.0;
    // A stopped log is `offline`'s: logged once there, not every upkeep.
    if replica.log().stop_cause().is_none() {
        let result = replica.log().tick(wall).await;
        if let Err(e) = result
            && replica.log().stop_cause().is_none()
        {
            tracing::error!(topic = %replica.topic, partition = replica.partition, dir = %replica.log().dir().display(), error = %e, "partition upkeep failed");
        }
    }
    key
}

/// What a shard needs to place and open replicas.
pub(crate) struct Placement {
    pub(crate) shard: usize,
    pub(crate) shards: usize,
    pub(crate) data_dir: PathBuf,
    pub(crate) defaults: EngineConfig,
    /// What this shard's tail caches hold together.
    pub(crate) cache_budget: Rc<TailCacheBudget>,
}

fn state_of(info: &TopicInfo, partition: u32) -> Option<&PartitionState> {
    usize::try_from(partition)
        .ok()
        .and_then(|p| info.partitions.get(p))
}

/// The directory of a replica: see the module docs.
pub(crate) fn replica_dir(
    data_dir: &std::path::Path,
    topic: &str,
    topic_id: u64,
    partition: u32,
) -> PathBuf {
    data_dir
        .join(format!("{topic}-{topic_id}"))
        .join(partition.to_string())
}

/// Stops a replica's worker and closes its log.
pub(crate) async fn close_replica(replica: Rc<Replica>) -> Result<(), shardlog_engine::Error> {
    replica.driver.stop();
    let run = replica.run.borrow_mut().take();
    if let Some(run) = run {
        run.await;
    }
    let log = replica.log().clone();
    drop(replica);
    finish_log(log).await
}

async fn remove_dir(dir: PathBuf) {
    let shown = dir.display().to_string();
    let result = glommio::executor()
        .spawn_blocking(move || {
            std::fs::remove_dir_all(&dir)?;
            if let Some(parent) = dir.parent() {
                // The topic directory (and its topic.json) goes with its last partition.
                let only_the_description =
                    std::fs::read_dir(parent)?.filter_map(Result::ok).all(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(topic_file::TOPIC_FILE)
                    });
                if only_the_description {
                    std::fs::remove_dir_all(parent)?;
                }
            }
            std::io::Result::Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(dir = shown, error = %e, "removing a replica's files failed");
    }
}

/// Counts a change of leadership of a replica here, and members its ISR gained or lost
/// while it kept leading, between `before` (leading epoch, ISR) and `driver` now.
fn count_leadership_and_isr(
    before: (Option<shardlog_engine::LeaderEpoch>, Option<Vec<NodeId>>),
    driver: &Driver,
) {
    let (led, isr_before) = before;
    let leads = driver.leading();
    if led.is_some() != leads.is_some() || (led.is_some() && led != leads) {
        metrics::count(metrics::Counter::LeadershipChanges);
    }
    if led.is_none() || led != leads {
        return;
    }
    if let (Some(old), Some(new)) = (isr_before, driver.isr()) {
        let gained = new.iter().filter(|n| !old.contains(n)).count();
        let lost = old.iter().filter(|n| !new.contains(n)).count();
        metrics::count_n(metrics::Counter::IsrExpands, gained as u64);
        metrics::count_n(metrics::Counter::IsrShrinks, lost as u64);
    }
}
