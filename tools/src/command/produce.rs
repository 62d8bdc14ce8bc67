//! `shardlog produce --brokers B --topic T ...`: records from stdin lines to a topic.
//!
//! A std thread reads stdin (blocking reads never stall the executor) and hands over
//! chunks of lines through a bounded flume channel: a chunk closes at `--batch-records`
//! lines or as soon as stdin has nothing more buffered, so typed lines go out at once and
//! piped files go out in full batches. Each chunk becomes one batch per partition it
//! touches (split further past `BATCH_BYTES_MAX`, and never past the 16 MiB batch limit,
//! `BATCH_SIZE_MAX`: a record too large for a batch of its own fails alone, naming the
//! limit), all timestamped now. Up to `--inflight`
//! chunks are pipelined on the connection; their answers are reported in input order
//! (`FuturesOrdered`), so `--report-offsets` prints `partition<TAB>offset` lines in the
//! order of the input lines, skipping records that failed. Errors go to stderr, naming the
//! input lines; any failed record makes the exit code 1.
//!
//! Idempotent (with acks): the client library numbers each partition's batches under a
//! producer id the brokers hand out, so a batch resent after a failover is stored once
//! and acknowledged with its original offsets. One run is one producer session.
//!
//! Partitioning: `--partition P` sends everything to P; otherwise a keyed record goes to
//! `murmur2(key) % partitions` (Kafka's default partitioner) and each chunk of unkeyed
//! records goes to the next partition in turn (round-robin per batch, like Kafka's sticky
//! partitioner).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Write};
use std::rc::Rc;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::{Either, join_all, select};
use futures::stream::FuturesOrdered;
use shardlog_engine::TimestampMs;
use shardlog_engine::batch::BATCH_SIZE_MAX;
use shardlog_engine::record::BatchBuilder;
use shardlog_net::ErrorCode;
use shardlog_net::api;
use shardlog_net::client::{Client, ClientConfig, ClientError};

use crate::Outcome;
use crate::args::{Acks, ProduceArgs};
use crate::error::ToolError;
use crate::online;
use crate::partitioner::partition_for_key;

/// A batch is closed once it holds this many bytes (records are never split).
const BATCH_BYTES_MAX: usize = 1 << 20;
/// Read-ahead of stdin: also the most bytes one chunk can gather from a file.
const STDIN_BUFFER: usize = 1 << 20;

/// One input line, without its `\n`.
struct Line {
    /// 1-based line number.
    number: u64,
    bytes: Vec<u8>,
}

/// What stdin's reader thread sends: lines read together, or the read error that ended it.
type Chunk = Result<Vec<Line>, io::Error>;

/// Runs `produce`.
pub fn run(args: ProduceArgs) -> Result<Outcome, ToolError> {
    if args.report_offsets && args.acks == Acks::None {
        return Err(ToolError::Usage(
            "--report-offsets needs acks: with --acks none no offset comes back".to_owned(),
        ));
    }
    // The password's line (`--password-stdin`) is read before the records' reader starts.
    let config = ClientConfig {
        sasl: online::sasl_credentials(&args.brokers)?,
        ..ClientConfig::default()
    };
    let capacity = usize::try_from(args.inflight.get()).unwrap_or(usize::MAX);
    let (tx, rx) = flume::bounded::<Chunk>(capacity);
    let most = usize::try_from(args.batch_records.get()).unwrap_or(usize::MAX);
    // Never joined: after a failure the thread may sit in a read of a terminal forever.
    std::thread::Builder::new()
        .name("shardlog-stdin".to_owned())
        .spawn(move || read_stdin(&tx, most))
        .map_err(ToolError::io("stdin"))?;
    let brokers = args.brokers.clone();
    online::run_with(&brokers, config, move |client| produce(client, args, rx))
}

/// Reads stdin lines into chunks until EOF, a read error, or the receiver is gone.
fn read_stdin(tx: &flume::Sender<Chunk>, most: usize) {
    let stdin = io::stdin();
    let mut reader = BufReader::with_capacity(STDIN_BUFFER, stdin.lock());
    let mut chunk = Vec::new();
    let mut number = 0;
    loop {
        let mut bytes = Vec::new();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) => break,
            Ok(_) => {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                number += 1;
                chunk.push(Line { number, bytes });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Ok(std::mem::take(&mut chunk)));
                let _ = tx.send(Err(e));
                return;
            }
        }
        // Nothing buffered: the next read may block, so send what is there now.
        if (chunk.len() >= most || reader.buffer().is_empty())
            && tx.send(Ok(std::mem::take(&mut chunk))).is_err()
        {
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk));
    }
}

