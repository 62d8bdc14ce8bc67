//! `ReplicaDriver` end to end on real partition logs (in-memory `SimStorage`) under one
//! glommio executor: three replicas connected by an in-memory transport (messages rkyv
//! encoded and decoded), a tick task on the wall clock, and the test as the controller.
//!
//! Acks=all produce; every replica's log byte-identical up to the high watermark; a cut
//! follower is dropped from the ISR and producing goes on; healed, it catches up and
//! rejoins; restarted from its log (recover_batch), it catches up again.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use glommio::{LocalExecutorBuilder, Placement};
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{
    EngineConfig, FlushPolicy, LeaderEpoch, Offset, PartitionLog, SimStorage, TimestampMs,
};
use shardlog_replicator::driver::{ReplicaDriver, Transport};
use shardlog_replicator::message::{self, Message};
use shardlog_replicator::{Acks, Incarnation, NodeId, ReplicaConfig, Tick};

type Driver = ReplicaDriver<SimStorage, MemTransport>;

const EPOCH: LeaderEpoch = LeaderEpoch(1);
const LEADER: NodeId = NodeId(1);
const DIR: &str = "/p0";

/// A message on the wire: sender, receiver, the envelope's archive and the data region.
type Wired = (NodeId, NodeId, Vec<u8>, Bytes);

/// The wire: a queue of encoded envelopes, and the nodes whose traffic is dropped.
#[derive(Default)]
struct Net {
    queue: RefCell<VecDeque<Wired>>,
    cut: RefCell<BTreeSet<NodeId>>,
    drivers: RefCell<BTreeMap<NodeId, Rc<Driver>>>,
    start: Cell<Option<Instant>>,
    stop: Cell<bool>,
    /// Logs with `flush=never`, reporting what is written as durable.
    never: Cell<bool>,
}

impl Net {
    fn cut_off(&self, from: NodeId, to: NodeId) -> bool {
        let cut = self.cut.borrow();
        cut.contains(&from) || cut.contains(&to)
    }

    fn driver(&self, id: NodeId) -> Rc<Driver> {
        self.drivers.borrow().get(&id).cloned().unwrap()
    }

    fn now(&self) -> Tick {
        Tick(self.start.get().unwrap().elapsed().as_millis() as u64)
    }
}

struct MemTransport {
    from: NodeId,
    net: Rc<Net>,
}

impl Transport for MemTransport {
    fn send(&self, to: NodeId, message: Message) {
        if self.net.cut_off(self.from, to) {
            return;
        }
        let (envelope, batches) = message::seal(0, self.from, to, message);
        let bytes = message::encode(&envelope).unwrap().to_vec();
        // One data region, as a socket delivers the chunks sent back to back.
        let data = Bytes::from(batches.chunks().concat());
        self.net
            .queue
            .borrow_mut()
            .push_back((self.from, to, bytes, data));
    }
}

/// The controller: the partition's committed ISR and its version.
struct Controller {
    epoch: LeaderEpoch,
    isr: Vec<NodeId>,
    version: u64,
}

fn replica_config(never: bool) -> ReplicaConfig {
    ReplicaConfig {
        replica_lag_ms: 300,
        min_insync: 2,
        retry_ms: 50,
        heartbeat_ms: 20,
        ships_inflight_max: 8,
        request_timeout_ms: 20_000,
        waiters_max: 4096,
        durable_when_acked: never,
    }
}

fn engine_config(never: bool) -> EngineConfig {
    EngineConfig {
        segment_bytes: 1 << 20,
        tail_cache_bytes: 64 << 10,
        flush: if never {
            FlushPolicy::Never
        } else {
            FlushPolicy::Always
        },
        ..EngineConfig::default()
    }
}

