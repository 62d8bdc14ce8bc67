//! The Raft controller: a one-node controller, and a 3-node in-memory cluster whose raft
//! messages go through a seeded network that drops and reorders them. Each node's `Persist`
//! records go to an in-memory file, from which a restarted node recovers; every message
//! that promises persisted state is checked against that file as it is sent.

use std::collections::{BTreeMap, BTreeSet};

use protobuf::Message as _;
use raft::eraftpb::{Message as RaftMessage, MessageType};
use shardlog_engine::LeaderEpoch;
use shardlog_replicator::controller::acls::{
    AclBinding, Operation, PatternType, Permission, Resource, ResourceType,
};
use shardlog_replicator::controller::raft_file::{self, Recovered};
use shardlog_replicator::controller::{
    Action, Command, Controller, ControllerConfig, ControllerError, Metadata, MetadataChange,
    PartitionState, ProposalId, Refusal,
};
use shardlog_replicator::{NodeId, Tick};

const STEP_MS: u64 = 10;

/// The seeds to run: `SHARDLOG_SEED=<n>` replays one, else `0..count`.
fn seeds(count: u64) -> std::ops::Range<u64> {
    match std::env::var("SHARDLOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => seed..seed + 1,
        None => 0..count,
    }
}

/// Checks one ready's actions in order against the node's file, appending its `Persist`
/// records: a message that promises persisted state (an append acknowledgement, a vote, a
/// vote request) is sent only once that state is in the file, and a follower's append
/// acknowledgement never comes before the `Persist` of its list.
/// The number of append acknowledgements that came after a `Persist` of their list.
fn persist_in_order(file: &mut Vec<u8>, actions: &[Action]) -> u64 {
    let mut acknowledged = 0;
    let persist_at = actions
        .iter()
        .position(|a| matches!(a, Action::Persist { .. }));
    let mut durable = raft_file::recover(file).expect("a whole file");
    for (position, action) in actions.iter().enumerate() {
        match action {
            Action::Persist { bytes } => {
                file.extend_from_slice(bytes);
                durable = raft_file::recover(file).expect("a whole file");
                assert_eq!(durable.torn, None);
                assert_eq!(durable.valid_len, file.len());
            }
            Action::Send { bytes, .. } => {
                let message = RaftMessage::parse_from_bytes(bytes).expect("a raft message");
                if message.msg_type == MessageType::MsgAppendResponse {
                    assert!(
                        persist_at.is_none_or(|p| p < position),
                        "append response at {position} before Persist at {persist_at:?}"
                    );
                    acknowledged += u64::from(persist_at.is_some());
                }
                check_promise(&durable, &message);
            }
            _ => {}
        }
    }
    acknowledged
}

/// What `message` tells its peer is already in the sender's `durable` state.
fn check_promise(durable: &Recovered, message: &RaftMessage) {
    let hard_state = &durable.hard_state;
    match message.msg_type {
        MessageType::MsgAppendResponse if !message.reject => {
            let last = durable.entries.last().map_or(0, |e| e.index);
            assert!(
                message.index <= last,
                "acknowledges index {} with {last} durable",
                message.index
            );
        }
        MessageType::MsgRequestVoteResponse if !message.reject => {
            assert_eq!(
                (hard_state.term, hard_state.vote),
                (message.term, message.to),
                "a vote sent before it was durable"
            );
        }
        MessageType::MsgRequestVote => {
            assert_eq!(
                (hard_state.term, hard_state.vote),
                (message.term, message.from),
                "a vote request sent before its own vote was durable"
            );
        }
        _ => {}
    }
}

fn config(node: NodeId, n: u32) -> ControllerConfig {
    let mut config = ControllerConfig::new(node, (0..n).map(NodeId).collect());
    config.rebalance_interval_ms = 300;
    config
}

/// Controllers of a cluster plus a lossy, reordering network; seeded, one thread.
struct Cluster {
    controllers: BTreeMap<NodeId, Controller>,
    /// Each node's Raft file: the bytes of its `Persist` actions.
    files: BTreeMap<NodeId, Vec<u8>>,
    /// Append acknowledgements sent after the `Persist` of their ready.
    acknowledged_after_persist: u64,
    /// Controllers that are down (their messages are dropped, they get no ticks).
    down: BTreeSet<NodeId>,
    /// Nodes whose broker heartbeats have stopped.
    silent: BTreeSet<NodeId>,
    network: Vec<(NodeId, Vec<u8>)>,
    outcomes: BTreeMap<ProposalId, Result<(), Refusal>>,
    now: Tick,
    rng: u64,
    drop_percent: u64,
}

impl Cluster {
    fn new(n: u32, seed: u64, drop_percent: u64) -> Cluster {
        Cluster::configured(n, seed, drop_percent, |_| {})
    }

