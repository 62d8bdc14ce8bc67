//! A shard: one glommio executor that alone owns some partitions. It holds its copy of the
//! topic catalog, the partition logs it owns, the senders to every shard's inbox, and the
//! bookkeeping of a clean stop. Everything here is `!Send` and touched by its thread only.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, Shared};
use shardlog_engine::{
    DmaStorage, EngineConfig, FlushPolicy, LeaderEpoch, PartitionLog, TimestampMs,
};

use crate::server::catalog::{self, TopicSpec};
use crate::server::cluster::{ClusterNode, ClusterRoute, Replica};
use crate::server::inbox::ShardMsg;

/// A partition log on a shard.
pub(crate) type Log = PartitionLog<DmaStorage>;

/// The leader epoch of every batch a single node appends. Replication raises it.
pub(crate) const SINGLE_NODE_EPOCH: LeaderEpoch = LeaderEpoch(0);

/// What a shard knows about its node.
#[derive(Clone, Debug)]
pub(crate) struct NodeInfo {
    /// This node's id.
    pub(crate) node_id: u32,
    /// Host and port clients are told to connect to.
    pub(crate) advertised: (String, u16),
    /// The data directory.
    pub(crate) data_dir: PathBuf,
    /// Engine settings of partitions whose topic sets nothing else.
    pub(crate) defaults: EngineConfig,
    /// Shards on this node.
    pub(crate) shards: usize,
}

/// One shard's state.
pub(crate) struct Shard {
    pub(crate) id: usize,
    pub(crate) node: NodeInfo,
    pub(crate) catalog: RefCell<BTreeMap<String, TopicSpec>>,
    /// Topic -> one slot per partition, `Some` for the partitions this shard owns.
    logs: RefCell<HashMap<String, Vec<Option<Rc<Log>>>>>,
    /// Every shard's inbox, this one's included, by shard id.
    pub(crate) peers: Vec<flume::Sender<ShardMsg>>,
    /// Shard 0 runs one catalog change at a time.
    pub(crate) admin: glommio::sync::Semaphore,
    /// Requests begun and not yet answered.
    pub(crate) in_flight: Cell<usize>,
    /// Cluster mode: the controller's view and this shard's replicas.
    pub(crate) cluster: Option<Rc<ClusterNode>>,
    stop: RefCell<Option<oneshot::Sender<()>>>,
    stopped: Shared<oneshot::Receiver<()>>,
}

