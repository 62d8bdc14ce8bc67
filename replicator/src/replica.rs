//! [`PartitionReplica`]: one partition's replica on one node, as a state machine.
//!
//! `step(now, input)` takes one [`Input`] and queues [`Action`]s, which the driver takes
//! with `drain_actions` and performs in order: appends and truncations on the log,
//! messages to peers, answers to producers, ISR proposals to the controller. The driver
//! reports what the storage made durable with [`Input::Appended`], in order with the
//! actions it performed. Pure: no I/O, no clock, no randomness. Owned by the shard that
//! owns the partition; not shared between threads.
//!
//! Roles: unattached (after a start, until the controller says), leader (`leader.rs`) or
//! follower (`follower.rs`). A replica only moves to a higher leader epoch (or takes its
//! first role at the epoch it already knows), so a stale controller message is ignored.

use bytes::{Bytes, BytesMut};
use shardlog_engine::batch::BatchHeader;
use shardlog_engine::{LeaderEpoch, Offset};

use crate::config::ReplicaConfig;
use crate::error::ProduceError;
use crate::follower::Follower;
use crate::ids::{Incarnation, NodeId, RequestId, Tick};
use crate::leader::Leader;
use crate::local_log::LocalLog;
use crate::message::{EpochQuery, Message, Ship};
use crate::replica_snapshot::ReplicaSnapshot;

/// When a producer is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// After the leader's local write.
    Leader,
    /// After the high watermark passes the batch (every ISR member holds it durably) and
    /// the ISR has at least `min_insync` members.
    All,
}

/// What the controller knows of one replica's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The node.
    pub node: NodeId,
    /// Registered and not fenced: a fenced replica may not join the ISR (the controller
    /// would refuse it).
    pub live: bool,
    /// The incarnation the node registered (0: not known). A message claiming a newer
    /// one is not believed: no run of the node has registered it.
    pub incarnation: Incarnation,
    /// A replica a move is adding that is not in the ISR yet: what the leader ships to it
    /// is throttled (`Action::Ship::throttled`), so a catch-up from the log start does
    /// not starve the in-sync followers and the producers.
    pub catching_up: bool,
}

/// What happens to a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The controller made this replica the leader of `epoch`.
    BecomeLeader {
        /// The new leader epoch.
        epoch: LeaderEpoch,
        /// Every replica of the partition, this one included.
        replicas: Vec<NodeId>,
        /// The committed ISR.
        isr: Vec<NodeId>,
        /// The ISR's version at the controller (its partition epoch).
        isr_version: u64,
        /// What the controller knows of each replica: see [`Member`].
        members: Vec<Member>,
    },
    /// The controller made this replica a follower of `leader` in `epoch`.
    BecomeFollower {
        /// The leader epoch.
        epoch: LeaderEpoch,
        /// The leader.
        leader: NodeId,
    },
    /// The controller's ISR for `epoch` at a new version: after a proposal, or after a
    /// replica was fenced or came back (each bumps the version, so a proposal built on an
    /// older one is refused by the controller and may be forgotten).
    IsrUpdated {
        /// The leader epoch it belongs to.
        epoch: LeaderEpoch,
        /// Its version.
        isr_version: u64,
        /// The members.
        isr: Vec<NodeId>,
        /// What the controller knows of each replica: see [`Member`].
        members: Vec<Member>,
    },
    /// A producer's batch.
    Produce {
        /// Echoed in the answer.
        request: RequestId,
        /// When to answer.
        acks: Acks,
        /// One record batch as the client sent it (the leader patches its base offset and
        /// leader epoch in place: a region of the request's buffer, never copied).
        batch: BytesMut,
    },
    /// The storage's report: batches below `written_end` are written as the flush policy
    /// promises (synced under `always`; `acks=leader` is answered there), those below
    /// `durable_end` count for the high watermark.
    Appended {
        /// What the flush policy has acknowledged.
        written_end: Offset,
        /// The durable end.
        durable_end: Offset,
    },
    /// Retention deleted the head of the log: it now starts at `log_start` (the driver
    /// reports it when the storage's log start moved).
    Retained {
        /// The storage's log start.
        log_start: Offset,
    },
    /// A message from a peer.
    Received {
        /// The sender.
        from: NodeId,
        /// The message (decoded and validated).
        message: Message,
    },
    /// The driver shipped less than an `Action::Ship` asked for: the stored batches of
    /// `[prev_offset, sent_until)` only (a ship's bytes are bounded, and a throttled
    /// follower's by its byte budget; `sent_until == prev_offset`: nothing was sent).
    ShipShortened {
        /// The follower.
        to: NodeId,
        /// Where the ship started.
        prev_offset: Offset,
        /// Where what was sent ends.
        sent_until: Offset,
    },
    /// Time passed.
    Tick,
}