    /// [`Cluster::new`] with `configure` applied to every voter's config.
    fn configured(
        n: u32,
        seed: u64,
        drop_percent: u64,
        configure: fn(&mut ControllerConfig),
    ) -> Cluster {
        let controllers = (0..n)
            .map(|v| {
                let mut config = config(NodeId(v), n);
                configure(&mut config);
                let controller = Controller::new(config, Tick(0));
                (NodeId(v), controller.expect("valid config"))
            })
            .collect();
        Cluster {
            controllers,
            files: (0..n).map(|v| (NodeId(v), Vec::new())).collect(),
            acknowledged_after_persist: 0,
            down: BTreeSet::new(),
            silent: BTreeSet::new(),
            network: Vec::new(),
            outcomes: BTreeMap::new(),
            now: Tick(0),
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            drop_percent,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn leader(&self) -> Option<NodeId> {
        self.controllers
            .iter()
            .filter(|(id, c)| !self.down.contains(id) && c.is_leader())
            .max_by_key(|(_, c)| c.term())
            .map(|(id, _)| *id)
    }

    fn controller(&mut self, id: NodeId) -> &mut Controller {
        self.controllers
            .get_mut(&id)
            .expect("a node of the cluster")
    }

    fn leader_mut(&mut self) -> Option<&mut Controller> {
        let id = self.leader()?;
        self.controllers.get_mut(&id)
    }

    fn round(&mut self) {
        self.now = self.now.after(STEP_MS);
        let now = self.now;
        let up: Vec<NodeId> = self
            .controllers
            .keys()
            .copied()
            .filter(|n| !self.down.contains(n))
            .collect();
        for id in &up {
            self.controller(*id).tick(now);
        }
        let beating: Vec<NodeId> = up
            .iter()
            .copied()
            .filter(|n| !self.silent.contains(n))
            .collect();
        if let Some(leader) = self.leader_mut() {
            for node in beating {
                let _ = leader.heartbeat(node, 0); // unknown before it registers
            }
        }
        for id in &up {
            let actions = self.controller(*id).ready().expect("ready");
            self.perform(*id, actions);
        }
        self.deliver();
    }

    fn perform(&mut self, id: NodeId, actions: Vec<Action>) {
        let file = self.files.get_mut(&id).expect("a file");
        self.acknowledged_after_persist += persist_in_order(file, &actions);
        for action in actions {
            match action {
                Action::Send { to, bytes } if self.next_random() % 100 >= self.drop_percent => {
                    self.network.push((to, bytes));
                }
                Action::Applied {
                    proposal: Some(p),
                    outcome,
                    ..
                } if p.node == id => {
                    self.outcomes.insert(p, outcome);
                }
                _ => {}
            }
        }
    }

    fn deliver(&mut self) {
        let mut messages = std::mem::take(&mut self.network);
        // Fisher-Yates: reorder everything in flight.
        for i in (1..messages.len()).rev() {
            let j = usize::try_from(self.next_random() % (i as u64 + 1)).expect("small");
            messages.swap(i, j);
        }
        for (to, bytes) in messages {
            if !self.down.contains(&to) {
                let _ = self.controller(to).step(&bytes);
            }
        }
    }

    fn run_until(&mut self, max_rounds: u32, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..max_rounds {
            if done(self) {
                return true;
            }
            self.round();
        }
        done(self)
    }

    /// Proposes on the current leader until the command is applied; its outcome.
    fn commit(&mut self, command: &Command) -> Result<(), Refusal> {
        for _ in 0..20 {
            self.run_until(500, |c| c.leader().is_some());
            let Ok(id) = self
                .leader_mut()
                .expect("a leader")
                .propose(command.clone())
            else {
                continue;
            };
            assert!(
                !self.outcomes.contains_key(&id),
                "proposal id {id:?} reused"
            );
            if self.run_until(200, |c| c.outcomes.contains_key(&id)) {
                return self.outcomes[&id].clone();
            }
        }
        panic!("{command:?} was never applied");
    }

    fn metadata(&self) -> &Metadata {
        // The most recently applied view among the controllers that are up.
        let (_, c) = self
            .controllers
            .iter()
            .filter(|(id, _)| !self.down.contains(id))
            .max_by_key(|(_, c)| c.applied_index())
            .expect("a controller up");
        c.metadata()
    }

    fn partition(&self, p: u32) -> PartitionState {
        self.metadata()
            .partition("t", p)
            .expect("partition")
            .clone()
    }

    /// Every controller that is up has applied the same metadata.
    fn converged(&self) -> bool {
        let mut up = self
            .controllers
            .iter()
            .filter(|(id, _)| !self.down.contains(id));
        let first = up.next().expect("a controller up").1.metadata();
        up.all(|(_, c)| c.metadata() == first)
    }

    /// Every controller that is up has applied the same metadata, to the same index.
    fn settled(&self) -> bool {
        let mut applied = self
            .controllers
            .iter()
            .filter(|(id, _)| !self.down.contains(id))
            .map(|(_, c)| c.applied_index());
        let first = applied.next();
        self.converged() && applied.all(|a| Some(a) == first)
    }

    /// Every controller stops and starts again from its file (messages in flight are lost).
    /// Its first ready, from the file alone, applies again what it had applied.
    fn restart_all(&mut self, first_proposal_seq: u64) {
        self.network.clear();
        let n = u32::try_from(self.controllers.len()).expect("small");
        let ids: Vec<NodeId> = self.controllers.keys().copied().collect();
        for id in ids {
            let old = self.controllers.remove(&id).expect("a controller");
            let (metadata, applied) = (old.metadata().clone(), old.applied_index());
            drop(old);
            let recovered = raft_file::recover(&self.files[&id]).expect("a whole file");
            assert_eq!(recovered.torn, None);
            assert_eq!(recovered.hard_state.commit, applied, "{id}");
            let mut config = config(id, n);
            config.first_proposal_seq = first_proposal_seq;
            let restarted = Controller::recover(config, self.now, recovered).expect("recovers");
            assert_eq!(restarted.applied_index(), 0);
            self.controllers.insert(id, restarted);
            let actions = self.controller(id).ready().expect("ready");
            self.perform(id, actions);
            let restarted = &self.controllers[&id];
            assert_eq!(restarted.applied_index(), applied, "{id}");
            assert_eq!(restarted.metadata(), &metadata, "{id}");
        }
    }

    fn start(n: u32, seed: u64, drop_percent: u64, rf: u16, min_insync: u16) -> Cluster {
        Cluster::started(Cluster::new(n, seed, drop_percent), seed, rf, min_insync)
    }

    /// Elects a controller leader, registers every node and creates topic `t` (6
    /// partitions of `rf` replicas); `seed` is the cluster's, for messages.
    fn started(mut cluster: Cluster, seed: u64, rf: u16, min_insync: u16) -> Cluster {
        let n = u32::try_from(cluster.controllers.len()).expect("small");
        assert!(
            cluster.run_until(1000, |c| c.leader().is_some()),
            "seed {seed}: no leader"
        );
        for node in 0..n {
            let address = format!("127.0.0.1:{}", 9000 + node);
            let cmd = Command::RegisterNode {
                node,
                address,
                session_expires_ms: 0,
            };
            assert_eq!(cluster.commit(&cmd), Ok(()));
        }
        let create = Command::CreateTopic {
            name: "t".into(),
            partitions: 6,
            replication_factor: rf,
            min_insync,
            config: vec![],
        };
        assert_eq!(cluster.commit(&create), Ok(()));
        assert!(
            cluster.run_until(1000, Cluster::converged),
            "seed {seed}: diverged"
        );
        cluster
    }
}

#[test]
fn one_node_controller_elects_itself_and_creates_a_topic() {
    let config = ControllerConfig::new(NodeId(7), vec![NodeId(7)]);
    let mut c = Controller::new(config, Tick(0)).expect("valid config");
    assert!(c.is_leader(), "a one-member controller leads at once");
    let actions = c.ready().unwrap();
    assert!(actions.iter().all(|a| !matches!(a, Action::Send { .. })));
    c.register(NodeId(7), "127.0.0.1:9092", 1).unwrap();
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 2,
        replication_factor: 1,
        min_insync: 1,
        config: vec![("retention.ms".into(), "1000".into())],
    };
    let id = c.propose(create).unwrap();
    let mut applied = None;
    let mut changes = Vec::new();
    for _ in 0..10 {
        for action in c.ready().unwrap() {
            match action {
                Action::Applied {
                    proposal: Some(p),
                    outcome,
                    ..
                } if p == id => {
                    applied = Some(outcome);
                }
                Action::Changed(change) => changes.push(change),
                _ => {}
            }
        }
    }
    assert_eq!(applied, Some(Ok(())));
    let p = c.metadata().partition("t", 1).unwrap();
    assert_eq!(
        (p.replicas.clone(), p.leader, p.leader_epoch),
        (vec![NodeId(7)], Some(NodeId(7)), LeaderEpoch(0))
    );
    assert!(changes.contains(&MetadataChange::TopicCreated("t".into())));
}

/// A heartbeat taken between ticks counts from the time the driver observed when it came
/// in, not from the last tick: a driver whose Ready loop was held up (by a Raft log fsync)
/// would otherwise take a heartbeat that came in time as an old one, and fence its node.
#[test]
fn a_heartbeat_counts_from_the_observed_time_not_the_last_tick() {
    let node = NodeId(7);
    let config = ControllerConfig::new(node, vec![node]);
    let session = config.session_timeout_ms;
    let mut c = Controller::new(config, Tick(0)).expect("valid config");
    let registered = c.register(node, "127.0.0.1:9092", 1).unwrap();
    let mut file = Vec::new();
    let mut settle =
        |c: &mut Controller| -> Vec<Action> { (0..5).flat_map(|_| drive(c, &mut file)).collect() };
    assert!(applied_proposals(&settle(&mut c)).contains(&registered));
    c.tick(Tick(500));
    settle(&mut c);
    // The Ready loop is held up until `late`; a heartbeat comes in just before.
    let came_in = Tick(session - 10);
    c.observe_time(came_in);
    c.heartbeat(node, 1).unwrap();
    assert_eq!(c.heartbeat_age_ms(node), Some(0));
    // Past a session after the last tick, within one after the heartbeat: not fenced.
    let late = Tick(500 + session + 100);
    c.tick(late);
    settle(&mut c);
    assert!(!c.metadata().nodes()[&node].fenced, "fenced at {late:?}");
    // A session after the heartbeat with nothing since: fenced.
    c.tick(came_in.after(session + 1));
    settle(&mut c);
    assert!(c.metadata().nodes()[&node].fenced);
}

#[test]
fn three_nodes_elect_and_spread_a_topic() {
    for seed in seeds(4) {
        let c = Cluster::start(3, seed, 10, 3, 2);
        let t = &c.metadata().topics()["t"];
        let mut leads = BTreeMap::new();
        for p in &t.partitions {
            let mut r = p.replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "seed {seed}: replicas on distinct nodes");
            assert_eq!(p.isr.len(), 3);
            *leads.entry(p.leader.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(
            leads.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2],
            "seed {seed}"
        );
        let mut c = c;
        assert!(
            c.run_until(300, Cluster::converged),
            "seed {seed}: controllers diverged"
        );
    }
}

#[test]
fn failover_when_heartbeats_stop_then_rebalance_back() {
    for seed in seeds(4) {
        let mut c = Cluster::start(3, seed, 10, 3, 2);
        let controller_leader = c.leader().unwrap();
        // A partition led by a node that is not the controller leader.
        let p = (0..6)
            .find(|p| c.partition(*p).leader != Some(controller_leader))
            .unwrap();
        let before = c.partition(p);
        let victim = before.leader.unwrap();
        c.silent.insert(victim);
        assert!(
            c.run_until(1000, |c| c.partition(p).leader != Some(victim)),
            "seed {seed}: no failover"
        );
        let after = c.partition(p);
        let new_leader = after.leader.unwrap();
        assert!(
            before.isr.contains(&new_leader),
            "seed {seed}: new leader from the ISR"
        );
        assert!(after.leader_epoch > before.leader_epoch);
        assert!(!after.isr.contains(&victim));
        assert!(c.metadata().nodes()[&victim].fenced);

        // The old leader's epoch is stale now.
        let stale = Command::ChangeIsr {
            topic: "t".into(),
            partition: p,
            leader_epoch: before.leader_epoch.0,
            partition_epoch: epoch_u32(after.partition_epoch),
            new_isr: vec![victim.0],
        };
        assert!(matches!(
            c.commit(&stale),
            Err(Refusal::StaleLeaderEpoch { .. })
        ));

        // The node comes back, the leader takes it into the ISR again, and the preferred
        // leader is rebalanced back to it (with another new epoch).
        c.silent.remove(&victim);
        assert!(c.run_until(1000, |c| !c.metadata().nodes()[&victim].fenced));
        let mut isr: Vec<u32> = c.partition(p).isr.iter().map(|n| n.0).collect();
        isr.push(victim.0);
        // Built on the epoch before the node came back: refused, as a delayed proposal
        // must be (its return is a new partition epoch).
        let delayed = Command::ChangeIsr {
            topic: "t".into(),
            partition: p,
            leader_epoch: after.leader_epoch.0,
            partition_epoch: epoch_u32(after.partition_epoch),
            new_isr: isr.clone(),
        };
        assert!(matches!(
            c.commit(&delayed),
            Err(Refusal::StalePartitionEpoch { .. })
        ));
        let rejoin = Command::ChangeIsr {
            topic: "t".into(),
            partition: p,
            leader_epoch: after.leader_epoch.0,
            partition_epoch: epoch_u32(c.partition(p).partition_epoch),
            new_isr: isr,
        };
        assert_eq!(c.commit(&rejoin), Ok(()));
        assert!(
            c.run_until(1000, |c| c.partition(p).leader == Some(victim)),
            "seed {seed}: no preferred-leader rebalance"
        );
        assert!(c.partition(p).leader_epoch > after.leader_epoch);
        assert!(
            c.run_until(300, Cluster::converged),
            "seed {seed}: controllers diverged"
        );
    }
}

#[test]
fn no_unclean_election_when_only_the_dead_node_is_in_sync() {
    let mut c = Cluster::start(3, 11, 5, 3, 1);
    let controller_leader = c.leader().unwrap();
    let p = (0..6)
        .find(|p| c.partition(*p).leader != Some(controller_leader))
        .unwrap();
    let before = c.partition(p);
    let only = before.leader.unwrap();
    let shrink = Command::ChangeIsr {
        topic: "t".into(),
        partition: p,
        leader_epoch: before.leader_epoch.0,
        partition_epoch: epoch_u32(before.partition_epoch),
        new_isr: vec![only.0],
    };
    assert_eq!(c.commit(&shrink), Ok(()));
    c.silent.insert(only);
    assert!(c.run_until(1000, |c| c.metadata().nodes()[&only].fenced));
    let after = c.partition(p);
    assert_eq!(after.leader, None, "no out-of-sync replica may lead");
    assert_eq!(after.isr, vec![only]);
    assert!(after.leader_epoch > before.leader_epoch);
    let elect = Command::ElectLeader {
        topic: "t".into(),
        partition: p,
    };
    assert_eq!(c.commit(&elect), Err(Refusal::NoEligibleLeader));
    // Its return makes it leader again.
    c.silent.remove(&only);
    assert!(c.run_until(1000, |c| c.partition(p).leader == Some(only)));
    assert!(c.partition(p).leader_epoch > after.leader_epoch);
}

#[test]
fn controller_leader_killed_another_takes_over_with_the_metadata() {
    for seed in seeds(3) {
        let mut c = Cluster::start(3, seed, 10, 3, 2);
        let old = c.leader().unwrap();
        let term = c.controllers[&old].term();
        let topics = c.metadata().topics().clone();
        let led: Vec<u32> = (0..6)
            .filter(|p| c.partition(*p).leader == Some(old))
            .collect();
        c.down.insert(old);
        c.silent.insert(old);
        let killed_at = c.now;
        assert!(
            c.run_until(2000, |c| c.leader().is_some_and(|l| l != old)),
            "seed {seed}: no new controller leader"
        );
        let elected_after = c.now.since(killed_at);
        let new = c.leader().unwrap();
        assert!(c.controllers[&new].term() > term);
        // The partitions of the dead node fail over under the new controller leader.
        assert!(
            c.run_until(2000, |c| led.iter().all(|p| {
                let now = c.metadata().partition("t", *p);
                now.is_some_and(|now| now.leader != Some(old))
            })),
            "seed {seed}: no failover after controller failover"
        );
        // The new controller leader counts the old one's session from when it last heard
        // from it, not from its own election: the failover comes one session timeout
        // (1000 ms) after the death or right after the election, whichever is later, not a
        // whole session after the election.
        let took = c.now.since(killed_at);
        eprintln!("seed {seed}: elected after {elected_after} ms, failed over after {took} ms");
        assert!(
            took < elected_after.max(1000) + 300,
            "seed {seed}: elected after {elected_after} ms, failover took {took} ms"
        );
        let m = c.metadata();
        assert_eq!(
            m.topics().keys().collect::<Vec<_>>(),
            topics.keys().collect::<Vec<_>>()
        );
        for p in &led {
            let now = m.partition("t", *p).unwrap();
            assert!(now.leader_epoch > topics["t"].partitions[*p as usize].leader_epoch);
        }
        assert!(
            c.run_until(300, Cluster::converged),
            "seed {seed}: controllers diverged"
        );
    }
}

#[test]
fn elr_member_may_lead_when_the_isr_is_gone() {
    // Pure metadata (no Raft): KIP-966's eligible leader replicas, simplified.
    let mut m = Metadata::default();
    let mut changes = Vec::new();
    for node in 0..3 {
        let cmd = Command::RegisterNode {
            node,
            address: String::new(),
            session_expires_ms: 0,
        };
        m.apply(&cmd, &mut changes).unwrap();
    }
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        min_insync: 2,
        config: vec![],
    };
    m.apply(&create, &mut changes).unwrap();
    let p = m.partition("t", 0).unwrap().clone();
    let leader = p.leader.unwrap();
    let [a, b] = [p.replicas[1], p.replicas[2]];
    // The ISR shrinks to the leader and one follower, then to the leader alone: that
    // follower was removed below min_insync, so it joins the ELR.
    let shrink = |m: &Metadata, isr: Vec<NodeId>| Command::ChangeIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch: 0,
        partition_epoch: epoch_u32(m.partition("t", 0).unwrap().partition_epoch),
        new_isr: isr.iter().map(|n| n.0).collect(),
    };
    m.apply(&shrink(&m, vec![leader, a]), &mut changes).unwrap();
    m.apply(&shrink(&m, vec![leader]), &mut changes).unwrap();
    assert_eq!(m.partition("t", 0).unwrap().elr, vec![a]);
    assert_eq!(
        m.apply(&shrink(&m, vec![leader, b, b]), &mut changes),
        Err(Refusal::InvalidIsr("duplicate ISR member"))
    );
    m.apply(&Command::FenceNode { node: leader.0 }, &mut changes)
        .unwrap();
    let after = m.partition("t", 0).unwrap();
    assert_eq!(
        after.leader,
        Some(a),
        "the ELR member leads; b (out of sync) does not"
    );
    assert_eq!(after.leader_epoch, LeaderEpoch(1));
    m.invariants(None).unwrap();
}