/// Sends every chunk from `rx`, `--inflight` at a time, and reports them in input order.
async fn produce(
    client: Client,
    args: ProduceArgs,
    rx: flume::Receiver<Chunk>,
) -> Result<Outcome, ToolError> {
    let mut sender = Sender::new(client, &args).await?;
    let most = usize::try_from(args.inflight.get()).unwrap_or(usize::MAX);
    let mut report = Report::new(args.report_offsets);
    let mut inflight = FuturesOrdered::new();
    let mut input = rx.into_stream();
    let mut open = true;
    let mut read_error = None;
    while open || !inflight.is_empty() {
        let event = if !open || inflight.len() >= most {
            Either::Right(inflight.next().await)
        } else if inflight.is_empty() {
            Either::Left(input.next().await)
        } else {
            match select(input.next(), inflight.next()).await {
                Either::Left((chunk, _)) => Either::Left(chunk),
                Either::Right((done, _)) => Either::Right(done),
            }
        };
        match event {
            Either::Left(Some(Ok(lines))) if !lines.is_empty() => {
                inflight.push_back(sender.send(lines));
            }
            Either::Left(Some(Ok(_))) => {}
            Either::Left(Some(Err(e))) => {
                read_error = Some(e);
                open = false;
            }
            Either::Left(None) => open = false,
            Either::Right(Some(done)) => report.chunk(&done)?,
            Either::Right(None) => {}
        }
    }
    if let Some(e) = read_error {
        return Err(ToolError::io("stdin")(e));
    }
    if sender.acks == api::Acks::None {
        sender.wait_until_sent().await;
    }
    Ok(report.finish())
}

/// What became of one input line.
enum Sent {
    /// Acknowledged at this partition and offset (no offset with `--acks none`).
    Ok(u32, Option<u64>),
    /// Failed; the chunk's errors say why.
    Failed,
}

/// The answers for one chunk: one entry per line, in input order, and error messages.
struct ChunkDone {
    lines: Vec<Sent>,
    errors: Vec<String>,
}

/// A batch on its way: its partition, the chunk indexes of its records, its bytes.
struct Batch {
    partition: u32,
    members: Vec<usize>,
    bytes: Bytes,
}

/// Turns chunks of lines into produce requests.
struct Sender {
    client: Client,
    topic: Rc<str>,
    acks: api::Acks,
    keyed: bool,
    partition: Option<u32>,
    partitions: u32,
    next_round_robin: u32,
    /// Partitions written to (for `--acks none`'s final round trip).
    touched: BTreeSet<u32>,
}

impl Sender {
    /// Looks the topic up (unknown topic: exit code 1) and checks `--partition`.
    async fn new(client: Client, args: &ProduceArgs) -> Result<Sender, ToolError> {
        let what = format!("topic {}", args.topic);
        let partitions = client
            .partition_count(&args.topic)
            .await
            .map_err(ToolError::request(&what))?;
        if let Some(partition) = args.partition.filter(|p| *p >= partitions) {
            return Err(ToolError::request(what)(ClientError::Server {
                code: ErrorCode::UnknownPartition,
                message: format!("no partition {partition}: the topic has {partitions}"),
            }));
        }
        let acks = match args.acks {
            Acks::All => api::Acks::All,
            Acks::Leader => api::Acks::Leader,
            Acks::None => api::Acks::None,
        };
        if acks != api::Acks::None {
            // The producer id before the first batch (`Client::produce` would ask for it
            // at the first batch otherwise, and hold the first batches meanwhile).
            client
                .init_producer()
                .await
                .map_err(ToolError::request("a producer id"))?;
        }
        Ok(Sender {
            client,
            topic: Rc::from(args.topic.as_str()),
            acks,
            keyed: args.keyed,
            partition: args.partition,
            partitions,
            next_round_robin: 0,
            touched: BTreeSet::new(),
        })
    }

