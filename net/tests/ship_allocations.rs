//! Heap allocations per record on the replication ship path, counted on the whole
//! process by a counting global allocator (`common::alloc_count`; this binary holds this
//! one test, so nothing else runs beside it): a three-node cluster runs in this process
//! (`shardlog_net::server::run` on one thread per node, one shard each), and a client
//! produces `RECORDS` batches of one 1 KiB record each with `acks=all`, `IN_FLIGHT` at a
//! time, to a partition of replication factor 1 (nothing shipped) and then to one of
//! replication factor 3 (every batch shipped to two followers). The difference is what
//! shipping costs per record.
//!
//! Before zero-copy shipping, the leader copied each shipped batch into a `Vec`, into the
//! rkyv archive and into the frame's `Bytes`, and each follower into an aligned buffer,
//! the deserialised `Vec` and the appended `Vec` (measured: about 24 KB more per record
//! with replication factor 3 than with 1). Now the leader sends what it read and the
//! follower appends from its receive buffer: what is left per ship is that receive
//! buffer, the segment writer's flush, the frame heads and the follower's acks. The
//! bound fails on a copy of the batch per ship on either side.
//!
//! Everything is counted (client, produce path, ships, acks, heartbeats and timers), so
//! the bound is loose enough for that. The figures are printed (`--no-capture`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use shardlog_net::api::{Acks, TopicConfig};
use shardlog_net::client::{Client, ClientConfig};
use shardlog_net::server::{self, FileConfig, ServerConfig};

#[global_allocator]
static ALLOC: common::alloc_count::Counting = common::alloc_count::Counting;

const NODES: usize = 3;
/// Replication factor 1: produced, never shipped.
const UNSHIPPED: &str = "unshipped";
/// Replication factor 3: every batch shipped to two followers.
const SHIPPED: &str = "shipped";
/// Bytes of each record's value.
const VALUE_BYTES: usize = 1024;
/// Batches produced before counting (connections, caches and buffers warm up).
const WARM_UP: usize = 300;
/// Batches counted, one record each.
const RECORDS: usize = 3000;
/// Produce requests outstanding at once.
const IN_FLIGHT: usize = 16;
/// How long the cluster may take to elect a controller and create the topic.
const READY_MAX: Duration = Duration::from_secs(60);
/// Bytes allocated per record for shipping it to two followers (replication factor 3
/// minus replication factor 1), at most: two receive buffers of the 1 KiB batch, the
/// followers' flushes, frame heads and acks. One copy of the batch per ship more (2 KiB)
/// on top of what is left breaks it; before zero-copy shipping it was about 24 KB.
const SHIP_BYTES_PER_RECORD_MAX: i64 = 12 * 1024;

#[test]
fn shipping_a_record_allocates_no_copy_of_its_batch() {
    let root = common::data_dir();
    let servers = start_cluster(root.path());
    let brokers = (0..NODES)
        .map(|node| format!("127.0.0.1:{}", servers.ports[node]))
        .collect::<Vec<_>>()
        .join(",");
    let [unshipped, shipped] = common::run(move || async move {
        let client = ready_client(&brokers).await;
        [
            per_record(&client, UNSHIPPED).await,
            per_record(&client, SHIPPED).await,
        ]
    });
    servers.stop();
    let ship = (
        shipped.0 as i64 - unshipped.0 as i64,
        shipped.1 as i64 - unshipped.1 as i64,
    );
    eprintln!(
        "{RECORDS} x {VALUE_BYTES} B records, acks=all, {IN_FLIGHT} in flight, per record: \
         replication factor 1: {} allocations, {} bytes; replication factor 3: {} \
         allocations, {} bytes; shipping to two followers: {} allocations, {} bytes",
        unshipped.0, unshipped.1, shipped.0, shipped.1, ship.0, ship.1
    );
    assert!(
        ship.1 <= SHIP_BYTES_PER_RECORD_MAX,
        "shipping allocates {} bytes per record (at most {SHIP_BYTES_PER_RECORD_MAX}): a \
         batch is copied on the ship path",
        ship.1
    );
}