/// Where a produced batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Produced {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// It had been appended before: these are the original offsets.
    pub duplicate: bool,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Append whole batches (offsets already assigned) at the log end; it becomes `log_end`.
    Append {
        /// Concatenated batches.
        batches: Bytes,
        /// The log end after them.
        log_end: Offset,
    },
    /// Cut the log to `log_end`.
    Truncate {
        /// The new log end.
        log_end: Offset,
    },
    /// Delete the whole log and restart it, empty, at `log_start` (past its end): a
    /// follower whose leader's log starts past this one's end (see `Message::LogStart`).
    Reset {
        /// The new log start and log end.
        log_start: Offset,
    },
    /// Send a message to a peer.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Send `ship` to a peer with the stored batches of `[ship.prev_offset, until)` as its
    /// `batches` (read from the log; both ends are batch boundaries).
    Ship {
        /// The follower.
        to: NodeId,
        /// The ship, `batches` empty.
        ship: Ship,
        /// End of the range to read.
        until: Offset,
        /// To a catching-up replica (see [`Member::catching_up`]): the driver sends no
        /// more than the move throttle allows.
        throttled: bool,
    },
    /// Answer a produce request.
    Answer {
        /// The request.
        request: RequestId,
        /// The answer.
        result: Result<Produced, ProduceError>,
    },
    /// Ask the controller to change the ISR from version `isr_version` to `isr`.
    ProposeIsr {
        /// The proposer's leader epoch.
        epoch: LeaderEpoch,
        /// The committed version the proposal builds on.
        isr_version: u64,
        /// The proposed members.
        isr: Vec<NodeId>,
    },
}

/// What a role's code may touch during one step.
pub(crate) struct Step<'a> {
    pub(crate) id: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) now: Tick,
    pub(crate) config: &'a ReplicaConfig,
    pub(crate) log: &'a mut LocalLog,
    pub(crate) actions: &'a mut Vec<Action>,
}

impl Step<'_> {
    pub(crate) fn send(&mut self, to: NodeId, message: Message) {
        self.actions.push(Action::Send { to, message });
    }

    pub(crate) fn answer(&mut self, request: RequestId, result: Result<Produced, ProduceError>) {
        self.actions.push(Action::Answer { request, result });
    }

    pub(crate) fn truncate(&mut self, log_end: Offset) {
        if log_end < self.log.log_end {
            self.log.truncate(log_end);
            self.actions.push(Action::Truncate { log_end });
        } else {
            // Nothing to cut, but an epoch this replica began as a leader without
            // appending to it starts right here: no batch holds it, and kept as the last
            // epoch it would make every older-epoch batch the new leader ships look out
            // of order (found by the simulation: a follower stuck for good).
            self.log.epochs.truncate(log_end);
        }
    }
}

impl Step<'_> {
    /// Empties the log and restarts it at `log_start`, past its end.
    pub(crate) fn reset(&mut self, log_start: Offset) {
        self.log.reset(log_start);
        self.actions.push(Action::Reset { log_start });
    }
}

/// A leader's state is large (its followers' progress, the move throttle): boxed, so a
/// follower's or an unattached replica's role does not carry its size.
#[derive(Debug)]
enum Role {
    Unattached,
    Leader(Box<Leader>),
    Follower(Follower),
}

