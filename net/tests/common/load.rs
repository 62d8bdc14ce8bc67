//! The load of the replication tests and the check of what it left in the log: per
//! partition, idempotent producers that each send one `acks=all` batch at a time with their
//! own producer id and consecutive sequences (records are `producer:sequence:`), retrying a
//! failed batch unchanged until it is acknowledged, and a consumer tailing the partition
//! from its leader. [`verify`] reads the whole log of [`TOPIC`] through the current leaders
//! and checks it: offsets dense from 0; every acknowledged record at its acknowledged
//! offset, byte for byte; each producer's records present exactly once and in sequence
//! order (everything it had acknowledged, plus at most the batch it was still retrying);
//! every record a consumer saw still at the offset where it saw it; no record that no
//! producer of the load wrote.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardlog_engine::TimestampMs;
use shardlog_engine::record::{BatchBuilder, ProducerFields, RecordIter};
use shardlog_net::ErrorCode;
use shardlog_net::api::Acks;
use shardlog_net::client::{Client, ClientConfig, ClientError, FetchOptions};

use super::cluster::Cluster;
use super::view::{WAIT_MAX, topic_partitions};

/// The topic every load writes.
pub const TOPIC: &str = "events";
/// Records per batch; a producer's sequence advances by this per acknowledged batch.
pub const RECORDS_PER_BATCH: i32 = 4;
/// Values the check knows as taken by an isolated leader (a writer pinned to it): any
/// that survives is named as such.
pub const ZOMBIE_PREFIX: &[u8] = b"zombie:";

/// How much load: partitions of [`TOPIC`] written (`0..partitions`), producers per
/// partition, and a pause after each acknowledged batch (zero: as fast as acks come).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Partitions written.
    pub partitions: u32,
    /// Idempotent producers per partition.
    pub producers_per_partition: u32,
    /// How long a producer waits after each acknowledgement.
    pub pause: Duration,
}

// ---- records ----

/// The value of a producer's record `sequence`: `producer:sequence:` and some padding.
pub fn value(producer_id: i64, sequence: i32) -> Vec<u8> {
    let mut v = format!("{producer_id}:{sequence}:").into_bytes();
    v.resize(48 + (sequence as usize % 80), b'.');
    v
}

/// `(producer id, sequence)` of a value made by [`value`].
pub fn parse(value: &[u8]) -> Option<(i64, i32)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(':');
    let producer_id = parts.next()?.parse().ok()?;
    let sequence = parts.next()?.parse().ok()?;
    Some((producer_id, sequence))
}

/// A batch of records `base_sequence..+RECORDS_PER_BATCH` of an idempotent producer.
pub fn producer_batch(producer_id: i64, base_sequence: i32) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder.set_producer(ProducerFields {
        producer_id,
        producer_epoch: 0,
        base_sequence,
    });
    for sequence in base_sequence..base_sequence + RECORDS_PER_BATCH {
        builder.push(
            TimestampMs::now(),
            None,
            Some(&value(producer_id, sequence)),
            &[],
        );
    }
    Bytes::from(builder.finish())
}

// ---- the load ----

/// What the load reports while it runs, for the thread injecting faults.
#[derive(Default)]
pub struct Progress {
    /// Every producer: (partition, producer id).
    pub producers: Mutex<Vec<(u32, i64)>>,
    /// When each acknowledgement arrived: partition, producer, the batch's base offset.
    pub acks: Mutex<Vec<(Instant, u32, i64, u64)>>,
    /// When each failed produce attempt failed, the producer, and the error's kind.
    pub errors: Mutex<Vec<(Instant, i64, String)>>,
}

impl Progress {
    pub fn ack(&self, partition: u32, producer_id: i64, base_offset: u64) {
        let now = Instant::now();
        let mut acks = self.acks.lock().unwrap();
        acks.push((now, partition, producer_id, base_offset));
    }

    pub fn error(&self, producer_id: i64, kind: String) {
        let now = Instant::now();
        self.errors.lock().unwrap().push((now, producer_id, kind));
    }

    /// Acknowledgements after `since`, per producer (every producer listed).
    pub fn acks_per_producer(&self, since: Instant) -> BTreeMap<(u32, i64), usize> {
        let mut counts: BTreeMap<(u32, i64), usize> = self
            .producers
            .lock()
            .unwrap()
            .iter()
            .map(|&key| (key, 0))
            .collect();
        for (at, partition, producer_id, _) in self.acks.lock().unwrap().iter() {
            if *at > since {
                *counts.entry((*partition, *producer_id)).or_default() += 1;
            }
        }
        counts
    }

