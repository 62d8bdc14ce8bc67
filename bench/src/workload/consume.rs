//! Consumers: each with its own connection, the partitions dealt out among them
//! (partition `p` to consumer `p % consumers`), one fetch loop per partition on the shared
//! connection (pipelined), long-polling at the tail. They count records and batch bytes,
//! time each fetch that returned records (the long-poll wait included), and in e2e read
//! each record's send time from the first 8 bytes of its value. `shardlog-bench consume`
//! is this alone; e2e runs it beside producers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shardlog_engine::batch::BatchHeader;
use shardlog_engine::record::RecordIter;
use shardlog_net::api::OffsetSpec;
use shardlog_net::client::{Client, ClientConfig, FetchOptions};

use crate::args::{FromArg, NetArgs};
use crate::net_report::{NetReport, Outcome};
use crate::workload::net_common::{
    Run, check_measured, join_tasks, micros, on_executor, spawn_tasks, start_when_ready, warmup,
};
use crate::workload::progress::{Progress, Show};

/// When the consumers stop.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this many records in all.
    Count(u64),
    /// After this long.
    Duration(Duration),
    /// e2e: once every produced record is read, or `drain` after the producers finished.
    Produced {
        /// Grace after the producers finished.
        drain: Duration,
    },
}

/// What every consumer of a run needs.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    brokers: String,
    /// What each consumer's client starts from (TLS, if any).
    client: ClientConfig,
    topic: String,
    consumers: usize,
    /// Start offset of each partition.
    starts: Vec<u64>,
    fetch: FetchOptions,
    until: Until,
    /// e2e: read the send time in each value.
    read_send_time: bool,
}

impl ConsumerConfig {
    /// The consumers' configuration for `args`, starting at `starts`.
    pub fn new(
        args: &NetArgs,
        client: ClientConfig,
        starts: Vec<u64>,
        until: Until,
        e2e: bool,
    ) -> ConsumerConfig {
        ConsumerConfig {
            brokers: args.brokers.clone(),
            client,
            topic: args.topic.clone(),
            consumers: args.consumers,
            starts,
            fetch: FetchOptions {
                max_bytes: args.fetch_max_bytes,
                max_wait: Duration::from_millis(args.fetch_max_wait_ms),
                min_bytes: 1,
            },
            until,
            read_send_time: e2e,
        }
    }
}

/// Each partition's start offset: its log start or its current end.
pub async fn start_offsets(
    brokers: &str,
    client: ClientConfig,
    topic: &str,
    from: FromArg,
) -> anyhow::Result<Vec<u64>> {
    let client = Client::connect(brokers, client)
        .await
        .with_context(|| format!("connecting to {brokers}"))?;
    let partitions = client
        .partition_count(topic)
        .await
        .with_context(|| format!("partitions of topic {topic}"))?;
    let spec = match from {
        FromArg::Beginning => OffsetSpec::Earliest,
        FromArg::End => OffsetSpec::Latest,
    };
    let mut starts = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let offset = client
            .list_offset(topic, partition, spec)
            .await
            .with_context(|| format!("offset of {topic}/{partition}"))?;
        starts.push(offset.unwrap_or(0));
    }
    Ok(starts)
}

/// `shardlog-bench consume`.
pub fn run(args: NetArgs) -> anyhow::Result<Outcome> {
    if args.consumers == 0 {
        bail!("--consumers must be at least 1");
    }
    let client = args.tls.client_config()?;
    let (brokers, topic, from) = (args.brokers.clone(), args.topic.clone(), args.from);
    let base = client.clone();
    let starts =
        on_executor(move || async move { start_offsets(&brokers, base, &topic, from).await })?;
    let partitions = u32::try_from(starts.len())?;
    let until = match args.count {
        Some(count) => Until::Count(count),
        None => Until::Duration(Duration::from_secs_f64(args.duration)),
    };
    let run = Arc::new(Run::new(warmup(&args, args.from == FromArg::Beginning)));
    let config = Arc::new(ConsumerConfig::new(&args, client, starts, until, false));
    let handles = spawn_consumers(&run, &config, args.threads)?;
    start_when_ready(&run, args.consumers)?;
    let show = Show {
        produce: false,
        consume: true,
        e2e: false,
    };
    // A counted run waiting for records nobody writes fails after --drain seconds.
    let idle = args.count.map(|_| Duration::from_secs_f64(args.drain));
    let progress = Progress::start(run.clone(), show, idle);
    let joined = join_tasks(handles);
    run.stop();
    progress.finish();
    joined?;
    if let Some(reason) = run.failure() {
        bail!("{reason}");
    }
    check_measured(&run, &run.consume, "read")?;
    if args.count.is_none() {
        note_idle_end(&run, &args);
    }
    Ok(NetReport::build("consume", &args, &run, partitions, 0))
}