/// Epoch queries kept for a leader epoch this replica does not know yet, at most: one per
/// sender, and senders are the partition's other replicas.
const EARLY_QUERIES_MAX: usize = 8;

/// One partition's replica on one node.
#[derive(Debug)]
pub struct PartitionReplica {
    config: ReplicaConfig,
    id: NodeId,
    incarnation: Incarnation,
    epoch: LeaderEpoch,
    log: LocalLog,
    role: Role,
    /// Epoch queries of a leader epoch this replica has not taken yet, the latest per
    /// sender.
    /// The controller tells every replica of a new epoch at about the same time, so a
    /// follower's first query can arrive before this node learns it leads that epoch;
    /// dropped, it would be asked again only `retry_ms` later (a failover's acks waited
    /// 200 ms for it). Answered if this replica becomes that epoch's leader, dropped once
    /// it takes that epoch or a later one otherwise.
    early_queries: Vec<(NodeId, EpochQuery)>,
    actions: Vec<Action>,
    now: Tick,
}

impl PartitionReplica {
    /// A replica of an empty log; feed an existing log with
    /// [`PartitionReplica::recover_batch`] before the first step.
    pub fn new(config: ReplicaConfig, id: NodeId, incarnation: Incarnation) -> Self {
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        PartitionReplica {
            config,
            id,
            incarnation,
            epoch: LeaderEpoch::NONE,
            log: LocalLog::default(),
            role: Role::Unattached,
            early_queries: Vec::new(),
            actions: Vec::new(),
            now: Tick(0),
        }
    }

    /// Starts the recovered log at `log_start` (retention deleted what was below it,
    /// all of it committed), before any [`PartitionReplica::recover_batch`].
    pub fn recover_start(&mut self, log_start: Offset) {
        assert!(
            matches!(self.role, Role::Unattached) && self.log.log_end == Offset(0),
            "recover_start after recovery began"
        );
        self.log.log_start = log_start;
        self.log.log_end = log_start;
        self.log.durable_end = log_start;
        self.log.high_watermark = log_start;
    }

    /// Starts the recovered log from `state`: the producers and epochs of its batches
    /// below `state.log_end()`, which is the log end (a snapshot plus the batches
    /// replayed after it). `log_start` is where retention left the log. Before the first
    /// step, instead of [`PartitionReplica::recover_start`] and `recover_batch`.
    pub fn recover_state(&mut self, log_start: Offset, state: &ReplicaSnapshot) {
        self.recover_start(log_start);
        assert!(
            state.log_end() >= log_start,
            "recovered state ends at {} below the log start {log_start}",
            state.log_end()
        );
        self.log.log_end = state.log_end();
        self.log.durable_end = state.log_end();
        self.log.epochs = state.epochs().clone();
        self.log.producers = state.producers().clone();
        // The newest epoch of any batch: epochs only grow along a log.
        self.epoch = self.epoch.max(state.epochs().last_epoch());
    }

    /// Replays one batch of the recovered (durable) log, in order, before the first step.
    pub fn recover_batch(&mut self, header: &BatchHeader) {
        assert!(
            matches!(self.role, Role::Unattached),
            "recovery after a role"
        );
        self.log.appended(header);
        self.log.durable_end = self.log.log_end;
        self.epoch = self.epoch.max(header.leader_epoch);
    }

    /// Takes one input at time `now` (never earlier than the last step's).
    pub fn step(&mut self, now: Tick, input: Input) {
        assert!(now >= self.now, "time went back: {now} < {}", self.now);
        self.now = now;
        match input {
            Input::BecomeLeader {
                epoch,
                replicas,
                isr,
                isr_version,
                members,
            } => self.become_leader(epoch, replicas, isr, isr_version, members),
            Input::BecomeFollower { epoch, leader } => self.become_follower(epoch, leader),
            Input::IsrUpdated {
                epoch,
                isr_version,
                isr,
                members,
            } => {
                let (mut step, role) = self.split();
                if let Role::Leader(leader) = role {
                    leader.on_isr_updated(&mut step, epoch, isr_version, isr, members);
                }
            }
            Input::Produce {
                request,
                acks,
                batch,
            } => self.produce(request, acks, batch),
            Input::Appended {
                written_end,
                durable_end,
            } => self.appended(written_end, durable_end),
            Input::Retained { log_start } => self.log.retained(log_start),
            Input::Received { from, message } => self.received(from, message),
            Input::ShipShortened {
                to,
                prev_offset,
                sent_until,
            } => {
                let (mut step, role) = self.split();
                if let Role::Leader(leader) = role {
                    leader.on_ship_shortened(&mut step, to, prev_offset, sent_until);
                }
            }
            Input::Tick => self.tick(),
        }
        self.invariants();
    }

