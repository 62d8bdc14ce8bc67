//! The simulated cluster and its event loop: one partition, replicated on every node or
//! (`SimConfig::replication_factor`) on some of them, moved between them by reassignments
//! (`SimConfig::moves`) while the workload and the faults run.
//!
//! Every node runs the production controller voter and replica driver (`node.rs`); this
//! file only carries their messages through the simulated network, runs the clients, and
//! injects the faults. After every event each running node is pumped (its voter's Ready
//! cycle, its driver's tasks until stalled) and what leaves it is routed.
//!
//! Events are ordered by (virtual time, sequence number); every choice comes from one
//! seeded [`Rng`], and nothing iterates a hash map, so a seed replays exactly.

use std::collections::BTreeMap;
use std::fmt;

use shardlog_engine::Offset;

use crate::config::ReplicaConfig;
use crate::controller::{Command, IsrChange, Metadata, PartitionState};
use crate::ids::{Incarnation, NodeId, RequestId, Tick};
use crate::message::{self, Message};
use crate::replica::Acks;
use crate::sim::checker::{Checker, NodeView};
use crate::sim::network::{Network, NetworkFaults};
use crate::sim::node::{Effect, Node, NodeSettings, PARTITION, TOPIC};
use crate::sim::rng::Rng;
use crate::sim::workload::Producer;

/// How often a node's timers (voter, replica, heartbeat) run, ms.
const TICK_MS: u64 = 10;
/// A node heartbeats to the controller leader this often, ms.
const HEARTBEAT_MS: u64 = 20;
/// The topic is proposed again this long after a proposal that did not create it, ms.
const CREATE_RETRY_MS: u64 = 200;

/// Settings of one simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes, each holding a replica and a controller voter.
    pub nodes: u32,
    /// Virtual time to run.
    pub duration_ms: u64,
    /// Every replica's settings.
    pub replica: ReplicaConfig,
    /// The controller fences a node whose heartbeats stopped this long.
    pub session_ms: u64,
    /// A producer retries a request unanswered this long.
    pub client_timeout_ms: u64,
    /// After `duration_ms`: faults stop, the network heals, crashed nodes restart and
    /// producers send nothing new; by the end of this every batch sent must be
    /// acknowledged and every live replica hold the whole committed log (liveness: a
    /// cluster that lost nothing must not stay stuck).
    pub settle_ms: u64,
    /// Every node's retention (the engine's, by size, capped at the high watermark) on
    /// each tick: `None` keeps everything. Small values make followers that were down or
    /// cut off fall below their leader's log start, so they must reset to it.
    pub retention_bytes: Option<u64>,
    /// The partition's replicas: `None`, every node; fewer leave nodes to move to. A node
    /// outside the replica set keeps its replica's driver (as a follower nobody ships to,
    /// its log what it held when it left), so a move back to it catches up from there.
    pub replication_factor: Option<u16>,
    /// Moves among the faults: the controller leader is asked (as an operator's
    /// `shardlog partition reassign` does) to move the partition to a random set of
    /// `replication_factor` nodes in a random order (replacing the leader's node too, or a
    /// move in progress), or (3 in 10) to drain a random node or end the drain in progress
    /// (`shardlog node decommission`, whose moves the controller's planner makes), and the
    /// moves run: the added replicas catch up outside the ISR, join it, the removed ones
    /// leave, a leaving leader hands over.
    pub moves: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            duration_ms: 5_000,
            replica: ReplicaConfig {
                replica_lag_ms: 300,
                min_insync: 2,
                retry_ms: 60,
                heartbeat_ms: 20,
                ships_inflight_max: 4,
                request_timeout_ms: 1_500,
                waiters_max: 1024,
                // The checkers want acks=all durable on disk: synced, not written.
                durable_when_acked: false,
            },
            session_ms: 150,
            client_timeout_ms: 600,
            settle_ms: 4_000,
            retention_bytes: None,
            replication_factor: None,
            moves: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Events processed (a checker pass after each).
    pub steps: u64,
    /// End of the committed log.
    pub committed_end: u64,
    /// Batches acknowledged under acks=all, read by the consumer, leaders fully checked.
    pub checked: [u64; 3],
    /// Partition leader epochs the controller went through.
    pub elections: u64,
    /// Crashes, partitions, leader moves injected.
    pub faults: [u64; 3],
    /// Messages sent, dropped, duplicated.
    pub messages: [u64; 3],
    /// Produce answers: acknowledged, failed.
    pub answers: [u64; 2],
    /// Followers reset to their leader's log start (retention deleted what they needed).
    pub resets: u64,
    /// Ticks whose retention deleted segments, over all nodes.
    pub retained: u64,
    /// Reassignments asked for, and replica-set changes they committed.
    pub moves: [u64; 2],
}

