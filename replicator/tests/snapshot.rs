//! Opening a replica from a snapshot (`ReplicaDriver::open`, `replica_snapshot.rs`): a
//! one-member leader on an in-memory log whose storage counts the bytes read.
//!
//! - After a clean stop the open reads no batch; after a crash it reads only what
//!   follows the last segment roll. (The whole log before snapshots.)
//! - A damaged, cut or garbage snapshot falls back to an older one, then to the whole
//!   log, with the same producer state; it is deleted.
//! - A producer whose batches retention deleted is still known after a restart: its
//!   retry is answered with the original offsets. (Before: stored again, or refused as
//!   out of order.)

#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::rc::Rc;

use bytes::Bytes;
use futures::executor::block_on;
use futures::future::{Either, select};
use shardlog_engine::record::{BatchBuilder, ProducerFields};
use shardlog_engine::{
    EngineConfig, FlushPolicy, LeaderEpoch, OpenMode, PartitionLog, SimFile, SimStorage, Storage,
    StorageFile, TimestampMs,
};
use shardlog_replicator::driver::{ReplicaDriver, Transport};
use shardlog_replicator::message::Message;
use shardlog_replicator::{
    Acks, Incarnation, Member, NodeId, ProduceError, Produced, ReplicaConfig, Tick,
};

const DIR: &str = "/data/t/0";
const NODE: NodeId = NodeId(1);
const SEGMENT_BYTES: u64 = 64 << 10;
/// The idempotent producer whose batches come first in the log.
const PRODUCER: i64 = 7;
const FILLER_BATCHES: usize = 400;

/// `SimStorage` that counts the bytes its files return from reads.
#[derive(Clone)]
struct Counting {
    inner: SimStorage,
    read: Rc<Cell<u64>>,
}

struct CountingFile {
    inner: SimFile,
    read: Rc<Cell<u64>>,
}

impl Storage for Counting {
    type File = CountingFile;
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<CountingFile> {
        Ok(CountingFile {
            inner: self.inner.open(path, mode).await?,
            read: self.read.clone(),
        })
    }
    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path).await
    }
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path).await
    }
    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path).await
    }
}

impl StorageFile for CountingFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let bytes = self.inner.read_at(pos, len).await?;
        self.read.set(self.read.get() + bytes.len() as u64);
        Ok(bytes)
    }
    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(pos, data).await
    }
    async fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data().await
    }
    async fn size(&self) -> io::Result<u64> {
        self.inner.size().await
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len).await
    }
    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.inner.preallocate(len).await
    }
    async fn close(self) -> io::Result<()> {
        self.inner.close().await
    }
}

struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, _to: NodeId, _message: Message) {}
}

type Driver = ReplicaDriver<Counting, NoPeers>;

fn engine_config(retention_bytes: Option<u64>) -> EngineConfig {
    EngineConfig {
        segment_bytes: SEGMENT_BYTES,
        tail_cache_bytes: 64 << 10,
        flush: FlushPolicy::Always,
        retention_bytes,
        retention_age: None,
        segment_age: None,
        ..EngineConfig::default()
    }
}

fn replica_config() -> ReplicaConfig {
    ReplicaConfig {
        min_insync: 1,
        ..ReplicaConfig::default()
    }
}

/// A one-record batch of ~1 KiB; `producer`: (id, sequence) of an idempotent producer.
fn batch(i: usize, producer: Option<(i64, i32)>) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    if let Some((producer_id, base_sequence)) = producer {
        builder.set_producer(ProducerFields {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        });
    }
    let value = format!("record {i} {}", "v".repeat(1000));
    builder.push(
        TimestampMs(1_700_000_000_000 + i as i64),
        None,
        Some(value.as_bytes()),
        &[],
    );
    builder.finish()
}

struct Node {
    storage: Counting,
    /// Raised at each open: the replica leads a newer epoch each run.
    runs: i32,
    retention_bytes: Option<u64>,
}

impl Node {
    fn new(retention_bytes: Option<u64>) -> Node {
        Node {
            storage: Counting {
                inner: SimStorage::new(),
                read: Rc::new(Cell::new(0)),
            },
            runs: 0,
            retention_bytes,
        }
    }

    /// Opens the log and the replica, makes it the leader; returns the driver and the
    /// bytes its open read.
    async fn open(&mut self) -> (Rc<Driver>, u64) {
        self.runs += 1;
        let config = engine_config(self.retention_bytes);
        let log = PartitionLog::open(self.storage.clone(), DIR, config)
            .await
            .unwrap();
        let before = self.storage.read.get();
        let driver = ReplicaDriver::open(
            Rc::new(log),
            NoPeers,
            replica_config(),
            NODE,
            Incarnation(u64::try_from(self.runs).unwrap()),
            Tick(0),
        )
        .await
        .unwrap();
        let read = self.storage.read.get() - before;
        driver.become_leader(
            LeaderEpoch(self.runs),
            vec![NODE],
            vec![NODE],
            1,
            vec![Member {
                node: NODE,
                live: true,
                incarnation: Incarnation(0),
                catching_up: false,
            }],
        );
        (Rc::new(driver), read)
    }

    /// Runs `body` against an open replica, then stops it cleanly (closing the log) or
    /// crashes the storage (`SimStorage::crash`), as a SIGKILL would.
    async fn run<T>(&mut self, clean: bool, body: impl AsyncFnOnce(&Driver) -> T) -> (T, u64) {
        let (driver, read) = self.open().await;
        let out = {
            let run = pin!(driver.run());
            let work = pin!(body(&*driver));
            match select(run, work).await {
                Either::Left((result, _)) => panic!("the driver stopped: {result:?}"),
                Either::Right((out, run)) => {
                    if clean {
                        driver.stop();
                        run.await.unwrap();
                    }
                    out
                }
            }
        };
        let log = driver.log().clone();
        drop(driver);
        if clean {
            Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        } else {
            drop(log);
            self.storage.inner.crash(u64::try_from(self.runs).unwrap());
        }
        (out, read)
    }
}

