//! Producers: each with its own connection, keeping `--inflight` produce requests
//! outstanding (pipelined), sending to the partitions round-robin. Closed loop by default;
//! with `--rate`, request `i` of a producer is due at `start + phase + i * interval` and its
//! latency is timed from that intended time, so a stall shows in the latency instead of
//! silently lowering the load (coordinated omission). A producer behind schedule sends at
//! once. `shardlog-bench produce` is this alone; e2e runs it beside consumers. With
//! `--protocol kafka` the same producers speak Kafka's protocol (`kafka_produce.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::future::Either;
use futures::stream::FuturesUnordered;
use shardlog_engine::record::BatchBuilder;
use shardlog_net::ErrorCode;
use shardlog_net::api::{Acks, TopicConfig};
use shardlog_net::client::{Client, ClientConfig, ClientError};

use crate::args::{NetArgs, Protocol};
use crate::latency::histogram;
use crate::net_report::{NetReport, Outcome};
use crate::workload::kafka_produce;
use crate::workload::net_common::{
    Run, acks, build_batch, check_measured, join_tasks, micros, on_executor, spawn_tasks,
    start_when_ready, value_bytes, warmup,
};
use crate::workload::progress::{Progress, Show};

/// What every producer of a run needs.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub(crate) brokers: String,
    /// What each producer's client starts from (TLS, if any).
    pub(crate) client: ClientConfig,
    pub(crate) topic: String,
    pub(crate) partitions: u32,
    pub(crate) producers: usize,
    pub(crate) acks: Acks,
    /// Idempotent produce (with acks).
    pub(crate) idempotence: bool,
    pub(crate) record_size: usize,
    pub(crate) batch_records: usize,
    pub(crate) inflight: usize,
    /// Batches in all, for `--count` runs.
    pub(crate) total_batches: Option<u64>,
    pub(crate) duration: Duration,
    /// Open loop: time between two requests of one producer.
    pub(crate) interval: Option<Duration>,
    /// e2e: stamp each record's value with the request's send time.
    pub(crate) stamp_send_time: bool,
    /// The protocol the producers speak.
    pub(crate) protocol: Protocol,
}

impl ProducerConfig {
    /// The producers' configuration for `args` on a topic of `partitions` partitions.
    pub fn new(
        args: &NetArgs,
        client: ClientConfig,
        partitions: u32,
        stamp_send_time: bool,
    ) -> ProducerConfig {
        let interval = args.rate.map(|rate| {
            let per_producer = rate / args.producers as f64;
            Duration::from_secs_f64(args.batch_records as f64 / per_producer)
        });
        ProducerConfig {
            brokers: args.brokers.clone(),
            client,
            topic: args.topic.clone(),
            partitions,
            producers: args.producers,
            acks: acks(args.acks),
            idempotence: args.idempotence,
            record_size: args.record_size,
            batch_records: args.batch_records,
            inflight: args.inflight,
            total_batches: args
                .count
                .map(|records| records.div_ceil(args.batch_records as u64)),
            duration: Duration::from_secs_f64(args.duration),
            interval,
            stamp_send_time,
            protocol: args.protocol,
        }
    }

    /// Batches producer `index` sends in a `--count` run.
    fn batches_of(&self, index: usize) -> Option<u64> {
        self.total_batches.map(|total| {
            let producers = self.producers as u64;
            total / producers + u64::from((index as u64) < total % producers)
        })
    }
}

/// Checks the options the producers use.
pub fn check_args(args: &NetArgs) -> anyhow::Result<()> {
    if args.producers == 0 || args.batch_records == 0 || args.inflight == 0 {
        bail!("--producers, --batch-records and --inflight must be at least 1");
    }
    if args.partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        bail!("--rate must be a positive number of records per second");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    Ok(())
}

