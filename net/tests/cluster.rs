//! Replication end to end: three real `shardlogd` nodes on 127.0.0.1 (replication factor
//! 3, `min_insync` 2, `--flush always`, 2 shards each) under continuous `acks=all` load,
//! through the faults of the replication issue, one test each:
//!
//! 1. SIGKILL the leader under load: a new leader serves; the node is fenced (out of every
//!    ISR), restarts and rejoins the ISR; the preferred leader returns. Also: SIGKILL the
//!    leader and restart it at once, within its session: it may not lead its old epoch
//!    again, and its followers rejoin.
//! 2. SIGSTOP a follower: the ISR shrinks and producing goes on; SIGCONT: it catches up
//!    and rejoins.
//! 3. SIGKILL two nodes: nothing is acknowledged while only one replica is up (the
//!    errors are recorded); both restart and producing resumes.
//! 4. SIGKILL all three at once and start them again under the same producers.
//! 5. Each node SIGKILLed in turn, then SIGSTOPped in turn, while the partitions are
//!    idle: every partition, whether its leader lived or failed over, acknowledges
//!    within the session timeout plus one second.
//! 6. A network partition isolating the leader (node links through fault-injecting
//!    proxies; clients still reach every node): the others elect a new controller and
//!    partition leader and producing goes on; a writer pinned to the old leader gets no
//!    acknowledgement and none of its records survive; healed, the old leader rejoins as
//!    a follower.
//!
//! The load: per partition, producers that each send one batch at a time with their own
//! idempotent producer id and consecutive sequences (records are `producer:sequence:`),
//! retrying a failed batch unchanged until it is acknowledged, and a consumer tailing the
//! partition from its leader. At the end of each test the whole log is read from the
//! current leader and checked: offsets dense from 0; every acknowledged record at its
//! acknowledged offset, byte for byte; each producer's records present exactly once and
//! in sequence order (everything it had acknowledged, plus at most the batch it was still
//! retrying); every record a consumer saw still at the offset where it saw it.
//!
//! Times (failover, ISR changes) are measured and printed; they are asserted only
//! against generous bounds, since a loaded two-core machine is no place to time things.
//! A failing test prints the tail of every node's stderr.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::too_many_lines
)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{Cluster, Links, high_watermark, partition};
use shardlog_engine::TimestampMs;
use shardlog_engine::record::{BatchBuilder, ProducerFields, RecordIter};
use shardlog_net::ErrorCode;
use shardlog_net::api::{
    Acks, Api, MetadataResponse, PartitionMetadata, ProduceRequest, ProduceResponse, TopicConfig,
    VERSION,
};
use shardlog_net::client::{Client, ClientConfig, ClientError, FetchOptions};
use shardlog_net::frame::{FLAG_ERROR, FrameHeader, decode_meta};

const TOPIC: &str = "events";
const PARTITIONS: u32 = 2;
const PRODUCERS_PER_PARTITION: u32 = 2;
/// Records per batch; a producer's sequence advances by this per acknowledged batch.
const RECORDS_PER_BATCH: i32 = 4;
/// Bound on every wait for the cluster to reach a state (elections, ISR changes).
const WAIT_MAX: Duration = Duration::from_secs(30);
/// Bound on the time from a leader's SIGKILL to the first acknowledgement after it. The
/// design target is about 2 s (1 s session timeout, then an election); this bound only
/// catches a failover that does not happen.
const FAILOVER_MAX: Duration = Duration::from_secs(10);
/// Acknowledged batches each phase waits for, per producer, before the next fault.
const PHASE_ACKS: usize = 60;

// ---- records ----

/// The value of a producer's record `sequence`: `producer:sequence:` and some padding.
fn value(producer_id: i64, sequence: i32) -> Vec<u8> {
    let mut v = format!("{producer_id}:{sequence}:").into_bytes();
    v.resize(48 + (sequence as usize % 80), b'.');
    v
}

/// `(producer id, sequence)` of a value made by [`value`].
fn parse(value: &[u8]) -> Option<(i64, i32)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(':');
    let producer_id = parts.next()?.parse().ok()?;
    let sequence = parts.next()?.parse().ok()?;
    Some((producer_id, sequence))
}