/// Allocations and bytes per record of producing `RECORDS` batches to `topic` (after a
/// warm-up).
async fn per_record(client: &Client, topic: &str) -> (u64, u64) {
    produce_all(client, topic, batches(WARM_UP)).await;
    let counted = batches(RECORDS);
    let before = common::alloc_count::snapshot();
    produce_all(client, topic, counted).await;
    let spent = common::alloc_count::snapshot() - before;
    let records = RECORDS as u64;
    (spent.allocations / records, spent.bytes / records)
}

/// The three nodes, running on their threads.
struct Servers {
    ports: Vec<u16>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Servers {
    /// Stops every node as SIGTERM stops a `shardlogd` (each node's `run` returns), and
    /// waits for them: their data directories go with the test's.
    fn stop(self) {
        // SAFETY: `kill` on this process with a signal each node handles (signal-hook).
        let sent = unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to this process");
        for thread in self.threads {
            thread.join().unwrap().unwrap();
        }
    }
}

/// Starts `NODES` nodes under `root`: one shard each, replication factor 3,
/// `min_insync` 2, flush always, a cluster secret.
fn start_cluster(root: &Path) -> Servers {
    let all_ports = common::cluster::free_ports(2 * NODES);
    let (ports, peer_ports) = (all_ports[..NODES].to_vec(), all_ports[NODES..].to_vec());
    let secret = root.join("cluster.secret");
    std::fs::write(&secret, common::cluster::CLUSTER_SECRET).unwrap();
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&secret, owner_only).unwrap();
    let peers = (0..NODES)
        .map(|node| format!("{node}=127.0.0.1:{}", peer_ports[node]))
        .collect::<Vec<_>>()
        .join(",");
    let threads = (0..NODES)
        .map(|node| {
            let dir = root.join(format!("node{node}"));
            std::fs::create_dir_all(&dir).unwrap();
            let toml = format!(
                "data_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\n\
                 kafka_listen = \"127.0.0.1:0\"\nadmin_listen = \"off\"\nshards = 1\n\
                 node_id = {node}\nflush = \"always\"\nio_memory = 2097152\n\
                 peers = \"{peers}\"\npeer_listen = \"127.0.0.1:{peer_port}\"\n\
                 cluster_secret_file = {secret:?}\nreplication_factor = 3\nmin_insync = 2\n\
                 session_timeout_ms = 1000\nreplica_lag_ms = 10000\n",
                data = dir.join("data"),
                port = ports[node],
                peer_port = peer_ports[node],
            );
            let file = dir.join("shardlogd.toml");
            std::fs::write(&file, toml).unwrap();
            let config = ServerConfig::try_from(FileConfig::read(&file).unwrap()).unwrap();
            std::thread::spawn(move || server::run(config))
        })
        .collect();
    Servers { ports, threads }
}

/// A client of the cluster once both topics exist and take an `acks=all` produce.
async fn ready_client(brokers: &str) -> Client {
    let deadline = Instant::now() + READY_MAX;
    loop {
        assert!(Instant::now() < deadline, "no cluster within {READY_MAX:?}");
        let Ok(client) = Client::connect(brokers, ClientConfig::default()).await else {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut ready = true;
        for (topic, replicas) in [(UNSHIPPED, 1), (SHIPPED, 3)] {
            let config = TopicConfig {
                min_insync: Some(replicas.min(2)),
                ..TopicConfig::default()
            };
            // Already exists, or no controller yet: the produce tells which.
            let _ = client.create_topic(topic, 1, replicas, config).await;
            let batch = batches(1).remove(0);
            ready &= client.produce(topic, 0, Acks::All, batch).await.is_ok();
        }
        if ready {
            return client;
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` batches of one `VALUE_BYTES` record each, built before anything is counted.
fn batches(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| common::batch(&[vec![u8::try_from(i % 251).unwrap(); VALUE_BYTES]]))
        .collect()
}

/// Produces every batch with `acks=all`, `IN_FLIGHT` at a time; each must be acknowledged.
async fn produce_all(client: &Client, topic: &str, batches: Vec<Bytes>) {
    let mut batches = batches.into_iter();
    let mut pending = FuturesUnordered::new();
    loop {
        while pending.len() < IN_FLIGHT {
            let Some(batch) = batches.next() else { break };
            pending.push(client.produce(topic, 0, Acks::All, batch));
        }
        match pending.next().await {
            Some(result) => {
                result.unwrap();
            }
            None => break,
        }
    }
}