/// Runs one ready of a lone controller, its `Persist` records going to `file`.
fn drive(c: &mut Controller, file: &mut Vec<u8>) -> Vec<Action> {
    let actions = c.ready().expect("ready");
    persist_in_order(file, &actions);
    actions
}

fn applied_proposals(actions: &[Action]) -> Vec<ProposalId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Applied { proposal, .. } => *proposal,
            _ => None,
        })
        .collect()
}

#[test]
fn one_node_controller_recovers_from_its_file() {
    let config = ControllerConfig::new(NodeId(7), vec![NodeId(7)]);
    let mut file = Vec::new();
    let mut c = Controller::new(config.clone(), Tick(0)).unwrap();
    let mut applied = Vec::new();
    applied.extend(applied_proposals(&drive(&mut c, &mut file)));
    c.register(NodeId(7), "127.0.0.1:9092", 1).unwrap();
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 2,
        replication_factor: 1,
        min_insync: 1,
        config: vec![],
    };
    let created = c.propose(create).unwrap();
    for _ in 0..10 {
        applied.extend(applied_proposals(&drive(&mut c, &mut file)));
    }
    assert!(applied.contains(&created));
    let (before, term) = (c.metadata().clone(), c.term());
    assert!(before.topics().contains_key("t"));
    drop(c);

    // A torn write after the last record changes nothing but the length to keep.
    let mut torn = file.clone();
    torn.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    let recovered = raft_file::recover(&torn).expect("a torn tail");
    assert_eq!(recovered.valid_len, file.len());
    assert!(recovered.torn.is_some());

    let mut config = config;
    config.first_proposal_seq = 1_000;
    let mut c = Controller::recover(config, Tick(0), recovered).unwrap();
    let actions = drive(&mut c, &mut file);
    assert_eq!(c.metadata(), &before, "the committed entries applied again");
    assert!(applied_proposals(&actions).contains(&created));
    c.tick(Tick(50));
    drive(&mut c, &mut file);
    assert!(c.is_leader());
    assert!(c.term() > term);

    let again = Command::CreateTopic {
        name: "u".into(),
        partitions: 1,
        replication_factor: 1,
        min_insync: 1,
        config: vec![],
    };
    let id = c.propose(again).unwrap();
    assert!(!applied.contains(&id), "{id:?} is an old proposal's id");
    let mut outcome = None;
    for _ in 0..10 {
        for action in drive(&mut c, &mut file) {
            if let Action::Applied {
                proposal: Some(p),
                outcome: o,
                ..
            } = action
            {
                if p == id {
                    outcome = Some(o);
                }
            }
        }
    }
    assert_eq!(outcome, Some(Ok(())));
    assert!(c.metadata().topics().contains_key("u"));
    assert_eq!(c.metadata().topics()["t"], before.topics()["t"]);
}