    /// Moves the queued actions into `into`, in the order they must be performed.
    pub fn drain_actions(&mut self, into: &mut Vec<Action>) {
        into.append(&mut self.actions);
    }

    fn split(&mut self) -> (Step<'_>, &mut Role) {
        (
            Step {
                id: self.id,
                incarnation: self.incarnation,
                now: self.now,
                config: &self.config,
                log: &mut self.log,
                actions: &mut self.actions,
            },
            &mut self.role,
        )
    }

    fn takes_epoch(&self, epoch: LeaderEpoch) -> bool {
        epoch > self.epoch || (epoch == self.epoch && matches!(self.role, Role::Unattached))
    }

    fn become_leader(
        &mut self,
        epoch: LeaderEpoch,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        isr_version: u64,
        members: Vec<Member>,
    ) {
        if !self.takes_epoch(epoch) {
            return;
        }
        self.epoch = epoch;
        let early = take_early_queries(&mut self.early_queries, epoch);
        let (mut step, role) = self.split();
        if let Role::Leader(old) = role {
            old.step_down(&mut step);
        }
        let membership = crate::leader::Membership {
            replicas,
            isr,
            isr_version,
            members,
        };
        let mut leader = Leader::new(&mut step, epoch, membership);
        // What its storage holds durably may already be committed (a lone replica's
        // whole log): the high watermark need not wait for the next event.
        leader.start(&mut step);
        for (from, query) in early {
            leader.on_message(&mut step, from, Message::EpochQuery(query));
        }
        *role = Role::Leader(Box::new(leader));
    }

    fn become_follower(&mut self, epoch: LeaderEpoch, leader: NodeId) {
        if !self.takes_epoch(epoch) || leader == self.id {
            return;
        }
        self.epoch = epoch;
        take_early_queries(&mut self.early_queries, epoch);
        let (mut step, role) = self.split();
        if let Role::Leader(old) = role {
            old.step_down(&mut step);
        }
        let follower = Follower::new(&mut step, epoch, leader);
        *role = Role::Follower(follower);
    }

    fn produce(&mut self, request: RequestId, acks: Acks, batch: BytesMut) {
        let (mut step, role) = self.split();
        match role {
            Role::Leader(leader) => leader.produce(&mut step, request, acks, batch),
            Role::Follower(_) | Role::Unattached => {
                step.answer(request, Err(ProduceError::NotLeader));
            }
        }
    }

    fn appended(&mut self, written_end: Offset, durable_end: Offset) {
        assert!(
            durable_end <= written_end,
            "durable {durable_end} > {written_end}"
        );
        let before = self.log.durable_end;
        self.log.durable(durable_end);
        let (mut step, role) = self.split();
        match role {
            Role::Leader(leader) => leader.on_appended(&mut step, written_end),
            Role::Follower(follower) if step.log.durable_end > before => {
                follower.ack(&mut step, false);
            }
            Role::Follower(_) | Role::Unattached => {}
        }
    }

    fn received(&mut self, from: NodeId, message: Message) {
        if let Message::EpochQuery(query) = &message
            && self.takes_epoch(LeaderEpoch(query.leader_epoch))
        {
            self.keep_early_query(from, *query);
            return;
        }
        let (mut step, role) = self.split();
        match role {
            Role::Leader(leader) => leader.on_message(&mut step, from, message),
            Role::Follower(follower) => follower.on_message(&mut step, from, message),
            Role::Unattached => {}
        }
    }