fn batch(i: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for r in 0..3 {
        let value = format!("batch {i} record {r} {}", "x".repeat(300 + i % 17));
        builder.push(
            TimestampMs(1_700_000_000_000 + i as i64),
            Some(format!("k{i}").as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    builder.finish()
}

async fn open_driver(
    net: &Rc<Net>,
    storage: &SimStorage,
    id: NodeId,
    incarnation: Incarnation,
) -> (Rc<Driver>, glommio::task::JoinHandle<()>) {
    let log = PartitionLog::open(storage.clone(), DIR, engine_config(net.never.get()))
        .await
        .unwrap();
    let transport = MemTransport {
        from: id,
        net: net.clone(),
    };
    let driver = ReplicaDriver::open(
        Rc::new(log),
        transport,
        replica_config(net.never.get()),
        id,
        incarnation,
        net.now(),
    )
    .await
    .unwrap();
    let driver = Rc::new(driver);
    let worker = driver.clone();
    let handle = glommio::spawn_local(async move {
        worker.run().await.unwrap();
    })
    .detach();
    (driver, handle)
}

/// Delivers queued envelopes, decoding each as a server would.
async fn pump(net: Rc<Net>) {
    let mut delivered = 0u64;
    while !net.stop.get() {
        let next = net.queue.borrow_mut().pop_front();
        match next {
            Some((from, to, bytes, data)) => {
                if net.cut_off(from, to) {
                    continue;
                }
                let envelope = message::open(message::decode(&bytes).unwrap(), data).unwrap();
                assert_eq!((envelope.from, envelope.to), (from.0, to.0));
                let driver = net.drivers.borrow().get(&to).cloned();
                if let Some(driver) = driver {
                    driver.receive(from, envelope.message);
                }
                delivered += 1;
                if delivered % 64 == 0 {
                    glommio::yield_if_needed().await;
                }
            }
            None => glommio::timer::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// Ticks every replica on the wall clock and answers ISR proposals as the controller.
async fn ticker(net: Rc<Net>, controller: Rc<RefCell<Controller>>) {
    while !net.stop.get() {
        let now = net.now();
        let drivers: Vec<Rc<Driver>> = net.drivers.borrow().values().cloned().collect();
        for driver in drivers {
            driver.tick(now);
            for proposal in driver.take_proposals() {
                let update = {
                    let mut c = controller.borrow_mut();
                    if proposal.epoch == c.epoch && proposal.isr_version == c.version {
                        c.version += 1;
                        c.isr = proposal.isr;
                    }
                    (c.epoch, c.version, c.isr.clone())
                };
                driver.isr_updated(update.0, update.1, update.2, Vec::new());
            }
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// The stored bytes of `[0, until)`.
async fn read_to(log: &PartitionLog<SimStorage>, until: Offset) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = Offset(0);
    while at < until {
        let read = log.read(at, 1 << 20).await.unwrap();
        for (header, bytes) in read.batches() {
            if header.base_offset >= until {
                break;
            }
            out.extend_from_slice(bytes);
            at = header.next_offset();
        }
    }
    assert_eq!(at, until, "high watermark inside a batch");
    out
}

/// Every node in `nodes` holds the leader's whole log as committed, byte for byte.
async fn converged(net: &Net, leader: NodeId, nodes: &[NodeId]) {
    let leader = net.driver(leader);
    let end = leader.log_end();
    wait_until("followers to catch up", || {
        nodes.iter().all(|&n| {
            let d = net.driver(n);
            d.high_watermark() == end && d.log().log_end() == end
        })
    })
    .await;
    let expected = read_to(leader.log(), end).await;
    for &n in nodes {
        let got = read_to(net.driver(n).log(), end).await;
        assert!(got == expected, "{n}: log differs from the leader's");
    }
}

async fn produce_all(leader: &Driver, range: std::ops::Range<usize>) {
    let answers =
        join_all(range.map(|i| leader.produce(Acks::All, batch(i).as_slice().into()))).await;
    let mut last = None;
    for answer in answers {
        let produced = answer.unwrap();
        assert!(!produced.duplicate);
        assert!(
            last.is_none_or(|l| produced.base_offset > l),
            "offsets in order"
        );
        last = Some(produced.last_offset);
        assert!(leader.high_watermark() > produced.last_offset);
    }
}

/// Stops node `id`'s driver, drops its log, and opens both again from `storage`
/// (recovery, then `recover_batch` of every batch) as the next incarnation.
async fn restart(
    net: &Rc<Net>,
    storage: &SimStorage,
    id: NodeId,
    workers: &mut BTreeMap<NodeId, glommio::task::JoinHandle<()>>,
) {
    net.cut.borrow_mut().insert(id);
    let old = net.drivers.borrow_mut().remove(&id).unwrap();
    let end_before = old.log().log_end();
    old.stop();
    workers.remove(&id).unwrap().await;
    assert_eq!(Rc::strong_count(&old), 1, "the worker let go");
    drop(old);
    let (driver, worker) = open_driver(net, storage, id, Incarnation(1)).await;
    assert_eq!(driver.log_end(), end_before, "recovered log end");
    net.drivers.borrow_mut().insert(id, driver);
    net.cut.borrow_mut().clear();
    workers.insert(id, worker);
}

struct Cluster {
    net: Rc<Net>,
    nodes: [NodeId; 3],
    storages: Vec<SimStorage>,
    workers: BTreeMap<NodeId, glommio::task::JoinHandle<()>>,
    controller: Rc<RefCell<Controller>>,
    tasks: Vec<glommio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Three replicas, node 1 leading epoch 1, the ISR all three.
    async fn start() -> Cluster {
        Cluster::start_with(false).await
    }

    /// `start`, with `flush=never` logs if `never`.
    async fn start_with(never: bool) -> Cluster {
        let net = Rc::new(Net::default());
        net.never.set(never);
        net.start.set(Some(Instant::now()));
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let storages: Vec<SimStorage> = nodes.iter().map(|_| SimStorage::new()).collect();
        let mut workers = BTreeMap::new();
        for (id, storage) in nodes.iter().zip(&storages) {
            let (driver, worker) = open_driver(&net, storage, *id, Incarnation(0)).await;
            net.drivers.borrow_mut().insert(*id, driver);
            workers.insert(*id, worker);
        }
        let controller = Rc::new(RefCell::new(Controller {
            epoch: EPOCH,
            isr: nodes.to_vec(),
            version: 1,
        }));
        let tasks = vec![
            glommio::spawn_local(pump(net.clone())).detach(),
            glommio::spawn_local(ticker(net.clone(), controller.clone())).detach(),
        ];
        let leader = net.driver(LEADER);
        leader.become_leader(EPOCH, nodes.to_vec(), nodes.to_vec(), 1, Vec::new());
        for &n in &nodes[1..] {
            net.driver(n).become_follower(EPOCH, LEADER);
        }
        assert_eq!(leader.leading(), Some(EPOCH));
        Cluster {
            net,
            nodes,
            storages,
            workers,
            controller,
            tasks,
        }
    }

    async fn shutdown(self) {
        self.net.stop.set(true);
        for task in self.tasks {
            task.await;
        }
        for n in &self.nodes {
            self.net.driver(*n).stop();
        }
        for (_, worker) in self.workers {
            worker.await;
        }
    }
}

#[test]
fn three_replicas_replicate_shrink_and_catch_up() {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    executor.run(async {
        let mut cluster = Cluster::start().await;
        let (net, nodes) = (cluster.net.clone(), cluster.nodes);
        let leader = net.driver(LEADER);

        // Phase 1: all three in sync.
        produce_all(&leader, 0..200).await;
        converged(&net, LEADER, &nodes).await;
        wait_until("all three in the ISR", || {
            leader.isr() == Some(nodes.to_vec())
        })
        .await;
        assert_eq!(leader.log().dir(), Path::new(DIR));

        // Phase 2: node 3 cut off: the ISR shrinks and acks=all goes on.
        net.cut.borrow_mut().insert(NodeId(3));
        produce_all(&leader, 200..260).await;
        assert_eq!(leader.isr(), Some(vec![NodeId(1), NodeId(2)]));
        assert_eq!(cluster.controller.borrow().isr, vec![NodeId(1), NodeId(2)]);
        converged(&net, LEADER, &nodes[..2]).await;
        assert!(net.driver(NodeId(3)).log_end() < leader.log_end());

        // Phase 3: healed, node 3 catches up and rejoins the ISR.
        net.cut.borrow_mut().clear();
        produce_all(&leader, 260..280).await;
        wait_until("node 3 back in the ISR", || {
            leader.isr().is_some_and(|isr| isr.contains(&NodeId(3)))
        })
        .await;
        converged(&net, LEADER, &nodes).await;

        // Phase 4: node 3 restarts from its log (recover_batch) and catches up again.
        let storage = cluster.storages[2].clone();
        restart(&net, &storage, NodeId(3), &mut cluster.workers).await;
        net.driver(NodeId(3)).become_follower(EPOCH, LEADER);
        produce_all(&leader, 280..300).await;
        converged(&net, LEADER, &nodes).await;
        wait_until("node 3 in the ISR", || {
            leader.isr().is_some_and(|isr| isr.len() == 3)
        })
        .await;
        drop(leader);
        cluster.shutdown().await;
    });
}

#[test]
fn a_replica_stopped_during_a_sync_finishes_it_and_keeps_the_batch() {
    // A follower removed from the replicas (a reassignment) is stopped while its flusher
    // waits on a sync. The stop must let that flush finish: cutting it short left the
    // log's one flush slot taken, and the final sync waited forever.
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    executor.run(async {
        let mut cluster = Cluster::start().await;
        let net = cluster.net.clone();
        let leader = net.driver(LEADER);
        produce_all(&leader, 0..5).await;
        let follower = NodeId(2);
        let storage = cluster.storages[1].clone();
        storage.hold_syncs(true);
        let produced = leader.submit(Acks::Leader, batch(5).as_slice().into());
        produced.await.unwrap();
        wait_until("the follower's sync held", || storage.sync_held()).await;
        let driver = net.driver(follower);
        let appended = driver.log().log_end();
        assert!(appended > driver.log().durable_end(), "the sync is held");
        net.cut.borrow_mut().insert(follower);
        driver.stop();
        let release = glommio::spawn_local({
            let storage = storage.clone();
            async move {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                storage.hold_syncs(false);
            }
        })
        .detach();
        let worker = cluster.workers.remove(&follower).unwrap();
        let stopped = std::pin::pin!(worker);
        let timeout = std::pin::pin!(glommio::timer::sleep(Duration::from_secs(5)));
        let ended = futures::future::select(stopped, timeout).await;
        assert!(
            matches!(ended, futures::future::Either::Left(_)),
            "the stopped replica's worker never ended"
        );
        release.await;
        assert_eq!(driver.log().durable_end(), appended, "the batch is durable");
        net.cut.borrow_mut().remove(&follower);
        cluster
            .workers
            .insert(follower, glommio::spawn_local(async {}).detach());
        cluster.shutdown().await;
    });
}

#[test]
fn flush_never_acks_all_once_every_isr_member_wrote_it() {
    // Logs that never sync on their own (flush=never, far below the unsynced-bytes limit):
    // with `durable_when_acked`, acks=all is answered once the ISR members wrote the batch.
    // Without it nothing would ever count as durable and the produce would time out.
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    executor.run(async {
        let cluster = Cluster::start_with(true).await;
        let (net, nodes) = (cluster.net.clone(), cluster.nodes);
        let leader = net.driver(LEADER);
        let produce = std::pin::pin!(produce_all(&leader, 0..50));
        let timeout = std::pin::pin!(glommio::timer::sleep(Duration::from_secs(5)));
        let produced = futures::future::select(produce, timeout).await;
        assert!(
            matches!(produced, futures::future::Either::Left(_)),
            "acks=all not answered within 5 s under flush=never"
        );
        assert!(
            leader.log().durable_end() < leader.log().log_end(),
            "nothing synced"
        );
        converged(&net, LEADER, &nodes).await;
        cluster.shutdown().await;
    });
}

#[test]
fn deposed_leader_truncates_its_unreplicated_suffix() {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    executor.run(async {
        let cluster = Cluster::start().await;
        let (net, nodes) = (cluster.net.clone(), cluster.nodes);
        let old = net.driver(LEADER);
        produce_all(&old, 0..20).await;
        converged(&net, LEADER, &nodes).await;

        // Node 1, cut off, appends batches nobody else gets (acks=leader answers them).
        net.cut.borrow_mut().insert(LEADER);
        let answers =
            join_all((20..25).map(|i| old.produce(Acks::Leader, batch(i).as_slice().into()))).await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let stale_end = old.log().log_end();
        let stale = b"batch 20 record 0";
        let held = read_to(old.log(), stale_end).await;
        assert!(held.windows(stale.len()).any(|w| w == stale));

        // The controller moves leadership to node 2 in epoch 2.
        let (epoch, new_leader, isr) = (LeaderEpoch(2), NodeId(2), vec![NodeId(2), NodeId(3)]);
        {
            let mut c = cluster.controller.borrow_mut();
            c.epoch = epoch;
            c.isr.clone_from(&isr);
            c.version += 1;
        }
        let version = cluster.controller.borrow().version;
        let leader = net.driver(new_leader);
        leader.become_leader(epoch, nodes.to_vec(), isr, version, Vec::new());
        net.driver(NodeId(3)).become_follower(epoch, new_leader);
        produce_all(&leader, 100..110).await;

        // Node 1 comes back as a follower: it truncates its suffix by leader epoch and
        // ends up byte-identical to the new leader.
        net.cut.borrow_mut().clear();
        old.become_follower(epoch, new_leader);
        assert_eq!(old.leading(), None);
        produce_all(&leader, 110..130).await;
        converged(&net, new_leader, &nodes).await;
        let held = read_to(old.log(), old.log().log_end()).await;
        assert!(
            !held.windows(stale.len()).any(|w| w == stale),
            "the unreplicated batch survived"
        );
        wait_until("node 1 back in the ISR", || {
            leader.isr().is_some_and(|isr| isr.len() == 3)
        })
        .await;
        drop((old, leader));
        cluster.shutdown().await;
    });
}
