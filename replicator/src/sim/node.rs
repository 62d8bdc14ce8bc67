//! One simulated node, built from the production parts: its controller voter (the
//! [`Controller`] net runs: raft-rs, the metadata, failover and session rules), its Raft
//! file (bytes that survive a crash, read back by [`raft_file::recover`]), and its
//! partition replica run by the [`ReplicaDriver`] on the engine's `PartitionLog` over
//! `SimStorage`. The driver's tasks run on a single-threaded [`LocalPool`] that the event
//! loop polls until stalled after every event ([`Node::pump`]), so a seed replays exactly.
//!
//! The glue is net's (`net/src/server/cluster`): the node heartbeats to the controller
//! leader it knows once its voter caught up; its replica's ISR proposals go to that
//! leader ([`Controller::propose_isr`]); sessions and registrations are
//! [`Controller::session`]; the replica is told its role by [`replica_input`] from this
//! node's own voter's metadata. A crash drops the voter, the driver and its tasks (a
//! produce waiting there is never answered), and crashes the log's storage.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use futures::executor::{LocalPool, block_on};
use futures::task::LocalSpawnExt;
use shardlog_engine::{Offset, SimStorage};

use crate::config::ReplicaConfig;
use crate::controller::raft_file;
use crate::controller::{
    Action as ControllerAction, Command, Controller, ControllerConfig, IsrChange, RoleApplied,
    replica_input,
};
use crate::driver::{ReplicaDriver, Transport};
use crate::error::ProduceError;
use crate::ids::{Incarnation, NodeId, RequestId, Tick};
use crate::message::Message;
use crate::replica::{Acks, Produced};
use crate::sim::storage::SimLog;

/// The simulated topic: one partition, replicated on every node.
pub const TOPIC: &str = "sim";
/// Its partition.
pub const PARTITION: u32 = 0;

/// A replica's driver in the simulation.
pub type SimDriver = ReplicaDriver<SimStorage, SimTransport>;

type Outbox = Rc<RefCell<Vec<(NodeId, Message)>>>;
type Answers = Rc<RefCell<Vec<(RequestId, Result<Produced, ProduceError>)>>>;

/// The driver's transport: messages wait in the node's outbox until the event loop
/// routes them through the simulated network.
pub struct SimTransport {
    outbox: Outbox,
}

impl Transport for SimTransport {
    fn send(&self, to: NodeId, message: Message) {
        self.outbox.borrow_mut().push((to, message));
    }
}

/// Settings every node shares.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Every node (and controller voter).
    pub voters: Vec<NodeId>,
    /// The replica's settings.
    pub replica: ReplicaConfig,
    /// The controller's session timeout, ms.
    pub session_ms: u64,
    /// How often a node heartbeats to the controller leader, ms.
    pub heartbeat_ms: u64,
    /// Raft tick, ms.
    pub raft_tick_ms: u64,
    /// The controller leader's preferred-leader elections, every this many ms.
    pub rebalance_ms: u64,
}