/// A checker or an assertion failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed that replays it.
    pub seed: u64,
    /// The step it failed at.
    pub step: u64,
    /// Virtual time.
    pub at: Tick,
    /// What failed.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {} ({}): {}; replay with SHARDLOG_SEED={}",
            self.seed, self.step, self.at, self.message, self.seed
        )
    }
}

#[derive(Debug)]
enum Event {
    /// A replication message as a peer link carries it: the envelope's archive and the
    /// data region beside it (a ship's batches, back to back).
    Replicate {
        to: NodeId,
        from: NodeId,
        bytes: Vec<u8>,
        data: bytes::Bytes,
    },
    Raft {
        to: NodeId,
        from: NodeId,
        bytes: Vec<u8>,
    },
    Heartbeat {
        to: NodeId,
        from: NodeId,
        incarnation: Incarnation,
    },
    Propose {
        to: NodeId,
        from: NodeId,
        change: IsrChange,
    },
    Tick {
        node: NodeId,
        incarnation: Incarnation,
    },
    Sync {
        node: NodeId,
        incarnation: Incarnation,
    },
    ProducerTick(usize),
    Consume,
    Fault,
    Restart(NodeId),
    Heal,
    Settle,
}

/// The whole simulated world.
pub struct Cluster {
    config: SimConfig,
    settings: NodeSettings,
    rng: Rng,
    now: Tick,
    sequence: u64,
    events: BTreeMap<(Tick, u64), Event>,
    nodes: Vec<Node>,
    network: Network,
    checker: Checker,
    producers: Vec<Producer>,
    requests: BTreeMap<RequestId, (usize, i32)>,
    next_request: u64,
    consumer_at: Offset,
    /// When the topic was last proposed.
    create_proposed: Option<Tick>,
    /// Past `duration_ms`: no faults, no new batches (see `SimConfig::settle_ms`).
    settling: bool,
    /// The partition's replicas as last checked (committed moves are counted).
    replicas_seen: Vec<NodeId>,
    report: Report,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("now", &self.now)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Runs one seed to the end or to the first failure.
pub fn run(seed: u64, config: &SimConfig) -> Result<Report, Failure> {
    let mut cluster = Cluster::new(seed, config.clone());
    let fail = |cluster: &Cluster, message| Failure {
        seed,
        step: cluster.report.steps,
        at: cluster.now,
        message,
    };
    if let Err(message) = cluster.start() {
        return Err(fail(&cluster, message));
    }
    let end = cluster.config.duration_ms + cluster.config.settle_ms;
    while let Some(((at, _), event)) = cluster.events.pop_first() {
        if at.0 > end {
            break;
        }
        cluster.now = at;
        cluster.report.steps += 1;
        let result = cluster
            .handle(event)
            .and_then(|()| cluster.pump())
            .and_then(|()| cluster.check());
        if let Err(message) = result {
            return Err(fail(&cluster, message));
        }
    }
    if let Err(message) = cluster.settled() {
        return Err(fail(&cluster, message));
    }
    Ok(cluster.finish())
}

impl Cluster {
    /// A cluster whose every choice follows from `seed`.
    #[must_use]
    pub fn new(seed: u64, config: SimConfig) -> Cluster {
        let mut rng = Rng::new(seed);
        let faults = NetworkFaults {
            drop_per_mille: rng.between(0, 100),
            duplicate_per_mille: rng.between(0, 50),
            delay_ms_max: rng.between(1, 30),
            straggle_per_mille: rng.between(0, 20),
        };
        let ids: Vec<NodeId> = (0..config.nodes).map(NodeId).collect();
        let settings = NodeSettings {
            voters: ids.clone(),
            replica: config.replica.clone(),
            session_ms: config.session_ms,
            heartbeat_ms: HEARTBEAT_MS,
            raft_tick_ms: TICK_MS,
            rebalance_ms: 1_000,
        };
        Cluster {
            rng,
            now: Tick(0),
            sequence: 0,
            events: BTreeMap::new(),
            nodes: ids
                .iter()
                .map(|&id| Node::new(id, config.retention_bytes))
                .collect(),
            network: Network::new(faults),
            checker: Checker::default(),
            producers: vec![
                Producer::new(1, Acks::All),
                Producer::new(2, Acks::All),
                Producer::new(3, Acks::Leader),
            ],
            requests: BTreeMap::new(),
            next_request: 0,
            consumer_at: Offset(0),
            create_proposed: None,
            settling: false,
            replicas_seen: Vec::new(),
            report: Report {
                seed,
                ..Report::default()
            },
            settings,
            config,
        }
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.sequence += 1;
        self.events
            .insert((self.now.after(after_ms), self.sequence), event);
    }