#[test]
fn recovering_an_inconsistent_state_is_an_error() {
    let config = ControllerConfig::new(NodeId(0), vec![NodeId(0)]);
    let mut recovered = Recovered::default();
    recovered.hard_state.commit = 3;
    assert!(matches!(
        Controller::recover(config, Tick(0), recovered),
        Err(ControllerError::Recovered(_))
    ));
}

#[test]
fn all_controllers_restart_from_their_files_with_the_metadata() {
    for seed in seeds(3) {
        let mut c = Cluster::start(3, seed, 10, 3, 2);
        let more = Command::CreateTopic {
            name: "u".into(),
            partitions: 3,
            replication_factor: 2,
            min_insync: 1,
            config: vec![],
        };
        assert_eq!(c.commit(&more), Ok(()));
        let victim = NodeId((c.leader().unwrap().0 + 1) % 3);
        c.silent.insert(victim);
        assert!(
            c.run_until(1000, |c| c.metadata().nodes()[&victim].fenced),
            "seed {seed}: not fenced"
        );
        assert!(c.run_until(1000, Cluster::settled), "seed {seed}: diverged");
        let before = c.metadata().clone();
        let term = c.controllers.values().map(Controller::term).max().unwrap();

        c.restart_all(1_000_000);
        assert!(
            c.run_until(2000, |c| c.leader().is_some()),
            "seed {seed}: no leader after the restart"
        );
        assert!(c.controllers[&c.leader().unwrap()].term() > term);
        assert!(c.run_until(1000, Cluster::settled), "seed {seed}: diverged");
        for (id, node) in &c.controllers {
            assert_eq!(node.metadata(), &before, "seed {seed}: node {id}");
        }
        let after = Command::CreateTopic {
            name: "v".into(),
            partitions: 2,
            replication_factor: 2,
            min_insync: 1,
            config: vec![],
        };
        assert_eq!(c.commit(&after), Ok(()));
        assert!(c.run_until(1000, Cluster::settled), "seed {seed}: diverged");
        assert!(c.metadata().topics().contains_key("v"));
        assert_eq!(c.metadata().nodes(), before.nodes());
    }
}