    fn tick(&mut self) {
        let (mut step, role) = self.split();
        match role {
            Role::Leader(leader) => leader.tick(&mut step),
            Role::Follower(follower) => follower.tick(&mut step),
            Role::Unattached => {}
        }
    }

    fn keep_early_query(&mut self, from: NodeId, query: EpochQuery) {
        if from == self.id {
            return;
        }
        if let Some(kept) = self.early_queries.iter_mut().find(|(n, _)| *n == from) {
            kept.1 = query;
        } else if self.early_queries.len() < EARLY_QUERIES_MAX {
            self.early_queries.push((from, query));
        }
    }

    /// Checks the replica's invariants; called at the end of every step.
    pub fn invariants(&self) {
        self.log.invariants();
        assert!(
            self.log.epochs.last_epoch() <= self.epoch,
            "log epoch {} > {}",
            self.log.epochs.last_epoch(),
            self.epoch
        );
        match &self.role {
            Role::Leader(leader) => leader.invariants(self.id, &self.config, &self.log),
            Role::Follower(follower) => follower.invariants(self.id),
            Role::Unattached => {}
        }
    }

    /// The node this replica lives on.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The latest leader epoch this replica knows.
    #[must_use]
    pub fn epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    /// Offsets below it are committed: consumers may read them, no further.
    #[must_use]
    pub fn high_watermark(&self) -> Offset {
        self.log.high_watermark
    }

    /// The high watermark a reader may be told, or `None` while this replica leads an
    /// epoch whose start it has not committed yet. A new leader's high watermark is what
    /// it last heard as a follower, which can be below what the previous leader already
    /// told readers; below its epoch start everything may have been committed before, so
    /// until the high watermark passes it (as Raft's commit of a first entry in a term,
    /// and Kafka's `OFFSET_NOT_AVAILABLE` for a leader whose high watermark lags its epoch
    /// start), answering would make a reader's high watermark go back.
    #[must_use]
    pub fn served_high_watermark(&self) -> Option<Offset> {
        match &self.role {
            Role::Leader(leader) if self.log.high_watermark < leader.epoch_start() => None,
            _ => Some(self.log.high_watermark),
        }
    }

    /// The next offset to assign.
    #[must_use]
    pub fn log_end(&self) -> Offset {
        self.log.log_end
    }

    /// The first offset the log holds.
    #[must_use]
    pub fn log_start(&self) -> Offset {
        self.log.log_start
    }

    /// The durable end.
    #[must_use]
    pub fn durable_end(&self) -> Offset {
        self.log.durable_end
    }

    /// The epoch this replica leads, if it leads and has not learnt it is deposed.
    #[must_use]
    pub fn leading(&self) -> Option<LeaderEpoch> {
        match &self.role {
            Role::Leader(leader) if !leader.deposed() => Some(self.epoch),
            _ => None,
        }
    }

    /// Each follower's log end as last acknowledged, if this replica leads (for lag
    /// metrics; a follower not heard from yet shows the log end it was assumed to have).
    #[must_use]
    pub fn follower_log_ends(&self) -> Vec<(NodeId, Offset)> {
        match &self.role {
            Role::Leader(leader) if !leader.deposed() => leader.follower_log_ends().collect(),
            _ => Vec::new(),
        }
    }

    /// The committed ISR this replica knows, if it leads.
    #[must_use]
    pub fn isr(&self) -> Option<&[NodeId]> {
        match &self.role {
            Role::Leader(leader) => Some(leader.isr()),
            _ => None,
        }
    }
}

/// Removes the early queries of `epoch` and older (this replica now has that epoch) and
/// returns those of `epoch` itself.
fn take_early_queries(
    early: &mut Vec<(NodeId, EpochQuery)>,
    epoch: LeaderEpoch,
) -> Vec<(NodeId, EpochQuery)> {
    let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(early)
        .into_iter()
        .partition(|(_, q)| LeaderEpoch(q.leader_epoch) <= epoch);
    *early = kept;
    taken
        .into_iter()
        .filter(|(_, q)| LeaderEpoch(q.leader_epoch) == epoch)
        .collect()
}