    fn start(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.start_node(i)?;
        }
        for p in 0..self.producers.len() {
            let delay = self.rng.between(1, 20);
            self.schedule(delay, Event::ProducerTick(p));
        }
        self.schedule(20, Event::Consume);
        let delay = self.rng.between(200, 500);
        self.schedule(delay, Event::Fault);
        self.schedule(self.config.duration_ms, Event::Settle);
        Ok(())
    }

    /// Starts (or restarts) the node at `index` and its timers.
    fn start_node(&mut self, index: usize) -> Result<(), String> {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(index) else {
            return Ok(());
        };
        node.start(now, &self.settings)?;
        let (node, incarnation) = (node.id, node.incarnation);
        let delay = self.rng.between(1, TICK_MS);
        self.schedule(delay, Event::Tick { node, incarnation });
        let delay = self.rng.between(1, 10);
        self.schedule(delay, Event::Sync { node, incarnation });
        Ok(())
    }

    fn node_index(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The running node `id`, of `incarnation` if given.
    fn running(&mut self, id: NodeId, incarnation: Option<Incarnation>) -> Option<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id && n.alive() && incarnation.is_none_or(|i| i == n.incarnation))
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Replicate {
                to,
                from,
                bytes,
                data,
            } => self.deliver(to, from, &bytes, data)?,
            Event::Raft { to, from, bytes } => {
                if let Some(node) = self.running(to, None) {
                    node.raft(from, &bytes);
                }
            }
            Event::Heartbeat {
                to,
                from,
                incarnation,
            } => {
                if let Some(node) = self.running(to, None) {
                    node.heartbeat_from(from, incarnation);
                }
            }
            Event::Propose { to, from, change } => {
                if let Some(node) = self.running(to, None) {
                    node.propose_from(from, change);
                }
            }
            Event::Tick { node, incarnation } => self.tick(node, incarnation)?,
            Event::Sync { node, incarnation } => {
                if let Some(n) = self.running(node, Some(incarnation)) {
                    n.sync()?;
                    let next = self.rng.between(1, 15);
                    self.schedule(next, Event::Sync { node, incarnation });
                }
            }
            Event::ProducerTick(p) => self.producer_tick(p)?,
            Event::Consume => self.consume()?,
            Event::Fault => self.fault(),
            Event::Restart(node) => self.restart(node)?,
            Event::Heal => self.network.heal(),
            Event::Settle => self.settle()?,
        }
        Ok(())
    }

    fn tick(&mut self, id: NodeId, incarnation: Incarnation) -> Result<(), String> {
        let now = self.now;
        let Some(node) = self.running(id, Some(incarnation)) else {
            return Ok(());
        };
        let effects = node.tick(now, HEARTBEAT_MS);
        self.create_topic(id);
        self.schedule(
            TICK_MS,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        self.perform(id, effects)
    }

    /// The operator's part: once every node registered, the controller leader is asked to
    /// create the topic (one partition on every node), until it exists.
    fn create_topic(&mut self, id: NodeId) {
        let now = self.now;
        let due = self
            .create_proposed
            .is_none_or(|at| now.since(at) >= CREATE_RETRY_MS);
        let nodes = self.nodes.len();
        let replication_factor = self
            .config
            .replication_factor
            .unwrap_or_else(|| u16::try_from(nodes).unwrap_or(u16::MAX));
        let min_insync = u16::try_from(self.config.replica.min_insync).unwrap_or(1);
        let Some(node) = self.running(id, None) else {
            return;
        };
        let ready = node.controller().is_some_and(|c| {
            c.is_leader()
                && c.metadata().topics().is_empty()
                && c.metadata().live_nodes().len() == nodes
        });
        if !(due && ready) {
            return;
        }
        node.propose(Command::CreateTopic {
            name: TOPIC.to_owned(),
            partitions: 1,
            replication_factor,
            min_insync,
            config: Vec::new(),
        });
        self.create_proposed = Some(now);
    }

    /// Pumps every running node and routes what leaves it.
    fn pump(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            let Some(node) = self.nodes.get_mut(index) else {
                continue;
            };
            let id = node.id;
            let effects = node.pump()?;
            self.perform(id, effects)?;
        }
        Ok(())
    }

    fn perform(&mut self, id: NodeId, effects: Vec<Effect>) -> Result<(), String> {
        let incarnation = self
            .running(id, None)
            .map_or(Incarnation(0), |n| n.incarnation);
        for effect in effects {
            match effect {
                Effect::Replicate { to, message } => self.send(id, to, message)?,
                Effect::Raft { to, bytes } => {
                    let from = id;
                    self.route_control(id, to, |to| Event::Raft {
                        to,
                        from,
                        bytes: bytes.clone(),
                    });
                }
                Effect::Heartbeat { to } => self.route_control(id, to, |to| Event::Heartbeat {
                    to,
                    from: id,
                    incarnation,
                }),
                Effect::Propose { to, change } => {
                    self.route_control(id, to, |to| Event::Propose {
                        to,
                        from: id,
                        change: change.clone(),
                    });
                }
                Effect::Answer { request, result } => self.answer(id, request, result)?,
                Effect::LeaderMoved => self.report.faults[2] += 1,
            }
        }
        Ok(())
    }

    /// A controller-plane message (Raft, heartbeat, ISR proposal) from `from` to `to`.
    fn route_control(&mut self, from: NodeId, to: NodeId, event: impl Fn(NodeId) -> Event) {
        for delay in self.network.route(&mut self.rng, from, to, true) {
            self.schedule(delay, event(to));
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) -> Result<(), String> {
        let (envelope, batches) = message::seal(PARTITION, from, to, message);
        let bytes = message::encode(&envelope).map_err(|e| e.to_string())?;
        // One data region, as a socket delivers it (the chunks were sent back to back).
        let data = match batches.chunks() {
            [] => bytes::Bytes::new(),
            [one] => one.clone(),
            chunks => bytes::Bytes::from(chunks.concat()),
        };
        for delay in self.network.route(&mut self.rng, from, to, false) {
            self.schedule(
                delay,
                Event::Replicate {
                    to,
                    from,
                    bytes: bytes.to_vec(),
                    data: data.clone(),
                },
            );
        }
        Ok(())
    }

    fn deliver(
        &mut self,
        to: NodeId,
        from: NodeId,
        bytes: &[u8],
        data: bytes::Bytes,
    ) -> Result<(), String> {
        let Some(node) = self.running(to, None) else {
            return Ok(());
        };
        let envelope = message::decode(bytes).map_err(|e| format!("undecodable envelope: {e}"))?;
        let received =
            message::open(envelope, data).map_err(|e| format!("refused shipped data: {e}"))?;
        if received.to != to.0 || received.from != from.0 || received.partition != PARTITION {
            return Err("misrouted envelope".to_owned());
        }
        node.receive(from, received.message);
        Ok(())
    }

    /// The metadata of the voter that applied the most: committed, so the truth as far
    /// as any node knows it.
    fn truth(&self) -> Option<&Metadata> {
        self.nodes
            .iter()
            .filter_map(Node::controller)
            .max_by_key(|c| c.applied_index())
            .map(crate::controller::Controller::metadata)
    }

    /// The partition as the truth has it.
    fn partition(&self) -> Option<&PartitionState> {
        self.truth()?.partition(TOPIC, PARTITION)
    }
}

