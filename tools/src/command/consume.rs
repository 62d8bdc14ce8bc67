//! `shardlog consume --brokers B --topic T ...`: prints records, one per line.
//!
//! Each partition starts at `--from` (`beginning`: its log start, `end`: its high
//! watermark, or an offset). An offset outside `[log_start, high_watermark]` starts at the
//! nearest end of that range, with a note on stderr, the way a Kafka consumer resets an
//! out-of-range position (`auto.offset.reset`): past the end it waits for (with
//! `--follow`) or ends at the next record to come; below the log start (records deleted
//! by retention) it starts at the first one kept. Both modes do the same.
//!
//! Without `--follow`, the partitions are read one after the other, each up to the high
//! watermark seen when the command started, so the output is per partition in offset
//! order and the command ends. With `--follow`, every partition long-polls at its tail at
//! once (fetch `max_wait` 500 ms) and records are printed as they arrive (still in offset
//! order within a partition) until `--count` records, SIGINT/SIGTERM, or a closed stdout
//! (`| head`), each of which ends with exit code 0. A follower outlives brokers that do
//! not answer: it keeps trying, with backoff, saying so on stderr (`broker_outage.rs`),
//! and a position that falls out of range meanwhile (retention) is reset as above.
//!
//! `--format value` prints the value; `full` prints
//! `partition<TAB>offset<TAB>timestamp_ms<TAB>key<TAB>value`. In both, bytes that are not
//! UTF-8 are printed lossily (U+FFFD) and a null key or value prints as nothing, so a
//! value holding a newline or a TAB cannot be told apart. `json` is unambiguous: one JSON
//! object per line, `{"partition","offset","timestamp","key","value","headers"}`, with
//! `key_b64`/`value_b64` (base64) instead of `key`/`value` for bytes that are not UTF-8,
//! and `null` for a null key or value (`JsonRecord`).
//!
//! A batch a client compressed (gzip, snappy, lz4, zstd) is decompressed here
//! (`decompress.rs`) and its records print like any others; a payload that does not
//! decompress ends the command with an error naming the partition and the batch's offset.

use std::io::{self, BufWriter, StdoutLock, Write};
use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;
use shardlog_engine::batch::BatchHeader;
use shardlog_engine::record::{Record, RecordIter};
use shardlog_net::ErrorCode;
use shardlog_net::api::OffsetSpec;
use shardlog_net::client::{Client, ClientConfig, ClientError, FetchOptions, Fetched};

use crate::Outcome;
use crate::args::{BrokerArgs, ConsumeArgs, ConsumeFrom, OutputFormat};
use crate::broker_outage::{BrokerOutage, no_broker_answers};
use crate::decompress;
use crate::error::ToolError;
use crate::exported_record::{ExportedHeader, encode_bytes, exported_headers};
use crate::online;

/// How long a fetch at the tail may wait for records with `--follow`.
pub(super) const FOLLOW_MAX_WAIT: Duration = Duration::from_millis(500);

/// Runs `consume`.
pub fn run(args: ConsumeArgs) -> Result<Outcome, ToolError> {
    if let Some(group) = args.group.clone() {
        online::catch_stop_signals()?;
        return online::on_executor(move || super::consume_group::consume(args, group));
    }
    if args.follow {
        online::catch_stop_signals()?;
        return online::on_executor(move || follow(args));
    }
    let brokers = args.brokers.clone();
    online::run(&brokers, move |client| consume(client, args))
}

/// Where one partition is read.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cursor {
    pub(super) partition: u32,
    /// The next offset to print.
    pub(super) next: u64,
    /// Stop before this offset (the high watermark at start), or never (`--follow`).
    pub(super) end: Option<u64>,
}