/// What a node asks of the rest of the simulated world.
#[derive(Debug)]
pub enum Effect {
    /// A replication message to the replica on `to`.
    Replicate {
        /// The peer.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Raft message bytes for the voter on `to`.
    Raft {
        /// The peer.
        to: NodeId,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// A session heartbeat for the controller leader `to`.
    Heartbeat {
        /// The controller leader this node knows.
        to: NodeId,
    },
    /// This node's ISR change, for the controller leader `to`.
    Propose {
        /// The controller leader this node knows.
        to: NodeId,
        /// The change.
        change: IsrChange,
    },
    /// A produce request's answer.
    Answer {
        /// The request.
        request: RequestId,
        /// The answer.
        result: Result<Produced, ProduceError>,
    },
    /// A leader election this node proposed moved the partition's leader.
    LeaderMoved,
}

/// A node while it runs.
struct Running {
    controller: Controller,
    driver: Rc<SimDriver>,
    pool: LocalPool,
    outbox: Outbox,
    answers: Answers,
    failed: Rc<RefCell<Option<String>>>,
    role_applied: RoleApplied,
    /// Its voter caught up once since the start (net publishes no view before).
    view_ready: bool,
    last_heartbeat: Option<Tick>,
}

/// One node of the simulated cluster.
pub struct Node {
    /// The node.
    pub id: NodeId,
    /// Its current (or last) run: 1 for the first start, + 1 per restart.
    pub incarnation: Incarnation,
    /// Its partition log (open even while the node is down: the checkers read it).
    pub log: SimLog,
    /// The log start at the end of the last tick.
    seen_start: Offset,
    /// Ticks whose retention deleted segments.
    pub retained: u64,
    /// Log start moves between ticks: resets to a leader's log start.
    pub resets: u64,
    raft_file: Vec<u8>,
    running: Option<Running>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Node");
        d.field("id", &self.id)
            .field("incarnation", &self.incarnation)
            .field("log", &self.log);
        if let Some(r) = &self.running {
            d.field("controller_leader", &r.controller.leader())
                .field("applied_index", &r.controller.applied_index())
                .field(
                    "partition",
                    &r.controller.metadata().partition(TOPIC, PARTITION),
                )
                .field("driver", &r.driver);
        }
        d.finish_non_exhaustive()
    }
}

impl Node {
    /// A node that has not started yet, with an empty log (whose retention keeps
    /// `retention_bytes`, or everything) and no Raft state.
    #[must_use]
    pub fn new(id: NodeId, retention_bytes: Option<u64>) -> Node {
        Node {
            id,
            incarnation: Incarnation(0),
            log: SimLog::new(retention_bytes),
            seen_start: Offset(0),
            retained: 0,
            resets: 0,
            raft_file: Vec::new(),
            running: None,
        }
    }

    /// Whether it runs.
    #[must_use]
    pub fn alive(&self) -> bool {
        self.running.is_some()
    }

    /// Its address as registered with the controller.
    fn address(&self) -> String {
        format!("sim-node-{}", self.id.0)
    }

    /// Starts a new run: the voter resumes from the Raft file, the driver opens (and
    /// replays) the log.
    pub fn start(&mut self, now: Tick, settings: &NodeSettings) -> Result<(), String> {
        assert!(self.running.is_none(), "{} started twice", self.id);
        self.incarnation = Incarnation(self.incarnation.0 + 1);
        let recovered = raft_file::recover(&self.raft_file)
            .map_err(|e| format!("{}: raft file: {e}", self.id))?;
        if recovered.torn.is_some() {
            return Err(format!("{}: the raft file has a torn tail", self.id));
        }
        let mut config = ControllerConfig::new(self.id, settings.voters.clone());
        config.tick_ms = settings.raft_tick_ms;
        config.session_timeout_ms = settings.session_ms;
        config.rebalance_interval_ms = settings.rebalance_ms;
        config.register_every_ms = settings.session_ms;
        // Distinct per run, as net's wall-clock base: old entries are applied again.
        config.first_proposal_seq = self.incarnation.0 << 40;
        let controller = Controller::recover(config, now, recovered)
            .map_err(|e| format!("{}: controller: {e}", self.id))?;
        let outbox = Outbox::default();
        let transport = SimTransport {
            outbox: outbox.clone(),
        };
        let driver = block_on(ReplicaDriver::open(
            self.log.shared(),
            transport,
            settings.replica.clone(),
            self.id,
            self.incarnation,
            now,
        ))
        .map_err(|e| format!("{}: opening the replica: {e}", self.id))?;
        let driver = Rc::new(driver);
        let pool = LocalPool::new();
        let failed = Rc::new(RefCell::new(None));
        let (runner, stopped) = (driver.clone(), failed.clone());
        pool.spawner()
            .spawn_local(async move {
                if let Err(e) = runner.run().await {
                    *stopped.borrow_mut() = Some(e.to_string());
                }
            })
            .map_err(|e| e.to_string())?;
        self.running = Some(Running {
            controller,
            driver,
            pool,
            outbox,
            answers: Answers::default(),
            failed,
            role_applied: None,
            view_ready: false,
            last_heartbeat: None,
        });
        Ok(())
    }