async fn produce(driver: &Driver, bytes: Vec<u8>) -> Result<Produced, ProduceError> {
    driver.produce(Acks::All, bytes.as_slice().into()).await
}

/// The producer's two batches, then filler rolling several segments; returns the
/// producer's offsets and the log's size in bytes.
async fn fill(driver: &Driver) -> (Vec<Produced>, u64) {
    let mut first = Vec::new();
    for sequence in 0..2 {
        let produced = produce(driver, batch(sequence, Some((PRODUCER, sequence as i32))))
            .await
            .unwrap();
        assert!(!produced.duplicate);
        first.push(produced);
    }
    for i in 0..FILLER_BATCHES {
        produce(driver, batch(100 + i, None)).await.unwrap();
    }
    let bytes = driver.log().segments().iter().map(|s| s.data_len).sum();
    assert!(driver.log().segments().len() >= 5, "several segments");
    (first, bytes)
}

/// The producer's retries are answered with their original offsets, not stored again.
async fn retries_are_duplicates(driver: &Driver, first: &[Produced]) {
    for (sequence, original) in first.iter().enumerate() {
        let end = driver.log_end();
        let again = produce(driver, batch(sequence, Some((PRODUCER, sequence as i32)))).await;
        assert_eq!(
            again,
            Ok(Produced {
                duplicate: true,
                ..*original
            }),
            "retry of sequence {sequence}"
        );
        assert_eq!(driver.log_end(), end, "nothing appended");
    }
}

fn snapshot_paths(node: &Node) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = node
        .storage
        .inner
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn an_open_after_a_clean_stop_reads_no_batch() {
    block_on(async {
        let mut node = Node::new(None);
        let ((first, log_bytes), _) = node.run(true, async |d| fill(d).await).await;
        let (_, read) = node
            .run(true, async |d| {
                assert_eq!(d.recovery().snapshot, Some(d.log_end()));
                assert_eq!(d.recovery().batches_replayed, 0);
                retries_are_duplicates(d, &first).await;
            })
            .await;
        // The snapshot file only (a few KiB); the log is hundreds of KiB.
        assert!(log_bytes > 5 * SEGMENT_BYTES, "{log_bytes}");
        assert!(
            read < 16 << 10,
            "open read {read} bytes of a {log_bytes}-byte log"
        );
    });
}

#[test]
fn an_open_after_a_crash_replays_only_what_follows_the_last_roll() {
    block_on(async {
        let mut node = Node::new(None);
        let ((first, log_bytes), _) = node.run(false, async |d| fill(d).await).await;
        let (_, read) = node
            .run(false, async |d| {
                let recovery = d.recovery();
                assert_eq!(recovery.snapshot, Some(d.log().active_base()));
                assert!(recovery.bytes_replayed <= SEGMENT_BYTES);
                retries_are_duplicates(d, &first).await;
            })
            .await;
        assert!(
            read < 2 * SEGMENT_BYTES,
            "open read {read} bytes of a {log_bytes}-byte log"
        );
    });
}

#[test]
fn a_damaged_snapshot_falls_back_to_an_older_one_then_to_the_whole_log() {
    block_on(async {
        let mut node = Node::new(None);
        let ((first, _), _) = node.run(true, async |d| fill(d).await).await;
        let paths = snapshot_paths(&node);
        assert!(paths.len() >= 3, "{paths:?}");
        // The newest: one bit flipped in its payload (the log end it names).
        let newest = paths.last().unwrap().clone();
        node.storage.inner.flip_bit(&newest, 40, 2).unwrap();
        let older = paths[paths.len() - 2].clone();
        let older_offset: u64 = older
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        node.run(true, async |d| {
            assert_eq!(d.recovery().snapshot.map(|o| o.0), Some(older_offset));
            retries_are_duplicates(d, &first).await;
        })
        .await;
        // Every snapshot damaged in a different way: the whole log is replayed.
        for (i, path) in snapshot_paths(&node).iter().enumerate() {
            let mut bytes = node.storage.inner.contents(path).unwrap();
            match i % 3 {
                0 => bytes.truncate(40),
                1 => bytes.iter_mut().for_each(|b| *b = 0xa5),
                _ => bytes[60] ^= 0x80,
            }
            node.storage.inner.set_contents(path, bytes).unwrap();
        }
        node.run(true, async |d| {
            assert_eq!(d.recovery().snapshot, None);
            assert!(d.recovery().batches_replayed >= FILLER_BATCHES as u64);
            retries_are_duplicates(d, &first).await;
        })
        .await;
        // The clean stop wrote a good one again.
        node.run(true, async |d| {
            assert_eq!(d.recovery().snapshot, Some(d.log_end()));
        })
        .await;
    });
}

#[test]
fn a_retry_is_a_duplicate_after_retention_and_a_restart() {
    for clean in [true, false] {
        block_on(async {
            let mut node = Node::new(Some(3 * SEGMENT_BYTES));
            let ((first, _), _) = node
                .run(clean, async |d| {
                    let filled = fill(d).await;
                    let deleted = d.log().apply_retention(TimestampMs::now()).await.unwrap();
                    assert!(deleted > 0);
                    assert!(d.log().log_start() > filled.0[1].last_offset);
                    filled
                })
                .await;
            node.run(clean, async |d| retries_are_duplicates(d, &first).await)
                .await;
        });
    }
}