/// The fix for a damaged Raft file on a node with peers: its file removed while the other
/// voters run and have a leader, the voter starts empty, as a new voter does, and receives
/// the log from the leader (this controller sends no snapshots: the log is whole).
#[test]
fn a_voter_whose_file_is_removed_rejoins_and_receives_the_log() {
    for seed in seeds(3) {
        let mut c = Cluster::start(3, seed, 10, 3, 2);
        assert!(c.run_until(1000, Cluster::settled), "seed {seed}: diverged");
        let before = c.metadata().clone();
        let victim = NodeId((c.leader().unwrap().0 + 1) % 3);
        c.controllers.remove(&victim);
        c.files.insert(victim, Vec::new());
        let mut config = config(victim, 3);
        config.first_proposal_seq = 1_000_000;
        let empty = Controller::recover(config, c.now, Recovered::default()).unwrap();
        c.controllers.insert(victim, empty);
        // It learns the leader from its heartbeats, which commit past its (empty) log.
        assert!(
            c.run_until(100, |c| c.controllers[&victim].leader().is_some()),
            "seed {seed}: no leader known"
        );
        // The leader sends the log once a new entry (in shardlogd: the restarted node's
        // registration) shows it the voter's log short.
        let more = Command::CreateTopic {
            name: "u".into(),
            partitions: 1,
            replication_factor: 3,
            min_insync: 2,
            config: vec![],
        };
        assert_eq!(c.commit(&more), Ok(()));
        assert!(c.run_until(1000, Cluster::settled), "seed {seed}: diverged");
        let victims = c.controllers[&victim].metadata();
        assert!(victims.topics().contains_key("u"), "seed {seed}");
        assert_eq!(victims.topics()["t"], before.topics()["t"], "seed {seed}");
        assert_eq!(victims.nodes(), before.nodes(), "seed {seed}");
        // Its new file holds the log the leader's holds, up to what both know committed.
        let leader = c.leader().unwrap();
        let [rejoined, leading] =
            [victim, leader].map(|id| raft_file::recover(&c.files[&id]).unwrap());
        let upto = rejoined.hard_state.commit.min(leading.hard_state.commit);
        let upto = usize::try_from(upto).unwrap();
        assert!(upto > 0, "seed {seed}");
        assert_eq!(
            rejoined.entries[..upto],
            leading.entries[..upto],
            "seed {seed}"
        );
    }
}

#[test]
fn append_acknowledgements_follow_their_persist() {
    // The check itself runs on every ready of every cluster test; this one makes sure it
    // saw acknowledgements.
    let c = Cluster::start(3, 5, 0, 3, 2);
    assert!(c.acknowledged_after_persist > 0);
}

#[test]
fn raft_messages_no_voter_sends_are_refused_not_panicked_on() {
    let mut c = Cluster::start(3, 0, 10, 3, 2);
    let leader = c.leader().unwrap();
    let follower = *c.controllers.keys().find(|n| **n != leader).unwrap();
    let term = c.controllers[&follower].term();
    let raft_id = |n: NodeId| u64::from(n.0) + 1;
    let forged = |from: u64, msg_type: MessageType, commit: u64| {
        let mut m = RaftMessage::default();
        m.set_msg_type(msg_type);
        m.from = from;
        m.to = raft_id(follower);
        m.term = term;
        m.commit = commit;
        m.write_to_bytes().unwrap()
    };
    // raft-rs would panic ("to_commit is out of range") on this heartbeat.
    let bad_commit = forged(raft_id(leader), MessageType::MsgHeartbeat, 1 << 40);
    let stranger = forged(99, MessageType::MsgHeartbeat, 0);
    let snapshot = forged(raft_id(leader), MessageType::MsgSnapshot, 0);
    let node = c.controllers.get_mut(&follower).unwrap();
    for (what, bytes) in [("stranger", stranger), ("snapshot", snapshot)] {
        assert!(
            matches!(node.step(&bytes), Err(ControllerError::Codec(_))),
            "{what} accepted"
        );
    }
    // A heartbeat committing past the log's end (what a voter that lost its log gets from
    // the leader) is taken without its commit.
    let applied = node.applied_index();
    node.step(&bad_commit).unwrap();
    node.ready().unwrap();
    assert_eq!(node.applied_index(), applied);
    // The cluster goes on.
    let before = c.metadata().topics().len();
    c.commit(&Command::CreateTopic {
        name: "after".into(),
        partitions: 1,
        replication_factor: 3,
        min_insync: 2,
        config: Vec::new(),
    })
    .unwrap();
    assert_eq!(c.metadata().topics().len(), before + 1);
}

fn epoch_u32(epoch: u64) -> u32 {
    u32::try_from(epoch).expect("a partition epoch fits the command's u32")
}

/// A replica fenced or back is a new partition epoch for every partition it holds, in
/// the ISR or not, so the leader learns it and a proposal built before is refused: an
/// expand retried after a later shrink never puts a lagging replica back.
#[test]
fn liveness_changes_bump_the_partition_epoch_and_stale_proposals_are_refused() {
    let mut m = Metadata::default();
    let mut changes = Vec::new();
    for node in 0..3 {
        let register = Command::RegisterNode {
            node,
            address: format!("n{node}"),
            session_expires_ms: 0,
        };
        m.apply(&register, &mut changes).unwrap();
    }
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        min_insync: 2,
        config: vec![],
    };
    m.apply(&create, &mut changes).unwrap();
    let p = m.partition("t", 0).unwrap().clone();
    let leader = p.leader.unwrap();
    let [a, b] = [p.replicas[1], p.replicas[2]];
    let change = |m: &Metadata, epoch: u64, isr: &[NodeId]| Command::ChangeIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch: m.partition("t", 0).unwrap().leader_epoch.0,
        partition_epoch: epoch_u32(epoch),
        new_isr: isr.iter().map(|n| n.0).collect(),
    };
    // The leader shrinks the ISR (b lags) at epoch 0; an expand built on epoch 0 that
    // arrives after it is refused.
    m.apply(&change(&m, 0, &[leader, a]), &mut changes).unwrap();
    assert_eq!(
        m.apply(&change(&m, 0, &[leader, a, b]), &mut changes),
        Err(Refusal::StalePartitionEpoch {
            current: 1,
            proposed: 0
        })
    );
    // b, out of the ISR, is fenced: a new epoch all the same.
    m.apply(&Command::FenceNode { node: b.0 }, &mut changes)
        .unwrap();
    assert_eq!(m.partition("t", 0).unwrap().partition_epoch, 2);
    // A fenced node may not join even on the current epoch.
    assert_eq!(
        m.apply(&change(&m, 2, &[leader, a, b]), &mut changes),
        Err(Refusal::InvalidIsr("a fenced node may not join the ISR"))
    );
    // Back: another epoch; proposals built on 2 are refused, on 3 taken.
    let back = Command::Heartbeat {
        node: b.0,
        session_expires_ms: 0,
    };
    m.apply(&back, &mut changes).unwrap();
    assert_eq!(m.partition("t", 0).unwrap().partition_epoch, 3);
    assert!(matches!(
        m.apply(&change(&m, 2, &[leader, a, b]), &mut changes),
        Err(Refusal::StalePartitionEpoch { .. })
    ));
    m.apply(&change(&m, 3, &[leader, a, b]), &mut changes)
        .unwrap();
    // An entry of the previous release (no partition epoch) still applies as it did.
    let legacy = Command::LegacyChangeIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch: 0,
        new_isr: vec![leader.0, a.0],
    };
    m.apply(&legacy, &mut changes).unwrap();
    assert_eq!(m.partition("t", 0).unwrap().isr, vec![leader, a]);
    m.invariants(None).unwrap();
}