    /// Crashes the node: its voter, driver and tasks are gone; the log loses what was not
    /// synced (maybe tearing the last write); the Raft file keeps every record (each was
    /// synced before the actions after it, as net does).
    pub fn crash(&mut self) {
        drop(self.running.take());
        self.log.crash();
    }

    /// The voter, while the node runs.
    #[must_use]
    pub fn controller(&self) -> Option<&Controller> {
        self.running.as_ref().map(|r| &r.controller)
    }

    /// The replica's driver, while the node runs.
    #[must_use]
    pub fn driver(&self) -> Option<&SimDriver> {
        self.running.as_ref().map(|r| &*r.driver)
    }

    /// Time passed: the voter's and the replica's timers; the session heartbeat (every
    /// `heartbeat_ms`, once the voter caught up) and the replica's ISR proposals, to the
    /// controller leader this node knows (or taken here if it is the leader).
    pub fn tick(&mut self, now: Tick, heartbeat_ms: u64) -> Vec<Effect> {
        let (id, address, incarnation) = (self.id, self.address(), self.incarnation.0);
        let Some(r) = self.running.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // Between ticks only a reset (the driver's) moves the log start; here, retention.
        let start = self.log.log_start();
        if start > self.seen_start {
            self.resets += 1;
        }
        self.seen_start = self.log.retain();
        if self.seen_start > start {
            self.retained += 1;
        }
        r.controller.tick(now);
        r.driver.tick(now);
        let due = r
            .last_heartbeat
            .is_none_or(|at| now.since(at) >= heartbeat_ms);
        if due && r.controller.caught_up() {
            r.last_heartbeat = Some(now);
            match r.controller.leader() {
                Some(leader) if leader == id => {
                    // Refusals are the controller's to make; the next heartbeat retries.
                    let _ = r.controller.session(id, &address, incarnation);
                }
                Some(leader) => out.push(Effect::Heartbeat { to: leader }),
                None => {}
            }
        }
        for proposal in r.driver.take_proposals() {
            let change = IsrChange {
                topic: TOPIC.to_owned(),
                partition: PARTITION,
                leader_epoch: proposal.epoch,
                partition_epoch: proposal.isr_version,
                isr: proposal.isr,
            };
            if r.controller.is_leader() {
                // Lost if refused: the replica proposes again on its timer.
                let _ = r.controller.propose_isr(id, change);
            } else if let Some(leader) = r.controller.leader() {
                out.push(Effect::Propose { to: leader, change });
            }
        }
        out
    }

    /// Raft message bytes from the voter on `from`.
    pub fn raft(&mut self, from: NodeId, bytes: &[u8]) {
        if let Some(r) = self.running.as_mut() {
            // A refused message is dropped, as net does (stale terms, unknown peers).
            let _ = r.controller.step_from(from, bytes);
        }
    }

    /// A session heartbeat from incarnation `incarnation` of `from`; taken only by the
    /// controller leader.
    pub fn heartbeat_from(&mut self, from: NodeId, incarnation: Incarnation) {
        let address = format!("sim-node-{}", from.0);
        if let Some(r) = self.running.as_mut().filter(|r| r.controller.is_leader()) {
            let _ = r.controller.session(from, &address, incarnation.0);
        }
    }

    /// An ISR change from `from`'s replica; taken only by the controller leader.
    pub fn propose_from(&mut self, from: NodeId, change: IsrChange) {
        if let Some(r) = self.running.as_mut().filter(|r| r.controller.is_leader()) {
            let _ = r.controller.propose_isr(from, change);
        }
    }

