//! The simulated cluster and its event loop: one partition replicated on every node.
//!
//! Events are ordered by (virtual time, sequence number); every choice comes from one
//! seeded [`Rng`], and nothing iterates a hash map, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use shardlog_engine::batch::BatchHeader;
use shardlog_engine::{LeaderEpoch, Offset};

use crate::config::ReplicaConfig;
use crate::error::ProduceError;
use crate::ids::{Incarnation, NodeId, RequestId, Tick};
use crate::message::{self, Message};
use crate::replica::{Acks, Action, Input, PartitionReplica, Produced};
use crate::sim::checker::{Checker, NodeView};
use crate::sim::controller::Controller;
use crate::sim::network::{Network, NetworkFaults};
use crate::sim::rng::Rng;
use crate::sim::storage::SimLog;
use crate::sim::workload::Producer;

const PARTITION: u32 = 0;
const TICK_MS: u64 = 10;

/// Settings of one simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes, each holding a replica.
    pub nodes: u32,
    /// Virtual time to run.
    pub duration_ms: u64,
    /// Every replica's settings.
    pub replica: ReplicaConfig,
    /// The controller fences a node silent this long.
    pub session_ms: u64,
    /// A producer retries a request unanswered this long.
    pub client_timeout_ms: u64,
    /// After `duration_ms`: faults stop, the network heals, crashed nodes restart and
    /// producers send nothing new; by the end of this every batch sent must be
    /// acknowledged and every live replica hold the whole committed log (liveness: a
    /// cluster that lost nothing must not stay stuck).
    pub settle_ms: u64,
    /// Every node's retention (the engine's, by size, capped at the high watermark) after
    /// each tick: `None` keeps everything. Small values make followers that were down or
    /// cut off fall below their leader's log start, so they must reset to it.
    pub retention_bytes: Option<u64>,
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
    /// Leader elections.
    pub elections: u64,
    /// Crashes, partitions, leader moves injected.
    pub faults: [u64; 3],
    /// Messages sent, dropped, duplicated.
    pub messages: [u64; 3],
    /// Produce answers: acknowledged, failed.
    pub answers: [u64; 2],
    /// Followers reset to their leader's log start (retention deleted what they needed).
    pub resets: u64,
    /// Segments deleted by retention, over all nodes.
    pub retained: u64,
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
    Deliver {
        to: NodeId,
        from: NodeId,
        bytes: Vec<u8>,
    },
    Control {
        to: NodeId,
        incarnation: Incarnation,
        input: Input,
    },
    Propose {
        from: NodeId,
        epoch: LeaderEpoch,
        isr_version: u64,
        isr: Vec<NodeId>,
    },
    Tick {
        node: NodeId,
        incarnation: Incarnation,
    },
    Sync {
        node: NodeId,
        incarnation: Incarnation,
    },
    Report {
        node: NodeId,
        incarnation: Incarnation,
    },
    ProducerTick(usize),
    Consume,
    Fault,
    Fence {
        node: NodeId,
        incarnation: Incarnation,
    },
    Restart(NodeId),
    Heal,
    Settle,
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    alive: bool,
    incarnation: Incarnation,
    replica: PartitionReplica,
    log: SimLog,
}

/// The whole simulated world.
#[derive(Debug)]
pub struct Cluster {
    config: SimConfig,
    rng: Rng,
    now: Tick,
    sequence: u64,
    events: BTreeMap<(Tick, u64), Event>,
    nodes: Vec<Node>,
    network: Network,
    controller_cut: BTreeSet<NodeId>,
    controller: Controller,
    checker: Checker,
    producers: Vec<Producer>,
    requests: BTreeMap<RequestId, (usize, i32)>,
    next_request: u64,
    consumer_at: Offset,
    /// Past `duration_ms`: no faults, no new batches (see `SimConfig::settle_ms`).
    settling: bool,
    report: Report,
}