    /// Acknowledgements that arrived after `since`.
    pub fn acks_after(&self, since: Instant) -> usize {
        let acks = self.acks.lock().unwrap();
        acks.iter().filter(|(at, ..)| *at > since).count()
    }

    /// Acknowledgements that arrived in `[from, to)`: (partition, base offset).
    pub fn acks_between(&self, from: Instant, to: Instant) -> Vec<(u32, u64)> {
        let acks = self.acks.lock().unwrap();
        acks.iter()
            .filter(|(at, ..)| *at >= from && *at < to)
            .map(|(_, partition, _, base_offset)| (*partition, *base_offset))
            .collect()
    }

    /// When the first acknowledgement of `partition` after `since` arrived.
    pub fn first_ack_after(&self, since: Instant, partition: u32) -> Option<Instant> {
        let acks = self.acks.lock().unwrap();
        acks.iter()
            .find(|(at, p, ..)| *at > since && *p == partition)
            .map(|(at, ..)| *at)
    }

    /// Failed attempts in `[from, to)` by kind.
    pub fn errors_between(&self, from: Instant, to: Instant) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for (at, _, kind) in self.errors.lock().unwrap().iter() {
            if *at >= from && *at < to {
                *kinds.entry(kind.clone()).or_default() += 1;
            }
        }
        kinds
    }

    /// Failed attempts after `since` by producer and kind.
    pub fn errors_per_producer(&self, since: Instant) -> BTreeMap<(i64, String), usize> {
        let mut kinds = BTreeMap::new();
        for (at, producer_id, kind) in self.errors.lock().unwrap().iter() {
            if *at > since {
                *kinds.entry((*producer_id, kind.clone())).or_default() += 1;
            }
        }
        kinds
    }
}

/// One producer's record of what it was told.
#[derive(Debug)]
pub struct ProducerLog {
    pub partition: u32,
    pub producer_id: i64,
    /// Acknowledged batches: (base offset, base sequence).
    pub acked: Vec<(u64, i32)>,
    /// The base sequence of the batch it was still retrying when stopped: it may or may
    /// not be in the log.
    pub pending: Option<i32>,
    /// Answers that must never come (a lost or reordered sequence, a protocol error).
    pub fatal: Vec<String>,
}

/// One consumer's record: offset -> value of every record it read.
#[derive(Debug)]
pub struct ConsumerLog {
    pub partition: u32,
    pub seen: BTreeMap<u64, Vec<u8>>,
    /// Reads that broke the rules (a gap, an offset going back, an offset out of range).
    pub anomalies: Vec<String>,
}

/// What the load saw, once stopped.
#[derive(Debug)]
pub struct Outcome {
    pub producers: Vec<ProducerLog>,
    pub consumers: Vec<ConsumerLog>,
}

/// The load: producers and consumers on a glommio executor of their own thread.
pub struct Load {
    pub stop: Arc<AtomicBool>,
    pub progress: Arc<Progress>,
    /// `None` once stopped.
    pub thread: Option<std::thread::JoinHandle<Outcome>>,
}

impl Load {
    /// Starts a load of `shape` against `brokers`; producer ids are `run * 100 + 1..`, so
    /// that loads run one after the other on the same topic never share one.
    pub fn start(brokers: &str, run: i64, shape: Shape) -> Load {
        let Shape {
            partitions,
            producers_per_partition,
            pause,
        } = shape;
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        // Listed before the thread starts: a wait for every producer's acks must not
        // pass for want of producers.
        let producers: Vec<(u32, i64)> = (0..partitions)
            .flat_map(|partition| {
                (0..producers_per_partition).map(move |task| {
                    let id = run * 100 + i64::from(partition * producers_per_partition + task) + 1;
                    (partition, id)
                })
            })
            .collect();
        progress.producers.lock().unwrap().clone_from(&producers);
        let thread = {
            let (brokers, stop, progress) = (brokers.to_owned(), stop.clone(), progress.clone());
            std::thread::spawn(move || {
                super::run(move || async move {
                    let producers: Vec<_> = producers
                        .into_iter()
                        .map(|(partition, producer_id)| {
                            glommio::spawn_local(produce(
                                brokers.clone(),
                                partition,
                                producer_id,
                                pause,
                                stop.clone(),
                                progress.clone(),
                            ))
                        })
                        .collect();
                    let consumers: Vec<_> = (0..partitions)
                        .map(|partition| {
                            glommio::spawn_local(consume(brokers.clone(), partition, stop.clone()))
                        })
                        .collect();
                    Outcome {
                        producers: futures::future::join_all(producers).await,
                        consumers: futures::future::join_all(consumers).await,
                    }
                })
            })
        };
        Load {
            stop,
            progress,
            thread: Some(thread),
        }
    }