// Clients: producers and the consumer.
impl Cluster {
    fn answer(
        &mut self,
        from: NodeId,
        request: RequestId,
        result: Result<crate::replica::Produced, crate::error::ProduceError>,
    ) -> Result<(), String> {
        let Some((p, sequence)) = self.requests.remove(&request) else {
            return Ok(());
        };
        let Some(producer) = self.producers.get_mut(p) else {
            return Ok(());
        };
        let current = producer
            .outstanding
            .get(&sequence)
            .and_then(|o| o.request)
            .map(|(r, _)| r);
        if current != Some(request) {
            return Ok(());
        }
        match result {
            Ok(produced) => {
                self.report.answers[0] += 1;
                producer.outstanding.remove(&sequence);
                // The leader appends a sequence only after the ones before it, so those
                // are in the log too (and committed, under acks=all): a batch whose
                // answer was lost in a crash is resolved here, as Kafka's producer does,
                // instead of being retried once it is past the leader's dedup window.
                producer.outstanding.retain(|s, _| *s > sequence);
                if producer.acks == Acks::All {
                    let id = producer.producer_id;
                    let log = &self
                        .nodes
                        .iter()
                        .find(|n| n.id == from)
                        .ok_or("no node")?
                        .log;
                    self.checker
                        .acked(log, produced.base_offset, (id, sequence))?;
                }
            }
            Err(_) => {
                self.report.answers[1] += 1;
                producer.rewind(sequence);
            }
        }
        Ok(())
    }