    /// Proposes an administrative command, if this node leads the controller.
    pub fn propose(&mut self, command: Command) -> bool {
        self.running
            .as_mut()
            .filter(|r| r.controller.is_leader())
            .is_some_and(|r| r.controller.propose(command).is_ok())
    }

    /// A replication message from the replica on `from`.
    pub fn receive(&mut self, from: NodeId, message: Message) {
        if let Some(r) = &self.running {
            r.driver.receive(from, message);
        }
    }

    /// A produce request; its answer comes back as an [`Effect::Answer`] (never, if the
    /// node crashes first).
    pub fn produce(
        &mut self,
        request: RequestId,
        acks: Acks,
        batch: Vec<u8>,
    ) -> Result<(), String> {
        let Some(r) = &self.running else {
            return Ok(());
        };
        // A `Vec` becomes `Bytes`, then `BytesMut`, without a copy.
        let answer = r.driver.submit(acks, bytes::Bytes::from(batch).into());
        let answers = r.answers.clone();
        r.pool
            .spawner()
            .spawn_local(async move {
                let result = answer.await;
                answers.borrow_mut().push((request, result));
            })
            .map_err(|e| e.to_string())
    }

    /// Syncs the log, as the engine's background syncs would (flush policy `never`); the
    /// driver reports the new durable end on its next tick.
    pub fn sync(&mut self) -> Result<(), String> {
        let Some(r) = &self.running else {
            return Ok(());
        };
        let (log, failed) = (r.driver.log().clone(), r.failed.clone());
        r.pool
            .spawner()
            .spawn_local(async move {
                if let Err(e) = log.sync().await {
                    *failed.borrow_mut() = Some(format!("sync: {e}"));
                }
            })
            .map_err(|e| e.to_string())
    }

    /// Runs everything due on this node until it waits for the outside: the voter's
    /// Ready cycle (the Raft file appended, messages out, entries applied), the replica
    /// told its role from the metadata, the driver's tasks polled until stalled; returns
    /// what must leave the node.
    pub fn pump(&mut self) -> Result<Vec<Effect>, String> {
        let (id, incarnation) = (self.id, self.incarnation.0);
        let Some(r) = self.running.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let actions = r
            .controller
            .ready()
            .map_err(|e| format!("{id}: controller: {e}"))?;
        for action in actions {
            match action {
                ControllerAction::Persist { bytes } => self.raft_file.extend_from_slice(&bytes),
                ControllerAction::Send { to, bytes } => out.push(Effect::Raft { to, bytes }),
                ControllerAction::Applied {
                    proposal,
                    command: Some(Command::ElectLeader { .. }),
                    outcome: Ok(()),
                    ..
                } if proposal.is_some_and(|p| p.node == id) => out.push(Effect::LeaderMoved),
                ControllerAction::Applied { .. }
                | ControllerAction::Changed(_)
                | ControllerAction::ControllerLeader { .. } => {}
            }
        }
        r.view_ready |= r.controller.caught_up();
        if r.view_ready {
            let metadata = r.controller.metadata();
            if let Some(state) = metadata.partition(TOPIC, PARTITION) {
                let rejoined = metadata.rejoined(id, incarnation);
                let input = replica_input(metadata, state, id, rejoined, &mut r.role_applied);
                if let Some(input) = input {
                    r.driver.control(input);
                }
            }
        }
        r.pool.run_until_stalled();
        if let Some(failed) = r.failed.borrow().as_ref() {
            return Err(format!("{id}: the driver stopped: {failed}"));
        }
        for (to, message) in r.outbox.borrow_mut().drain(..) {
            out.push(Effect::Replicate { to, message });
        }
        for (request, result) in r.answers.borrow_mut().drain(..) {
            out.push(Effect::Answer { request, result });
        }
        Ok(out)
    }
}