/// Where a partition lives.
pub(crate) enum Route {
    /// The topic does not exist.
    UnknownTopic,
    /// The topic exists, the partition does not.
    UnknownPartition,
    /// This shard owns it.
    Local(Rc<Log>),
    /// Another shard of this node owns it.
    Shard(usize),
    /// Cluster mode: this shard holds a replica of it.
    Replica(Rc<Replica>),
    /// Cluster mode: this node holds no replica of it; the leader, if any.
    Elsewhere(Option<u32>),
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        node: NodeInfo,
        peers: Vec<flume::Sender<ShardMsg>>,
        cluster: Option<Rc<ClusterNode>>,
    ) -> Shard {
        let (tx, rx) = oneshot::channel();
        Shard {
            id,
            node,
            catalog: RefCell::new(BTreeMap::new()),
            logs: RefCell::new(HashMap::new()),
            peers,
            admin: glommio::sync::Semaphore::new(1),
            in_flight: Cell::new(0),
            cluster,
            stop: RefCell::new(Some(tx)),
            stopped: rx.shared(),
        }
    }

    /// Opens the partitions of `spec` this shard owns and adds the topic to the catalog.
    pub(crate) async fn open_topic(&self, spec: &TopicSpec) -> shardlog_engine::Result<()> {
        let config = spec.engine_config(&self.node.defaults);
        let mut slots = Vec::with_capacity(spec.partitions as usize);
        for partition in 0..spec.partitions {
            if catalog::owner_shard(&spec.name, partition, self.node.shards) != self.id {
                slots.push(None);
                continue;
            }
            let dir = catalog::partition_dir(&self.node.data_dir, &spec.name, partition);
            let log = PartitionLog::open(DmaStorage, &dir, config.clone()).await?;
            log.set_high_watermark(log.acked_end());
            slots.push(Some(Rc::new(log)));
        }
        self.logs.borrow_mut().insert(spec.name.clone(), slots);
        self.catalog
            .borrow_mut()
            .insert(spec.name.clone(), spec.clone());
        Ok(())
    }

    /// Forgets a topic and closes its logs (their files are removed by shard 0 after).
    pub(crate) async fn drop_topic(&self, name: &str) {
        self.catalog.borrow_mut().remove(name);
        let slots = self.logs.borrow_mut().remove(name).unwrap_or_default();
        for log in slots.into_iter().flatten() {
            close_log(log).await;
        }
    }

    /// Where `partition` of `topic` lives.
    pub(crate) fn route(&self, topic: &str, partition: u32) -> Route {
        if let Some(cluster) = &self.cluster {
            return match cluster.route(self.id, self.node.shards, topic, partition) {
                ClusterRoute::UnknownTopic => Route::UnknownTopic,
                ClusterRoute::UnknownPartition => Route::UnknownPartition,
                ClusterRoute::Shard(owner) => Route::Shard(owner),
                ClusterRoute::Replica(replica) => Route::Replica(replica),
                ClusterRoute::Elsewhere(leader) => Route::Elsewhere(leader),
            };
        }
        let logs = self.logs.borrow();
        let Some(slots) = logs.get(topic) else {
            return Route::UnknownTopic;
        };
        match slots.get(partition as usize) {
            None => Route::UnknownPartition,
            Some(Some(log)) => Route::Local(log.clone()),
            Some(None) => Route::Shard(catalog::owner_shard(topic, partition, self.node.shards)),
        }
    }

    /// Offsets below it are committed: readable by consumers. On one node, whatever the
    /// flush policy acknowledged.
    pub(crate) fn visible_end(log: &Log) -> shardlog_engine::Offset {
        log.acked_end()
    }

    /// Resolves once the shard is told to stop.
    pub(crate) fn stopping(&self) -> LocalBoxFuture<'static, ()> {
        self.stopped.clone().map(|_| ()).boxed_local()
    }

    /// Whether the shard is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.borrow().is_none()
    }

    /// Tells every task of this shard to stop.
    pub(crate) fn begin_stop(&self) {
        if let Some(tx) = self.stop.borrow_mut().take() {
            let _ = tx.send(());
        }
    }

    /// Background work of every log: the high watermark into the checkpoint, interval
    /// syncs, age rolls, retention. Runs until the shard stops.
    pub(crate) async fn upkeep(self: Rc<Self>) {
        let period = match self.node.defaults.flush {
            FlushPolicy::Interval(every) => {
                (every / 2).clamp(Duration::from_millis(1), Duration::from_millis(100))
            }
            FlushPolicy::Always | FlushPolicy::Never => Duration::from_millis(100),
        };
        while !self.is_stopping() {
            glommio::timer::sleep(period).await;
            let logs: Vec<Rc<Log>> = self
                .logs
                .borrow()
                .values()
                .flatten()
                .flatten()
                .cloned()
                .collect();
            let now = TimestampMs::now();
            for log in logs {
                log.set_high_watermark(Shard::visible_end(&log));
                if let Err(e) = log.tick(now).await {
                    tracing::error!(dir = %log.dir().display(), error = %e, "partition upkeep failed");
                }
            }
        }
    }

    /// Closes every log: flush, checkpoint, release the files.
    pub(crate) async fn close_all(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.close_all().await;
        }
        let all: Vec<Vec<Option<Rc<Log>>>> =
            self.logs.borrow_mut().drain().map(|(_, v)| v).collect();
        for log in all.into_iter().flatten().flatten() {
            close_log(log).await;
        }
    }
}

async fn close_log(log: Rc<Log>) {
    log.set_high_watermark(Shard::visible_end(&log));
    finish_log(log).await;
}

/// Closes a log as it is (its high watermark is left as set).
pub(crate) async fn finish_log(log: Rc<Log>) {
    let dir = log.dir().to_path_buf();
    let result = match Rc::try_unwrap(log) {
        Ok(log) => log.close().await,
        // A task still holds it (a request being cancelled): make it durable at least.
        Err(log) => match log.sync().await {
            Ok(()) => log.write_checkpoint().await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::error!(dir = %dir.display(), error = %e, "closing partition failed");
    }
}
