//! The cluster controller: cluster metadata replicated with tikv's raft-rs, run sans-IO.
//!
//! One Raft voter per node; a single node runs a one-member controller that elects
//! itself at once. The driver feeds inputs and performs the actions of [`Controller::ready`]:
//!
//! - Inputs: [`Controller::tick`] (time as data, ms), [`Controller::step`] (raft message
//!   bytes from a peer), [`Controller::propose`] (a [`Command`]), and on the controller
//!   leader [`Controller::heartbeat`] / [`Controller::register`] from nodes.
//! - Actions ([`Action`]): records to make durable, raft messages to send, each committed
//!   command with its outcome, [`MetadataChange`]s to publish, and controller leadership
//!   changes.
//!
//! The controller leader tracks node sessions ([`heartbeat`]) and proposes `FenceNode`
//! for expired ones; applying it moves leaderships by the rules of [`failover`]. It also
//! proposes `ElectLeader` where the preferred replica is back in sync ([`leader_balance`]).
//!
//! Determinism: raft-rs draws its election timeout from `thread_rng` in
//! `[min_election_tick, max_election_tick)`. The range is one tick wide here, staggered by
//! the voter's position (`election_ticks + 2 * position`), so a seeded simulation replays
//! exactly and voters do not time out in lockstep.
//!
//! Durability: raft-rs works on an in-memory `MemStorage`; what it must keep across a
//! restart (log entries and hard state) leaves as [`Action::Persist`] records
//! ([`raft_file`]), which the driver appends to a file and fdatasyncs before it performs
//! the actions after them (the messages that promise them to peers, and the outcomes). A
//! restarted node reads the file back ([`raft_file::recover`]: a torn tail is cut, damage
//! inside synced records is an error) and starts with [`Controller::recover`]: raft-rs
//! resumes its term, vote and log, and the metadata is rebuilt by applying the committed
//! entries again. A voter that starts with no file (its controller directory removed)
//! starts as a new voter does and receives the log from the leader.
//!
//! Not yet: log compaction and snapshots (the file and the in-memory log grow without
//! bound, and a restart replays every entry), and membership changes (voters are fixed at
//! start).

pub mod acls;
pub mod command;
pub mod failover;
pub mod heartbeat;
pub mod leader_balance;
pub mod leader_shards;
pub mod metadata;
pub mod placement;
pub mod raft_file;
pub mod reassignment;
pub mod replica_plan;
pub mod requests;
pub mod roles;

pub use command::THROTTLE_NODE_DEFAULT;
pub use command::{AdoptedData, Command, CommandError, UserCredential};
pub use metadata::{
    Metadata, MetadataChange, NodeInfo, PartitionState, Refusal, TopicInfo, valid_user_name,
};
pub use raft_file::Recovered;
pub use reassignment::{Reassignment, catching_up};
pub use requests::IsrChange;
pub use roles::{NO_LEADER, RoleApplied, replica_input};

use std::collections::BTreeMap;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, Message as RaftMessage, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

use crate::ids::{NodeId, Tick};
use heartbeat::Sessions;
use raft_file::ENTRY_BYTES_MAX;

/// Controller settings; [`ControllerConfig::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// This node.
    pub node: NodeId,
    /// Every controller voter (one per node), including this node.
    pub voters: Vec<NodeId>,
    /// Milliseconds per Raft tick (default 50).
    pub tick_ms: u64,
    /// Raft ticks without a leader before a campaign (default 10).
    pub election_ticks: usize,
    /// Raft ticks between leader heartbeats (default 2).
    pub heartbeat_ticks: usize,
    /// A node that has not heartbeated for this long is fenced (default 1000 ms).
    pub session_timeout_ms: u64,
    /// How often the leader looks for preferred-leader elections (default 5000 ms).
    pub rebalance_interval_ms: u64,
    /// Leader balancing: a node leads its preferred partitions again only after this long
    /// live without a break (default 3000 ms; see [`leader_balance`]).
    pub leader_hold_ms: u64,
    /// Leader balancing: a node's preferred partitions move back once more than this
    /// percentage of them is led elsewhere (default 10, Kafka's).
    pub leader_imbalance_percent: u32,
    /// A node fenced this long has its replicas re-placed on the serving nodes (`None`,
    /// the default: never; see [`replica_plan`]). Checked every `rebalance_interval_ms`.
    pub replace_dead_after_ms: Option<u64>,
    /// Rebalance replica counts over the serving nodes on its own (a node that joined
    /// gets its share) every `rebalance_interval_ms` (default false: on request,
    /// [`Controller::rebalance_replicas`]).
    pub auto_rebalance: bool,
    /// At most this many partitions move at once by the planners' doing (re-placement,
    /// decommission, rebalancing): they start more as moves finish. An operator's
    /// reassignment is never held back, but counts. Default
    /// [`MAX_CONCURRENT_MOVES_DEFAULT`]; see [`replica_plan::start_within`].
    pub max_concurrent_moves: usize,
    /// The leader proposes a node's registration at most this often (default 1000 ms).
    pub register_every_ms: u64,
    /// The sequence number of this start's first [`ProposalId`] (default 0). Give each
    /// start of the process a distinct, increasing base (wall-clock microseconds, say):
    /// a restarted node applies its old entries again, and a new proposal must not carry
    /// the id of one of them.
    pub first_proposal_seq: u64,
}