impl Cursor {
    fn finished(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

/// Whether to go on after printing a fetch's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    /// `--count` reached or stdout closed.
    Stop,
}

/// Reads every chosen partition up to its high watermark at start.
async fn consume(client: Client, args: ConsumeArgs) -> Result<Outcome, ToolError> {
    let mut printer = Printer::new(args.format, args.count);
    if args.count == Some(0) {
        return Ok(Outcome::Clean);
    }
    let cursors = cursors(&client, &args).await?;
    let reader = Reader {
        client: &client,
        topic: &args.topic,
    };
    for cursor in cursors {
        if reader.drain(cursor, &mut printer).await? == Flow::Stop {
            break;
        }
    }
    printer.flush()?;
    Ok(printer.outcome)
}

/// A client of `brokers`, connecting again for as long as no broker answers; `None` once
/// told to stop meanwhile.
pub(super) async fn connect_retried(
    outage: &mut BrokerOutage,
    brokers: &BrokerArgs,
    config: ClientConfig,
) -> Result<Option<Client>, ToolError> {
    let config = brokers.client_config(config)?;
    let brokers = &brokers.brokers;
    let connect = || async {
        Client::connect(brokers, config.clone())
            .await
            .map_err(|source| ToolError::Connect {
                brokers: brokers.to_owned(),
                source,
            })
    };
    retried(outage, "connect", connect).await
}

/// `--follow`: connects, finds the partitions and follows them, each step tried again
/// for as long as no broker answers, until `--count`, a stop signal or a closed stdout.
async fn follow(args: ConsumeArgs) -> Result<Outcome, ToolError> {
    let mut printer = Printer::new(args.format, args.count);
    if args.count == Some(0) {
        return Ok(Outcome::Clean);
    }
    let config = ClientConfig {
        sasl: crate::online::sasl_credentials(&args.brokers)?,
        ..ClientConfig::default()
    };
    let mut outage = BrokerOutage::default();
    let Some(client) = connect_retried(&mut outage, &args.brokers, config).await? else {
        return Ok(Outcome::Clean);
    };
    let Some(cursors) = retried(&mut outage, "start", || cursors(&client, &args)).await? else {
        return Ok(Outcome::Clean);
    };
    let reader = Reader {
        client: &client,
        topic: &args.topic,
    };
    reader.follow(cursors, &mut printer, &mut outage).await?;
    printer.flush()?;
    Ok(printer.outcome)
}

/// Runs `attempt` until it succeeds, fails with an answer, or the command is told to
/// stop (`None`); failures because no broker answers are waited out.
pub(super) async fn retried<T, F, Fut>(
    outage: &mut BrokerOutage,
    what: &str,
    mut attempt: F,
) -> Result<Option<T>, ToolError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ToolError>>,
{
    loop {
        let tried = match select(pin!(attempt()), pin!(online::until_stopped())).await {
            Either::Left((tried, _)) => tried,
            Either::Right(((), _)) => return Ok(None),
        };
        match tried {
            Ok(value) => {
                outage.answered();
                return Ok(Some(value));
            }
            Err(e) if no_broker_answers(&e) => {
                let pause = outage.failed(what, &e);
                let stopped = matches!(
                    select(
                        pin!(glommio::timer::sleep(pause)),
                        pin!(online::until_stopped()),
                    )
                    .await,
                    Either::Right(_)
                );
                if stopped {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The cursor of every chosen partition at `--from`, ending at today's high watermark
/// unless `--follow`.
async fn cursors(client: &Client, args: &ConsumeArgs) -> Result<Vec<Cursor>, ToolError> {
    let what = format!("topic {}", args.topic);
    let partitions = client
        .partition_count(&args.topic)
        .await
        .map_err(ToolError::request(&what))?;
    let chosen: Vec<u32> = match args.partition {
        Some(p) if p < partitions => vec![p],
        Some(p) => {
            return Err(ToolError::request(what)(ClientError::Server {
                code: ErrorCode::UnknownPartition,
                message: format!("no partition {p}: the topic has {partitions}"),
            }));
        }
        None => (0..partitions).collect(),
    };
    let mut cursors = Vec::with_capacity(chosen.len());
    for partition in chosen {
        let range = Range::of(client, &args.topic, partition).await?;
        let next = match args.from {
            ConsumeFrom::Beginning => range.log_start,
            ConsumeFrom::End => range.high_watermark,
            ConsumeFrom::Offset(offset) => range.clamp(&args.topic, partition, offset),
        };
        cursors.push(Cursor {
            partition,
            next,
            end: (!args.follow).then_some(range.high_watermark),
        });
    }
    Ok(cursors)
}

/// The offsets a partition serves: `[log_start, high_watermark]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Range {
    pub(super) log_start: u64,
    pub(super) high_watermark: u64,
}

impl Range {
    pub(super) async fn of(
        client: &Client,
        topic: &str,
        partition: u32,
    ) -> Result<Range, ToolError> {
        let list = |spec| async move {
            client
                .list_offset(topic, partition, spec)
                .await
                .map_err(ToolError::request(format!(
                    "topic {topic} partition {partition}: list offsets"
                )))
                .map(|offset| offset.unwrap_or(0))
        };
        Ok(Range {
            log_start: list(OffsetSpec::Earliest).await?,
            high_watermark: list(OffsetSpec::Latest).await?,
        })
    }

    /// `offset`, or the nearest end of the range (with a note) when outside it.
    pub(super) fn clamp(&self, topic: &str, partition: u32, offset: u64) -> u64 {
        let (start, end) = (self.log_start, self.high_watermark);
        let (at, why) = if offset > end {
            (end, "past the end; starting at the end")
        } else if offset < start {
            (
                start,
                "below the first record kept; starting at the first one",
            )
        } else {
            return offset;
        };
        eprintln!(
            "shardlog: topic {topic} partition {partition}: offset {offset} is outside \
             [{start}, {end}] ({why}, offset {at})"
        );
        at
    }
}

/// Fetches for one topic.
struct Reader<'a> {
    client: &'a Client,
    topic: &'a str,
}

impl Reader<'_> {
    /// Prints one partition from its cursor to its end.
    async fn drain(&self, mut cursor: Cursor, printer: &mut Printer) -> Result<Flow, ToolError> {
        while !cursor.finished() {
            let fetched = self.fetch(cursor, FetchOptions::default()).await?;
            let before = cursor.next;
            if printer.print(&fetched, &mut cursor)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
            if cursor.next == before && !cursor.finished() {
                eprintln!(
                    "shardlog: topic {} partition {}: no records at offset {} below the high \
                     watermark {}; stopping this partition",
                    self.topic, cursor.partition, cursor.next, fetched.high_watermark
                );
                printer.outcome = Outcome::ProblemsFound;
                break;
            }
        }
        Ok(Flow::Continue)
    }

    /// Long-polls every partition at once until `--count`, a stop signal or closed stdout.
    /// A partition whose fetch finds no broker tries again after the outage's pause; one
    /// whose position fell out of range (retention) is reset into it.
    async fn follow(
        &self,
        cursors: Vec<Cursor>,
        printer: &mut Printer,
        outage: &mut BrokerOutage,
    ) -> Result<(), ToolError> {
        let options = FetchOptions {
            max_wait: FOLLOW_MAX_WAIT,
            min_bytes: 1,
            ..FetchOptions::default()
        };
        let fetch = |cursor: Cursor, pause: Duration| async move {
            if !pause.is_zero() {
                glommio::timer::sleep(pause).await;
            }
            (cursor, self.follow_fetch(cursor, options).await)
        };
        let mut pending: FuturesUnordered<_> = cursors
            .into_iter()
            .map(|cursor| fetch(cursor, Duration::ZERO))
            .collect();
        let mut stopped = pin!(online::until_stopped());
        loop {
            let next = match select(pending.next(), stopped.as_mut()).await {
                Either::Left((next, _)) => next,
                Either::Right(((), _)) => return Ok(()),
            };
            let Some((mut cursor, fetched)) = next else {
                return Ok(());
            };
            let pause = match fetched {
                Ok(Some(fetched)) => {
                    outage.answered();
                    if printer.print(&fetched, &mut cursor)? == Flow::Stop {
                        return Ok(());
                    }
                    Duration::ZERO
                }
                Ok(None) => {
                    outage.answered();
                    let range = Range::of(self.client, self.topic, cursor.partition).await;
                    match range {
                        Ok(range) => {
                            cursor.next = range.clamp(self.topic, cursor.partition, cursor.next);
                            Duration::ZERO
                        }
                        Err(e) if no_broker_answers(&e) => outage.failed("list offsets", &e),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if no_broker_answers(&e) => outage.failed("fetch", &e),
                Err(e) => return Err(e),
            };
            pending.push(fetch(cursor, pause));
        }
    }

    /// A fetch for `--follow`: `None` when the position is out of range.
    async fn follow_fetch(
        &self,
        cursor: Cursor,
        options: FetchOptions,
    ) -> Result<Option<Fetched>, ToolError> {
        match self.fetch(cursor, options).await {
            Err(ToolError::Request { source, .. })
                if source.code() == Some(ErrorCode::OffsetOutOfRange) =>
            {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    async fn fetch(&self, cursor: Cursor, options: FetchOptions) -> Result<Fetched, ToolError> {
        self.client
            .fetch(self.topic, cursor.partition, cursor.next, options)
            .await
            .map_err(ToolError::request(format!(
                "topic {} partition {} offset {}",
                self.topic, cursor.partition, cursor.next
            )))
    }
}

/// Writes records to stdout in the chosen format and counts them.
pub(super) struct Printer {
    out: BufWriter<StdoutLock<'static>>,
    format: OutputFormat,
    /// Records still to print with `--count`.
    remaining: Option<u64>,
    /// Stdout was closed by the reader.
    closed: bool,
    pub(super) outcome: Outcome,
    /// Where a compressed batch's records are decompressed, reused.
    scratch: Vec<u8>,
}

impl Printer {
    pub(super) fn new(format: OutputFormat, count: Option<u64>) -> Printer {
        Printer {
            out: BufWriter::new(io::stdout().lock()),
            format,
            remaining: count,
            closed: false,
            outcome: Outcome::Clean,
            scratch: Vec::new(),
        }
    }

    /// Prints the records of `fetched` from `cursor.next` on (up to its end) and moves the
    /// cursor past them.
    pub(super) fn print(
        &mut self,
        fetched: &Fetched,
        cursor: &mut Cursor,
    ) -> Result<Flow, ToolError> {
        for batch in fetched.batches() {
            let (header, bytes) = batch.map_err(ToolError::request(format!(
                "partition {} offset {}",
                cursor.partition, cursor.next
            )))?;
            if self.print_batch(&header, bytes, cursor)? == Flow::Stop {
                self.flush()?;
                return Ok(Flow::Stop);
            }
            if cursor.finished() {
                break;
            }
        }
        if !cursor.finished() {
            cursor.next = cursor.next.max(fetched.next_offset);
            if let Some(end) = cursor.end {
                cursor.next = cursor.next.min(end);
            }
        }
        self.flush()
    }

    fn print_batch(
        &mut self,
        header: &BatchHeader,
        bytes: &[u8],
        cursor: &mut Cursor,
    ) -> Result<Flow, ToolError> {
        let batch_end = header.next_offset().0;
        if batch_end <= cursor.next {
            return Ok(Flow::Continue);
        }
        if header.is_control() {
            cursor.next = cursor.end.map_or(batch_end, |end| batch_end.min(end));
            return Ok(Flow::Continue);
        }
        // The scratch buffer leaves `self` while its records are printed through `self`.
        let mut scratch = std::mem::take(&mut self.scratch);
        let flow = match decompress::records(header, bytes, &mut scratch) {
            Ok(records) => self.print_records(header, records, cursor),
            Err(e) => Err(ToolError::request(format!(
                "partition {}",
                cursor.partition
            ))(ClientError::Protocol(format!(
                "the batch at offset {}: {e}",
                header.base_offset.0
            )))),
        };
        self.scratch = scratch;
        flow
    }

    /// Prints `records`, those of the batch `header`, from `cursor.next` on.
    fn print_records(
        &mut self,
        header: &BatchHeader,
        records: RecordIter<'_>,
        cursor: &mut Cursor,
    ) -> Result<Flow, ToolError> {
        let batch_end = header.next_offset().0;
        for record in records {
            let record = record.map_err(|e| {
                ToolError::request(format!("partition {}", cursor.partition))(
                    ClientError::Protocol(format!(
                        "undecodable record in the batch at offset {}: {e}",
                        header.base_offset.0
                    )),
                )
            })?;
            let offset = record.offset(header).0;
            if offset < cursor.next {
                continue;
            }
            if cursor.end.is_some_and(|end| offset >= end) {
                cursor.next = offset;
                return Ok(Flow::Continue);
            }
            let line = Line {
                partition: cursor.partition,
                offset,
                timestamp: record.timestamp(header).0,
                record,
            };
            // The cursor passes a record only once it is written (a consumer in a group
            // commits the cursor).
            let (written, flow) = self.write(&line)?;
            if written {
                cursor.next = offset + 1;
            }
            if flow == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        cursor.next = cursor
            .next
            .max(cursor.end.map_or(batch_end, |e| batch_end.min(e)));
        Ok(Flow::Continue)
    }

    /// Writes one record; says whether it was written, and whether to go on.
    fn write(&mut self, line: &Line<'_>) -> Result<(bool, Flow), ToolError> {
        if self.remaining == Some(0) || self.closed {
            return Ok((false, Flow::Stop));
        }
        let record = &line.record;
        let written = match self.format {
            OutputFormat::Value => writeln!(self.out, "{}", text(record.value)),
            OutputFormat::Full => writeln!(
                self.out,
                "{}\t{}\t{}\t{}\t{}",
                line.partition,
                line.offset,
                line.timestamp,
                text(record.key),
                text(record.value)
            ),
            OutputFormat::Json => serde_json::to_writer(&mut self.out, &JsonRecord::new(line))
                .map_err(io::Error::from)
                .and_then(|()| self.out.write_all(b"\n")),
        };
        if let Err(e) = written {
            return self.closed_is_stop(e).map(|flow| (false, flow));
        }
        self.remaining = self.remaining.map(|n| n - 1);
        let flow = if self.remaining == Some(0) {
            Flow::Stop
        } else {
            Flow::Continue
        };
        Ok((true, flow))
    }

    /// Whether stdout was closed by its reader (what was last written may not have
    /// reached it).
    pub(super) fn closed(&self) -> bool {
        self.closed
    }

    /// Flushes stdout; `Stop` once it is closed.
    pub(super) fn flush(&mut self) -> Result<Flow, ToolError> {
        if self.closed {
            return Ok(Flow::Stop);
        }
        match self.out.flush() {
            Ok(()) => Ok(Flow::Continue),
            Err(e) => self.closed_is_stop(e),
        }
    }

    /// A closed stdout (`| head`) ends the output quietly; any other write error is an
    /// error.
    fn closed_is_stop(&mut self, error: io::Error) -> Result<Flow, ToolError> {
        match ToolError::stdout(error) {
            ToolError::StdoutClosed => {
                self.closed = true;
                Ok(Flow::Stop)
            }
            other => Err(other),
        }
    }
}

/// Bytes as text, lossily; a null field prints as nothing.
fn text(bytes: Option<&[u8]>) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes.unwrap_or_default())
}

/// One record to print.
struct Line<'a> {
    partition: u32,
    offset: u64,
    timestamp: i64,
    record: Record<'a>,
}

/// A record as `--format json` prints it: one object per line, every byte field as text
/// when it is UTF-8 and as base64 in `<field>_b64` otherwise (as `export` writes them), so
/// values holding newlines, tabs or binary come back exactly.
#[derive(serde::Serialize)]
struct JsonRecord {
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    headers: Vec<ExportedHeader>,
}

impl JsonRecord {
    fn new(line: &Line<'_>) -> JsonRecord {
        let (key, key_b64) = encode_bytes(line.record.key);
        let (value, value_b64) = encode_bytes(line.record.value);
        JsonRecord {
            partition: line.partition,
            offset: line.offset,
            timestamp: line.timestamp,
            key,
            key_b64,
            value,
            value_b64,
            headers: exported_headers(&line.record),
        }
    }
}