/// A node that restarts registers as a newer incarnation: its previous run is fenced in
/// the same command (every partition it led gets a new leader and epoch at once, not a
/// session timeout later), and it is live again. An older incarnation is refused.
#[test]
fn a_newer_incarnation_fences_the_previous_run_at_once() {
    let mut m = Metadata::default();
    let mut changes = Vec::new();
    let register = |node: u32, incarnation: u64| Command::Register {
        node,
        address: format!("n{node}"),
        incarnation,
        session_expires_ms: 0,
    };
    for node in 0..3 {
        m.apply(&register(node, 10), &mut changes).unwrap();
    }
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        min_insync: 2,
        config: vec![],
    };
    m.apply(&create, &mut changes).unwrap();
    let before = m.partition("t", 0).unwrap().clone();
    let leader = before.leader.unwrap();
    // The same incarnation again: nothing moves.
    m.apply(&register(leader.0, 10), &mut changes).unwrap();
    assert_eq!(m.partition("t", 0).unwrap(), &before);
    // Restarted: fenced and back in one step.
    changes.clear();
    m.apply(&register(leader.0, 11), &mut changes).unwrap();
    assert!(
        changes.contains(&MetadataChange::NodeFenced(leader)),
        "{changes:?}"
    );
    let after = m.partition("t", 0).unwrap();
    assert!(after.leader_epoch > before.leader_epoch);
    assert!(m.is_live(leader));
    assert_eq!(m.nodes()[&leader].incarnation, 11);
    // Its previous run speaking up late: refused.
    assert!(matches!(
        m.apply(&register(leader.0, 10), &mut changes),
        Err(Refusal::StaleIncarnation { .. })
    ));
    m.invariants(None).unwrap();
}

/// Producer id blocks: each `AllocateProducerIds` reserves the ids from the next
/// unreserved one; a proposal built on a stale `first` (a block reserved meanwhile) is
/// refused, so no id is reserved twice; the counter comes back with the Raft file.
#[test]
fn producer_id_blocks_never_overlap_and_survive_a_restart() {
    let config = ControllerConfig::new(NodeId(7), vec![NodeId(7)]);
    let mut file = Vec::new();
    let mut c = Controller::new(config.clone(), Tick(0)).unwrap();
    drive(&mut c, &mut file);
    c.register(NodeId(7), "127.0.0.1:9092", 1).unwrap();
    for _ in 0..5 {
        drive(&mut c, &mut file);
    }
    let outcome_of = |c: &mut Controller, file: &mut Vec<u8>, command: Command| {
        let id = c.propose(command).unwrap();
        let mut outcome = None;
        for _ in 0..10 {
            for action in drive(c, file) {
                if let Action::Applied {
                    proposal: Some(p),
                    outcome: o,
                    ..
                } = action
                    && p == id
                {
                    outcome = Some(o);
                }
            }
        }
        outcome.expect("applied")
    };
    assert_eq!(c.metadata().next_producer_id(), 0);
    let block = |node: u32, first: u64| Command::AllocateProducerIds {
        node,
        first,
        count: 1000,
    };
    assert_eq!(outcome_of(&mut c, &mut file, block(7, 0)), Ok(()));
    assert_eq!(c.metadata().next_producer_id(), 1000);
    // The same proposal again (a retry, or a second node's request built on the same
    // view) is refused: the block is taken.
    assert!(matches!(
        outcome_of(&mut c, &mut file, block(7, 0)),
        Err(Refusal::StaleProducerIdBlock {
            next: 1000,
            proposed: 0
        })
    ));
    assert_eq!(outcome_of(&mut c, &mut file, block(7, 1000)), Ok(()));
    // Unknown nodes and empty blocks are refused.
    assert!(outcome_of(&mut c, &mut file, block(8, 2000)).is_err());
    let empty = Command::AllocateProducerIds {
        node: 7,
        first: 2000,
        count: 0,
    };
    assert!(outcome_of(&mut c, &mut file, empty).is_err());
    assert_eq!(c.metadata().next_producer_id(), 2000);
    drop(c);

    let mut config = config;
    config.first_proposal_seq = 1_000_000;
    let mut c = Controller::recover(
        config,
        Tick(0),
        raft_file::recover(&file).expect("a whole file"),
    )
    .unwrap();
    drive(&mut c, &mut file);
    assert_eq!(
        c.metadata().next_producer_id(),
        2000,
        "the counter is replicated metadata, rebuilt from the log"
    );
}

/// A replica whose log stopped (`ReplicaOffline`): the leadership moves at once to
/// another live ISR member with a new epoch, and the replica leaves the ISR; a report
/// built on an old partition epoch (delayed past the replica's return) is refused; the
/// last ISR member stays the leader, with a new epoch (its reopened log must not be taken
/// for the one that lost writes), and never empties the ISR.
#[test]
fn a_stopped_replica_gives_up_leadership_and_leaves_the_isr() {
    let mut m = Metadata::default();
    let mut changes = Vec::new();
    for node in 0..3 {
        let register = Command::RegisterNode {
            node,
            address: format!("n{node}"),
            session_expires_ms: 0,
        };
        m.apply(&register, &mut changes).unwrap();
    }
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        min_insync: 2,
        config: vec![],
    };
    m.apply(&create, &mut changes).unwrap();
    let p = m.partition("t", 0).unwrap().clone();
    let stopped = p.leader.unwrap();
    let offline = |m: &Metadata, node: NodeId, epoch: LeaderEpoch| {
        let p = m.partition("t", 0).unwrap();
        Command::ReplicaOffline {
            topic: "t".into(),
            partition: 0,
            node: node.0,
            leader_epoch: epoch.0,
            partition_epoch: epoch_u32(p.partition_epoch),
        }
    };
    let report = offline(&m, stopped, p.leader_epoch);
    m.apply(&report, &mut changes).unwrap();
    let after = m.partition("t", 0).unwrap().clone();
    assert_eq!(after.leader, Some(p.replicas[1]), "{after:?}");
    assert_eq!(after.leader_epoch, LeaderEpoch(p.leader_epoch.0 + 1));
    assert_eq!(after.isr, vec![p.replicas[1], p.replicas[2]]);
    // The same report again (a retry): built on an old partition epoch, refused.
    assert!(matches!(
        m.apply(&report, &mut changes),
        Err(Refusal::StalePartitionEpoch { .. })
    ));
    // On the current epoch it changes nothing more.
    assert_eq!(
        m.apply(&offline(&m, stopped, p.leader_epoch), &mut changes),
        Err(Refusal::NoChange)
    );
    // The new leader's log stops too: the last other member leads, the ISR shrinks.
    let second = after.leader.unwrap();
    m.apply(&offline(&m, second, after.leader_epoch), &mut changes)
        .unwrap();
    let last = m.partition("t", 0).unwrap().clone();
    assert_eq!(last.leader, Some(p.replicas[2]));
    assert_eq!(last.isr, vec![p.replicas[2]]);
    // And the last one's: no one else may lead (no unclean election), so it keeps the
    // leadership with a new epoch, and the ISR keeps it.
    m.apply(&offline(&m, p.replicas[2], last.leader_epoch), &mut changes)
        .unwrap();
    let alone = m.partition("t", 0).unwrap().clone();
    assert_eq!(alone.leader, Some(p.replicas[2]));
    assert_eq!(alone.leader_epoch, LeaderEpoch(last.leader_epoch.0 + 1));
    assert_eq!(alone.isr, vec![p.replicas[2]]);
    // A report for the epoch it stopped in, now past: nothing to do.
    assert_eq!(
        m.apply(&offline(&m, p.replicas[2], last.leader_epoch), &mut changes),
        Err(Refusal::NoChange)
    );
    m.invariants(None).unwrap();
}