impl ControllerConfig {
    /// Defaults for `node` among `voters`.
    #[must_use]
    pub fn new(node: NodeId, voters: Vec<NodeId>) -> ControllerConfig {
        ControllerConfig {
            node,
            voters,
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            session_timeout_ms: 1000,
            rebalance_interval_ms: 5000,
            leader_hold_ms: 3000,
            leader_imbalance_percent: 10,
            replace_dead_after_ms: None,
            auto_rebalance: false,
            max_concurrent_moves: MAX_CONCURRENT_MOVES_DEFAULT,
            register_every_ms: 1000,
            first_proposal_seq: 0,
        }
    }
}

/// Default of [`ControllerConfig::max_concurrent_moves`]: Redpanda's
/// `partition_autobalancing_concurrent_moves`. The bytes a move ships are capped apart
/// (each leader's move throttle); this caps how many partitions are mid-move at once
/// (replicas opened and catching up, replica sets in flux) however large the plan.
pub const MAX_CONCURRENT_MOVES_DEFAULT: usize = 50;

/// Identifies a proposal in the [`Action::Applied`] of its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId {
    /// The proposing node.
    pub node: NodeId,
    /// Its sequence number there.
    pub seq: u64,
}

/// What the driver does after [`Controller::ready`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Append `bytes` (records of [`raft_file`]) to this node's Raft file and make them
    /// durable (fdatasync) before performing any later action of the list: those after it
    /// may promise the records to peers or report entries they hold. A failed write or
    /// sync stops the node; it never retries.
    Persist {
        /// Whole records, to append as they are.
        bytes: Vec<u8>,
    },
    /// Send raft message bytes to a peer (then [`Controller::step`] there).
    Send {
        /// The peer.
        to: NodeId,
        /// The encoded raft message.
        bytes: Vec<u8>,
    },
    /// A committed entry was applied to the metadata.
    Applied {
        /// Its Raft log index.
        index: u64,
        /// The proposal, if it carried an id.
        proposal: Option<ProposalId>,
        /// The command, `None` if undecodable.
        command: Option<Command>,
        /// Applied, or why it changed nothing.
        outcome: Result<(), Refusal>,
    },
    /// Publish this change.
    Changed(MetadataChange),
    /// The controller leader (as this node knows it) changed.
    ControllerLeader {
        /// The leader, `None` during an election.
        leader: Option<NodeId>,
        /// Raft term.
        term: u64,
    },
}