    /// Where a client sends: the partition leader in the metadata of a random running
    /// node (it may be stale: the client is then refused and retries), or now and then
    /// a random node.
    fn produce_target(&mut self) -> Option<NodeId> {
        let alive: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.alive())
            .map(|n| n.id)
            .collect();
        if self.rng.chance(100) {
            return self.rng.pick(&alive);
        }
        let asked = self.rng.pick(&alive)?;
        let node = self.nodes.iter().find(|n| n.id == asked)?;
        node.controller()?
            .metadata()
            .partition(TOPIC, PARTITION)?
            .leader
    }

    fn producer_tick(&mut self, p: usize) -> Result<(), String> {
        let now = self.now;
        let timeout = self.config.client_timeout_ms;
        let records = u32::try_from(self.rng.between(1, 3)).unwrap_or(1);
        let target = self.produce_target();
        let Some(producer) = self.producers.get_mut(p) else {
            return Ok(());
        };
        if !self.settling {
            producer.make_batch(records, now);
        }
        let stale: Vec<i32> = producer
            .outstanding
            .iter()
            .filter(|(_, o)| o.request.is_some_and(|(_, at)| now.since(at) > timeout))
            .map(|(s, _)| *s)
            .collect();
        if let Some(first) = stale.first() {
            producer.rewind(*first);
        }
        let unsent: Vec<(i32, Vec<u8>)> = producer
            .outstanding
            .iter()
            .filter(|(_, o)| o.request.is_none())
            .map(|(s, o)| (*s, o.bytes.clone()))
            .collect();
        let acks = producer.acks;
        if let Some(target) = target.filter(|t| self.nodes.iter().any(|n| n.id == *t && n.alive()))
        {
            for (sequence, batch) in unsent {
                self.next_request += 1;
                let request = RequestId(self.next_request);
                self.requests.insert(request, (p, sequence));
                if let Some(o) = self
                    .producers
                    .get_mut(p)
                    .and_then(|pr| pr.outstanding.get_mut(&sequence))
                {
                    o.request = Some((request, now));
                }
                if let Some(node) = self.running(target, None) {
                    node.produce(request, acks, batch)?;
                }
            }
        }
        let next = self.rng.between(3, 12);
        self.schedule(next, Event::ProducerTick(p));
        Ok(())
    }

    fn consume(&mut self) -> Result<(), String> {
        let alive: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes.get(i).is_some_and(Node::alive))
            .collect();
        if let Some(index) = self.rng.pick(&alive) {
            let views = views(&self.nodes);
            let node = views.get(index).ok_or("no view")?;
            let high_watermark = node.high_watermark;
            // Retention deleted what it had not read yet: it goes on from the log start
            // (a Kafka consumer's `auto.offset.reset=earliest`).
            let mut at = self.consumer_at.max(node.log.log_start());
            let reads: Vec<(Offset, Vec<u8>)> = node
                .log
                .batches_from(at)
                .into_iter()
                .take(5)
                .take_while(|(base, _)| *base < high_watermark)
                .collect();
            for (base, bytes) in reads {
                if base != at {
                    break;
                }
                let min_insync = self.config.replica.min_insync;
                self.checker
                    .consumed(node, &views, base, &bytes, min_insync)?;
                at = shardlog_engine::batch::BatchHeader::parse(&bytes)
                    .map_err(|e| e.to_string())?
                    .next_offset();
            }
            self.consumer_at = at;
        }
        let next = self.rng.between(5, 30);
        self.schedule(next, Event::Consume);
        Ok(())
    }
}