/// The leader of `p` takes every replica its move is adding into the ISR (as a leader
/// does once they caught up): one `ChangeIsr` per partition that is moving.
fn catch_up_moves(c: &mut Cluster) {
    for p in 0..6 {
        let state = c.partition(p);
        let Some(r) = state.reassignment.clone() else {
            continue;
        };
        let mut isr: Vec<u32> = state.isr.iter().map(|n| n.0).collect();
        isr.extend(
            r.adding
                .iter()
                .filter(|n| !state.isr.contains(n))
                .map(|n| n.0),
        );
        let change = Command::ChangeIsr {
            topic: "t".into(),
            partition: p,
            leader_epoch: state.leader_epoch.0,
            partition_epoch: epoch_u32(state.partition_epoch),
            new_isr: isr,
        };
        let _ = c.commit(&change); // a refusal (a newer epoch) is retried by the caller
    }
}

/// Every partition of `t` has 3 replicas, all in the ISR, none on `gone`, with no move in
/// progress.
fn whole_without(c: &Cluster, gone: NodeId) -> bool {
    (0..6).all(|p| {
        let s = c.partition(p);
        s.reassignment.is_none()
            && s.replicas.len() == 3
            && !s.replicas.contains(&gone)
            && s.isr.len() == 3
            && s.leader.is_some_and(|l| l != gone)
    })
}

/// Replicas and preferred leaderships per node.
fn spread(c: &Cluster) -> (BTreeMap<NodeId, usize>, BTreeMap<NodeId, usize>) {
    let mut replicas = BTreeMap::new();
    let mut preferred = BTreeMap::new();
    for p in 0..6 {
        let s = c.partition(p);
        for n in &s.replicas {
            *replicas.entry(*n).or_insert(0) += 1;
        }
        *preferred.entry(s.replicas[0]).or_insert(0) += 1;
    }
    (replicas, preferred)
}

/// Drives moves to their end: the leaders take the added replicas into the ISR until
/// `done` holds.
fn finish_moves(c: &mut Cluster, done: impl Fn(&Cluster) -> bool) -> bool {
    for _ in 0..50 {
        if c.run_until(100, &done) {
            return true;
        }
        catch_up_moves(c);
    }
    done(c)
}

fn replace_after_2s(config: &mut ControllerConfig) {
    config.replace_dead_after_ms = Some(2000);
}

#[test]
fn a_node_fenced_past_the_delay_has_its_replicas_re_placed() {
    for seed in seeds(3) {
        let cluster = Cluster::configured(4, seed, 5, replace_after_2s);
        let mut c = Cluster::started(cluster, seed, 3, 2);
        let dead = NodeId(3);
        assert!((0..6).any(|p| c.partition(p).replicas.contains(&dead)));
        c.silent.insert(dead);
        assert!(c.run_until(1000, |c| c.metadata().nodes()[&dead].fenced));
        // Not before the delay: 1.5 s later every replica is where it was.
        c.run_until(150, |_| false);
        assert!(
            (0..6).all(|p| c.partition(p).reassignment.is_none()),
            "seed {seed}: moved before the delay"
        );
        assert!(
            finish_moves(&mut c, |c| whole_without(c, dead)),
            "seed {seed}: not re-placed: {:?}",
            (0..6).map(|p| c.partition(p)).collect::<Vec<_>>()
        );
        let (replicas, preferred) = spread(&c);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), [6, 6, 6]);
        assert_eq!(
            preferred.values().copied().collect::<Vec<_>>(),
            [2, 2, 2],
            "seed {seed}: preferred leaders spread"
        );
        // Leaders follow the preferred replicas.
        assert!(
            c.run_until(1000, |c| (0..6).all(|p| {
                let s = c.partition(p);
                s.leader == s.replicas.first().copied()
            })),
            "seed {seed}: leaders not on the preferred replicas"
        );
        assert!(
            c.run_until(300, Cluster::converged),
            "seed {seed}: diverged"
        );
    }
}

#[test]
fn without_a_re_placement_delay_a_dead_node_keeps_its_replicas() {
    let mut c = Cluster::start(4, 7, 5, 3, 2);
    let dead = NodeId(3);
    c.silent.insert(dead);
    assert!(c.run_until(1000, |c| c.metadata().nodes()[&dead].fenced));
    c.run_until(1000, |_| false);
    assert!((0..6).all(|p| c.partition(p).reassignment.is_none()));
    assert!((0..6).any(|p| c.partition(p).replicas.contains(&dead)));
}

#[test]
fn a_decommissioned_node_is_drained_and_gets_no_new_replica() {
    let mut c = Cluster::start(4, 3, 5, 3, 2);
    let drained = NodeId(1);
    let drain = Command::DrainNode {
        node: drained.0,
        draining: true,
    };
    assert_eq!(c.commit(&drain), Ok(()));
    assert_eq!(c.commit(&drain), Err(Refusal::NoChange));
    assert!(
        finish_moves(&mut c, |c| whole_without(c, drained)),
        "not drained: {:?}",
        (0..6).map(|p| c.partition(p)).collect::<Vec<_>>()
    );
    assert!(c.metadata().nodes()[&drained].draining);
    assert!(
        !c.metadata().nodes()[&drained].fenced,
        "drained, still live"
    );
    let create = Command::CreateTopic {
        name: "u".into(),
        partitions: 8,
        replication_factor: 3,
        min_insync: 2,
        config: vec![],
    };
    assert_eq!(c.commit(&create), Ok(()));
    let u = &c.metadata().topics()["u"];
    assert!(u.partitions.iter().all(|p| !p.replicas.contains(&drained)));
    // Taken back: it receives replicas again.
    let undrain = Command::DrainNode {
        node: drained.0,
        draining: false,
    };
    assert_eq!(c.commit(&undrain), Ok(()));
    assert!(!c.metadata().nodes()[&drained].draining);
}

#[test]
fn a_node_that_joins_gets_its_share_on_a_rebalance() {
    let mut c = Cluster::new(4, 5, 5);
    assert!(c.run_until(1000, |c| c.leader().is_some()));
    for node in 0..3 {
        let cmd = Command::RegisterNode {
            node,
            address: format!("127.0.0.1:{}", 9000 + node),
            session_expires_ms: 0,
        };
        assert_eq!(c.commit(&cmd), Ok(()));
    }
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 6,
        replication_factor: 3,
        min_insync: 2,
        config: vec![],
    };
    assert_eq!(c.commit(&create), Ok(()));
    let join = Command::RegisterNode {
        node: 3,
        address: "127.0.0.1:9003".into(),
        session_expires_ms: 0,
    };
    assert_eq!(c.commit(&join), Ok(()));
    // Nothing moves by itself (auto_rebalance is off).
    c.run_until(500, |_| false);
    assert_eq!(spread(&c).0.get(&NodeId(3)), None);
    let moves = c.leader_mut().unwrap().rebalance_replicas().unwrap();
    assert_eq!(moves, 4, "18 replicas over 4 nodes: 4 or 5 each");
    let balanced = |c: &Cluster| {
        let (replicas, _) = spread(c);
        (0..6).all(|p| c.partition(p).reassignment.is_none())
            && replicas.len() == 4
            && replicas.values().all(|n| (4..=5).contains(n))
    };
    assert!(finish_moves(&mut c, balanced), "{:?}", spread(&c));
    assert_eq!(c.leader_mut().unwrap().rebalance_replicas().unwrap(), 0);
}