/// Why an input was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Proposals and heartbeats go to the controller leader.
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// The node has not registered (or, for a session, is not a voter).
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// An ISR change from a node that does not lead the partition.
    #[error("node {0} does not lead the partition")]
    NotPartitionLeader(NodeId),
    /// A heartbeat from a newer incarnation than the registered one: the node restarted
    /// and must register again.
    #[error("node {0} restarted: it registers again")]
    NewIncarnation(NodeId),
    /// A heartbeat from an older incarnation than the registered one (a previous run).
    #[error("node {0}: a heartbeat of an older incarnation")]
    StaleIncarnation(NodeId),
    /// Bad configuration.
    #[error("invalid controller config: {0}")]
    Config(&'static str),
    /// Raft message bytes could not be encoded or decoded, or were for another node.
    #[error("raft message codec: {0}")]
    Codec(String),
    /// The command could not be encoded.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The Raft state given to [`Controller::recover`] is not one raft-rs can start from.
    #[error("recovered raft state is inconsistent: {0}")]
    Recovered(&'static str),
    /// Log entries could not be encoded as Raft file records.
    #[error(transparent)]
    Persist(#[from] raft_file::EncodeError),
    /// raft-rs refused.
    #[error(transparent)]
    Raft(#[from] raft::Error),
}

/// One node's controller: a raft-rs `RawNode` over in-memory storage (made durable through
/// [`Action::Persist`]) plus the applied [`Metadata`] and, while leading, the node sessions.
pub struct Controller {
    config: ControllerConfig,
    raw: RawNode<MemStorage>,
    metadata: Metadata,
    sessions: Sessions,
    registrations: requests::Registrations,
    now: Tick,
    next_raft_tick: Tick,
    next_seq: u64,
    seen_leader: (u64, u64),
    leading: bool,
    last_rebalance: Tick,
    /// Since when each live node is live, as this voter applied it (leader balancing's
    /// hold). A restarted voter replays its log at start: every node starts its hold then.
    live_since: BTreeMap<NodeId, Tick>,
    /// Since when each fenced node is fenced, as this voter applied it (re-placement's
    /// delay; a voter that replays its log at start starts every delay then).
    fenced_since: BTreeMap<NodeId, Tick>,
    /// The controller leader this node last heard from, and when.
    leader_heard: Option<(NodeId, Tick)>,
    /// Moves this leader proposed that are not applied yet: (topic, partition) to the
    /// target and when. Counted as in progress, so planning again before they apply
    /// neither repeats them nor starts more than the cap.
    proposed_moves: BTreeMap<(String, u32), (Vec<NodeId>, Tick)>,
    /// An operator asked for a rebalance (`rebalance_replicas`) that is not done yet: the
    /// rounds go on until its plan is empty. Kept in this leader's memory only.
    rebalance_requested: bool,
    /// A move may have finished or become possible: plan at the next tick, not only at
    /// the next rebalance interval.
    replan: bool,
    /// Each node's shard count, as its heartbeats say ([`Controller::note_shards`]; this
    /// leader's memory, learned again by the next one within a heartbeat).
    node_shards: BTreeMap<NodeId, usize>,
    /// Partitions whose preferred leader a shard reorder changed: elected at the next
    /// round, whatever the imbalance ratio says (the reorder was the ratio's decision).
    reordered: std::collections::BTreeSet<(String, u32)>,
    /// Raft ids of the voters.
    voter_ids: Vec<u64>,
}

fn raft_id(node: NodeId) -> u64 {
    u64::from(node.0) + 1
}

fn node_of(raft_id: u64) -> Option<NodeId> {
    raft_id
        .checked_sub(1)
        .and_then(|v| u32::try_from(v).ok())
        .map(NodeId)
}

impl Controller {
    /// A controller for `config.node` with an empty Raft state, at time `now`: the same as
    /// [`Controller::recover`] from [`Recovered::default`].
    pub fn new(config: ControllerConfig, now: Tick) -> Result<Controller, ControllerError> {
        Controller::recover(config, now, Recovered::default())
    }

    /// A controller for `config.node` that resumes the Raft state read back from its file,
    /// at time `now`. raft-rs resumes its term, vote and log; the first [`Controller::ready`]
    /// applies the committed entries again (up to the recovered commit index), rebuilding
    /// the metadata, and the rest is learned from the leader.
    pub fn recover(
        config: ControllerConfig,
        now: Tick,
        recovered: Recovered,
    ) -> Result<Controller, ControllerError> {
        let mut voters = config.voters.clone();
        voters.sort();
        voters.dedup();
        if voters.len() != config.voters.len() {
            return Err(ControllerError::Config("duplicate voter"));
        }
        let position = voters
            .iter()
            .position(|v| *v == config.node)
            .ok_or(ControllerError::Config("node is not a voter"))?;
        if config.tick_ms == 0 {
            return Err(ControllerError::Config("tick_ms is 0"));
        }
        recovered.check().map_err(ControllerError::Recovered)?;
        let min_election_tick = config.election_ticks + 2 * position;
        // `applied` stays 0: raft-rs then hands out every committed entry again (from index
        // 1 up to the recovered commit), which rebuilds the metadata.
        let raft_config = raft::Config {
            id: raft_id(config.node),
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            min_election_tick,
            max_election_tick: min_election_tick + 1,
            pre_vote: true,
            check_quorum: true,
            ..raft::Config::default()
        };
        raft_config.validate()?;
        let ids: Vec<u64> = voters.iter().map(|v| raft_id(*v)).collect();
        let storage = MemStorage::new_with_conf_state(ConfState::from((ids, vec![])));
        {
            let mut core = storage.wl();
            // `check` made these consecutive from index 1: MemStorage's gap panic cannot fire.
            core.append(&recovered.entries)?;
            core.set_hardstate(recovered.hard_state);
        }
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&raft_config, storage, &logger)?;
        if voters.len() == 1 {
            raw.campaign()?;
        }
        Ok(Controller {
            sessions: Sessions::new(config.session_timeout_ms),
            registrations: requests::Registrations::default(),
            next_raft_tick: now.after(config.tick_ms),
            next_seq: config.first_proposal_seq,
            config,
            raw,
            metadata: Metadata::default(),
            now,
            seen_leader: (0, 0),
            leading: false,
            last_rebalance: now,
            live_since: BTreeMap::new(),
            fenced_since: BTreeMap::new(),
            leader_heard: None,
            proposed_moves: BTreeMap::new(),
            rebalance_requested: false,
            replan: false,
            node_shards: BTreeMap::new(),
            reordered: std::collections::BTreeSet::new(),
            voter_ids: voters.iter().map(|v| raft_id(*v)).collect(),
        })
    }

    /// Whether `node` is one of the controller's voters (the cluster's members).
    #[must_use]
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voter_ids.contains(&raft_id(node))
    }

    /// This node.
    #[must_use]
    pub fn node(&self) -> NodeId {
        self.config.node
    }

    /// The applied metadata.
    #[must_use]
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Whether this node leads the controller.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The controller leader as this node knows it.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            raft::INVALID_ID => None,
            id => node_of(id),
        }
    }

    /// The Raft index of the last applied entry: how current [`Controller::metadata`] is.
    #[must_use]
    pub fn applied_index(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    /// Whether this node's metadata is current as far as it can tell: it knows a controller
    /// leader of this term (it heard from it, or is it) and has applied everything it
    /// knows committed. A restarted node replays its own log first, which may be old: its
    /// metadata is not to be acted on before this holds.
    #[must_use]
    pub fn caught_up(&self) -> bool {
        self.leader().is_some()
            && self.raw.raft.raft_log.applied >= self.raw.raft.raft_log.committed
    }

    /// Milliseconds since `node`'s last heartbeat, on the controller leader only (the
    /// sessions live in its memory); `None` elsewhere or for an untracked node.
    #[must_use]
    pub fn heartbeat_age_ms(&self, node: NodeId) -> Option<u64> {
        if !self.leading {
            return None;
        }
        self.sessions
            .last_seen(node)
            .map(|seen| self.now.since(seen))
    }

    /// The current Raft term.
    #[must_use]
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The clock reads `now`: inputs from here on (a heartbeat, a registration) are taken
    /// as of then. Unlike [`Controller::tick`], no Raft tick runs and nothing is decided,
    /// so a driver may call it as an input arrives, between its Ready cycles.
    pub fn observe_time(&mut self, now: Tick) {
        self.now = self.now.max(now);
    }

    /// Time passes: runs the Raft ticks due by `now` (at most one election timeout's
    /// worth after a long pause) and, on the leader, fences expired sessions and
    /// proposes preferred-leader elections.
    pub fn tick(&mut self, now: Tick) {
        self.now = self.now.max(now);
        let mut budget = self.config.election_ticks * 3;
        while self.next_raft_tick <= self.now && budget > 0 {
            self.raw.tick();
            self.next_raft_tick = self.next_raft_tick.after(self.config.tick_ms);
            budget -= 1;
        }
        if self.next_raft_tick <= self.now {
            self.next_raft_tick = self.now.after(self.config.tick_ms);
        }
        // Decide only on metadata that includes everything committed before this term.
        if self.is_leader() && self.raw.raft.commit_to_current_term() {
            self.fence_expired();
            self.rebalance();
            if self.replan {
                self.plan_moves();
            }
        }
    }

    fn fence_expired(&mut self) {
        let live = self.metadata.live_nodes();
        for node in self.sessions.expired(self.now, &live) {
            if self.propose(Command::FenceNode { node: node.0 }).is_err() {
                self.sessions.settled(node); // retried on a later tick
            }
        }
    }

    fn rebalance(&mut self) {
        if self.now.since(self.last_rebalance) < self.config.rebalance_interval_ms {
            return;
        }
        self.last_rebalance = self.now;
        let brakes = leader_balance::LeaderBalance {
            hold_ms: self.config.leader_hold_ms,
            imbalance_percent: self.config.leader_imbalance_percent,
        };
        let mut due = leader_balance::elections(
            &self.metadata,
            &self.live_since,
            self.now,
            brakes,
            &self.node_shards,
        );
        due.extend(self.reordered_elections());
        due.sort();
        due.dedup();
        for (topic, partition) in due {
            // A refusal or a lost proposal is retried at the next interval.
            let _ = self.propose(Command::ElectLeader { topic, partition });
        }
        self.plan_moves();
    }

    /// A planning round: evacuation first, else rebalancing (automatic, or asked for and
    /// not done), started within `max_concurrent_moves`.
    fn plan_moves(&mut self) {
        self.replan = false;
        let (nodes, partitions) = self.plan_input();
        let mut plan = replica_plan::evacuate(&nodes, &partitions);
        if plan.is_empty() && (self.config.auto_rebalance || self.rebalance_requested) {
            plan = replica_plan::rebalance(&nodes, &partitions);
            self.rebalance_requested &= !plan.is_empty();
        }
        let in_flight = partitions.iter().filter(|p| p.moving).count();
        let cap = self.config.max_concurrent_moves;
        if plan.is_empty() {
            // Nothing to move: even leaders over each node's shards. A reorder ships no
            // data and commits in the apply that starts it, so it takes no room under
            // the cap; the cap only bounds a round's hand-over cycles.
            let reorders = self.shard_reorders(&partitions, cap);
            self.reordered
                .extend(reorders.iter().map(|m| (m.topic.clone(), m.partition)));
            self.propose_moves(reorders);
            return;
        }
        self.propose_moves(replica_plan::start_within(plan, in_flight, cap));
    }

    /// The preferred-leader swaps of [`leader_shards::reorders`] for this round.
    fn shard_reorders(
        &self,
        partitions: &[replica_plan::PlanPartition],
        max_cycles: usize,
    ) -> Vec<replica_plan::Move> {
        if self.node_shards.values().all(|s| *s <= 1) {
            return Vec::new();
        }
        let leader_partitions: Vec<leader_shards::LeaderPartition> = partitions
            .iter()
            .map(|p| {
                let state = self.metadata.partition(&p.topic, p.partition);
                let in_sync = state.is_some_and(|s| {
                    s.replicas.iter().all(|n| s.isr.contains(n)) && s.leader.is_some()
                });
                leader_shards::LeaderPartition {
                    plan: p.clone(),
                    in_sync,
                }
            })
            .collect();
        leader_shards::reorders(
            &leader_partitions,
            &self.node_shards,
            self.config.leader_imbalance_percent,
            max_cycles,
        )
    }

    /// Reordered partitions whose new preferred leader does not lead yet (and is not
    /// moving): due for an election. Those done leave the set.
    fn reordered_elections(&mut self) -> Vec<(String, u32)> {
        let metadata = &self.metadata;
        let proposed = &self.proposed_moves;
        let mut due = Vec::new();
        self.reordered.retain(|(topic, partition)| {
            let Some(p) = metadata.partition(topic, *partition) else {
                return false;
            };
            if p.reassignment.is_some() || proposed.contains_key(&(topic.clone(), *partition)) {
                return true; // not applied (or not committed) yet
            }
            if p.leader != p.preferred() {
                due.push((topic.clone(), *partition));
            }
            false
        });
        due
    }

    /// A node's shard count (its heartbeats carry it), for spreading leaders over each
    /// node's shards. Taken on the controller leader; 0 is ignored.
    pub fn note_shards(&mut self, node: NodeId, shards: usize) {
        if shards > 0 && self.is_voter(node) {
            self.node_shards.insert(node, shards);
        }
    }

    /// Moves replicas so that counts over the serving nodes even out (a node that joined
    /// gets its share): the moves of [`replica_plan::rebalance`], started at most
    /// `max_concurrent_moves` at a time, more as moves finish, until the plan is empty
    /// (evacuations first). Returns how many moves the plan holds now. Partitions with a
    /// move in progress are left alone.
    pub fn rebalance_replicas(&mut self) -> Result<usize, ControllerError> {
        let count = self.planned_rebalance()?.len();
        self.rebalance_requested = count > 0;
        self.plan_moves();
        Ok(count)
    }

    /// The cap on moves the planners have in progress at once.
    #[must_use]
    pub fn max_concurrent_moves(&self) -> usize {
        self.config.max_concurrent_moves
    }

    /// The moves [`Controller::rebalance_replicas`] would propose now (on the leader).
    pub fn planned_rebalance(&self) -> Result<Vec<replica_plan::Move>, ControllerError> {
        self.check_leader()?;
        let (nodes, partitions) = self.plan_input();
        Ok(replica_plan::rebalance(&nodes, &partitions))
    }

    fn propose_moves(&mut self, moves: Vec<replica_plan::Move>) {
        // A proposal neither applied nor refused by then was lost (it is planned again).
        let expiry = self.config.rebalance_interval_ms;
        let now = self.now;
        self.proposed_moves
            .retain(|_, (_, at)| now.since(*at) < expiry);
        for m in moves {
            // A refused or lost proposal is planned again at a later round.
            let proposed = self.propose(Command::ReassignPartition {
                topic: m.topic.clone(),
                partition: m.partition,
                replicas: m.replicas.iter().map(|n| n.0).collect(),
                throttle_bytes: command::THROTTLE_NODE_DEFAULT,
            });
            if proposed.is_ok() {
                self.proposed_moves
                    .insert((m.topic, m.partition), (m.replicas, now));
            }
        }
    }

    /// What the replica planners see: each node's role (draining, or fenced longer than
    /// `replace_dead_after_ms`: evacuate; fenced: unavailable) and each partition's
    /// replicas (a move's target while it is in progress).
    fn plan_input(
        &self,
    ) -> (
        Vec<(NodeId, replica_plan::NodeRole)>,
        Vec<replica_plan::PlanPartition>,
    ) {
        use replica_plan::NodeRole;
        let dead_after = self.config.replace_dead_after_ms;
        let nodes = self
            .metadata
            .nodes()
            .iter()
            .map(|(id, info)| {
                let dead = info.fenced
                    && dead_after.is_some_and(|after| {
                        let since = self.fenced_since.get(id).copied().unwrap_or(self.now);
                        self.now.since(since) >= after
                    });
                let role = match (info.draining || dead, info.fenced) {
                    (true, _) => NodeRole::Evacuate,
                    (false, true) => NodeRole::Unavailable,
                    (false, false) => NodeRole::Serving,
                };
                (*id, role)
            })
            .collect();
        let mut partitions = Vec::new();
        for (name, t) in self.metadata.topics() {
            for (partition, p) in (0u32..).zip(&t.partitions) {
                let proposed = self.proposed_moves.get(&(name.clone(), partition));
                let replicas = match (&p.reassignment, proposed) {
                    (Some(r), _) => r.target.clone(),
                    (None, Some((target, _))) => target.clone(),
                    (None, None) => p.replicas.clone(),
                };
                partitions.push(replica_plan::PlanPartition {
                    topic: name.clone(),
                    partition,
                    replicas,
                    moving: p.reassignment.is_some() || proposed.is_some(),
                });
            }
        }
        (nodes, partitions)
    }

    /// A raft message from a peer.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(), ControllerError> {
        self.step_checked(bytes, None)
    }

    /// [`Controller::step`] for a message that came from node `sender` (proven by the
    /// transport): refused unless the raft message says it is from that node.
    pub fn step_from(&mut self, sender: NodeId, bytes: &[u8]) -> Result<(), ControllerError> {
        self.step_checked(bytes, Some(sender))
    }

    fn step_checked(
        &mut self,
        bytes: &[u8],
        sender: Option<NodeId>,
    ) -> Result<(), ControllerError> {
        let mut message = RaftMessage::parse_from_bytes(bytes)
            .map_err(|e| ControllerError::Codec(e.to_string()))?;
        if let Some(sender) = sender.filter(|s| raft_id(*s) != message.from) {
            return Err(ControllerError::Codec(format!(
                "raft message claims raft id {}, sent by node {sender}",
                message.from
            )));
        }
        if message.to != raft_id(self.config.node) {
            return Err(ControllerError::Codec(format!(
                "message for raft id {}",
                message.to
            )));
        }
        // Refused here, as input, so that persisting an entry in `ready` cannot fail.
        if let Some(entry) = message
            .entries
            .iter()
            .find(|e| usize::try_from(e.compute_size()).unwrap_or(usize::MAX) > ENTRY_BYTES_MAX)
        {
            return Err(ControllerError::Codec(format!(
                "raft entry {} over {ENTRY_BYTES_MAX} bytes",
                entry.index
            )));
        }
        // (Peers are not authenticated: a sender that speaks Raft correctly is believed.)
        if !self.voter_ids.contains(&message.from) {
            return Err(ControllerError::Codec(format!(
                "raft message from raft id {}, not a voter",
                message.from
            )));
        }
        self.screen(&mut message)?;
        let from = message.from;
        self.raw.step(message)?;
        if from == self.raw.raft.leader_id
            && let Some(node) = node_of(from)
        {
            self.leader_heard = Some((node, self.now));
        }
        Ok(())
    }

    /// Messages raft-rs would panic on, from a voter: refused, or made safe. Such bytes
    /// come from a socket.
    fn screen(&self, message: &mut RaftMessage) -> Result<(), ControllerError> {
        let log = &self.raw.raft.raft_log;
        match message.msg_type {
            // A heartbeat commits up to what the leader last heard this voter hold; past
            // this log's end (raft-rs: "to_commit is out of range") after the voter lost
            // its log (its controller directory removed, the fix for a damaged file) or
            // from a forged message. It is taken without the commit: the voter answers it,
            // learns the leader, and the leader sends the log once a new entry shows the
            // voter's log short (the commit index comes with the entries).
            MessageType::MsgHeartbeat if message.commit > log.last_index() => {
                message.commit = log.committed;
                Ok(())
            }
            MessageType::MsgSnapshot => Err(ControllerError::Codec(
                "snapshots are not used by this controller".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Proposes `command`; only the controller leader takes proposals. Its outcome comes
    /// as an [`Action::Applied`] with the returned id (a proposal can be lost if the
    /// leadership moves: then no such action comes and the caller retries).
    pub fn propose(&mut self, command: Command) -> Result<ProposalId, ControllerError> {
        self.check_leader()?;
        let data = command.encode()?;
        let id = ProposalId {
            node: self.config.node,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let mut context = Vec::with_capacity(12);
        context.extend_from_slice(&id.node.0.to_le_bytes());
        context.extend_from_slice(&id.seq.to_le_bytes());
        self.raw.propose(context, data)?;
        Ok(id)
    }

    fn check_leader(&self) -> Result<(), ControllerError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(ControllerError::NotLeader {
                leader: self.leader(),
            })
        }
    }

    /// A node registers (or re-registers, as a new incarnation after a restart) with the
    /// controller leader at `address`.
    pub fn register(
        &mut self,
        node: NodeId,
        address: &str,
        incarnation: u64,
    ) -> Result<ProposalId, ControllerError> {
        self.register_listening(node, address, None, incarnation)
    }

    /// [`Controller::register`] with the node's Kafka listener (`host:port`), if it has
    /// one: proposed as `RegisterListeners`, which carries both addresses.
    pub fn register_listening(
        &mut self,
        node: NodeId,
        address: &str,
        kafka_address: Option<&str>,
        incarnation: u64,
    ) -> Result<ProposalId, ControllerError> {
        self.check_leader()?;
        self.sessions.heartbeat(node, self.now);
        let session_expires_ms = self.sessions.expiry_from(self.now).0;
        let command = match kafka_address {
            None => Command::Register {
                node: node.0,
                address: address.to_owned(),
                incarnation,
                session_expires_ms,
            },
            Some(kafka) => Command::RegisterListeners {
                node: node.0,
                listeners: vec![
                    (command::SHARDLOG_LISTENER.to_owned(), address.to_owned()),
                    (command::KAFKA_LISTENER.to_owned(), kafka.to_owned()),
                ],
                incarnation,
                session_expires_ms,
            },
        };
        self.propose(command)
    }

    /// A heartbeat from incarnation `incarnation` of a registered node renews its
    /// session; a fenced node's heartbeat proposes its unfencing (once). A newer
    /// incarnation than the registered one is `ControllerError::NewIncarnation` (the
    /// node restarted: it registers again), an older one `StaleIncarnation` (ignored).
    pub fn heartbeat(&mut self, node: NodeId, incarnation: u64) -> Result<(), ControllerError> {
        self.check_leader()?;
        let info = self
            .metadata
            .nodes()
            .get(&node)
            .ok_or(ControllerError::UnknownNode(node))?;
        if incarnation > info.incarnation {
            return Err(ControllerError::NewIncarnation(node));
        }
        if incarnation < info.incarnation {
            return Err(ControllerError::StaleIncarnation(node));
        }
        let fenced = info.fenced;
        self.sessions.heartbeat(node, self.now);
        if fenced && self.sessions.propose_unfence(node) {
            let expires = self.sessions.expiry_from(self.now).0;
            if let Err(e) = self.propose(Command::Heartbeat {
                node: node.0,
                session_expires_ms: expires,
            }) {
                self.sessions.settled(node);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drives raft-rs's Ready cycle: the actions to perform, in order.
    ///
    /// The order: messages the leader may send while it persists (raft thesis 10.2.1);
    /// then one [`Action::Persist`] with this cycle's new entries and changed hard state
    /// (commit index included); then the outcomes of committed entries and the messages
    /// that depend on the persisted state (votes, append acknowledgements). After an error
    /// the controller is unusable (raft-rs's Ready was taken but not advanced): the driver
    /// stops it, and a restart recovers from the file.
    pub fn ready(&mut self) -> Result<Vec<Action>, ControllerError> {
        let mut out = Vec::new();
        if self.raw.has_ready() {
            let store = self.raw.raft.raft_log.store.clone();
            let mut rd = self.raw.ready();
            let mut persist = Vec::new();
            raft_file::encode_entries(rd.entries(), &mut persist)?;
            self.send(rd.take_messages(), &mut out)?;
            if !rd.snapshot().is_empty() {
                store.wl().apply_snapshot(rd.snapshot().clone())?;
            }
            let committed = rd.take_committed_entries();
            if !rd.entries().is_empty() {
                store.wl().append(rd.entries())?;
            }
            let mut hard_state_changed = false;
            if let Some(hard_state) = rd.hs() {
                store.wl().set_hardstate(hard_state.clone());
                hard_state_changed = true;
            }
            let persisted_messages = rd.take_persisted_messages();
            let mut light = self.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                store.wl().mut_hard_state().set_commit(commit);
                hard_state_changed = true;
            }
            // After the entries: a torn write may lose the hard state, never leave a commit
            // index beyond the log.
            if hard_state_changed {
                raft_file::encode_hard_state(store.rl().hard_state(), &mut persist);
            }
            if !persist.is_empty() {
                out.push(Action::Persist { bytes: persist });
            }
            self.apply(committed, &mut out);
            self.send(persisted_messages, &mut out)?;
            self.send(light.take_messages(), &mut out)?;
            self.apply(light.take_committed_entries(), &mut out);
            self.raw.advance_apply();
        }
        self.observe_role(&mut out);
        Ok(out)
    }

    fn send(
        &self,
        messages: Vec<RaftMessage>,
        out: &mut Vec<Action>,
    ) -> Result<(), ControllerError> {
        for message in messages {
            let Some(to) = node_of(message.to) else {
                continue;
            };
            let bytes = message
                .write_to_bytes()
                .map_err(|e| ControllerError::Codec(e.to_string()))?;
            out.push(Action::Send { to, bytes });
        }
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut Vec<Action>) {
        for entry in entries {
            if entry.data.is_empty() || entry.entry_type != EntryType::EntryNormal {
                continue; // the new leader's empty entry; no conf changes are proposed
            }
            let proposal = decode_context(&entry.context);
            let (command, outcome, changes) = match Command::decode(&entry.data) {
                Ok(command) => {
                    let mut changes = Vec::new();
                    let outcome = self.metadata.apply(&command, &mut changes);
                    self.settle_session(&command);
                    self.observe_moves(&command);
                    (Some(command), outcome, changes)
                }
                Err(_) => (None, Err(Refusal::Undecodable), Vec::new()),
            };
            out.push(Action::Applied {
                index: entry.index,
                proposal,
                command,
                outcome,
            });
            for change in &changes {
                self.observe_liveness(change);
            }
            out.extend(changes.into_iter().map(Action::Changed));
        }
    }

    fn observe_liveness(&mut self, change: &MetadataChange) {
        match change {
            MetadataChange::NodeFenced(node) => {
                self.live_since.remove(node);
                self.fenced_since.insert(*node, self.now);
            }
            MetadataChange::NodeRegistered { node, .. } | MetadataChange::NodeUnfenced(node) => {
                self.live_since.entry(*node).or_insert(self.now);
                self.fenced_since.remove(node);
            }
            _ => {}
        }
    }

    /// A move applied is no longer only proposed; a command that may end a move (an ISR
    /// change, a node back or gone) or ask for moves (a drain) calls for a planning round
    /// at the next tick, so the next moves start as soon as one finishes.
    fn observe_moves(&mut self, command: &Command) {
        match command {
            Command::ReassignPartition {
                topic, partition, ..
            } => {
                self.proposed_moves.remove(&(topic.clone(), *partition));
            }
            Command::ChangeIsr { .. }
            | Command::Heartbeat { .. }
            | Command::FenceNode { .. }
            | Command::DrainNode { .. } => self.replan = self.leading,
            _ => {}
        }
    }

    fn settle_session(&mut self, command: &Command) {
        match command {
            Command::RegisterNode { node, .. }
            | Command::Register { node, .. }
            | Command::Heartbeat { node, .. }
            | Command::FenceNode { node } => self.sessions.settled(NodeId(*node)),
            _ => {}
        }
    }

    fn observe_role(&mut self, out: &mut Vec<Action>) {
        let seen = (self.raw.raft.leader_id, self.raw.raft.term);
        if seen != self.seen_leader {
            self.seen_leader = seen;
            out.push(Action::ControllerLeader {
                leader: self.leader(),
                term: seen.1,
            });
        }
        let leading = self.is_leader();
        if leading != self.leading {
            // A new leader gives every node a full session (grace) before fencing it,
            // except the leader it replaces: that one's session runs from when this node
            // last heard from it, so a dead controller leader is fenced (and its
            // partitions fail over) one session after its death, not after the election.
            self.sessions.clear();
            if leading
                && let Some((old, heard)) = self.leader_heard.take()
                && old != self.config.node
            {
                self.sessions.heartbeat(old, heard);
            }
            self.last_rebalance = self.now;
            self.leading = leading;
            // What the last term proposed may be lost; an operator's rebalance asked of
            // another leader is that leader's (it is asked again after a failover).
            self.proposed_moves.clear();
            self.rebalance_requested = false;
            self.reordered.clear();
        }
    }
}

fn decode_context(context: &[u8]) -> Option<ProposalId> {
    let node = u32::from_le_bytes(context.get(0..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(context.get(4..12)?.try_into().ok()?);
    Some(ProposalId {
        node: NodeId(node),
        seq,
    })
}