/// A batch of records `base_sequence..+RECORDS_PER_BATCH` of an idempotent producer.
fn producer_batch(producer_id: i64, base_sequence: i32) -> Bytes {
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
struct Progress {
    /// Every producer: (partition, producer id).
    producers: Mutex<Vec<(u32, i64)>>,
    /// When each acknowledgement arrived: partition, producer, the batch's base offset.
    acks: Mutex<Vec<(Instant, u32, i64, u64)>>,
    /// When each failed produce attempt failed, the producer, and the error's kind.
    errors: Mutex<Vec<(Instant, i64, String)>>,
}

impl Progress {
    fn ack(&self, partition: u32, producer_id: i64, base_offset: u64) {
        let now = Instant::now();
        let mut acks = self.acks.lock().unwrap();
        acks.push((now, partition, producer_id, base_offset));
    }

    fn error(&self, producer_id: i64, kind: String) {
        let now = Instant::now();
        self.errors.lock().unwrap().push((now, producer_id, kind));
    }

    /// Acknowledgements after `since`, per producer (every producer listed).
    fn acks_per_producer(&self, since: Instant) -> BTreeMap<(u32, i64), usize> {
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
    fn acks_after(&self, since: Instant) -> usize {
        let acks = self.acks.lock().unwrap();
        acks.iter().filter(|(at, ..)| *at > since).count()
    }

    /// Acknowledgements that arrived in `[from, to)`: (partition, base offset).
    fn acks_between(&self, from: Instant, to: Instant) -> Vec<(u32, u64)> {
        let acks = self.acks.lock().unwrap();
        acks.iter()
            .filter(|(at, ..)| *at >= from && *at < to)
            .map(|(_, partition, _, base_offset)| (*partition, *base_offset))
            .collect()
    }

    /// When the first acknowledgement of `partition` after `since` arrived.
    fn first_ack_after(&self, since: Instant, partition: u32) -> Option<Instant> {
        let acks = self.acks.lock().unwrap();
        acks.iter()
            .find(|(at, p, ..)| *at > since && *p == partition)
            .map(|(at, ..)| *at)
    }

    /// Failed attempts in `[from, to)` by kind.
    fn errors_between(&self, from: Instant, to: Instant) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for (at, _, kind) in self.errors.lock().unwrap().iter() {
            if *at >= from && *at < to {
                *kinds.entry(kind.clone()).or_default() += 1;
            }
        }
        kinds
    }

    /// Failed attempts after `since` by producer and kind.
    fn errors_per_producer(&self, since: Instant) -> BTreeMap<(i64, String), usize> {
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
struct ProducerLog {
    partition: u32,
    producer_id: i64,
    /// Acknowledged batches: (base offset, base sequence).
    acked: Vec<(u64, i32)>,
    /// The base sequence of the batch it was still retrying when stopped: it may or may
    /// not be in the log.
    pending: Option<i32>,
    /// Answers that must never come (a lost or reordered sequence, a protocol error).
    fatal: Vec<String>,
}

/// One consumer's record: offset -> value of every record it read.
#[derive(Debug)]
struct ConsumerLog {
    partition: u32,
    seen: BTreeMap<u64, Vec<u8>>,
    /// Reads that broke the rules (a gap, an offset going back, an offset out of range).
    anomalies: Vec<String>,
}

/// What the load saw, once stopped.
#[derive(Debug)]
struct Outcome {
    producers: Vec<ProducerLog>,
    consumers: Vec<ConsumerLog>,
}

/// The load: producers and consumers on a glommio executor of their own thread.
struct Load {
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    /// `None` once stopped.
    thread: Option<std::thread::JoinHandle<Outcome>>,
}

impl Load {
    /// Starts the load against `brokers`; producer ids are `run * 100 + 1..`, so that
    /// loads run one after the other on the same topic never share one.
    fn start(brokers: &str, run: i64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        // Listed before the thread starts: a wait for every producer's acks must not
        // pass for want of producers.
        let producers: Vec<(u32, i64)> = (0..PARTITIONS)
            .flat_map(|partition| {
                (0..PRODUCERS_PER_PARTITION).map(move |task| {
                    let id = run * 100 + i64::from(partition * PRODUCERS_PER_PARTITION + task) + 1;
                    (partition, id)
                })
            })
            .collect();
        progress.producers.lock().unwrap().clone_from(&producers);
        let thread = {
            let (brokers, stop, progress) = (brokers.to_owned(), stop.clone(), progress.clone());
            std::thread::spawn(move || {
                common::run(move || async move {
                    let producers: Vec<_> = producers
                        .into_iter()
                        .map(|(partition, producer_id)| {
                            glommio::spawn_local(produce(
                                brokers.clone(),
                                partition,
                                producer_id,
                                stop.clone(),
                                progress.clone(),
                            ))
                        })
                        .collect();
                    let consumers: Vec<_> = (0..PARTITIONS)
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
    fn stop(mut self) -> Outcome {
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

// ---- a writer pinned to one node, over raw frames ----

/// Sends `acks=all` batches of plain (non-idempotent) records `zombie:<n>:` straight to
/// one node, ignoring metadata, and collects the answers: what a client that still
/// believes in an isolated leader gets.
struct PinnedWriter {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// Answers so far: correlation (the request's number) and error code.
    answers: Arc<Mutex<Vec<(u64, u16)>>>,
    writer: std::thread::JoinHandle<()>,
    reader: std::thread::JoinHandle<()>,
}

const ZOMBIE_PREFIX: &[u8] = b"zombie:";

/// How long the pinned writer's reader waits for the answers still missing once stopped.
const ANSWERS_WAIT: Duration = Duration::from_secs(20);

impl PinnedWriter {
    fn start(addr: &str, partition: u32, every: Duration) -> PinnedWriter {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut write_half = stream.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let request = ProduceRequest {
                        topic: TOPIC.to_owned(),
                        partition,
                        acks: Acks::All,
                        timeout_ms: 30_000,
                    };
                    let n = sent.load(Ordering::SeqCst);
                    let mut value = ZOMBIE_PREFIX.to_vec();
                    value.extend(format!("{n}:").bytes());
                    let batch = common::batch(&[value]);
                    let frame = common::frame(Api::Produce as u16, VERSION, n, &request, &batch);
                    if write_half.write_all(&frame).is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(every);
                }
            })
        };
        let answers = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let (stop, sent, answers) = (stop.clone(), sent.clone(), answers.clone());
            std::thread::spawn(move || read_answers(stream, &stop, &sent, &answers))
        };
        PinnedWriter {
            stop,
            sent,
            answers,
            writer,
            reader,
        }
    }

    /// Answers received so far.
    fn answered(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Stops sending and collects the answers (see `read_answers`): (requests sent,
    /// answers as correlation and error code).
    fn finish(self) -> (u64, Vec<(u64, u16)>) {
        self.stop.store(true, Ordering::SeqCst);
        self.writer.join().unwrap();
        self.reader.join().unwrap();
        let answers = self.answers.lock().unwrap().clone();
        (self.sent.load(Ordering::SeqCst), answers)
    }
}

/// Reads produce answers until the node closes the connection, or, once `stop` is set,
/// until every request sent has its answer or `ANSWERS_WAIT` passes.
fn read_answers(
    mut stream: TcpStream,
    stop: &AtomicBool,
    sent: &AtomicU64,
    answers: &Mutex<Vec<(u64, u16)>>,
) {
    let mut stopped_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            let at = *stopped_at.get_or_insert_with(Instant::now);
            let all = answers.lock().unwrap().len() as u64 >= sent.load(Ordering::SeqCst);
            if all || at.elapsed() > ANSWERS_WAIT {
                return;
            }
        }
        let mut len = [0u8; 4];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        }
        let total = FrameHeader::frame_bytes(len).unwrap();
        let mut frame = rkyv::util::AlignedVec::<16>::new();
        frame.extend_from_slice(&len);
        frame.resize(total, 0);
        // The rest of a frame follows its length at once.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if stream.read_exact(&mut frame[4..]).is_err() {
            return;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let header = FrameHeader::parse(&frame).unwrap();
        assert_eq!(
            header.flags & FLAG_ERROR,
            0,
            "produce answered with an error frame"
        );
        let response: ProduceResponse = decode_meta(&header, &frame).unwrap();
        answers
            .lock()
            .unwrap()
            .push((header.correlation, response.error));
    }
}

// ---- reading and checking the log ----

/// The whole log of every partition up to its high watermark, read through the current
/// leaders: partition -> (offset, value) in log order.
fn read_log(brokers: &str) -> BTreeMap<u32, Vec<(u64, Vec<u8>)>> {
    let brokers = brokers.to_owned();
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        let mut log = BTreeMap::new();
        for partition in 0..PARTITIONS {
            log.insert(
                partition,
                common::consume_all(&client, TOPIC, partition, 0).await,
            );
        }
        log
    })
}

/// Checks a reading of the whole log against what the loads saw (see the module docs).
/// Returns the records per partition.
fn check_log(log: &BTreeMap<u32, Vec<(u64, Vec<u8>)>>, outcomes: &[&Outcome]) -> Vec<usize> {
    let mut problems = Vec::new();
    let k = RECORDS_PER_BATCH as usize;
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
    for partition in 0..PARTITIONS {
        let records = log.get(&partition).map_or(&[][..], Vec::as_slice);
        sizes.push(records.len());
        if let Some((i, (offset, _))) = records
            .iter()
            .enumerate()
            .find(|(i, (offset, _))| *offset != *i as u64)
        {
            problems.push(format!(
                "{partition}: offset {offset} at position {i}: not dense"
            ));
        }
        let at = |offset: u64| records.get(offset as usize).filter(|(o, _)| *o == offset);
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
            let id = producer.producer_id;
            let found = sequences.remove(&id).unwrap_or_default();
            if let Some((i, (offset, sequence))) = found
                .iter()
                .enumerate()
                .find(|(i, (_, sequence))| *sequence != *i as i32)
            {
                problems.push(format!(
                    "{partition}: producer {id}'s record {i} (offset {offset}) has sequence \
                     {sequence}: lost, duplicated or reordered"
                ));
            }
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
                    let offset = base_offset + i as u64;
                    let expected = value(id, base_sequence + i);
                    if at(offset).map(|(_, v)| v) != Some(&expected) {
                        problems.push(format!(
                            "{partition}/{offset}: acknowledged {:?}, found {:?}",
                            String::from_utf8_lossy(&expected),
                            at(offset).map(|(_, v)| String::from_utf8_lossy(v))
                        ));
                    }
                }
            }
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
                if at(*offset).map(|(_, v)| v) != Some(seen) {
                    problems.push(format!(
                        "{partition}/{offset}: a consumer read {:?}, now {:?}",
                        String::from_utf8_lossy(seen),
                        at(*offset).map(|(_, v)| String::from_utf8_lossy(v))
                    ));
                }
            }
        }
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

/// Reads the log through the leaders and checks it; prints a summary.
fn verify(cluster: &Cluster, outcomes: &[&Outcome], label: &str) {
    let log = read_log(&cluster.brokers());
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

// ---- cluster states ----

/// The controller leader's own metadata, asking only `nodes` (the controller must be one
/// of them and say it leads): the authoritative view, where a node that was down, paused
/// or cut off may still hold a stale one.
fn controller_view(cluster: &Cluster, nodes: &[usize]) -> Result<MetadataResponse, String> {
    let (asked, meta) = cluster
        .metadata_from(nodes)
        .ok_or_else(|| format!("none of nodes {nodes:?} answers"))?;
    let controller = meta
        .controller
        .ok_or_else(|| format!("node {asked} knows no controller"))? as usize;
    if !nodes.contains(&controller) {
        return Err(format!("node {asked} names controller {controller}"));
    }
    let meta = cluster
        .metadata(controller)
        .map_err(|e| format!("controller {controller}: {e}"))?;
    if meta.controller != Some(controller as u32) {
        return Err(format!("node {controller} no longer leads the controller"));
    }
    Ok(meta)
}

/// Waits until `check` holds in the controller's view (asking only `nodes`); returns the
/// view and the time it took.
fn wait_view(
    cluster: &mut Cluster,
    what: &str,
    nodes: &[usize],
    check: impl Fn(&MetadataResponse) -> Result<(), String>,
) -> (MetadataResponse, Duration) {
    cluster.wait_for(what, WAIT_MAX, |c| {
        let meta = controller_view(c, nodes)?;
        check(&meta).map(|()| meta)
    })
}

/// `check` on every partition of the topic.
fn every_partition(
    meta: &MetadataResponse,
    check: impl Fn(&PartitionMetadata) -> bool,
) -> Result<(), String> {
    for p in 0..PARTITIONS {
        let state = partition(meta, TOPIC, p).ok_or_else(|| format!("no {TOPIC}/{p}"))?;
        if !check(state) {
            return Err(format!("{state:?}"));
        }
    }
    Ok(())
}

/// One line per partition: leader, epoch, ISR.
fn describe(meta: &MetadataResponse) -> String {
    (0..PARTITIONS)
        .filter_map(|p| partition(meta, TOPIC, p))
        .map(|p| {
            format!(
                "{TOPIC}/{}: leader {:?} epoch {} isr {:?}",
                p.partition, p.leader, p.leader_epoch, p.isr
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every node.
fn all(cluster: &Cluster) -> Vec<usize> {
    (0..cluster.len()).collect()
}

/// Every node but `node`.
fn others(cluster: &Cluster, node: usize) -> Vec<usize> {
    (0..cluster.len()).filter(|&n| n != node).collect()
}

/// Whether the partition's ISR holds every node.
fn full_isr(p: &PartitionMetadata) -> bool {
    p.leader.is_some() && p.isr.len() == 3
}

/// Three nodes with a controller, and the topic with every partition led and fully in
/// sync.
fn setup(links: Links) -> Cluster {
    let mut cluster = Cluster::start(3, links);
    let took = cluster.wait_for_controller(WAIT_MAX);
    eprintln!("controller elected, every node live, after {took:?}");
    let brokers = cluster.brokers();
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        let config = TopicConfig {
            min_insync: Some(2),
            ..TopicConfig::default()
        };
        // Replication factor 0: the servers' default (--replication-factor 3).
        client
            .create_topic(TOPIC, PARTITIONS, 0, config)
            .await
            .unwrap();
    });
    let nodes = all(&cluster);
    let (meta, took) = wait_view(&mut cluster, "the topic fully in sync", &nodes, |m| {
        every_partition(m, |p| full_isr(p) && p.replicas.len() == 3)
    });
    eprintln!(
        "topic created, fully in sync after {took:?}: {}",
        describe(&meta)
    );
    cluster
}

/// Waits until every producer got `n` acknowledgements after `since`: each one, so that
/// a producer stuck on a stale leader does not hide behind the others.
fn wait_acks(cluster: &mut Cluster, progress: &Progress, since: Instant, n: usize, what: &str) {
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

/// The leader of `partition_id` and its state, in the controller's view.
fn leader(cluster: &mut Cluster, partition_id: u32) -> (usize, PartitionMetadata) {
    let nodes = all(cluster);
    let (meta, _) = wait_view(cluster, "a leader", &nodes, |m| {
        partition(m, TOPIC, partition_id)
            .and_then(|p| p.leader)
            .map(drop)
            .ok_or_else(|| describe(m))
    });
    let p = partition(&meta, TOPIC, partition_id).unwrap().clone();
    (p.leader.unwrap() as usize, p)
}

/// Waits for the first acknowledgement of every partition after `since`; prints how
/// long each took.
fn wait_first_acks(cluster: &mut Cluster, progress: &Progress, since: Instant, what: &str) {
    for p in 0..PARTITIONS {
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

// ---- the scenarios ----

#[test]
fn sigkill_leader_under_load_fails_over_and_the_node_rejoins() {
    let started = Instant::now();
    let mut cluster = setup(Links::Direct);
    let load = Load::start(&cluster.brokers(), 0);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the kill",
    );
    let (old, before) = leader(&mut cluster, 0);
    // The first leader of a new topic is its preferred replica.
    assert_eq!(before.replicas[0] as usize, old, "{before:?}");

    let killed_at = Instant::now();
    cluster.kill(&[old]);
    let survivors = others(&cluster, old);
    let (meta, elected) = wait_view(&mut cluster, "a new leader", &survivors, |m| {
        let p = partition(m, TOPIC, 0).ok_or_else(|| describe(m))?;
        let moved =
            p.leader.is_some_and(|l| l as usize != old) && p.leader_epoch > before.leader_epoch;
        if moved { Ok(()) } else { Err(describe(m)) }
    });
    let (first_ack, _) =
        cluster.wait_for("an acknowledgement after the kill", FAILOVER_MAX, |_| {
            load.progress
                .first_ack_after(killed_at, 0)
                .ok_or_else(|| "none yet".to_owned())
        });
    let failover = first_ack - killed_at;
    eprintln!(
        "FAILOVER: leader {old} of {TOPIC}/0 (epoch {}) SIGKILLed; the controller named a new \
         one after {elected:?} ({}); first acknowledgement after {failover:?}; errors \
         meanwhile: {:?}",
        before.leader_epoch,
        describe(&meta),
        load.progress.errors_between(killed_at, first_ack)
    );
    // Fenced: out of every ISR, and not live.
    let (meta, _) = wait_view(&mut cluster, "the killed node fenced", &survivors, |m| {
        let live = m
            .brokers
            .iter()
            .any(|b| b.node_id as usize == old && b.live);
        if live {
            return Err(format!("node {old} still live"));
        }
        every_partition(m, |p| !p.isr.contains(&(old as u32)) && p.leader.is_some())
    });
    eprintln!(
        "FENCED: node {old} not live and out of every ISR (seen {:?} after the kill): {}",
        killed_at.elapsed(),
        describe(&meta)
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after the kill",
    );

    let restarted_at = Instant::now();
    cluster.restart(old);
    let nodes = all(&cluster);
    let (meta, took) = wait_view(
        &mut cluster,
        "the restarted node back in every ISR",
        &nodes,
        |m| every_partition(m, |p| p.isr.contains(&(old as u32))),
    );
    eprintln!(
        "REJOIN: node {old} in every ISR {took:?} after its restart: {}",
        describe(&meta)
    );
    let (meta, took) = wait_view(&mut cluster, "the preferred leader back", &nodes, |m| {
        let p = partition(m, TOPIC, 0).ok_or_else(|| describe(m))?;
        if p.leader == Some(old as u32) {
            Ok(())
        } else {
            Err(describe(m))
        }
    });
    eprintln!(
        "PREFERRED: node {old} leads {TOPIC}/0 again {took:?} later ({:?} after its restart): {}",
        restarted_at.elapsed(),
        describe(&meta)
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after the rejoin",
    );
    let outcome = load.stop();
    cluster.assert_running();
    verify(&cluster, &[&outcome], "sigkill leader");
    assert!(failover < FAILOVER_MAX, "failover took {failover:?}");
    eprintln!("test time {:?}", started.elapsed());
}

#[test]
fn sigkill_leader_and_restart_it_at_once() {
    let started = Instant::now();
    let mut cluster = setup(Links::Direct);
    let load = Load::start(&cluster.brokers(), 0);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the kill",
    );
    let (old, before) = leader(&mut cluster, 0);
    assert_eq!(before.replicas[0] as usize, old, "{before:?}");

    // Back well within the session timeout: the controller never saw it go.
    let killed_at = Instant::now();
    cluster.kill(&[old]);
    cluster.restart(old);
    eprintln!(
        "QUICK RESTART: leader {old} of {TOPIC}/0 SIGKILLed and ready again after {:?}",
        killed_at.elapsed()
    );
    let nodes = all(&cluster);
    // It may not lead its old epoch again: every partition it led gets a new epoch.
    let (meta, took) = wait_view(
        &mut cluster,
        "the restarted node in every ISR, under new epochs",
        &nodes,
        |m| {
            let p = partition(m, TOPIC, 0).ok_or_else(|| describe(m))?;
            if p.leader_epoch > before.leader_epoch {
                every_partition(m, full_isr)
            } else {
                Err(describe(m))
            }
        },
    );
    eprintln!(
        "REJOIN: every ISR full {took:?} after the restart: {}",
        describe(&meta)
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after the restart",
    );
    let (meta, took) = wait_view(&mut cluster, "the preferred leader back", &nodes, |m| {
        let p = partition(m, TOPIC, 0).ok_or_else(|| describe(m))?;
        if p.leader == Some(old as u32) {
            Ok(())
        } else {
            Err(describe(m))
        }
    });
    eprintln!(
        "PREFERRED: node {old} leads {TOPIC}/0 again {took:?} later: {}",
        describe(&meta)
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "under the preferred leader",
    );
    eprintln!(
        "errors since the kill: {:?}",
        load.progress.errors_between(killed_at, Instant::now())
    );
    let outcome = load.stop();
    cluster.assert_running();
    verify(&cluster, &[&outcome], "quick restart");
    eprintln!("test time {:?}", started.elapsed());
}

#[test]
fn sigstop_follower_leaves_the_isr_and_rejoins_after_sigcont() {
    let started = Instant::now();
    let mut cluster = setup(Links::Direct);
    let load = Load::start(&cluster.brokers(), 0);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the pause",
    );
    let (leader_node, before) = leader(&mut cluster, 0);
    let follower = before
        .replicas
        .iter()
        .map(|&n| n as usize)
        .find(|&n| n != leader_node)
        .unwrap();

    let paused_at = Instant::now();
    cluster.pause(follower);
    let running = others(&cluster, follower);
    let (meta, took) = wait_view(
        &mut cluster,
        "the paused node out of every ISR",
        &running,
        |m| {
            every_partition(m, |p| {
                !p.isr.contains(&(follower as u32)) && p.leader.is_some()
            })
        },
    );
    eprintln!(
        "SHRINK: node {follower} SIGSTOPped; out of every ISR after {took:?}: {}",
        describe(&meta)
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "with the follower paused",
    );
    eprintln!(
        "while paused: {} acks in {:?}; errors {:?}",
        load.progress.acks_after(paused_at),
        paused_at.elapsed(),
        load.progress.errors_between(paused_at, Instant::now())
    );

    cluster.resume(follower);
    let nodes = all(&cluster);
    let (meta, took) = wait_view(
        &mut cluster,
        "the resumed node back in every ISR",
        &nodes,
        |m| every_partition(m, full_isr),
    );
    eprintln!(
        "REJOIN: node {follower} in every ISR {took:?} after SIGCONT: {}",
        describe(&meta)
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after SIGCONT",
    );
    let outcome = load.stop();
    cluster.assert_running();
    verify(&cluster, &[&outcome], "sigstop follower");
    eprintln!("test time {:?}", started.elapsed());
}

/// What is done to one node in `every_node_down_or_paused_in_turn_...`.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Pause,
}

/// Writes one `acks=all` batch of `log`'s producer to its partition through the nodes
/// `live` (a fresh client, as after a fault); returns when it was acknowledged.
fn write_one(brokers: String, log: &mut ProducerLog) -> Instant {
    let (partition, producer_id) = (log.partition, log.producer_id);
    let sequence = log.acked.len() as i32 * RECORDS_PER_BATCH;
    let batch = producer_batch(producer_id, sequence);
    let config = ClientConfig {
        request_timeout: Duration::from_millis(500),
        retries: 40,
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let base_offset = common::run(move || async move {
        let client = Client::connect(&brokers, config).await.unwrap();
        client
            .produce(TOPIC, partition, Acks::All, batch)
            .await
            .unwrap()
            .unwrap()
    });
    log.acked.push((base_offset, sequence));
    Instant::now()
}

/// Found with the shipped binaries: a follower that dies (or hangs) while a partition
/// is idle, fully caught up, stopped `acks=all` on the partitions whose leader lived,
/// until it came back. The leader proposed it back into the ISR at once, the controller
/// refused a fenced node, and the high watermark waited on the pending proposal. The
/// tests under continuous load missed it: there a follower is never caught up at the
/// instant it dies. So here every partition is idle when the fault comes, and then each
/// is written once: each node SIGKILLed in turn, then each SIGSTOPped in turn; every
/// partition (leader alive or failed over) must acknowledge within the session timeout
/// plus one second of the fault, the node must rejoin every ISR once back, and nothing
/// acknowledged may be lost.
#[test]
fn every_node_down_or_paused_in_turn_every_partition_keeps_acknowledging() {
    /// `--session-timeout-ms` of the test nodes, plus one second (the bound),
    /// plus room for a loaded two-core machine.
    const ACK_MAX: Duration = Duration::from_millis(1000 + 1000 + 500);
    let started = Instant::now();
    let mut cluster = setup(Links::Direct);
    let mut logs: Vec<ProducerLog> = (0..PARTITIONS)
        .map(|partition| ProducerLog {
            partition,
            producer_id: 9000 + i64::from(partition),
            acked: Vec::new(),
            pending: None,
            fatal: Vec::new(),
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for fault in [Fault::Kill, Fault::Pause] {
        for node in 0..cluster.len() {
            let nodes = all(&cluster);
            wait_view(&mut cluster, "every ISR full", &nodes, |m| {
                every_partition(m, full_isr)
            });
            // Idle: every follower acks the leader's whole log.
            std::thread::sleep(Duration::from_millis(300));
            let (meta, _) = wait_view(&mut cluster, "the leaders", &nodes, |_| Ok(()));
            let at = Instant::now();
            match fault {
                Fault::Kill => cluster.kill(&[node]),
                Fault::Pause => cluster.pause(node),
            }
            let live: Vec<String> = others(&cluster, node)
                .into_iter()
                .map(|n| cluster.addr(n))
                .collect();
            let brokers = live.join(",");
            for log in &mut logs {
                let acked = write_one(brokers.clone(), log) - at;
                let p = partition(&meta, TOPIC, log.partition).unwrap();
                let role = if p.leader == Some(node as u32) {
                    "its leader"
                } else {
                    "a follower"
                };
                eprintln!(
                    "{fault:?} node {node} ({role} of {TOPIC}/{}): acknowledged {acked:?} after \
                     the fault",
                    log.partition
                );
                slowest = slowest.max(acked);
                assert!(
                    acked < ACK_MAX,
                    "{fault:?} node {node}, {role} of {TOPIC}/{}: acks=all took {acked:?}",
                    log.partition
                );
            }
            let back = Instant::now();
            match fault {
                Fault::Kill => cluster.restart(node),
                Fault::Pause => cluster.resume(node),
            }
            // Asking the others: a resumed node still believes its old view for a moment.
            let survivors = others(&cluster, node);
            let (_, took) = wait_view(
                &mut cluster,
                "the node back in every ISR",
                &survivors,
                |m| every_partition(m, full_isr),
            );
            eprintln!(
                "{fault:?} node {node}: back in every ISR {took:?} after its return ({:?})",
                back.elapsed()
            );
        }
    }
    cluster.assert_running();
    let outcome = Outcome {
        producers: logs,
        consumers: Vec::new(),
    };
    verify(&cluster, &[&outcome], "each node down or paused in turn");
    eprintln!(
        "slowest acknowledgement {slowest:?} after a fault; test time {:?}",
        started.elapsed()
    );
}

#[test]
fn two_nodes_down_acknowledge_nothing_then_producing_resumes() {
    /// Lets the survivor settle what was in flight at the kills.
    const GRACE: Duration = Duration::from_secs(1);
    /// How long the test watches a one-node cluster acknowledge nothing: longer than the
    /// session timeout and the server's produce timeout (10 s), so fencing would have
    /// happened and every parked request has been answered.
    const OUTAGE: Duration = Duration::from_secs(11);
    let started = Instant::now();
    let mut cluster = setup(Links::Direct);
    let load = Load::start(&cluster.brokers(), 0);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the kills",
    );
    let (survivor, _) = leader(&mut cluster, 0);
    let killed = others(&cluster, survivor);

    let killed_at = Instant::now();
    cluster.kill(&killed);
    // An observation window: the property is that nothing commits in it. The survivor
    // leads partition 0, so its high watermark there is the measure: it must not move.
    // Partition 1's leader is dead and no controller can elect another.
    std::thread::sleep(GRACE);
    let survivor_addr = cluster.addr(survivor);
    let hw_before = high_watermark(&survivor_addr, TOPIC, 0).unwrap();
    let window_start = Instant::now();
    std::thread::sleep(OUTAGE);
    let hw_after = high_watermark(&survivor_addr, TOPIC, 0).unwrap();
    let window_end = Instant::now();
    let in_grace = load.progress.acks_between(killed_at, window_start);
    let in_window = load.progress.acks_between(window_start, window_end);
    let survivor_view = cluster
        .metadata(survivor)
        .map(|m| (m.controller, describe(&m)));
    eprintln!(
        "OUTAGE: nodes {killed:?} SIGKILLed, {survivor} (leader of {TOPIC}/0) alone: high \
         watermark of {TOPIC}/0 {hw_before} then {hw_after}; {} acks in the first {GRACE:?}, \
         {} in the {OUTAGE:?} after; errors: {:?}; the survivor's view: {survivor_view:?}",
        in_grace.len(),
        in_window.len(),
        load.progress.errors_between(killed_at, window_end)
    );
    cluster.assert_running();
    assert_eq!(
        hw_after, hw_before,
        "the high watermark of {TOPIC}/0 moved with one replica up"
    );
    // An answer may arrive late, but only for a batch committed before the window.
    let uncommitted: Vec<&(u32, u64)> = in_window
        .iter()
        .filter(|(p, base)| *p != 0 || base + RECORDS_PER_BATCH as u64 > hw_before)
        .collect();
    assert!(
        uncommitted.is_empty(),
        "acknowledged with one replica up (partition, base offset): {uncommitted:?}"
    );

    let restarted_at = Instant::now();
    cluster.start_nodes(&killed);
    wait_first_acks(
        &mut cluster,
        &load.progress,
        restarted_at,
        "after restarting both",
    );
    let nodes = all(&cluster);
    let (meta, took) = wait_view(&mut cluster, "every ISR full again", &nodes, |m| {
        every_partition(m, full_isr)
    });
    eprintln!("every ISR full {took:?} later: {}", describe(&meta));
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after the restarts",
    );
    let outcome = load.stop();
    cluster.assert_running();
    verify(&cluster, &[&outcome], "two nodes down");
    eprintln!("test time {:?}", started.elapsed());
}

#[test]
fn sigkill_all_nodes_at_once_and_restart_under_the_same_producers() {
    let started = Instant::now();
    let mut cluster = setup(Links::Direct);
    let load = Load::start(&cluster.brokers(), 0);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the kills",
    );

    let killed_at = Instant::now();
    cluster.kill(&[0, 1, 2]);
    let acks_before = load.progress.acks_after(started);
    let restarted_at = Instant::now();
    cluster.start_nodes(&[0, 1, 2]);
    let ready = restarted_at.elapsed();
    let took = cluster.wait_for_controller(WAIT_MAX);
    eprintln!(
        "RESTART: all nodes SIGKILLed after {acks_before} acks; ready again after {ready:?}, \
         a controller {took:?} later"
    );
    wait_first_acks(
        &mut cluster,
        &load.progress,
        restarted_at,
        "after the restart",
    );
    eprintln!(
        "errors from the kill until now: {:?}",
        load.progress.errors_between(killed_at, Instant::now())
    );
    let nodes = all(&cluster);
    let (meta, took) = wait_view(&mut cluster, "every ISR full again", &nodes, |m| {
        every_partition(m, full_isr)
    });
    eprintln!("every ISR full {took:?} later: {}", describe(&meta));
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after the restart",
    );
    let outcome = load.stop();
    cluster.assert_running();
    verify(&cluster, &[&outcome], "full restart");
    eprintln!("test time {:?}", started.elapsed());
}

#[test]
fn partitioned_leader_is_replaced_acknowledges_nothing_and_rejoins() {
    /// Answers the pinned writer must get before the cut heals: the first ones come from
    /// the isolated leader's own produce timeout (10 s).
    const PINNED_ANSWERS: usize = 5;
    let started = Instant::now();
    let mut cluster = setup(Links::Proxied);
    let load = Load::start(&cluster.brokers(), 0);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        PHASE_ACKS,
        "before the cut",
    );
    let (old, before) = leader(&mut cluster, 0);
    assert_eq!(before.replicas[0] as usize, old, "{before:?}");
    let majority = others(&cluster, old);

    let cut_at = Instant::now();
    cluster.isolate(old);
    // A client that keeps writing to the old leader, whatever metadata says.
    let pinned = PinnedWriter::start(&cluster.addr(old), 0, Duration::from_millis(100));
    let (meta, elected) = wait_view(
        &mut cluster,
        "a new leader on the majority side",
        &majority,
        |m| {
            let p = partition(m, TOPIC, 0).ok_or_else(|| describe(m))?;
            let moved =
                p.leader.is_some_and(|l| l as usize != old) && p.leader_epoch > before.leader_epoch;
            if moved { Ok(()) } else { Err(describe(m)) }
        },
    );
    eprintln!(
        "PARTITION: node {old} (leader of {TOPIC}/0, epoch {}) cut off; the majority's \
         controller {:?} named a new leader after {elected:?}: {}",
        before.leader_epoch,
        meta.controller,
        describe(&meta)
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "through the new leader",
    );
    cluster.wait_for("answers to the pinned writer", WAIT_MAX, |_| {
        let answered = pinned.answered();
        if answered >= PINNED_ANSWERS {
            Ok(())
        } else {
            Err(format!("{answered} answers"))
        }
    });
    let isolated_view = cluster.metadata(old).map(|m| (m.controller, describe(&m)));
    eprintln!(
        "during the cut ({:?}): {} acks; errors {:?}; the isolated node's view: {isolated_view:?}",
        cut_at.elapsed(),
        load.progress.acks_after(cut_at),
        load.progress.errors_between(cut_at, Instant::now())
    );

    cluster.heal();
    let nodes = all(&cluster);
    let (meta, took) = wait_view(
        &mut cluster,
        "the old leader back in every ISR",
        &nodes,
        |m| every_partition(m, full_isr),
    );
    eprintln!(
        "REJOIN: node {old} in every ISR {took:?} after the heal: {}",
        describe(&meta)
    );
    let (sent, answers) = pinned.finish();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (_, code) in &answers {
        *codes
            .entry(format!("{:?}", ErrorCode::from(*code)))
            .or_default() += 1;
    }
    // A Timeout answer comes from a waiter: the isolated leader had appended that batch,
    // so its log held a suffix to truncate when it rejoined.
    eprintln!("PINNED WRITER: {sent} batches sent to node {old}; answers: {codes:?}");
    let acknowledged: Vec<u64> = answers
        .iter()
        .filter(|(_, code)| *code == ErrorCode::None.as_u16())
        .map(|(correlation, _)| *correlation)
        .collect();
    assert!(
        acknowledged.is_empty(),
        "the isolated leader acknowledged requests {acknowledged:?}"
    );
    wait_acks(
        &mut cluster,
        &load.progress,
        Instant::now(),
        PHASE_ACKS,
        "after the heal",
    );
    let outcome = load.stop();
    cluster.assert_running();
    verify(
        &cluster,
        &[&outcome],
        "partitioned leader (read through the current leader)",
    );
    // The old leader is the preferred one: once it leads again, its log (which took the
    // pinned writer's batches during the cut) must read the same.
    let (meta, took) = wait_view(&mut cluster, "the preferred leader back", &nodes, |m| {
        let p = partition(m, TOPIC, 0).ok_or_else(|| describe(m))?;
        if p.leader == Some(old as u32) {
            Ok(())
        } else {
            Err(describe(m))
        }
    });
    eprintln!(
        "PREFERRED: node {old} leads {TOPIC}/0 again {took:?} later: {}",
        describe(&meta)
    );
    verify(
        &cluster,
        &[&outcome],
        "partitioned leader (read through the old leader)",
    );
    eprintln!("test time {:?}", started.elapsed());
}

/// Peer frames are accepted from any connection, so they are untrusted input: a heartbeat
/// for a node outside `--peers`, raft bytes that do not decode, a raft heartbeat that
/// would commit past the log's end (raft-rs panics on it), a Replicate envelope of
/// garbage. None may crash the node or change its membership.
#[test]
fn forged_peer_frames_change_nothing_and_crash_nothing() {
    use protobuf::Message as _;
    use shardlog_net::api::{ControllerRequest, ReplicateRequest};

    let mut cluster = Cluster::start(1, Links::Direct);
    cluster.wait_for_controller(Duration::from_secs(20));
    let mut stream = TcpStream::connect(cluster.addr(0)).unwrap();
    let controller = |request: &ControllerRequest, data: &[u8]| {
        common::frame(Api::Controller as u16, 1, 7, request, data)
    };
    let mut heartbeat = raft::eraftpb::Message::default();
    heartbeat.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    heartbeat.from = 1;
    heartbeat.to = 1;
    heartbeat.term = 1_000;
    heartbeat.commit = 1 << 40;
    let frames = [
        controller(
            &ControllerRequest::Heartbeat {
                node: 99,
                address: "127.0.0.1:1".into(),
                incarnation: 1,
            },
            &[],
        ),
        controller(&ControllerRequest::Raft { from: 0 }, &[0xff; 64]),
        controller(
            &ControllerRequest::Raft { from: 0 },
            &heartbeat.write_to_bytes().unwrap(),
        ),
        common::frame(
            Api::Replicate as u16,
            1,
            8,
            &ReplicateRequest {
                topic: "t".into(),
                partition: 0,
            },
            &[0xab; 100],
        ),
    ];
    for frame in &frames {
        stream.write_all(frame).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    cluster.assert_running();
    let meta = cluster.metadata(0).unwrap();
    let nodes: Vec<u32> = meta.brokers.iter().map(|b| b.node_id).collect();
    assert_eq!(nodes, vec![0], "only the --peers node is a member");
    assert_eq!(meta.controller, Some(0));
}