/// Creates the topic with `partitions` partitions unless it exists; returns its partition
/// count as the brokers know it.
pub async fn ensure_topic(
    brokers: &str,
    client: ClientConfig,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<u32> {
    let client = Client::connect(brokers, client)
        .await
        .with_context(|| format!("connecting to {brokers}"))?;
    // A topic that exists is used as it is: creating it again would need the right to
    // create topics, which a user allowed only to write it (authorization on) lacks.
    if let Ok(count) = client.partition_count(topic).await {
        return Ok(count);
    }
    match client
        .create_topic(topic, partitions, 0, TopicConfig::default())
        .await
    {
        Ok(()) => tracing::info!(topic, partitions, "created the topic"),
        Err(ClientError::Server {
            code: ErrorCode::TopicExists,
            ..
        }) => {}
        Err(error) => return Err(error).with_context(|| format!("creating topic {topic}")),
    }
    client
        .partition_count(topic)
        .await
        .with_context(|| format!("partitions of topic {topic}"))
}

/// `shardlog-bench produce`.
pub fn run(args: NetArgs) -> anyhow::Result<Outcome> {
    check_args(&args)?;
    let client = args.tls.client_config()?;
    if args.protocol == Protocol::Kafka && client.tls.is_some() {
        bail!("--tls-ca applies to the shardlog protocol only, not --protocol kafka");
    }
    let (brokers, topic, wanted) = (args.brokers.clone(), args.topic.clone(), args.partitions);
    let base = client.clone();
    let partitions = match args.protocol {
        Protocol::Shardlog => {
            on_executor(move || async move { ensure_topic(&brokers, base, &topic, wanted).await })?
        }
        Protocol::Kafka => on_executor(move || async move {
            kafka_produce::ensure_topic(&brokers, &topic, wanted).await
        })?,
    };
    let run = Arc::new(Run::new(warmup(&args, false)));
    let config = Arc::new(ProducerConfig::new(&args, client, partitions, false));
    let handles = spawn_producers(&run, &config, args.threads)?;
    start_when_ready(&run, args.producers)?;
    let show = Show {
        produce: true,
        consume: false,
        e2e: false,
    };
    let progress = Progress::start(run.clone(), show, None);
    let joined = join_tasks(handles);
    run.stop();
    progress.finish();
    joined?;
    check_measured(&run, &run.produce, "produced")?;
    Ok(NetReport::build(
        "produce",
        &args,
        &run,
        partitions,
        config_batch_bytes(&args),
    ))
}

/// Starts `--producers` producers on `threads` executors.
pub fn spawn_producers(
    run: &Arc<Run>,
    config: &Arc<ProducerConfig>,
    threads: usize,
) -> anyhow::Result<Vec<glommio::ExecutorJoinHandle<anyhow::Result<Vec<()>>>>> {
    let (task_run, task_config) = (run.clone(), config.clone());
    spawn_tasks("producer", threads, config.producers, run, move |index| {
        let (run, config) = (task_run.clone(), task_config.clone());
        async move {
            match config.protocol {
                Protocol::Shardlog => producer(run, config, index).await,
                Protocol::Kafka => kafka_produce::producer(run, config, index).await,
            }
        }
    })
}

/// Bytes of one batch as sent (for the report).
pub fn config_batch_bytes(args: &NetArgs) -> usize {
    let mut builder = BatchBuilder::new();
    build_batch(
        &mut builder,
        args.batch_records,
        &value_bytes(args.record_size),
    )
    .len()
}

/// One producer: connect, wait for the start, send until the count or the deadline.
async fn producer(run: Arc<Run>, config: Arc<ProducerConfig>, index: usize) -> anyhow::Result<()> {
    let client_config = ClientConfig {
        idempotence: config.idempotence,
        ..config.client.clone()
    };
    let client = Client::connect(&config.brokers, client_config)
        .await
        .with_context(|| format!("producer {index} connecting to {}", config.brokers))?;
    if config.idempotence && config.acks != Acks::None {
        // Before the start: the first requests do not wait for it.
        client
            .init_producer()
            .await
            .with_context(|| format!("producer {index}: a producer id"))?;
    }
    let mut builder = BatchBuilder::new();
    let mut value = value_bytes(config.record_size);
    let template = build_batch(&mut builder, config.batch_records, &value);
    run.set_ready();
    let Some(start) = run.wait_start().await else {
        return Ok(());
    };
    let schedule = Schedule::new(&config, index, start);
    let mut partition = u32::try_from(index).unwrap_or(0) % config.partitions;
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut lag = histogram();
    loop {
        let now = Instant::now();
        let intended = schedule.due(sent, now);
        let more = !run.stopped() && schedule.wanted(sent, intended);
        if !more || inflight.len() >= config.inflight {
            match inflight.next().await {
                Some(done) => complete(&run, &config, done)?,
                None => {
                    run.add_send_lag(&lag);
                    return Ok(());
                }
            }
            continue;
        }
        if intended > now {
            let wait = std::pin::pin!(glommio::timer::sleep(intended - now));
            if inflight.is_empty() {
                wait.await;
            } else if let Either::Right((Some(done), _)) =
                futures::future::select(wait, inflight.next()).await
            {
                complete(&run, &config, done)?;
            }
            continue;
        }
        let batch = if config.stamp_send_time {
            value[..8].copy_from_slice(&run.unix_ns(intended).to_le_bytes());
            build_batch(&mut builder, config.batch_records, &value)
        } else {
            template.clone()
        };
        if config.interval.is_some() && run.measured(intended) {
            lag.saturating_record(micros(intended, Instant::now()));
        }
        let (client, topic, acks) = (&client, config.topic.as_str(), config.acks);
        inflight.push(async move {
            let len = batch.len();
            let result = client.produce(topic, partition, acks, batch).await;
            (intended, len, partition, result)
        });
        partition = (partition + 1) % config.partitions;
        sent += 1;
    }
}

/// When a producer's requests are due, and how many it sends.
pub(crate) struct Schedule {
    start: Instant,
    /// Open loop: this producer's offset into the interval (producers spread evenly).
    phase: Duration,
    interval: Option<Duration>,
    deadline: Instant,
    batches: Option<u64>,
}

impl Schedule {
    pub(crate) fn new(config: &ProducerConfig, index: usize, start: Instant) -> Schedule {
        let phase = config.interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(index as f64 / config.producers as f64)
        });
        Schedule {
            start,
            phase,
            interval: config.interval,
            deadline: start + config.duration,
            batches: config.batches_of(index),
        }
    }

    /// The intended send time of request `sent`: on the schedule in open loop, else now.
    pub(crate) fn due(&self, sent: u64, now: Instant) -> Instant {
        match self.interval {
            Some(interval) => self.start + self.phase + interval.mul_f64(sent as f64),
            None => now,
        }
    }

    /// Whether request `sent`, due at `intended`, is to be sent at all.
    pub(crate) fn wanted(&self, sent: u64, intended: Instant) -> bool {
        match self.batches {
            Some(limit) => sent < limit,
            None => intended < self.deadline,
        }
    }
}

type Done = (Instant, usize, u32, Result<Option<u64>, ClientError>);

fn complete(
    run: &Run,
    config: &ProducerConfig,
    (intended, len, partition, result): Done,
) -> anyhow::Result<()> {
    let now = Instant::now();
    match result {
        Ok(_) => run.produce.complete(
            run,
            now,
            config.batch_records as u64,
            len as u64,
            micros(intended, now),
        ),
        // A failover or a partition can outlast the client's retries: the run goes on (its
        // timeline shows the failures in their second) and exits 1 at the end.
        Err(error) if error.is_retriable() => {
            tracing::warn!(topic = config.topic, partition, %error, "produce failed after the client's retries");
            run.produce.error(run, now);
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("producing to {}/{partition}", config.topic));
        }
    }
    Ok(())
}