    /// Builds the chunk's batches now (so partitions are chosen in input order) and
    /// returns the future that sends them and collects the answers.
    fn send(&mut self, lines: Vec<Line>) -> impl Future<Output = ChunkDone> + 'static {
        let mut done = ChunkDone {
            lines: (0..lines.len()).map(|_| Sent::Failed).collect(),
            errors: Vec::new(),
        };
        let batches = self.batches(&lines, &mut done.errors);
        self.touched.extend(batches.iter().map(|b| b.partition));
        let (client, topic, acks) = (self.client.clone(), Rc::clone(&self.topic), self.acks);
        async move {
            let answers = join_all(batches.into_iter().map(|batch| {
                let produced = client.produce(&topic, batch.partition, acks, batch.bytes);
                async move { (batch.partition, batch.members, produced.await) }
            }))
            .await;
            for (partition, members, answer) in answers {
                match answer {
                    Ok(base) => {
                        for (delta, &member) in (0u64..).zip(&members) {
                            done.lines[member] = Sent::Ok(partition, base.map(|b| b + delta));
                        }
                    }
                    Err(e) => done.errors.push(format!(
                        "{}, partition {partition}: {e}",
                        line_span(&lines, &members)
                    )),
                }
            }
            done
        }
    }

    /// With `--acks none` nothing answers a produce request, and the executor must not stop
    /// while requests still sit in a connection's send queue: one answered request per
    /// partition leader, queued behind them on the same pipelined connection, proves they
    /// were all written to the socket.
    async fn wait_until_sent(&self) {
        let asks = self.touched.iter().map(|&partition| async move {
            let asked = self
                .client
                .list_offset(&self.topic, partition, api::OffsetSpec::Latest)
                .await;
            if let Err(e) = asked {
                eprintln!(
                    "shardlog: partition {partition}: cannot confirm the records were sent: {e}"
                );
            }
        });
        join_all(asks).await;
    }

    /// Groups the chunk's records by partition into batches; lines that cannot be records
    /// get an error.
    fn batches(&mut self, lines: &[Line], errors: &mut Vec<String>) -> Vec<Batch> {
        let now = TimestampMs::now();
        let mut batches = Vec::new();
        for (partition, records) in self.group(lines, errors) {
            let mut builder = BatchBuilder::new();
            let mut members = Vec::new();
            for record in records {
                let (key, value) = (record.key, Some(record.value));
                let mut size = builder.size_with(now, key, value, &[]);
                if builder.record_count() > 0
                    && (builder.size() >= BATCH_BYTES_MAX || size > BATCH_SIZE_MAX)
                {
                    batches.push(Batch {
                        partition,
                        members: std::mem::take(&mut members),
                        bytes: Bytes::from(builder.finish()),
                    });
                    size = builder.size_with(now, key, value, &[]);
                }
                // Refused here, naming the limit, rather than sent for the server to
                // refuse.
                if size > BATCH_SIZE_MAX {
                    let number = lines.get(record.index).map_or(0, |l| l.number);
                    errors.push(format!(
                        "line {number}: record too large: {size} bytes as a batch of its own \
                         (batch header and record framing included), over the batch limit of \
                         16 MiB ({BATCH_SIZE_MAX} bytes)"
                    ));
                    continue;
                }
                builder.push(now, key, value, &[]);
                members.push(record.index);
            }
            if builder.record_count() > 0 {
                batches.push(Batch {
                    partition,
                    members,
                    bytes: Bytes::from(builder.finish()),
                });
            }
        }
        batches
    }

    /// The chunk's records by partition, in input order.
    fn group<'a>(
        &mut self,
        lines: &'a [Line],
        errors: &mut Vec<String>,
    ) -> BTreeMap<u32, Vec<Record<'a>>> {
        let round_robin = self.next_round_robin;
        self.next_round_robin = (round_robin + 1) % self.partitions.max(1);
        let mut groups: BTreeMap<u32, Vec<Record<'a>>> = BTreeMap::new();
        for (index, line) in lines.iter().enumerate() {
            let (key, value) = if self.keyed {
                let Some(tab) = line.bytes.iter().position(|b| *b == b'\t') else {
                    errors.push(format!(
                        "line {}: no TAB between key and value (--keyed)",
                        line.number
                    ));
                    continue;
                };
                (Some(&line.bytes[..tab]), &line.bytes[tab + 1..])
            } else {
                (None, &line.bytes[..])
            };
            let partition = match (self.partition, key) {
                (Some(partition), _) => partition,
                (None, Some(key)) => partition_for_key(key, self.partitions),
                (None, None) => round_robin,
            };
            groups
                .entry(partition)
                .or_default()
                .push(Record { index, key, value });
        }
        groups
    }
}

/// A record of a chunk: its line's index in the chunk, key and value.
struct Record<'a> {
    index: usize,
    key: Option<&'a [u8]>,
    value: &'a [u8],
}

/// "line 7" or "lines 3-9 (5 records)" for an error message.
fn line_span(lines: &[Line], members: &[usize]) -> String {
    let number = |m: Option<&usize>| m.and_then(|i| lines.get(*i)).map_or(0, |l| l.number);
    let (first, last) = (number(members.first()), number(members.last()));
    if members.len() == 1 {
        format!("line {first}")
    } else {
        format!("lines {first}-{last} ({} records)", members.len())
    }
}

/// Prints answers: offsets on stdout, errors on stderr; counts failures.
struct Report {
    report_offsets: bool,
    records: u64,
    failed: u64,
}

impl Report {
    fn new(report_offsets: bool) -> Report {
        Report {
            report_offsets,
            records: 0,
            failed: 0,
        }
    }

    fn chunk(&mut self, done: &ChunkDone) -> Result<(), ToolError> {
        for error in &done.errors {
            eprintln!("shardlog: {error}");
        }
        let mut out = io::stdout().lock();
        for line in &done.lines {
            self.records += 1;
            match line {
                Sent::Ok(partition, Some(offset)) if self.report_offsets => {
                    writeln!(out, "{partition}\t{offset}").map_err(ToolError::stdout)?;
                }
                Sent::Ok(..) => {}
                Sent::Failed => self.failed += 1,
            }
        }
        out.flush().map_err(ToolError::stdout)
    }

    fn finish(&self) -> Outcome {
        if self.failed == 0 {
            return Outcome::Clean;
        }
        eprintln!(
            "shardlog: {} of {} records failed",
            self.failed, self.records
        );
        Outcome::ProblemsFound
    }
}