fn one_move_at_a_time(config: &mut ControllerConfig) {
    config.max_concurrent_moves = 1;
}

/// Partitions of `t` with a move in progress.
fn moving(c: &Cluster) -> usize {
    (0..6)
        .filter(|p| c.partition(*p).reassignment.is_some())
        .count()
}

#[test]
fn a_drain_under_a_cap_of_one_moves_one_partition_at_a_time() {
    for seed in seeds(3) {
        let cluster = Cluster::configured(4, seed, 5, one_move_at_a_time);
        let mut c = Cluster::started(cluster, seed, 3, 2);
        let drained = NodeId(1);
        let held = (0..6)
            .filter(|p| c.partition(*p).replicas.contains(&drained))
            .count();
        assert!(held >= 2, "seed {seed}: node 1 holds {held} replicas");
        let drain = Command::DrainNode {
            node: drained.0,
            draining: true,
        };
        assert_eq!(c.commit(&drain), Ok(()));
        let most = std::cell::Cell::new(0);
        let done = |c: &Cluster| {
            most.set(most.get().max(moving(c)));
            whole_without(c, drained)
        };
        assert!(
            finish_moves(&mut c, done),
            "seed {seed}: not drained: {:?}",
            (0..6).map(|p| c.partition(p)).collect::<Vec<_>>()
        );
        assert_eq!(most.get(), 1, "seed {seed}: partitions moving at once");
    }
}

#[test]
fn an_operator_move_counts_toward_the_cap_and_a_rebalance_goes_on_within_it() {
    let cluster = Cluster::configured(4, 11, 5, one_move_at_a_time);
    let mut c = Cluster::started(cluster, 11, 3, 2);
    // An operator's move (never held back) fills the cap: a drain starts nothing.
    let before: Vec<u32> = c.partition(0).replicas.iter().map(|n| n.0).collect();
    let spare = (0..4).find(|n| !before.contains(n)).unwrap();
    let reassign = Command::ReassignPartition {
        topic: "t".into(),
        partition: 0,
        replicas: vec![before[0], before[1], spare],
        throttle_bytes: u64::MAX,
    };
    assert_eq!(c.commit(&reassign), Ok(()));
    let drained = (0..4)
        .map(NodeId)
        .find(|n| *n != NodeId(spare) && !c.partition(0).replicas.contains(n))
        .unwrap_or(NodeId(before[2]));
    let drain = Command::DrainNode {
        node: drained.0,
        draining: true,
    };
    assert_eq!(c.commit(&drain), Ok(()));
    c.run_until(1000, |_| false);
    assert_eq!(
        moving(&c),
        1,
        "only the operator's move: {:?}",
        c.partition(0)
    );
    assert!(c.partition(0).reassignment.is_some());
    // Once it finishes, the drain goes on, a move at a time, to its end.
    let most = std::cell::Cell::new(0);
    let done = |c: &Cluster| {
        most.set(most.get().max(moving(c)));
        whole_without(c, drained)
    };
    assert!(finish_moves(&mut c, done), "{:?}", spread(&c));
    assert_eq!(most.get(), 1);
    // Taken back: an operator's rebalance plans every move and starts them one at a time
    // until the node has its share.
    let undrain = Command::DrainNode {
        node: drained.0,
        draining: false,
    };
    assert_eq!(c.commit(&undrain), Ok(()));
    let planned = c.leader_mut().unwrap().rebalance_replicas().unwrap();
    assert_eq!(planned, 4, "18 replicas over 4 nodes: 4 or 5 each");
    most.set(0);
    let balanced = |c: &Cluster| {
        most.set(most.get().max(moving(c)));
        let (replicas, _) = spread(c);
        moving(c) == 0 && replicas.len() == 4 && replicas.values().all(|n| (4..=5).contains(n))
    };
    assert!(finish_moves(&mut c, balanced), "{:?}", spread(&c));
    assert_eq!(most.get(), 1);
    assert_eq!(c.leader_mut().unwrap().rebalance_replicas().unwrap(), 0);
}

fn acl(principal: &str, topic: &str, operation: Operation, permission: Permission) -> AclBinding {
    AclBinding {
        principal: principal.into(),
        resource_type: ResourceType::Topic,
        pattern: PatternType::Literal,
        name: topic.into(),
        operation,
        permission,
    }
}

/// ACLs are replicated metadata: every controller applies them, a duplicate or unknown
/// one is refused the same everywhere, and they survive a controller leader's death and a
/// restart of every controller from its file.
#[test]
fn acls_survive_controller_failover_and_a_full_restart() {
    for seed in seeds(3) {
        let mut c = Cluster::start(3, seed, 10, 3, 2);
        let read_a = acl("alice", "a", Operation::Read, Permission::Allow);
        let deny_b = acl("*", "b", Operation::All, Permission::Deny);
        for binding in [&read_a, &deny_b] {
            let add = Command::CreateAcl {
                binding: Box::new(binding.clone()),
            };
            assert_eq!(c.commit(&add), Ok(()), "seed {seed}");
        }
        let again = Command::CreateAcl {
            binding: Box::new(read_a.clone()),
        };
        assert_eq!(c.commit(&again), Err(Refusal::NoChange));
        let invalid = Command::CreateAcl {
            binding: Box::new(acl("", "a", Operation::Read, Permission::Allow)),
        };
        assert!(matches!(c.commit(&invalid), Err(Refusal::Acl(_))));
        let absent = Command::DeleteAcl {
            binding: Box::new(acl("bob", "a", Operation::Read, Permission::Allow)),
        };
        assert_eq!(c.commit(&absent), Err(Refusal::NoChange));
        assert!(c.run_until(1000, Cluster::settled), "seed {seed}: diverged");
        for (id, node) in &c.controllers {
            let acls = node.metadata().acls();
            assert_eq!(acls.len(), 2, "seed {seed}: node {id}");
            assert!(acls.allows("alice", Operation::Describe, Resource::Topic("a")));
            assert!(!acls.allows("alice", Operation::Read, Resource::Topic("b")));
        }

        // The controller leader dies: the next one has the ACLs and takes changes.
        let old = c.leader().unwrap();
        c.down.insert(old);
        c.silent.insert(old);
        assert!(
            c.run_until(2000, |c| c.leader().is_some_and(|l| l != old)),
            "seed {seed}: no new controller leader"
        );
        assert_eq!(c.metadata().acls().len(), 2, "seed {seed}");
        let remove = Command::DeleteAcl {
            binding: Box::new(deny_b.clone()),
        };
        assert_eq!(c.commit(&remove), Ok(()), "seed {seed}");
        let before = c.metadata().acls().clone();
        assert_eq!(before.iter().collect::<Vec<_>>(), vec![&read_a]);

        // Every controller restarts from its file, the dead one too (it learns the
        // removal from the others).
        c.down.clear();
        c.silent.clear();
        c.restart_all(1_000_000);
        assert!(
            c.run_until(2000, |c| c.leader().is_some()),
            "seed {seed}: no leader after the restart"
        );
        assert!(c.run_until(1000, Cluster::settled), "seed {seed}: diverged");
        for (id, node) in &c.controllers {
            assert_eq!(node.metadata().acls(), &before, "seed {seed}: node {id}");
        }
    }
}