    /// Stops the load once every request in flight is answered or timed out.
    pub fn stop(mut self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("stopped once");
        let outcome = thread.join().unwrap();
        let acked: usize = outcome.producers.iter().map(|p| p.acked.len()).sum();
        let seen: usize = outcome.consumers.iter().map(|c| c.seen.len()).sum();
        eprintln!("load stopped: {acked} batches acknowledged, {seen} records consumed");
        outcome
    }
}

impl Drop for Load {
    /// A test that failed midway leaves no load running on.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Short timeouts and no retries inside the client: the loops below retry themselves and
/// record every failed attempt.
fn load_client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(3),
        retries: 0,
        ..ClientConfig::default()
    }
}

async fn connect(brokers: &str, stop: &AtomicBool) -> Option<Client> {
    while !stop.load(Ordering::SeqCst) {
        match Client::connect(brokers, load_client_config()).await {
            Ok(client) => return Some(client),
            Err(_) => glommio::timer::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

/// The kind of a failed produce attempt, and whether it must never happen.
fn error_kind(error: &ClientError) -> (String, bool) {
    match error {
        ClientError::Server { code, .. } => {
            let fatal = matches!(
                code,
                ErrorCode::OutOfOrderSequence
                    | ErrorCode::ProducerFenced
                    | ErrorCode::CorruptBatch
                    | ErrorCode::InvalidRequest
                    | ErrorCode::StorageError
                    | ErrorCode::Unknown
            );
            (format!("{code:?}"), fatal)
        }
        ClientError::Io(_) => ("connection failed".into(), false),
        ClientError::Timeout => ("client timeout".into(), false),
        ClientError::NoBroker(_) => ("no broker".into(), false),
        ClientError::StaleMetadata(_) => ("stale metadata".into(), false),
        ClientError::LeaderMoved { .. } => ("leader moved".into(), false),
        other => (format!("{other}"), true),
    }
}

/// One idempotent producer: one batch at a time, each retried unchanged until it is
/// acknowledged (or the load stops).
async fn produce(
    brokers: String,
    partition: u32,
    producer_id: i64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> ProducerLog {
    let mut log = ProducerLog {
        partition,
        producer_id,
        acked: Vec::new(),
        pending: None,
        fatal: Vec::new(),
    };
    let Some(client) = connect(&brokers, &stop).await else {
        return log;
    };
    let mut sequence = 0;
    'batches: while !stop.load(Ordering::SeqCst) {
        let batch = producer_batch(producer_id, sequence);
        let mut backoff = Duration::from_millis(20);
        loop {
            match client
                .produce(TOPIC, partition, Acks::All, batch.clone())
                .await
            {
                Ok(Some(base_offset)) => {
                    progress.ack(partition, producer_id, base_offset);
                    log.acked.push((base_offset, sequence));
                    sequence += RECORDS_PER_BATCH;
                    if !pause.is_zero() {
                        glommio::timer::sleep(pause).await;
                    }
                    break;
                }
                Ok(None) => unreachable!("acks=all is answered"),
                Err(e) => {
                    let (kind, fatal) = error_kind(&e);
                    if fatal {
                        log.fatal.push(format!("sequence {sequence}: {e}"));
                    }
                    progress.error(producer_id, kind);
                    if stop.load(Ordering::SeqCst) {
                        log.pending = Some(sequence);
                        break 'batches;
                    }
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
    log
}

/// Tails a partition from its leader with long polls, recording every record it reads.
async fn consume(brokers: String, partition: u32, stop: Arc<AtomicBool>) -> ConsumerLog {
    let mut log = ConsumerLog {
        partition,
        seen: BTreeMap::new(),
        anomalies: Vec::new(),
    };
    let Some(client) = connect(&brokers, &stop).await else {
        return log;
    };
    let options = FetchOptions {
        max_wait: Duration::from_millis(200),
        ..FetchOptions::default()
    };
    let mut next = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let fetched = match client.fetch(TOPIC, partition, next, options).await {
            Ok(fetched) => fetched,
            Err(e) => {
                if e.code() == Some(ErrorCode::OffsetOutOfRange) {
                    // It read `next - 1` below a high watermark: every leader has it.
                    log.anomalies.push(format!("fetch at {next}: {e}"));
                }
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        for batch in fetched.batches() {
            let Ok((header, bytes)) = batch else {
                log.anomalies
                    .push(format!("fetch at {next}: a batch failed its checks"));
                break;
            };
            for record in RecordIter::new(&header, bytes) {
                let record = record.unwrap();
                let offset = record.offset(&header).0;
                if offset < next {
                    continue;
                }
                if offset != next {
                    log.anomalies
                        .push(format!("read {offset} after {}", next.wrapping_sub(1)));
                }
                if offset >= fetched.high_watermark {
                    log.anomalies.push(format!(
                        "read {offset} at or past the high watermark {}",
                        fetched.high_watermark
                    ));
                }
                log.seen
                    .insert(offset, record.value.unwrap_or_default().to_vec());
                next = offset + 1;
            }
        }
    }
    log
}

// ---- reading and checking the log ----

/// The whole log of partitions `0..partitions` up to their high watermarks, read through
/// the current leaders: partition -> (offset, value) in log order.
pub fn read_log(brokers: &str, partitions: u32) -> BTreeMap<u32, Vec<(u64, Vec<u8>)>> {
    let brokers = brokers.to_owned();
    super::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        let mut log = BTreeMap::new();
        for partition in 0..partitions {
            log.insert(
                partition,
                super::consume_all(&client, TOPIC, partition, 0).await,
            );
        }
        log
    })
}

/// A partition's records as read: (offset, value) in log order.
type Records = [(u64, Vec<u8>)];

/// The value at `offset` in `records` (dense from 0), if the log holds it.
fn value_at(records: &Records, offset: u64) -> Option<&Vec<u8>> {
    let index = usize::try_from(offset).ok()?;
    records
        .get(index)
        .filter(|(o, _)| *o == offset)
        .map(|(_, v)| v)
}

/// Checks a reading of the whole log against what the loads saw (see the module docs).
/// Returns the records per partition.
pub fn check_log(log: &BTreeMap<u32, Vec<(u64, Vec<u8>)>>, outcomes: &[&Outcome]) -> Vec<usize> {
    let mut problems = Vec::new();
    for outcome in outcomes {
        for producer in &outcome.producers {
            for fatal in &producer.fatal {
                problems.push(format!("producer {}: {fatal}", producer.producer_id));
            }
        }
        for consumer in &outcome.consumers {
            for anomaly in &consumer.anomalies {
                problems.push(format!("consumer of {}: {anomaly}", consumer.partition));
            }
        }
    }
    let mut sizes = Vec::new();
    for (&partition, records) in log {
        sizes.push(records.len());
        check_partition(partition, records, outcomes, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "{} problems in the log; the first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    sizes
}

/// Checks one partition's records: dense offsets, every producer's records (see
/// [`check_producer`]), nothing no producer wrote, every consumed record in place.
fn check_partition(
    partition: u32,
    records: &Records,
    outcomes: &[&Outcome],
    problems: &mut Vec<String>,
) {
    if let Some((i, (offset, _))) = records
        .iter()
        .enumerate()
        .find(|(i, (offset, _))| u64::try_from(*i) != Ok(*offset))
    {
        problems.push(format!(
            "{partition}: offset {offset} at position {i}: not dense"
        ));
    }
    // Each producer's sequences in log order.
    let mut sequences: BTreeMap<i64, Vec<(u64, i32)>> = BTreeMap::new();
    for (offset, value) in records {
        match parse(value) {
            Some((producer_id, sequence)) => sequences
                .entry(producer_id)
                .or_default()
                .push((*offset, sequence)),
            None if value.starts_with(ZOMBIE_PREFIX) => problems.push(format!(
                "{partition}/{offset}: {:?}, taken by the isolated leader, survived",
                String::from_utf8_lossy(value)
            )),
            None => problems.push(format!("{partition}/{offset}: unknown record {value:?}")),
        }
    }
    for producer in outcomes
        .iter()
        .flat_map(|o| &o.producers)
        .filter(|p| p.partition == partition)
    {
        let found = sequences.remove(&producer.producer_id).unwrap_or_default();
        check_producer(producer, records, &found, problems);
    }
    for (id, found) in sequences {
        problems.push(format!(
            "{partition}: {} records of producer {id}, which no load ran",
            found.len()
        ));
    }
    for consumer in outcomes
        .iter()
        .flat_map(|o| &o.consumers)
        .filter(|c| c.partition == partition)
    {
        for (offset, seen) in &consumer.seen {
            if value_at(records, *offset) != Some(seen) {
                problems.push(format!(
                    "{partition}/{offset}: a consumer read {:?}, now {:?}",
                    String::from_utf8_lossy(seen),
                    value_at(records, *offset).map(|v| String::from_utf8_lossy(v))
                ));
            }
        }
    }
}

/// Checks one producer's records in its partition (`found`: its (offset, sequence) in log
/// order): each present exactly once and in sequence order, everything it had
/// acknowledged (plus at most the batch it was retrying), each acknowledged record at its
/// acknowledged offset, byte for byte.
fn check_producer(
    producer: &ProducerLog,
    records: &Records,
    found: &[(u64, i32)],
    problems: &mut Vec<String>,
) {
    let (partition, id) = (producer.partition, producer.producer_id);
    if let Some((i, (offset, sequence))) = found
        .iter()
        .enumerate()
        .find(|(i, (_, sequence))| i32::try_from(*i) != Ok(*sequence))
    {
        problems.push(format!(
            "{partition}: producer {id}'s record {i} (offset {offset}) has sequence \
             {sequence}: lost, duplicated or reordered"
        ));
    }
    let k = RECORDS_PER_BATCH.unsigned_abs() as usize;
    let acked = producer.acked.len() * k;
    let allowed = if producer.pending.is_some() {
        acked..=acked + k
    } else {
        acked..=acked
    };
    if !allowed.contains(&found.len()) {
        problems.push(format!(
            "{partition}: producer {id} has {} records in the log, {acked} acknowledged \
             (pending batch: {:?})",
            found.len(),
            producer.pending
        ));
    }
    for &(base_offset, base_sequence) in &producer.acked {
        for i in 0..RECORDS_PER_BATCH {
            let offset = base_offset + u64::from(i.unsigned_abs());
            let expected = value(id, base_sequence + i);
            if value_at(records, offset) != Some(&expected) {
                problems.push(format!(
                    "{partition}/{offset}: acknowledged {:?}, found {:?}",
                    String::from_utf8_lossy(&expected),
                    value_at(records, offset).map(|v| String::from_utf8_lossy(v))
                ));
            }
        }
    }
}

/// Reads the log through the leaders and checks it; prints a summary.
pub fn verify(cluster: &Cluster, outcomes: &[&Outcome], label: &str) {
    let log = read_log(&cluster.brokers(), topic_partitions(cluster));
    let sizes = check_log(&log, outcomes);
    let acked: usize = outcomes
        .iter()
        .flat_map(|o| &o.producers)
        .map(|p| p.acked.len() * RECORDS_PER_BATCH as usize)
        .sum();
    let seen: usize = outcomes
        .iter()
        .flat_map(|o| &o.consumers)
        .map(|c| c.seen.len())
        .sum();
    eprintln!(
        "{label}: log verified: records per partition {sizes:?}; {acked} acknowledged \
         records and {seen} consumed ones all in place"
    );
}

/// Waits until every producer got `n` acknowledgements after `since`: each one, so that
/// a producer stuck on a stale leader does not hide behind the others.
pub fn wait_acks(cluster: &mut Cluster, progress: &Progress, since: Instant, n: usize, what: &str) {
    cluster.wait_for(
        &format!("{n} acks of every producer {what}"),
        WAIT_MAX,
        |_| {
            let counts = progress.acks_per_producer(since);
            if counts.values().all(|&c| c >= n) {
                Ok(())
            } else {
                Err(format!(
                    "acks per (partition, producer): {counts:?}; failed attempts per \
                     (producer, error): {:?}",
                    progress.errors_per_producer(since)
                ))
            }
        },
    );
}

/// Waits for the first acknowledgement of every partition after `since`; prints how
/// long each took.
pub fn wait_first_acks(cluster: &mut Cluster, progress: &Progress, since: Instant, what: &str) {
    let mut partitions: Vec<u32> = progress
        .producers
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| *p)
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    for p in partitions {
        let (first, _) = cluster.wait_for(&format!("an acknowledgement {what}"), WAIT_MAX, |_| {
            progress
                .first_ack_after(since, p)
                .ok_or_else(|| format!("none yet of {TOPIC}/{p}"))
        });
        eprintln!(
            "{TOPIC}/{p}: first acknowledgement {:?} {what}",
            first - since
        );
    }
}
