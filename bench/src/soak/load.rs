//! The soak's load: idempotent producers at `acks=all` (the client library's defaults:
//! a producer id from the cluster, per-partition sequences, retries resend the same
//! bytes) and consumers reading every partition from its start, each on a glommio
//! executor of its own. Every attempt, answer and read goes to the history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use shardlog_engine::TimestampMs;
use shardlog_engine::record::{BatchBuilder, RecordIter};
use shardlog_net::ErrorCode;
use shardlog_net::api::{Acks, OffsetSpec};
use shardlog_net::client::{Client, ClientConfig, FetchOptions, Fetched};

use super::history::{Event, History, decode_value, encode_value};

/// glommio I/O memory per executor (clients do no file I/O).
const IO_MEMORY: usize = 1 << 20;

/// What the load runs.
#[derive(Clone)]
pub struct LoadConfig {
    /// Brokers.
    pub brokers: String,
    /// Topic.
    pub topic: String,
    /// Partitions.
    pub partitions: u32,
    /// Records per batch.
    pub batch_records: u32,
    /// Pause between a producer's batches to one partition.
    pub interval: Duration,
    /// Filler bytes per value.
    pub pad: usize,
    /// Idempotent producers.
    pub idempotence: bool,
}

/// The client settings of producers and consumers: a fault lasts seconds, so retries
/// span about ten.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        retries: 12,
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_secs(1),
        ..crate::sasl::client_config()
    }
}

/// Starts producer `producer`: one task per partition, one batch in flight each, until
/// `stop`.
pub fn spawn_producer(
    producer: u32,
    config: LoadConfig,
    history: History,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let client = ClientConfig {
        idempotence: config.idempotence,
        ..client_config()
    };
    let name = format!("soak-producer-{producer}");
    let task = Task {
        id: producer,
        config,
        history,
        stop,
    };
    spawn_per_partition(name, client, task, produce_partition)
}

/// What each partition's task of a producer or consumer gets.
#[derive(Clone)]
struct Task {
    /// The producer's or consumer's number.
    id: u32,
    config: LoadConfig,
    history: History,
    stop: Arc<AtomicBool>,
}

