//! The controller service on shard 0: runs this node's raft-rs voter
//! ([`Controller`], sans-IO) and performs its actions: raft messages to the other voters,
//! the Raft log and hard state appended to `DATA/controller/raft.log` and synced before
//! anything that depends on them, proposals answered, and the applied metadata published
//! to every shard as a [`ClusterView`].
//!
//! It also keeps this node's session: a heartbeat to the controller leader every
//! `HEARTBEAT_EVERY_MS` (the leader registers a node it does not know), carrying the
//! free space of the node's data directory (the leader refuses a topic that would not
//! fit, see `disk_space`). The leader sends the sessions it keeps to every other node
//! (`shared_sessions`), so any node can show heartbeat ages.
//!
//! A session timeout of a few hundred milliseconds is safe only if nothing the data path
//! does can hold a heartbeat up, so controller traffic has a lane of its own end to end:
//! its own peer connections (`ControllerService::new` gets a `Peers` of its own, so a
//! heartbeat never waits behind megabytes of ships in a socket or behind a ship the
//! receiving peer listener is still handing over), its own channel to shard 0
//! ([`ControllerMsg`], never the shard inbox that forwarded produce requests fill, where
//! a full inbox dropped it), and its own task queue on shard 0 ([`spawn`]: latency
//! sensitive, so a shard busy with data runs the controller's timers on time). Sending
//! heartbeats is a timer task of its own, not a step of the Ready loop, which may wait on
//! a Raft log fsync; and the leader records a heartbeat at the time it is received, not
//! at the Ready loop's last clock reading.
//!
//! A Raft log write that fails halts this voter, not the node: it stops voting, leading
//! and heartbeating (the other voters keep the cluster, and fence this node so its
//! partitions get other leaders), the node keeps its shards running, and every
//! `RECOVER_EVERY` the voter restarts from its file as a restarted process would, if the
//! write failed for want of space (ENOSPC, EDQUOT). Any other failure (a failed fsync may
//! have lost data the kernel reported written) keeps it halted until the node restarts. This node's ISR
//! proposals go to the leader it knows. A message from a peer is taken only if the node
//! it names is the node the peer listener proved (`handle`'s `from`); a heartbeat or
//! proposal reaching a node that does not lead is dropped (the sender retries towards
//! the leader it learns of).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, select};
use shardlog_engine::LeaderEpoch;
use shardlog_replicator::controller::raft_file::{self, Damage, Recovered};
use shardlog_replicator::controller::{
    Action, Command, Controller, ControllerConfig, ControllerError, IsrChange, MetadataChange,
    ProposalId, Refusal,
};
use shardlog_replicator::{NodeId, Tick};

use crate::api::{Api, ControllerRequest, NodeSession};
use crate::peer::Peers;
use crate::server::cluster::producer_ids::ProducerIdBlock;
use crate::server::cluster::shared_sessions::SharedSessions;
use crate::server::cluster::{ClusterView, adopt};
use crate::server::metrics::{self, Counter, Latency};
use crate::server::shard::ShardMsg;

/// How often this node heartbeats to the controller leader, ms: eight per default session
/// (`session_timeout_ms` 400), so a session outlives several lost or late heartbeats.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(50);
/// Controller messages waiting for shard 0's controller (its lane, see the module docs):
/// a full lane drops the newest, which its sender's timers send again.
pub(crate) const CONTROLLER_LANE_DEPTH: usize = 4096;
/// Shares of the controller's task queue; the default queue (the data path) has 1000.
const CONTROLLER_SHARES: usize = 1000;
/// How soon the controller's queue runs once one of its tasks is woken.
const CONTROLLER_LATENCY: Duration = Duration::from_millis(2);
/// A controller timer firing later than this past its time means the shard was stalled
/// (see `ControllerService::controller_clock`).
const STALL_SLACK: Duration = Duration::from_millis(20);
/// How often the controller's clock is advanced without other input.
const TICK_EVERY: Duration = Duration::from_millis(10);
/// How long a proposal may take to be applied.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A voter halted by a full disk tries to restart this often.
const RECOVER_EVERY: Duration = Duration::from_secs(2);
/// How often this node measures its data directory's free space.
const FREE_SPACE_EVERY: Duration = Duration::from_secs(1);
/// The most shards a node may run (`--shards`' bound): a peer's claim above it is dropped.
const SHARDS_MAX: u32 = 256;

/// The file of the controller's Raft state, under the data directory.
#[must_use]
pub fn raft_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("controller").join("raft.log")
}