fn views(nodes: &[Node]) -> Vec<NodeView<'_>> {
    nodes
        .iter()
        .map(|n| NodeView {
            id: n.id,
            high_watermark: n.driver().map_or(Offset(0), |d| d.high_watermark()),
            leading: n.driver().and_then(|d| d.leading()),
            log: &n.log,
        })
        .collect()
}

// Faults: crashes, restarts, partitions, leader moves.
impl Cluster {
    fn fault(&mut self) {
        if self.settling {
            return;
        }
        let ids: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.alive())
            .map(|n| n.id)
            .collect();
        // Runs without moves draw as they did before moves existed: their seeds replay.
        let kinds = if self.config.moves { 5 } else { 4 };
        match self.rng.below(kinds) {
            0 => {
                if let Some(id) = self.rng.pick(&ids) {
                    self.crash(id);
                }
            }
            1 if !self.network.any_isolated() && ids.len() == self.nodes.len() => {
                if let Some(id) = self.rng.pick(&ids) {
                    // Half the time its controller links too: its session then expires
                    // and the controller fences it.
                    let controller = self.rng.chance(500);
                    self.network.isolate(id, controller);
                    self.report.faults[1] += 1;
                    let heal = self.rng.between(100, 1000);
                    self.schedule(heal, Event::Heal);
                }
            }
            2 => {
                // An operator's preferred-leader election, through the controller leader
                // (counted when it moves the leader).
                for node in &mut self.nodes {
                    node.propose(Command::ElectLeader {
                        topic: TOPIC.to_owned(),
                        partition: PARTITION,
                    });
                }
            }
            3 if self.config.moves => {
                if self.rng.chance(300) {
                    self.drain();
                } else {
                    self.reassign();
                }
            }
            _ => {}
        }
        let next = self.rng.between(150, 700);
        self.schedule(next, Event::Fault);
    }

    /// An operator's decommission (`DrainNode`) of a random node, or the end of the one in
    /// progress: the controller leader's planner (`replica_plan::evacuate`, within the cap
    /// on concurrent moves) then moves the partition off the draining node by itself.
    fn drain(&mut self) {
        let draining = self.truth().and_then(|m| {
            m.nodes()
                .iter()
                .find(|(_, info)| info.draining)
                .map(|(id, _)| *id)
        });
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let command = match draining {
            Some(node) => Command::DrainNode {
                node: node.0,
                draining: false,
            },
            None => match self.rng.pick(&ids) {
                Some(node) => Command::DrainNode {
                    node: node.0,
                    draining: true,
                },
                None => return,
            },
        };
        self.report.moves[0] += 1;
        for node in &mut self.nodes {
            node.propose(command.clone());
        }
    }

    /// An operator's reassignment to a random set of nodes in a random order, through
    /// the controller leader (every node is asked; only the leader's proposal is taken).
    fn reassign(&mut self) {
        let rf = self
            .config
            .replication_factor
            .map_or(self.nodes.len(), usize::from);
        let mut pool: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut target = Vec::with_capacity(rf);
        while target.len() < rf && !pool.is_empty() {
            let at = usize::try_from(self.rng.below(pool.len() as u64)).unwrap_or(0);
            target.push(pool.remove(at));
        }
        self.report.moves[0] += 1;
        let replicas: Vec<u32> = target.iter().map(|n| n.0).collect();
        for node in &mut self.nodes {
            node.propose(Command::ReassignPartition {
                topic: TOPIC.to_owned(),
                partition: PARTITION,
                replicas: replicas.clone(),
                throttle_bytes: crate::controller::THROTTLE_NODE_DEFAULT,
            });
        }
    }

    fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.iter_mut().find(|n| n.id == id) else {
            return;
        };
        self.checker.crashed(id, node.log.durable_end());
        node.crash();
        self.report.faults[0] += 1;
        let down = self.rng.between(50, 1200);
        self.schedule(down, Event::Restart(id));
    }

    fn restart(&mut self, id: NodeId) -> Result<(), String> {
        match self.node_index(id) {
            Some(index) if self.nodes.get(index).is_some_and(|n| !n.alive()) => {
                self.start_node(index)
            }
            _ => Ok(()),
        }
    }

    /// The end of the faults: heal, restart the crashed, stop making new batches.
    fn settle(&mut self) -> Result<(), String> {
        self.settling = true;
        self.network.heal();
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| !n.alive())
            .map(|n| n.id)
            .collect();
        for id in down {
            self.restart(id)?;
        }
        Ok(())
    }

    /// The partition and every node, for a failure message.
    fn describe(&self) -> String {
        format!("partition {:?}; nodes {:#?}", self.partition(), self.nodes)
    }

    /// Liveness after the settle phase: every acks=all batch acknowledged, and the
    /// leader's log committed and held by every replica. (An acks=leader producer may be
    /// refused for good: a batch acknowledged by a leader that crashed before syncing it
    /// is gone, and its later sequences are out of order until the producer starts a new
    /// epoch, which this one does not.)
    fn settled(&self) -> Result<(), String> {
        for producer in self.producers.iter().filter(|p| p.acks == Acks::All) {
            if let Some((sequence, _)) = producer.outstanding.first_key_value() {
                return Err(format!(
                    "stuck: producer {} still waits for sequence {sequence} after {} ms of \
                     calm; {}",
                    producer.producer_id,
                    self.config.settle_ms,
                    self.describe()
                ));
            }
        }
        let leader = self
            .partition()
            .and_then(|p| p.leader)
            .ok_or_else(|| format!("stuck: no leader after the calm; {}", self.describe()))?;
        let driver = self
            .nodes
            .iter()
            .find(|n| n.id == leader)
            .and_then(Node::driver)
            .ok_or("the leader is not running")?;
        let end = driver.log_end();
        if driver.high_watermark() != end {
            return Err(format!(
                "stuck: leader {leader} high watermark {} below its log end {end}; {}",
                driver.high_watermark(),
                self.describe()
            ));
        }
        let replicas = self
            .partition()
            .map(|p| p.replicas.clone())
            .unwrap_or_default();
        if let Some(r) = self.partition().and_then(|p| p.reassignment.as_ref()) {
            return Err(format!(
                "stuck: a move to {:?} still in progress after the calm; {}",
                r.target,
                self.describe()
            ));
        }
        for other in self.nodes.iter().filter(|n| replicas.contains(&n.id)) {
            let other_end = other.driver().map(crate::driver::ReplicaDriver::log_end);
            if other_end != Some(end) {
                return Err(format!(
                    "stuck: node {} log end {other_end:?} != leader's {end}; {}",
                    other.id,
                    self.describe()
                ));
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        let settled = self
            .partition()
            .filter(|p| p.reassignment.is_none())
            .map(|p| p.replicas.clone());
        if let Some(replicas) = settled {
            if !self.replicas_seen.is_empty() && replicas != self.replicas_seen {
                self.report.moves[1] += 1;
            }
            self.replicas_seen = replicas;
        }
        let leader = self
            .partition()
            .and_then(|p| p.leader.map(|l| (l, p.leader_epoch)));
        let views = views(&self.nodes);
        self.checker.after_step(&views, leader)
    }

    fn finish(self) -> Report {
        let elections = self
            .partition()
            .map_or(0, |p| u64::try_from(p.leader_epoch.0).unwrap_or(0));
        let mut report = self.report;
        report.committed_end = self.checker.committed_end().0;
        report.checked = self.checker.counts;
        report.elections = elections;
        report.messages = self.network.counts;
        report.resets = self.nodes.iter().map(|n| n.resets).sum();
        report.retained = self.nodes.iter().map(|n| n.retained).sum();
        report
    }
}