/// On an executor of its own, connects a client and runs `run` for every partition.
fn spawn_per_partition<Fut>(
    name: String,
    client_config: ClientConfig,
    task: Task,
    run: fn(Client, u32, Task) -> Fut,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>>
where
    Fut: std::future::Future<Output = ()> + 'static,
{
    let what = name.clone();
    spawn(&name, move || async move {
        let client = Client::connect(&task.config.brokers, client_config)
            .await
            .with_context(|| format!("{what}: connecting"))?;
        let tasks: Vec<_> = (0..task.config.partitions)
            .map(|partition| glommio::spawn_local(run(client.clone(), partition, task.clone())))
            .collect();
        for handle in tasks {
            handle.await;
        }
        Ok(())
    })
}

async fn produce_partition(client: Client, partition: u32, task: Task) {
    let Task {
        id: producer,
        config,
        history,
        stop,
    } = task;
    let mut builder = BatchBuilder::new();
    let mut value = Vec::new();
    let mut seq = 0u64;
    let count = config.batch_records;
    while !stop.load(Ordering::SeqCst) {
        let now = TimestampMs::now();
        for i in 0..u64::from(count) {
            encode_value(&mut value, producer, partition, seq + i, config.pad);
            builder.push(now, None, Some(&value), &[]);
        }
        let batch = Bytes::from(builder.finish());
        history.push(&Event::Send {
            t: history.now(),
            producer,
            partition,
            seq,
            count,
        });
        let result = client
            .produce(&config.topic, partition, Acks::All, batch)
            .await;
        let t = history.now();
        history.push(&match result {
            Ok(offset) => Event::Ack {
                t,
                producer,
                partition,
                seq,
                count,
                offset: offset.unwrap_or(u64::MAX),
            },
            Err(e) => Event::Fail {
                t,
                producer,
                partition,
                seq,
                count,
                error: e.to_string(),
            },
        });
        seq += u64::from(count);
        glommio::timer::sleep(config.interval).await;
    }
}

/// Starts consumer `consumer`: one task per partition reading it from its start, until
/// `stop`.
pub fn spawn_consumer(
    consumer: u32,
    config: LoadConfig,
    history: History,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let name = format!("soak-consumer-{consumer}");
    let task = Task {
        id: consumer,
        config,
        history,
        stop,
    };
    spawn_per_partition(name, client_config(), task, consume_partition)
}

async fn consume_partition(client: Client, partition: u32, task: Task) {
    let Task {
        id: consumer,
        config,
        history,
        stop,
    } = task;
    let options = FetchOptions {
        max_bytes: 256 << 10,
        max_wait: Duration::from_millis(200),
        min_bytes: 1,
    };
    let mut offset = 0u64;
    let who = format!("consumer {consumer}");
    while !stop.load(Ordering::SeqCst) {
        match client
            .fetch(&config.topic, partition, offset, options)
            .await
        {
            Ok(fetched) => {
                if fetched.log_start > offset {
                    skip(&history, consumer, partition, offset, fetched.log_start);
                    offset = fetched.log_start;
                    continue;
                }
                let records = records_of(&fetched, partition, &history, &who);
                history.push(&Event::Read {
                    t: history.now(),
                    consumer,
                    partition,
                    hw: fetched.high_watermark,
                    log_start: fetched.log_start,
                    records,
                });
                offset = offset.max(fetched.next_offset);
            }
            Err(e) if e.code() == Some(ErrorCode::OffsetOutOfRange) => {
                // Below the log start (retention) or, after a failover, past a new
                // leader's end: ask where the log starts now.
                let start = client
                    .list_offset(&config.topic, partition, OffsetSpec::Earliest)
                    .await;
                if let Ok(Some(start)) = start
                    && start > offset
                {
                    skip(&history, consumer, partition, offset, start);
                    offset = start;
                } else {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(e) => {
                tracing::debug!(partition, error = %e, "soak consumer: fetch failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn skip(history: &History, consumer: u32, partition: u32, from: u64, to: u64) {
    history.push(&Event::Skip {
        t: history.now(),
        consumer,
        partition,
        from,
        to,
    });
}

/// (offset, producer, seq) of every record fetched; records the soak did not write for
/// this partition (or batches that fail their CRC) are recorded as `Foreign`.
pub fn records_of(
    fetched: &Fetched,
    partition: u32,
    history: &History,
    seen_by: &str,
) -> Vec<(u64, u32, u64)> {
    let mut out = Vec::new();
    let foreign = |offset: u64| {
        history.push(&Event::Foreign {
            t: history.now(),
            partition,
            offset,
            seen_by: seen_by.to_owned(),
        });
    };
    for batch in fetched.batches() {
        let Ok((header, bytes)) = batch else {
            foreign(fetched.next_offset);
            break;
        };
        for record in RecordIter::new(&header, bytes) {
            let Ok(record) = record else {
                foreign(header.base_offset.0);
                break;
            };
            let offset = record.offset(&header).0;
            match record.value.and_then(decode_value) {
                Some((producer, p, seq)) if p == partition => out.push((offset, producer, seq)),
                _ => foreign(offset),
            }
        }
    }
    out
}

fn spawn<F, Fut>(name: &str, task: F) -> anyhow::Result<JoinHandle<anyhow::Result<()>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + 'static,
{
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(IO_MEMORY)
        .spawn(task)
        .map_err(|e| anyhow::anyhow!("starting executor {name}: {e}"))?;
    Ok(std::thread::spawn(move || {
        handle
            .join()
            .map_err(|e| anyhow::anyhow!("executor failed: {e}"))?
    }))
}
