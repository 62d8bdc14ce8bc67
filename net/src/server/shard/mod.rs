//! A shard: one glommio executor that alone owns some partitions. It holds what it
//! knows of its node, the senders to every shard's inbox, this shard's cluster state
//! (view and replicas), and the bookkeeping of a clean stop. Everything here is `!Send`
//! and touched by its thread only.

mod inbox;
mod turns;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, Shared};
use shardlog_engine::{DmaStorage, EngineConfig, PartitionLog};

use crate::server::cluster::ClusterNode;
use crate::server::groups::ShardGroups;

pub(crate) use inbox::{INBOX_DEPTH, ShardMsg, serve as serve_inbox};

/// A partition log on a shard.
pub(crate) type Log = PartitionLog<DmaStorage>;

/// What a shard knows about its node.
#[derive(Clone, Debug)]
pub(crate) struct NodeInfo {
    /// This node's id.
    pub(crate) node_id: u32,
    /// Host and port clients are told to connect to.
    pub(crate) advertised: (String, u16),
    /// Host and port Kafka clients are told to connect to.
    pub(crate) kafka_advertised: (String, u16),
    /// The Kafka front end's settings.
    pub(crate) kafka: crate::server::config::KafkaConfig,
    /// Engine settings of partitions whose topic sets nothing else.
    pub(crate) defaults: EngineConfig,
    /// Shards on this node.
    pub(crate) shards: usize,
    /// The group coordinator's settings.
    pub(crate) groups: crate::server::groups::GroupConfig,
    /// Client authentication (SASL) and the superusers.
    pub(crate) security: crate::server::config::SecurityConfig,
    /// Whether and how client requests are authorized.
    pub(crate) authorizer: crate::server::security::acl::Authorizer,
}

/// One shard's state.
pub(crate) struct Shard {
    pub(crate) id: usize,
    pub(crate) node: NodeInfo,
    /// Every shard's inbox, this one's included, by shard id.
    pub(crate) inboxes: Vec<flume::Sender<ShardMsg>>,
    /// The controller's view and this shard's replicas.
    pub(crate) cluster: Rc<ClusterNode>,
    /// The consumer groups this shard coordinates.
    pub(crate) groups: ShardGroups,
    /// Requests begun and not yet answered.
    in_flight: Cell<usize>,
    turns: turns::Turns,
    stop: RefCell<Option<oneshot::Sender<()>>>,
    stopped: Shared<oneshot::Receiver<()>>,
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        node: NodeInfo,
        inboxes: Vec<flume::Sender<ShardMsg>>,
        cluster: Rc<ClusterNode>,
    ) -> Shard {
        let (tx, rx) = oneshot::channel();
        let groups = ShardGroups::new(node.groups.clone(), node.node_id, id);
        Shard {
            id,
            node,
            inboxes,
            cluster,
            groups,
            in_flight: Cell::new(0),
            turns: turns::Turns::default(),
            stop: RefCell::new(Some(tx)),
            stopped: rx.shared(),
        }
    }

    /// A request was begun (a stop waits for it to be answered).
    pub(crate) fn begin_request(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// A client's request was read and begun; every 64th ends the executor's turn
    /// ([`turns`]). Called by the read loops before they yield.
    pub(crate) fn request_read(&self) {
        self.turns.request_read();
    }

    /// A request was answered.
    pub(crate) fn end_request(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }

    /// Requests begun and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.get()
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
}

/// The shard that owns `partition` of `topic` among `shards` (round-robin from a shard
/// picked by the topic's name). The controller's leader balancing computes the same, to
/// spread leaders over each node's shards: one function for both.
pub(crate) use shardlog_replicator::controller::leader_shards::owner_shard;

/// Closes a log as it is (its high watermark is left as set).
pub(crate) async fn finish_log(log: Rc<Log>) -> Result<(), shardlog_engine::Error> {
    match Rc::try_unwrap(log) {
        Ok(log) => log.close().await,
        // A task still holds it (a request being cancelled): make it durable at least.
        Err(log) => match log.sync().await {
            Ok(()) => log.write_checkpoint().await,
            Err(e) => Err(e),
        },
    }
}