/// Runs one seed to the end or to the first failure.
pub fn run(seed: u64, config: &SimConfig) -> Result<Report, Failure> {
    let mut cluster = Cluster::new(seed, config.clone());
    cluster.start();
    let end = cluster.config.duration_ms + cluster.config.settle_ms;
    while let Some(((at, _), event)) = cluster.events.pop_first() {
        if at.0 > end {
            break;
        }
        cluster.now = at;
        cluster.report.steps += 1;
        let result = cluster.handle(event).and_then(|()| cluster.check());
        if let Err(message) = result {
            return Err(Failure {
                seed,
                step: cluster.report.steps,
                at,
                message,
            });
        }
    }
    if let Err(message) = cluster.settled() {
        return Err(Failure {
            seed,
            step: cluster.report.steps,
            at: cluster.now,
            message,
        });
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
        };
        let ids: Vec<NodeId> = (0..config.nodes).map(NodeId).collect();
        let nodes = ids
            .iter()
            .map(|&id| Node {
                id,
                alive: true,
                incarnation: Incarnation(0),
                replica: PartitionReplica::new(config.replica.clone(), id, Incarnation(0)),
                log: SimLog::new(config.retention_bytes),
            })
            .collect();
        Cluster {
            rng,
            now: Tick(0),
            sequence: 0,
            events: BTreeMap::new(),
            nodes,
            network: Network::new(faults),
            controller_cut: BTreeSet::new(),
            controller: Controller::new(ids),
            checker: Checker::default(),
            producers: vec![
                Producer::new(1, Acks::All),
                Producer::new(2, Acks::All),
                Producer::new(3, Acks::Leader),
            ],
            requests: BTreeMap::new(),
            next_request: 0,
            consumer_at: Offset(0),
            settling: false,
            report: Report {
                seed,
                ..Report::default()
            },
            config,
        }
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.sequence += 1;
        self.events
            .insert((self.now.after(after_ms), self.sequence), event);
    }

    fn start(&mut self) {
        let mut rng = self.rng.clone();
        self.controller.elect(&mut rng, None);
        self.rng = rng;
        self.announce();
        for i in 0..self.nodes.len() {
            self.start_node_timers(i);
        }
        for p in 0..self.producers.len() {
            let delay = self.rng.between(1, 20);
            self.schedule(delay, Event::ProducerTick(p));
        }
        self.schedule(20, Event::Consume);
        let delay = self.rng.between(200, 500);
        self.schedule(delay, Event::Fault);
        self.schedule(self.config.duration_ms, Event::Settle);
    }

    fn start_node_timers(&mut self, index: usize) {
        let Some(node) = self.nodes.get(index) else {
            return;
        };
        let (node, incarnation) = (node.id, node.incarnation);
        let delay = self.rng.between(1, TICK_MS);
        self.schedule(delay, Event::Tick { node, incarnation });
        let delay = self.rng.between(1, 10);
        self.schedule(delay, Event::Sync { node, incarnation });
    }

    fn node_index(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    fn live(&self, id: NodeId, incarnation: Incarnation) -> Option<usize> {
        let index = self.node_index(id)?;
        let node = self.nodes.get(index)?;
        (node.alive && node.incarnation == incarnation).then_some(index)
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver { to, from, bytes } => self.deliver(to, from, &bytes)?,
            Event::Control {
                to,
                incarnation,
                input,
            } => {
                if let Some(index) = self.live(to, incarnation) {
                    if !self.controller_cut.contains(&to) {
                        self.step_node(index, input)?;
                    }
                }
            }
            Event::Propose {
                from,
                epoch,
                isr_version,
                isr,
            } => self.propose(from, epoch, isr_version, &isr),
            Event::Tick { node, incarnation } => {
                if let Some(index) = self.live(node, incarnation) {
                    self.step_node(index, Input::Tick)?;
                    self.retain(index)?;
                    self.schedule(TICK_MS, Event::Tick { node, incarnation });
                }
            }
            Event::Sync { node, incarnation } => {
                if let Some(index) = self.live(node, incarnation) {
                    if let Some(n) = self.nodes.get_mut(index) {
                        n.log.sync();
                    }
                    self.report_storage(index)?;
                    let next = self.rng.between(1, 15);
                    self.schedule(next, Event::Sync { node, incarnation });
                }
            }
            Event::Report { node, incarnation } => {
                if let Some(index) = self.live(node, incarnation) {
                    self.report_storage(index)?;
                }
            }
            Event::ProducerTick(p) => self.producer_tick(p)?,
            Event::Consume => self.consume()?,
            Event::Fault => self.fault(),
            Event::Fence { node, incarnation } => self.fence(node, incarnation),
            Event::Restart(node) => self.restart(node),
            Event::Heal => self.heal(),
            Event::Settle => self.settle(),
        }
        Ok(())
    }

    /// The engine's upkeep: retention up to the replica's high watermark; a moved log
    /// start is reported to the replica, as the driver does.
    fn retain(&mut self, index: usize) -> Result<(), String> {
        let Some(node) = self.nodes.get_mut(index) else {
            return Ok(());
        };
        let before = node.log.log_start();
        let log_start = node.log.retain(node.replica.high_watermark());
        if log_start == before {
            return Ok(());
        }
        self.report.retained += 1;
        self.step_node(index, Input::Retained { log_start })
    }

    fn report_storage(&mut self, index: usize) -> Result<(), String> {
        let Some(node) = self.nodes.get(index) else {
            return Ok(());
        };
        // Its appends resolve once written (flush=never): the log end is written.
        let input = Input::Appended {
            written_end: node.log.log_end(),
            durable_end: node.log.durable_end(),
        };
        self.step_node(index, input)
    }

    fn deliver(&mut self, to: NodeId, from: NodeId, bytes: &[u8]) -> Result<(), String> {
        let Some(index) = self.node_index(to) else {
            return Ok(());
        };
        if !self.nodes.get(index).is_some_and(|n| n.alive) {
            return Ok(());
        }
        let envelope = message::decode(bytes).map_err(|e| format!("undecodable envelope: {e}"))?;
        if envelope.to != to.0 || envelope.from != from.0 || envelope.partition != PARTITION {
            return Err("misrouted envelope".to_owned());
        }
        self.step_node(
            index,
            Input::Received {
                from,
                message: envelope.message,
            },
        )
    }

    fn step_node(&mut self, index: usize, input: Input) -> Result<(), String> {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(index) else {
            return Ok(());
        };
        node.replica.step(now, input);
        let mut actions = Vec::new();
        node.replica.drain_actions(&mut actions);
        for action in actions {
            self.perform(index, action)?;
        }
        Ok(())
    }

    fn perform(&mut self, index: usize, action: Action) -> Result<(), String> {
        let Some(node) = self.nodes.get_mut(index) else {
            return Ok(());
        };
        let (id, incarnation) = (node.id, node.incarnation);
        match action {
            Action::Append { batches, log_end } => {
                node.log.append(&batches);
                if node.log.log_end() != log_end {
                    return Err(format!(
                        "{id}: append ends at {}, replica says {log_end}",
                        node.log.log_end()
                    ));
                }
                self.schedule(
                    0,
                    Event::Report {
                        node: id,
                        incarnation,
                    },
                );
            }
            Action::Truncate { log_end } => node.log.truncate(log_end),
            Action::Reset { log_start } => {
                node.log.reset(log_start);
                self.report.resets += 1;
            }
            Action::Send { to, message } => self.send(id, to, message)?,
            Action::Ship {
                to,
                mut ship,
                until,
            } => {
                if let Some(batches) = node.log.read(Offset(ship.prev_offset), until) {
                    ship.batches = batches;
                    self.send(id, to, Message::Ship(ship))?;
                }
            }
            Action::Answer { request, result } => self.answer(index, request, result)?,
            Action::ProposeIsr {
                epoch,
                isr_version,
                isr,
            } => {
                if !self.controller_cut.contains(&id) {
                    let delay = self.rng.between(1, 10);
                    self.schedule(
                        delay,
                        Event::Propose {
                            from: id,
                            epoch,
                            isr_version,
                            isr,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) -> Result<(), String> {
        let envelope = message::envelope(PARTITION, from, to, message);
        let bytes = message::encode(&envelope).map_err(|e| e.to_string())?;
        for delay in self.network.route(&mut self.rng, from, to) {
            self.schedule(
                delay,
                Event::Deliver {
                    to,
                    from,
                    bytes: bytes.to_vec(),
                },
            );
        }
        Ok(())
    }

    fn control(&mut self, to: NodeId, input: Input) {
        let Some(index) = self.node_index(to) else {
            return;
        };
        let Some(node) = self.nodes.get(index) else {
            return;
        };
        if node.alive {
            let incarnation = node.incarnation;
            let delay = self.rng.between(1, 20);
            self.schedule(
                delay,
                Event::Control {
                    to,
                    incarnation,
                    input,
                },
            );
        }
    }

    /// Tells every reachable node its role in the current epoch.
    fn announce(&mut self) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            if let Some(input) = self.controller.role_of(id) {
                self.control(id, input);
            }
        }
    }

    fn propose(&mut self, from: NodeId, epoch: LeaderEpoch, isr_version: u64, isr: &[NodeId]) {
        if self.controller_cut.contains(&from) {
            return;
        }
        self.controller.propose(from, epoch, isr_version, isr);
        if let Some(leader) = self.controller.leader {
            let update = self.controller.isr_update();
            self.control(leader, update);
        }
    }
}

// Clients: producers and the consumer.
impl Cluster {
    fn answer(
        &mut self,
        index: usize,
        request: RequestId,
        result: Result<Produced, ProduceError>,
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
                    let log = &self.nodes.get(index).ok_or("no node")?.log;
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

    fn producer_tick(&mut self, p: usize) -> Result<(), String> {
        let now = self.now;
        let timeout = self.config.client_timeout_ms;
        let records = u32::try_from(self.rng.between(1, 3)).unwrap_or(1);
        let target = if self.rng.chance(100) {
            self.rng
                .pick(&self.nodes.iter().map(|n| n.id).collect::<Vec<_>>())
        } else {
            self.controller.leader
        };
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
        let index = target
            .and_then(|t| self.node_index(t))
            .filter(|&i| self.nodes.get(i).is_some_and(|n| n.alive));
        if let Some(index) = index {
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
                self.step_node(
                    index,
                    Input::Produce {
                        request,
                        acks,
                        batch,
                    },
                )?;
            }
        }
        let next = self.rng.between(3, 12);
        self.schedule(next, Event::ProducerTick(p));
        Ok(())
    }

    fn consume(&mut self) -> Result<(), String> {
        let alive: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes.get(i).is_some_and(|n| n.alive))
            .collect();
        if let Some(index) = self.rng.pick(&alive) {
            let views = views(&self.nodes);
            let node = views.get(index).ok_or("no view")?;
            let high_watermark = node.replica.high_watermark();
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
                at = BatchHeader::parse(&bytes)
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
            replica: &n.replica,
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
            .filter(|n| n.alive)
            .map(|n| n.id)
            .collect();
        match self.rng.below(4) {
            0 => {
                if let Some(id) = self.rng.pick(&ids) {
                    self.crash(id);
                }
            }
            1 if self.controller_cut.is_empty() && ids.len() == self.nodes.len() => {
                if let Some(id) = self.rng.pick(&ids) {
                    self.isolate(id);
                }
            }
            2 => {
                let mut rng = self.rng.clone();
                if self.controller.elect(&mut rng, self.controller.leader) {
                    self.report.faults[2] += 1;
                    self.announce();
                }
                self.rng = rng;
            }
            _ => {}
        }
        let next = self.rng.between(150, 700);
        self.schedule(next, Event::Fault);
    }

    fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.iter_mut().find(|n| n.id == id) else {
            return;
        };
        node.alive = false;
        self.checker.crashed(id, node.log.durable_end());
        node.log.crash();
        let incarnation = node.incarnation;
        self.report.faults[0] += 1;
        let session = self.config.session_ms;
        self.schedule(
            session,
            Event::Fence {
                node: id,
                incarnation,
            },
        );
        let down = self.rng.between(50, 1200);
        self.schedule(down, Event::Restart(id));
    }

    fn isolate(&mut self, id: NodeId) {
        self.network.isolate(id);
        self.report.faults[1] += 1;
        if self.rng.chance(500) {
            self.controller_cut.insert(id);
            let incarnation = self
                .nodes
                .iter()
                .find(|n| n.id == id)
                .map_or(Incarnation(0), |n| n.incarnation);
            let session = self.config.session_ms;
            self.schedule(
                session,
                Event::Fence {
                    node: id,
                    incarnation,
                },
            );
        }
        let heal = self.rng.between(100, 1000);
        self.schedule(heal, Event::Heal);
    }

    fn fence(&mut self, id: NodeId, incarnation: Incarnation) {
        let Some(node) = self.nodes.iter().find(|n| n.id == id) else {
            return;
        };
        let unreachable = !node.alive || self.controller_cut.contains(&id);
        if node.incarnation != incarnation || !unreachable || self.controller.fenced.contains(&id) {
            return;
        }
        let mut rng = self.rng.clone();
        let changed = self.controller.fence(&mut rng, id);
        self.rng = rng;
        self.after_controller_change(changed);
    }

    fn after_controller_change(&mut self, leadership_changed: bool) {
        if leadership_changed {
            self.announce();
        } else if let Some(leader) = self.controller.leader {
            let update = self.controller.isr_update();
            self.control(leader, update);
        }
    }

    /// The node registers again: fenced first (a restarted leader must not lead its old
    /// epoch again), then unfenced.
    fn register(&mut self, id: NodeId) {
        let mut rng = self.rng.clone();
        let mut changed = false;
        if !self.controller.fenced.contains(&id) {
            changed |= self.controller.fence(&mut rng, id);
        }
        changed |= self.controller.unfence(&mut rng, id);
        self.rng = rng;
        self.after_controller_change(changed);
        if !changed {
            if let Some(input) = self.controller.role_of(id) {
                self.control(id, input);
            }
        }
    }

    fn restart(&mut self, id: NodeId) {
        if self.nodes.iter().any(|n| n.id == id && n.alive) {
            return;
        }
        let config = self.config.replica.clone();
        let Some(index) = self.node_index(id) else {
            return;
        };
        let Some(node) = self.nodes.get_mut(index) else {
            return;
        };
        node.alive = true;
        node.incarnation = Incarnation(node.incarnation.0 + 1);
        let mut replica = PartitionReplica::new(config, id, node.incarnation);
        let log_start = node.log.log_start();
        replica.recover_start(log_start);
        for (_, bytes) in &node.log.batches_from(log_start) {
            if let Ok(header) = BatchHeader::parse(bytes) {
                replica.recover_batch(&header);
            }
        }
        node.replica = replica;
        self.start_node_timers(index);
        self.register(id);
    }

    fn heal(&mut self) {
        self.network.heal();
        let cut: Vec<NodeId> = std::mem::take(&mut self.controller_cut)
            .into_iter()
            .collect();
        for id in cut {
            if self.controller.fenced.contains(&id) {
                self.register(id);
            }
        }
        self.announce();
    }

    /// The end of the faults: heal, restart the crashed, stop making new batches.
    fn settle(&mut self) {
        self.settling = true;
        self.heal();
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| !n.alive)
            .map(|n| n.id)
            .collect();
        for id in down {
            self.restart(id);
        }
    }

    /// The controller and every replica, for a failure message.
    fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}: alive {} {:?}", n.id, n.alive, n.replica))
            .collect();
        format!("controller {:?}; nodes {nodes:#?}", self.controller)
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
            .controller
            .leader
            .ok_or("stuck: no leader after the calm")?;
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == leader)
            .ok_or("no leader node")?;
        let end = node.replica.log_end();
        if node.replica.high_watermark() != end {
            return Err(format!(
                "stuck: leader {leader} high watermark {} below its log end {end}",
                node.replica.high_watermark()
            ));
        }
        for other in &self.nodes {
            if other.replica.log_end() != end {
                return Err(format!(
                    "stuck: node {} log end {} != leader's {end}; {}",
                    other.id,
                    other.replica.log_end(),
                    self.describe()
                ));
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        let views = views(&self.nodes);
        let leader = self.controller.leader.map(|l| (l, self.controller.epoch));
        self.checker.after_step(&views, leader)
    }

    fn finish(self) -> Report {
        let mut report = self.report;
        report.committed_end = self.checker.committed_end().0;
        report.checked = self.checker.counts;
        report.elections = self.controller.elections;
        report.messages = self.network.counts;
        report
    }
}