/// A duration run's rates are over its whole window; say so when the consumers read
/// everything there was well before its end and then only waited for more.
fn note_idle_end(run: &Run, args: &NetArgs) {
    let window = args.duration - run.warmup.as_secs_f64();
    let busy = run.measured_secs(&run.consume);
    if busy + 0.5 < window {
        eprintln!(
            "note: the consumers read the last record {busy:.2} s into the {window:.1} s \
             measured; the rest of --duration waited for more (rates are over the whole \
             window; --count N times a fixed amount)"
        );
    }
}

/// Starts `--consumers` consumers on `threads` executors.
pub fn spawn_consumers(
    run: &Arc<Run>,
    config: &Arc<ConsumerConfig>,
    threads: usize,
) -> anyhow::Result<Vec<glommio::ExecutorJoinHandle<anyhow::Result<Vec<()>>>>> {
    let (task_run, task_config) = (run.clone(), config.clone());
    spawn_tasks("consumer", threads, config.consumers, run, move |index| {
        consumer(task_run.clone(), task_config.clone(), index)
    })
}

async fn consumer(run: Arc<Run>, config: Arc<ConsumerConfig>, index: usize) -> anyhow::Result<()> {
    let client = Client::connect(&config.brokers, config.client.clone())
        .await
        .with_context(|| format!("consumer {index} connecting to {}", config.brokers))?;
    let mine: Vec<u32> = (0..config.starts.len())
        .filter(|p| p % config.consumers == index)
        .filter_map(|p| u32::try_from(p).ok())
        .collect();
    run.set_ready();
    let Some(start) = run.wait_start().await else {
        return Ok(());
    };
    let loops = mine
        .into_iter()
        .map(|partition| read_partition(&run, &config, &client, partition, start));
    futures::future::try_join_all(loops).await?;
    Ok(())
}

fn finished(run: &Run, until: Until, start: Instant) -> bool {
    if run.stopped() {
        return true;
    }
    let consumed = run.consume.all.records();
    match until {
        Until::Count(count) => consumed >= count,
        Until::Duration(duration) => start.elapsed() >= duration,
        Until::Produced { drain } => run
            .producers_done()
            .is_some_and(|done| consumed >= run.produce.all.records() || done.elapsed() >= drain),
    }
}

async fn read_partition(
    run: &Run,
    config: &ConsumerConfig,
    client: &Client,
    partition: u32,
    start: Instant,
) -> anyhow::Result<()> {
    let topic = config.topic.as_str();
    let mut offset = config.starts[partition as usize];
    let mut e2e_us = Vec::new();
    while !finished(run, config.until, start) {
        let call = Instant::now();
        let fetched = client
            .fetch(topic, partition, offset, config.fetch)
            .await
            .with_context(|| format!("fetching {topic}/{partition} at {offset}"))?;
        let done = Instant::now();
        let (mut records, mut bytes) = (0u64, 0u64);
        for batch in fetched.batches() {
            let (header, data) =
                batch.with_context(|| format!("a batch of {topic}/{partition}"))?;
            let base = header.base_offset.0;
            let end = base + u64::from(header.last_offset_delta) + 1;
            if end <= offset {
                continue;
            }
            records += end - base.max(offset);
            bytes += data.len() as u64;
            if config.read_send_time {
                send_times(run, &header, data, offset, done, &mut e2e_us)?;
            }
            offset = end;
        }
        if records > 0 {
            run.consume
                .complete(run, done, records, bytes, micros(call, done));
            if !e2e_us.is_empty() {
                let mut histogram = run
                    .e2e
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for us in e2e_us.drain(..) {
                    histogram.saturating_record(us);
                }
            }
        } else if fetched.next_offset > offset {
            offset = fetched.next_offset;
        }
    }
    Ok(())
}

/// e2e: the latency of each record at or after `from` whose send time falls after the
/// warm-up, from its send time to `done`.
fn send_times(
    run: &Run,
    header: &BatchHeader,
    data: &[u8],
    from: u64,
    done: Instant,
    out: &mut Vec<u64>,
) -> anyhow::Result<()> {
    let done_ns = run.unix_ns(done);
    for record in RecordIter::new(header, data) {
        let record = record.context("a record that does not parse")?;
        if record.offset(header).0 < from {
            continue;
        }
        let sent = record
            .value
            .and_then(|v| v.get(..8))
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map(u64::from_le_bytes)
            .context("a record without a send time (values shorter than 8 bytes)")?;
        if run
            .instant_of_unix_ns(sent)
            .is_some_and(|at| run.measured(at))
        {
            out.push((done_ns.saturating_sub(sent) / 1_000).max(1));
        }
    }
    Ok(())
}