/// Reads the controller's Raft file before the shards start (blocking), cutting a torn
/// tail: what it holds, and the file opened for appending. A file damaged inside synced
/// records is left as it is and refused, with the fix for a node with or without peers.
pub fn open_raft_file(
    data_dir: &Path,
    has_peers: bool,
) -> anyhow::Result<(Recovered, std::fs::File)> {
    use anyhow::Context;
    let path = raft_file_path(data_dir);
    let dir = path.parent().context("controller directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let recovered = raft_file::recover(&bytes)
        .map_err(|damage| anyhow::anyhow!(damage_message(data_dir, &damage, has_peers)))?;
    if let Some(why) = &recovered.torn {
        tracing::warn!(file = %path.display(), valid = recovered.valid_len, total = bytes.len(), why, "controller log: cutting a torn tail (the last write, never acted upon)");
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_len(recovered.valid_len as u64)
        .with_context(|| format!("truncating {}", path.display()))?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok((recovered, file))
}

/// Why a damaged Raft file stops the start, and the fix. A node with peers gets the log
/// back from the controller leader. A node alone holds the only copy: its topics are not
/// adopted again without it (adoption reads `DATA/<topic>/topic.json`, not the cluster
/// layout `DATA/<topic>-<id>`), so the fix is to cut the file before the damage, losing
/// what was recorded from there on (README: "Durable Raft state").
fn damage_message(data_dir: &Path, damage: &Damage, has_peers: bool) -> String {
    let path = raft_file_path(data_dir);
    let file = path.display();
    let dir = path.parent().unwrap_or(data_dir).display();
    let fix = if has_peers {
        format!(
            "This node has peers, which hold the same log: move {dir} away and start this \
             node again while every other node runs and the cluster has a controller \
             leader; it rejoins with an empty log and receives the log from the leader. Not \
             while another node is down: without this node's votes and acknowledgements \
             the cluster could lose committed metadata or elect two leaders in one term."
        )
    } else {
        format!(
            "This node runs alone, so the file is the only copy of the cluster metadata, \
             and starting without {dir} does not bring the topics back. To start from the \
             records before the damage, losing the metadata recorded from there on (see \
             \"Durable Raft state\" in README.md), copy the file aside and cut it: \
             truncate -s {} {file}",
            damage.offset
        )
    };
    format!(
        "controller log {file} is damaged inside records that were synced ({damage}); it is \
         not a torn tail, and cutting it could take back votes and metadata this node \
         acknowledged, so shardlogd does not start. {fix}"
    )
}

/// What shard 0's controller starts from, read before the shards start.
pub(crate) struct ControllerStart {
    /// The Raft file's state and the file, open for appending.
    pub(crate) raft: (Recovered, std::fs::File),
    /// The data directory.
    pub(crate) data_dir: PathBuf,
    /// Topics on disk to adopt (`cluster::adopt`).
    pub(crate) to_adopt: Vec<adopt::Adoptee>,
    /// This run's incarnation.
    pub(crate) incarnation: u64,
    /// The receiving end of the controller's lane (see the module docs).
    pub(crate) lane: flume::Receiver<ControllerMsg>,
}

/// A controller message for shard 0's voter, on the controller's lane: from peer `from`
/// (proven by the peer listener), or from a shard of this node (`None`).
pub(crate) struct ControllerMsg {
    pub(crate) from: Option<NodeId>,
    pub(crate) request: ControllerRequest,
    pub(crate) data: Bytes,
}

/// Where every shard sends controller messages: shard 0's controller lane. Fire and
/// forget: a full lane drops the message (its sender's timers send it again).
pub(crate) type ControllerLane = flume::Sender<ControllerMsg>;

/// This node's controller voter and its IO.
pub(crate) struct ControllerService {
    node: NodeId,
    /// Where clients and peers reach this node (registered with the controller).
    address: String,
    /// Where Kafka clients reach this node (registered with the controller).
    kafka_address: String,
    controller: RefCell<Controller>,
    peers: Rc<Peers>,
    waiters: RefCell<HashMap<ProposalId, oneshot::Sender<Result<(), Refusal>>>>,
    kick: mpsc::UnboundedSender<()>,
    kicks: RefCell<Option<mpsc::UnboundedReceiver<()>>>,
    /// Controller messages from peers and this node's shards (taken by `spawn`).
    lane: RefCell<Option<flume::Receiver<ControllerMsg>>>,
    file: RefCell<Option<std::fs::File>>,
    /// This run of the node (see `server::identity`): its registration fences the
    /// previous run's session at once.
    incarnation: u64,
    /// The clock as of the last loop turn.
    now: Cell<Tick>,
    /// Peer messages dropped for naming another sender than the proven one.
    forged: Cell<u64>,
    /// The data directory.
    data_dir: PathBuf,
    /// Topics found on disk to adopt before the first view (see `cluster::adopt`).
    to_adopt: RefCell<Vec<adopt::Adoptee>>,
    /// The last applied Raft index, shared with every shard (`ClusterNode::applied`).
    applied: Arc<std::sync::atomic::AtomicU64>,
    adopting: Cell<bool>,
    /// The producer ids this node hands out (see `producer_ids`).
    pub(crate) producer_ids: ProducerIdBlock,
    /// On the controller leader: one producer id reservation at a time.
    pub(crate) allocating: futures::lock::Mutex<()>,
    /// The configuration the voter started with: a halted voter restarts with it.
    config: ControllerConfig,
    /// Since when and why the voter is halted (its Raft log could not be written).
    halted: RefCell<Option<Halt>>,
    /// This node's data directory's free bytes, as last measured.
    own_free_bytes: Cell<Option<u64>>,
    /// On the controller leader: each node's free bytes, from its heartbeats.
    free_bytes: RefCell<std::collections::BTreeMap<NodeId, u64>>,
    /// The leader's sessions as it last sent them here (on the leader: when it sent).
    shared: RefCell<SharedSessions>,
    /// This node's shard count, told to the controller leader with each heartbeat.
    shards: usize,
    /// How long this shard was stalled, ms (see `controller_clock`).
    stalled_ms: Cell<u64>,
}

/// Why a voter is halted.
struct Halt {
    since: std::time::Instant,
    last_try: std::time::Instant,
    /// The write failed for want of space: restarting may work once space is freed.
    recoverable: bool,
}

impl ControllerService {
    /// The voter of `config.node`, registered with the controller at `address`, resuming
    /// from `start.raft` (read from its file, which it appends to).
    pub(crate) fn new(
        mut config: ControllerConfig,
        (address, kafka_address): (String, String),
        start: ControllerStart,
        peers: Rc<Peers>,
        now: Tick,
        applied: Arc<std::sync::atomic::AtomicU64>,
        shards: usize,
    ) -> anyhow::Result<ControllerService> {
        let (recovered, file) = start.raft;
        let node = config.node.0;
        config.first_proposal_seq = proposal_seq_base();
        let controller = Controller::recover(config.clone(), now, recovered)
            .map_err(|e| anyhow::anyhow!("controller: {e}"))?;
        let (kick, kicks) = mpsc::unbounded();
        Ok(ControllerService {
            node: NodeId(node),
            address,
            kafka_address,
            controller: RefCell::new(controller),
            peers,
            waiters: RefCell::new(HashMap::new()),
            kick,
            kicks: RefCell::new(Some(kicks)),
            lane: RefCell::new(Some(start.lane)),
            file: RefCell::new(Some(file)),
            incarnation: start.incarnation,
            now: Cell::new(now),
            forged: Cell::new(0),
            data_dir: start.data_dir,
            to_adopt: RefCell::new(start.to_adopt),
            applied,
            adopting: Cell::new(false),
            producer_ids: ProducerIdBlock::default(),
            allocating: futures::lock::Mutex::new(()),
            config,
            halted: RefCell::new(None),
            own_free_bytes: Cell::new(None),
            free_bytes: RefCell::new(std::collections::BTreeMap::new()),
            shared: RefCell::new(SharedSessions::default()),
            shards,
            stalled_ms: Cell::new(0),
        })
    }

    /// The topic `name` as this voter applied it.
    pub(crate) fn topic(&self, name: &str) -> Option<shardlog_replicator::controller::TopicInfo> {
        self.controller
            .borrow()
            .metadata()
            .topics()
            .get(name)
            .cloned()
    }

    /// The replicas a topic created now would get.
    pub(crate) fn placement_of(
        &self,
        partitions: u32,
        replication_factor: u16,
    ) -> Vec<Vec<NodeId>> {
        self.controller
            .borrow()
            .metadata()
            .next_placement(partitions, replication_factor)
    }

    /// Each node's free bytes as last reported (this node's as last measured): on the
    /// leader from heartbeats, elsewhere from the leader's last fresh report.
    pub(crate) fn free_bytes(&self) -> std::collections::BTreeMap<NodeId, u64> {
        let mut free = if self.is_leader() {
            self.free_bytes.borrow().clone()
        } else {
            self.shared
                .borrow()
                .free_bytes(self.leader(), self.now.get())
        };
        if let Some(own) = self.own_free_bytes.get() {
            free.insert(self.node, own);
        }
        free
    }

    /// Measures the data directory's free space every `FREE_SPACE_EVERY`, off the
    /// executor, until the shard stops.
    async fn measure_free_space(self: Rc<Self>, stopped: impl Fn() -> bool) {
        while !stopped() {
            let dir = self.data_dir.clone();
            let measured = glommio::executor()
                .spawn_blocking(move || super::disk_space::free_bytes(&dir))
                .await;
            match measured {
                Ok(free) => self.own_free_bytes.set(Some(free)),
                Err(e) => tracing::debug!(error = %e, "statvfs of the data directory failed"),
            }
            glommio::timer::sleep(FREE_SPACE_EVERY).await;
        }
    }

    /// Free bytes of the data directory's filesystem, as last measured.
    pub(crate) fn own_free_bytes(&self) -> Option<u64> {
        self.own_free_bytes.get()
    }

    /// The controller leader as this node knows it.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.controller.borrow().leader()
    }

    /// The controller's current Raft term.
    pub(crate) fn term(&self) -> u64 {
        self.controller.borrow().term()
    }

    /// Milliseconds since each registered node's last heartbeat: this node's own sessions
    /// if it leads the controller, else the leader's last fresh report (see
    /// `shared_sessions`; empty without one).
    pub(crate) fn heartbeat_ages_ms(&self) -> std::collections::BTreeMap<NodeId, u64> {
        if !self.is_leader() {
            return self
                .shared
                .borrow()
                .heartbeat_ages_ms(self.leader(), self.now.get());
        }
        let controller = self.controller.borrow();
        controller
            .metadata()
            .nodes()
            .keys()
            .filter_map(|node| Some((*node, controller.heartbeat_age_ms(*node)?)))
            .collect()
    }

    /// On the controller leader, every `SHARE_EVERY_MS`: sends its sessions to every
    /// other registered node (fire and forget: the next report replaces a lost one).
    fn share_sessions(self: &Rc<Self>, now: Tick) {
        if !self.is_leader() || !self.shared.borrow_mut().due(now) {
            return;
        }
        let free = self.free_bytes();
        let ages = self.heartbeat_ages_ms();
        let nodes: Vec<NodeSession> = ages
            .iter()
            .map(|(node, age)| NodeSession {
                node: node.0,
                heartbeat_age_ms: *age,
                free_bytes: free.get(node).copied(),
            })
            .collect();
        let request = ControllerRequest::Sessions {
            leader: self.node.0,
            term: self.term(),
            nodes,
        };
        let registered: Vec<NodeId> = self
            .controller
            .borrow()
            .metadata()
            .nodes()
            .keys()
            .copied()
            .collect();
        for node in registered {
            if node != self.node && self.peers.is_peer(node.0) {
                self.peers
                    .send_frame(node.0, Api::Controller, &request, Bytes::new());
            }
        }
    }

    /// The leader's sessions, from `sender` (proven by the peer listener).
    fn take_sessions(&self, sender: NodeId, term: u64, nodes: &[NodeSession]) {
        let member = |node: NodeId| node == self.node || self.peers.is_peer(node.0);
        let known = (self.leader(), self.term());
        let now = self.now.get();
        let taken = self
            .shared
            .borrow_mut()
            .take((sender, term), known, nodes, member, now);
        if let Err(e) = taken {
            tracing::debug!(peer = sender.0, error = %e, "sessions report not taken");
        }
    }

    /// Whether this node leads the controller.
    pub(crate) fn is_leader(&self) -> bool {
        self.controller.borrow().is_leader()
    }

    /// This node's id.
    pub(crate) fn node(&self) -> NodeId {
        self.node
    }

    /// On the controller leader: starts the moves that even out replica counts over the
    /// serving nodes, within the cap on concurrent moves, the rest as moves finish (with
    /// `dry_run`, only counts them); how many the plan holds, and the cap.
    pub(crate) fn rebalance_replicas(&self, dry_run: bool) -> Result<(usize, usize), String> {
        if self.halted.borrow().is_some() {
            return Err("this node's controller log cannot be written".into());
        }
        let mut controller = self.controller.borrow_mut();
        let moves = if dry_run {
            controller.planned_rebalance().map(|m| m.len())
        } else {
            controller.rebalance_replicas()
        };
        let cap = controller.max_concurrent_moves();
        drop(controller);
        let _ = self.kick.unbounded_send(());
        moves.map(|m| (m, cap)).map_err(|e| e.to_string())
    }

    /// The first producer id no node has reserved, as this voter applied it.
    pub(crate) fn next_producer_id(&self) -> u64 {
        self.controller.borrow().metadata().next_producer_id()
    }

    /// A controller message from peer `from` (proven by the peer listener), or from a
    /// shard of this node (`None`), received at `now`. Remote input: a message naming
    /// another sender than the proven one is dropped and counted.
    fn handle(self: &Rc<Self>, message: ControllerMsg, now: Tick) {
        let ControllerMsg {
            from,
            request,
            data,
        } = message;
        let data = &data;
        // A heartbeat proves the node alive when it arrives: recorded at the Ready loop's
        // last clock reading, one that arrived while the loop waited on an fsync would
        // look older than it is, and could fence a node that never missed one.
        self.now.set(self.now.get().max(now));
        self.controller.borrow_mut().observe_time(now);
        let sender = from.unwrap_or(self.node);
        let claimed = match &request {
            ControllerRequest::Raft { from } => NodeId(*from),
            ControllerRequest::Heartbeat { node, .. }
            | ControllerRequest::HeartbeatListening { node, .. }
            | ControllerRequest::Shards { node, .. } => NodeId(*node),
            ControllerRequest::Sessions { leader, .. } => NodeId(*leader),
            ControllerRequest::ChangeIsr { .. } | ControllerRequest::ReplicaOffline { .. } => {
                sender
            }
        };
        if claimed != sender {
            self.forged.set(self.forged.get() + 1);
            let dropped = self.forged.get();
            tracing::warn!(peer = sender.0, %claimed, dropped, "controller message naming another node; dropped");
            return;
        }
        if self.halted.borrow().is_some() {
            // A halted voter takes no part: it neither votes nor leads nor relays.
            return;
        }
        match request {
            ControllerRequest::Raft { .. } => {
                let stepped = match from {
                    Some(from) => self.controller.borrow_mut().step_from(from, data),
                    None => self.controller.borrow_mut().step(data),
                };
                if let Err(e) = stepped {
                    tracing::debug!(peer = sender.0, error = %e, "raft message refused");
                }
            }
            ControllerRequest::Heartbeat {
                node,
                address,
                incarnation,
                free_bytes,
            } => self.heartbeat_from(node, (&address, None), incarnation, free_bytes),
            ControllerRequest::HeartbeatListening {
                node,
                address,
                kafka_address,
                incarnation,
                free_bytes,
            } => {
                let addresses = (address.as_str(), Some(kafka_address.as_str()));
                self.heartbeat_from(node, addresses, incarnation, free_bytes);
            }
            ControllerRequest::Shards { node, shards } => self.shards_from(node, shards),
            request @ ControllerRequest::ChangeIsr { .. } => self.change_isr(from, request),
            request @ ControllerRequest::ReplicaOffline { .. } => {
                self.replica_offline(from, request);
            }
            // Only from a peer: this node's shards never send one.
            ControllerRequest::Sessions { term, nodes, .. } => {
                if let Some(from) = from {
                    self.take_sessions(from, term, &nodes);
                }
            }
        }
        let _ = self.kick.unbounded_send(());
    }

    /// An ISR change a partition leader asks for: proposed on the controller leader if
    /// the sender leads the partition; this node's own, off the leader, sent to it.
    fn change_isr(self: &Rc<Self>, from: Option<NodeId>, request: ControllerRequest) {
        let ControllerRequest::ChangeIsr {
            topic,
            partition,
            leader_epoch,
            partition_epoch,
            isr,
        } = request
        else {
            return;
        };
        let sender = from.unwrap_or(self.node);
        if !self.is_leader() {
            if from.is_none() {
                // This node's own proposal: to the leader it knows.
                self.send_to_leader(&ControllerRequest::ChangeIsr {
                    topic,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    isr,
                });
            }
            return;
        }
        let change = IsrChange {
            topic,
            partition,
            leader_epoch: LeaderEpoch(leader_epoch),
            partition_epoch,
            isr: isr.into_iter().map(NodeId).collect(),
        };
        // Lost if leadership moves: the replica proposes again on its timer.
        if let Err(e) = self.controller.borrow_mut().propose_isr(sender, change) {
            tracing::debug!(peer = sender.0, error = %e, "ISR proposal not taken");
        }
    }

    /// A replica whose log stopped, reported by its node: proposed on the controller
    /// leader (for the proven sender only); this node's own, off the leader, sent to it.
    fn replica_offline(self: &Rc<Self>, from: Option<NodeId>, request: ControllerRequest) {
        let ControllerRequest::ReplicaOffline {
            topic,
            partition,
            leader_epoch,
            partition_epoch,
        } = request
        else {
            return;
        };
        if !self.is_leader() {
            if from.is_none() {
                self.send_to_leader(&ControllerRequest::ReplicaOffline {
                    topic,
                    partition,
                    leader_epoch,
                    partition_epoch,
                });
            }
            return;
        }
        let Ok(partition_epoch) = u32::try_from(partition_epoch) else {
            tracing::warn!(
                topic,
                partition,
                partition_epoch,
                "offline report with a partition epoch out of range; ignored"
            );
            return;
        };
        let command = Command::ReplicaOffline {
            topic,
            partition,
            node: from.unwrap_or(self.node).0,
            leader_epoch,
            partition_epoch,
        };
        // Lost if leadership moves: the node reports again on its timer.
        if let Err(e) = self.controller.borrow_mut().propose(command) {
            tracing::debug!(error = %e, "offline report not taken");
        }
    }

    /// Proposes `command` (on the controller leader only) and waits until it is applied.
    pub(crate) async fn propose(&self, command: Command) -> Result<Result<(), Refusal>, String> {
        if self.halted.borrow().is_some() {
            return Err(
                "this node's controller log cannot be written; it takes no part in the controller"
                    .into(),
            );
        }
        let (tx, rx) = oneshot::channel();
        let id = self
            .controller
            .borrow_mut()
            .propose(command)
            .map_err(|e| e.to_string())?;
        self.waiters.borrow_mut().insert(id, tx);
        let _ = self.kick.unbounded_send(());
        let timeout = glommio::timer::sleep(PROPOSAL_TIMEOUT);
        match select(rx, std::pin::pin!(timeout)).await {
            Either::Left((Ok(outcome), _)) => Ok(outcome),
            Either::Left((Err(_), _)) => Err("the controller stopped".into()),
            Either::Right(_) => {
                self.waiters.borrow_mut().remove(&id);
                Err("the proposal was not applied in time (controller leadership moved?)".into())
            }
        }
    }

    /// A node's heartbeat, on the controller leader: its free space noted, its session
    /// renewed (or registered).
    fn heartbeat_from(
        &self,
        node: u32,
        addresses: (&str, Option<&str>),
        incarnation: u64,
        free_bytes: Option<u64>,
    ) {
        if self.is_leader() {
            if let Some(free) = free_bytes {
                self.free_bytes.borrow_mut().insert(NodeId(node), free);
            }
            self.session(NodeId(node), addresses, incarnation);
        }
    }

    /// A node's shard count, on the controller leader. Peer input: a count out of range
    /// is dropped with a warning.
    fn shards_from(&self, node: u32, shards: u32) {
        if !(1..=SHARDS_MAX).contains(&shards) {
            tracing::warn!(peer = node, shards, "shard count out of range; ignored");
            return;
        }
        if self.is_leader() {
            let count = usize::try_from(shards).unwrap_or(1);
            self.controller
                .borrow_mut()
                .note_shards(NodeId(node), count);
        }
    }

    /// Renews `node`'s session, or registers it (a new node, or a new incarnation of a
    /// node that restarted, whose previous run the registration fences at once); on the
    /// controller leader only.
    fn session(&self, node: NodeId, (address, kafka): (&str, Option<&str>), incarnation: u64) {
        // How close this node's session came to expiring (`shardlog_heartbeat_gap_seconds`).
        if let Some(gap) = self.controller.borrow().heartbeat_age_ms(node) {
            metrics::latency(Latency::HeartbeatGap, Duration::from_millis(gap));
        }
        let session =
            self.controller
                .borrow_mut()
                .session_listening(node, address, kafka, incarnation);
        match session {
            Ok(()) => {}
            // Only the nodes of `--peers` are members.
            Err(ControllerError::UnknownNode(_)) => {
                tracing::warn!(
                    peer = node.0,
                    address,
                    "heartbeat from a node not in --peers; ignored"
                );
            }
            Err(e) => tracing::debug!(peer = node.0, error = %e, "heartbeat not taken"),
        }
    }

    fn send_to_leader(self: &Rc<Self>, request: &ControllerRequest) {
        if let Some(leader) = self.leader().filter(|l| *l != self.node) {
            self.peers
                .send_frame(leader.0, Api::Controller, request, Bytes::new());
        }
    }

    /// Drives the controller until the shard stops: clock, the Ready cycle.
    async fn run(
        self: Rc<Self>,
        shards: Vec<flume::Sender<ShardMsg>>,
        clock: impl Fn() -> Tick,
        stopped: impl Fn() -> bool,
    ) {
        let Some(mut kicks) = self.kicks.borrow_mut().take() else {
            return;
        };
        // The controller leader and `rejoined` last published; `None` before the first view.
        let mut published: Option<(Option<NodeId>, bool)> = None;
        while !stopped() {
            let timer = glommio::timer::sleep(TICK_EVERY);
            let _ = select(kicks.next(), std::pin::pin!(timer)).await;
            while kicks.try_recv().is_ok() {}
            let now = clock();
            self.now.set(now);
            if self.halted.borrow().is_some() {
                if self.try_recover(now).await {
                    published = None;
                }
                continue;
            }
            self.controller.borrow_mut().tick(now);
            self.share_sessions(now);
            let ready = self.controller.borrow_mut().ready();
            let actions = match ready {
                Ok(actions) => actions,
                Err(e) => {
                    // raft-rs's Ready was taken and not advanced: this voter cannot go on.
                    tracing::error!(error = %e, "controller failed; stopping");
                    stop_all(&shards).await;
                    return;
                }
            };
            let Ok(changed) = self.perform(actions).await else {
                continue;
            };
            // A restarted node replays its own, possibly old, log: shards act on the
            // metadata only once it is current (before, they answer "not available").
            if published.is_none() && !self.controller.borrow().caught_up() {
                continue;
            }
            // Topics to adopt are created and moved into place before any replica opens.
            if published.is_none() && !self.adoption_done() {
                continue;
            }
            let (leader, rejoined) = (self.leader(), self.rejoined());
            if changed || published != Some((leader, rejoined)) {
                let view = Arc::new(ClusterView {
                    applied: self.controller.borrow().applied_index(),
                    metadata: self.controller.borrow().metadata().clone(),
                    controller: leader,
                    rejoined,
                });
                for shard in &shards {
                    let _ = shard.send_async(ShardMsg::View(view.clone())).await;
                }
                published = Some((leader, rejoined));
            }
        }
    }

    /// Starts the controller's tasks on this shard (shard 0), in a task queue of their
    /// own that the executor runs within `CONTROLLER_LATENCY` of a wake-up, however busy
    /// the data path keeps the default queue: the Ready loop, the heartbeat timer, the
    /// lane, and the free-space measurement.
    pub(crate) fn spawn(
        self: &Rc<Self>,
        shards: Vec<flume::Sender<ShardMsg>>,
        clock: impl Fn() -> Tick + Clone + 'static,
        stopped: impl Fn() -> bool + Clone + 'static,
    ) {
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(CONTROLLER_SHARES),
            glommio::Latency::Matters(CONTROLLER_LATENCY),
            "controller",
        );
        let Some(lane) = self.lane.borrow_mut().take() else {
            return;
        };
        let clock = {
            let (service, raw) = (Rc::downgrade(self), clock);
            move || {
                let raw = raw();
                service
                    .upgrade()
                    .map_or(raw, |service| service.controller_clock(raw))
            }
        };
        let spawn = |task: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
            match glommio::spawn_local_into(task, queue) {
                Ok(task) => {
                    task.detach();
                }
                Err(e) => tracing::error!(error = %e, "starting a controller task"),
            }
        };
        spawn(Box::pin(self.peers.clone().keep_linked(stopped.clone())));
        spawn(Box::pin(self.clone().measure_free_space(stopped.clone())));
        spawn(Box::pin(self.clone().lane_loop(
            lane,
            clock.clone(),
            stopped.clone(),
        )));
        spawn(Box::pin(
            self.clone().heartbeat_loop(clock.clone(), stopped.clone()),
        ));
        spawn(Box::pin(self.clone().run(shards, clock, stopped)));
    }

    /// Whether no topic waits for adoption; starts adopting once this node is live.
    fn adoption_done(self: &Rc<Self>) -> bool {
        if self.to_adopt.borrow().is_empty() {
            return true;
        }
        let live = self.controller.borrow().metadata().is_live(self.node);
        if live && self.rejoined() && !self.adopting.replace(true) {
            glommio::spawn_local(self.clone().adopt()).detach();
        }
        false
    }

    /// Adopts every topic of `to_adopt` (see `cluster::adopt`); one that cannot be is
    /// logged and left where it is.
    async fn adopt(self: Rc<Self>) {
        let adoptees = self.to_adopt.borrow().clone();
        for adoptee in adoptees {
            let topic = &adoptee.topic;
            let command = adopt::create_command(&adoptee, self.controller.borrow().metadata());
            if let Some(command) = command {
                match self.propose(command).await {
                    Ok(Ok(())) => {}
                    Ok(Err(refusal)) => {
                        tracing::error!(topic = topic.name, %refusal, "adopting a topic: the controller refused it; its directory stays as it is");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(topic = topic.name, error = %e, "adopting a topic failed; its directory stays as it is");
                        continue;
                    }
                }
            }
            let target = adopt::target(&self.data_dir, topic, self.controller.borrow().metadata());
            let moved = match target {
                Ok(target) => {
                    let (data_dir, name) = (self.data_dir.clone(), topic.name.clone());
                    glommio::executor()
                        .spawn_blocking(move || {
                            adopt::move_into_place(&data_dir, &name, &target)
                                .map(|()| target)
                                .map_err(|e| e.to_string())
                        })
                        .await
                }
                Err(e) => Err(e),
            };
            match moved {
                Ok(target) => {
                    tracing::info!(topic = topic.name, dir = %target.display(), partitions = topic.partitions, "topic adopted")
                }
                Err(e) => {
                    tracing::error!(topic = topic.name, error = %e, "adopting a topic failed; its directory stays as it is")
                }
            }
        }
        self.to_adopt.borrow_mut().clear();
        let _ = self.kick.unbounded_send(());
    }

    /// Performs one Ready's actions in order; whether the metadata or the controller
    /// leader changed. `Err` if the node must stop: the Raft log could not be written.
    async fn perform(&self, actions: Vec<Action>) -> Result<bool, ()> {
        let mut changed = false;
        let mut actions = actions.into_iter().peekable();
        while let Some(action) = actions.next() {
            match action {
                Action::Send { to, bytes } => {
                    let request = ControllerRequest::Raft { from: self.node.0 };
                    self.peers
                        .send_frame(to.0, Api::Controller, &request, Bytes::from(bytes));
                }
                Action::Persist { bytes } => {
                    if let Err(e) = self.persist(bytes).await {
                        // Raft may not go on without its log: this voter halts, the node
                        // does not (see the module docs).
                        self.halt(&e);
                        return Err(());
                    }
                }
                Action::Applied {
                    index,
                    proposal,
                    outcome,
                    ..
                } => {
                    // Before the answer: a shard that then hears of it and finds its view
                    // older waits for the view on its way. Only an entry that changes the
                    // metadata (its changes follow it) publishes a view: counting the others
                    // (a producer-id block) left every shard "behind" until the next change.
                    if matches!(actions.peek(), Some(Action::Changed(_))) {
                        self.applied
                            .fetch_max(index, std::sync::atomic::Ordering::Release);
                    }
                    let waiter = proposal.and_then(|id| self.waiters.borrow_mut().remove(&id));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(outcome);
                    }
                }
                Action::Changed(change) => {
                    super::change_log::metadata_change(&change);
                    count_change(&change);
                    changed = true;
                }
                Action::ControllerLeader { leader, term } => {
                    tracing::info!(leader = leader.map(|l| l.0), term, "controller leader");
                    metrics::count(Counter::ControllerLeaderChanges);
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Halts the voter after its log could not be written.
    fn halt(&self, error: &std::io::Error) {
        let recoverable = matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        let path = raft_file_path(&self.data_dir);
        if recoverable {
            tracing::error!(file = %path.display(), error = %error, "controller log write failed for want of space: this node stops taking part in the controller (the other voters keep the cluster) and serves on; it rejoins once space is freed");
        } else {
            tracing::error!(file = %path.display(), error = %error, "controller log write failed: this node stops taking part in the controller (the other voters keep the cluster) and serves on; restart it once its disk works again");
        }
        let now = std::time::Instant::now();
        *self.halted.borrow_mut() = Some(Halt {
            since: now,
            last_try: now,
            recoverable,
        });
        // Proposals waiting here are not applied by this voter any more.
        self.waiters.borrow_mut().clear();
    }

    /// A halted voter restarts from its file, as a restarted node would, every
    /// `RECOVER_EVERY` if the failure was a full disk; true if it did.
    async fn try_recover(&self, now: Tick) -> bool {
        {
            let mut halted = self.halted.borrow_mut();
            let Some(halt) = halted.as_mut() else {
                return false;
            };
            if !halt.recoverable || halt.last_try.elapsed() < RECOVER_EVERY {
                return false;
            }
            halt.last_try = std::time::Instant::now();
        }
        let data_dir = self.data_dir.clone();
        let has_peers = self.config.voters.len() > 1;
        let reopened = glommio::executor()
            .spawn_blocking(move || {
                open_raft_file(&data_dir, has_peers).map_err(|e| format!("{e:#}"))
            })
            .await;
        let (recovered, file) = match reopened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(
                    error = e,
                    "the halted controller voter could not restart yet"
                );
                return false;
            }
        };
        let mut config = self.config.clone();
        config.first_proposal_seq = proposal_seq_base();
        match Controller::recover(config, now, recovered) {
            Ok(controller) => {
                *self.controller.borrow_mut() = controller;
                *self.file.borrow_mut() = Some(file);
                let since = self.halted.borrow_mut().take().map(|h| h.since.elapsed());
                tracing::info!(halted_for = ?since, "the controller voter restarted from its log and rejoins");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the halted controller voter could not restart");
                false
            }
        }
    }

    /// Sends this node's heartbeats until the shard stops, every `HEARTBEAT_EVERY`,
    /// whatever the Ready loop is waiting on.
    /// Measures this shard's stalls (see `controller_clock`) by how late its timer fires.
    async fn heartbeat_loop(self: Rc<Self>, clock: impl Fn() -> Tick, stopped: impl Fn() -> bool) {
        while !stopped() {
            if self.halted.borrow().is_none() {
                self.heartbeat(clock());
            }
            // Until the controller has this run registered, every tick: a node is given
            // leaderships and replicas, and a one-node cluster creates topics, only then,
            // and clients may ask for that as soon as the node says it is ready.
            let pause = if self.rejoined() {
                HEARTBEAT_EVERY
            } else {
                TICK_EVERY
            };
            let asleep = std::time::Instant::now();
            glommio::timer::sleep(pause).await;
            let late = asleep.elapsed().saturating_sub(pause);
            if late > STALL_SLACK {
                let stalled = u64::try_from((late - STALL_SLACK).as_millis()).unwrap_or(u64::MAX);
                self.stalled_ms
                    .set(self.stalled_ms.get().saturating_add(stalled));
                metrics::latency(Latency::ControllerStall, late - STALL_SLACK);
                tracing::debug!(stalled_ms = stalled, "the controller's shard was stalled");
            }
        }
    }

    /// The controller's clock: the process clock (`raw`) less the time this shard was
    /// stalled, that is, not running the controller's timers for longer than
    /// `STALL_SLACK` after they were due (CPU starvation, a task that did not yield). A
    /// voter that did not run cannot tell who went silent: the heartbeats and Raft
    /// messages sent to it meanwhile wait unread in its sockets. So time it spent stalled
    /// counts neither towards a node's session nor towards an election timeout; a node
    /// that dies while the others run is fenced as soon as before.
    fn controller_clock(&self, raw: Tick) -> Tick {
        Tick(raw.0.saturating_sub(self.stalled_ms.get()))
    }

    /// Takes the controller messages of the lane as they come until the shard stops,
    /// each with the time it was taken.
    async fn lane_loop(
        self: Rc<Self>,
        lane: flume::Receiver<ControllerMsg>,
        clock: impl Fn() -> Tick,
        stopped: impl Fn() -> bool,
    ) {
        while let Ok(message) = lane.recv_async().await {
            if stopped() {
                return;
            }
            self.handle(message, clock());
        }
    }

    /// Heartbeats this node's session once the node has caught up with the controller
    /// (before, the leader it knows may be an old one).
    fn heartbeat(self: &Rc<Self>, now: Tick) {
        if !self.controller.borrow().caught_up() {
            return;
        }
        match self.leader() {
            Some(leader) if leader == self.node => {
                self.controller.borrow_mut().observe_time(now);
                let addresses = (self.address.as_str(), Some(self.kafka_address.as_str()));
                self.session(self.node, addresses, self.incarnation);
                self.controller
                    .borrow_mut()
                    .note_shards(self.node, self.shards);
                // A registration it proposed goes out with the next Ready.
                let _ = self.kick.unbounded_send(());
            }
            Some(leader) => {
                let request = ControllerRequest::HeartbeatListening {
                    node: self.node.0,
                    address: self.address.clone(),
                    kafka_address: self.kafka_address.clone(),
                    incarnation: self.incarnation,
                    free_bytes: self.own_free_bytes.get(),
                };
                self.peers
                    .send_frame(leader.0, Api::Controller, &request, Bytes::new());
                let shards = ControllerRequest::Shards {
                    node: self.node.0,
                    shards: u32::try_from(self.shards).unwrap_or(u32::MAX),
                };
                self.peers
                    .send_frame(leader.0, Api::Controller, &shards, Bytes::new());
            }
            None => {}
        }
    }

    /// Whether the controller has this run registered (not a previous one) and live
    /// (`Metadata::rejoined`): until then this node's replicas lead nothing. Every view
    /// carries the answer (`ClusterView::rejoined`).
    fn rejoined(&self) -> bool {
        self.controller
            .borrow()
            .metadata()
            .rejoined(self.node, self.incarnation)
    }

    /// Appends `bytes` to the Raft file and syncs it (off the executor).
    async fn persist(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        let file = self
            .file
            .borrow_mut()
            .take()
            .ok_or_else(|| std::io::Error::other("controller log unavailable"))?;
        let (file, result) = glommio::executor()
            .spawn_blocking(move || {
                let mut file = file;
                let result = file.write_all(&bytes).and_then(|()| file.sync_data());
                (file, result)
            })
            .await;
        *self.file.borrow_mut() = Some(file);
        result
    }
}

/// Counts the leader changes and fences the voter applies (`shardlog_leader_changes_total`,
/// `shardlog_node_fences_total`): what a stability run must find at zero.
fn count_change(change: &MetadataChange) {
    match change {
        MetadataChange::LeaderChanged { .. } => metrics::count(Counter::LeaderChanges),
        MetadataChange::NodeFenced(_) => metrics::count(Counter::NodeFences),
        _ => {}
    }
}

/// The first proposal sequence number of a voter's start: proposal ids must not repeat
/// across restarts, so it comes from the wall clock.
fn proposal_seq_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

async fn stop_all(shards: &[flume::Sender<ShardMsg>]) {
    for shard in shards {
        let _ = shard.send_async(ShardMsg::Stop).await;
    }
}
