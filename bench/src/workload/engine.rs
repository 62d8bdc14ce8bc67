//! `shardlog-bench engine`: concurrent appenders on partition logs in one glommio shard,
//! no network. Each appender appends the same pre-built batch in a closed loop (the
//! engine copies it, as it would a batch received from a socket), timing each append
//! from the call to its resolution under the flush policy.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{
    DmaStorage, EngineConfig, FlushPolicy, LeaderEpoch, LogStats, PartitionLog, TimestampMs,
    preflight, warm_iopoll_probe,
};

use crate::args::EngineArgs;
use crate::latency::{Percentiles, histogram};
use crate::report::{EngineConfigReport, EngineResults, OpenResults, Report, git_commit};

type Log = PartitionLog<DmaStorage>;

/// Runs the engine benchmark and returns its report.
pub fn run(args: EngineArgs) -> anyhow::Result<Report> {
    preflight::preflight(&args.data_dir)?.warn_if_memlock_below(args.io_memory);
    let root = args.data_dir.join("bench");
    if !args.open_only && root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    let config = engine_config(&args);
    let batch = template_batch(&args);
    let config_report = EngineConfigReport {
        flush: args.flush.to_string(),
        appenders: args.appenders,
        partitions: args.partitions,
        record_size: args.record_size,
        batch_records: args.batch_records,
        batch_bytes: batch.len(),
        segment_bytes: config.segment_bytes,
    };
    let io_memory = args.io_memory;
    let worker_args = args.clone();
    let worker_root = root.clone();
    let (results, open) = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-shard")
        .io_memory(io_memory)
        .spawn(move || async move {
            warm_iopoll_probe(&worker_args.data_dir).await?;
            if worker_args.open_only {
                return open_only(&worker_root, config)
                    .await
                    .map(|o| (None, Some(o)));
            }
            append_run(&worker_args, &worker_root, config, batch)
                .await
                .map(|r| (Some(r), None))
        })
        .map_err(|e| anyhow::anyhow!("starting the shard: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("shard failed: {e}"))??;
    if !args.keep && !args.open_only {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    Ok(Report {
        command: std::env::args().collect(),
        git_commit: git_commit(),
        config: config_report,
        results,
        open,
    })
}

fn engine_config(args: &EngineArgs) -> EngineConfig {
    let mut config = EngineConfig {
        flush: args.flush,
        ..EngineConfig::default()
    };
    if let Some(bytes) = args.segment_bytes {
        config.segment_bytes = bytes;
    }
    config
}

/// One batch of `batch_records` records with `record_size`-byte values of varied bytes.
fn template_batch(args: &EngineArgs) -> Vec<u8> {
    let now = TimestampMs::now();
    let mut builder = BatchBuilder::new();
    let value: Vec<u8> = (0..args.record_size)
        .map(|i| ((i * 31) % 251).to_le_bytes()[0])
        .collect();
    for i in 0..args.batch_records {
        let key = format!("key-{i}");
        builder.push(now, Some(key.as_bytes()), Some(&value), &[]);
    }
    builder.finish()
}

fn partition_dir(root: &Path, partition: usize) -> PathBuf {
    root.join(partition.to_string())
}

/// Counters shared by the appenders of the one shard.
#[derive(Default)]
struct Progress {
    batches: Cell<u64>,
    done: Cell<bool>,
}

async fn append_run(
    args: &EngineArgs,
    root: &Path,
    config: EngineConfig,
    batch: Vec<u8>,
) -> anyhow::Result<EngineResults> {
    if args.appenders == 0 || args.partitions == 0 || args.batch_records == 0 {
        bail!("--appenders, --partitions and --batch-records must be at least 1");
    }
    let mut logs = Vec::with_capacity(args.partitions);
    for partition in 0..args.partitions {
        let dir = partition_dir(root, partition);
        logs.push(Rc::new(
            PartitionLog::open(DmaStorage, &dir, config.clone()).await?,
        ));
    }
    let batch_limit = args
        .count
        .map(|records| records.div_ceil(args.batch_records as u64));
    let deadline = Duration::from_secs_f64(args.duration);
    let progress = Rc::new(Progress::default());
    let started = Instant::now();
    let ticker = glommio::spawn_local(upkeep(logs.clone(), progress.clone(), args.flush));
    let appenders = (0..args.appenders).map(|i| {
        let log = logs[i % logs.len()].clone();
        appender(
            log,
            progress.clone(),
            &batch,
            batch_limit,
            started,
            deadline,
        )
    });
    let histograms = futures::future::try_join_all(appenders).await?;
    let elapsed = started.elapsed();
    progress.done.set(true);
    ticker.await;
    let mut latency = histogram();
    for h in &histograms {
        latency.add(h).context("merging histograms")?;
    }
    let mut stats = LogStats::default();
    for log in &logs {
        let s = log.stats();
        stats.flushes += s.flushes;
        stats.syncs += s.syncs;
        stats.bytes_written += s.bytes_written;
    }
    for log in logs {
        let log = Rc::try_unwrap(log).map_err(|_| anyhow::anyhow!("log still shared"))?;
        log.close().await?;
    }
    Ok(results(
        progress.batches.get(),
        args,
        batch.len(),
        elapsed,
        &stats,
        &latency,
    ))
}

async fn appender(
    log: Rc<Log>,
    progress: Rc<Progress>,
    batch: &[u8],
    batch_limit: Option<u64>,
    started: Instant,
    deadline: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = histogram();
    loop {
        let more = match batch_limit {
            Some(limit) => progress.batches.get() < limit,
            None => started.elapsed() < deadline,
        };
        if !more {
            return Ok(latency);
        }
        // Counted before the await so that appenders together stop at the limit.
        progress.batches.set(progress.batches.get() + 1);
        let bytes = BytesMut::from(batch);
        let call = Instant::now();
        log.append(bytes, LeaderEpoch(0)).await?;
        let us = u64::try_from(call.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency.saturating_record(us.max(1));
    }
}

/// Prints a progress line every second and runs the logs' upkeep (interval syncs).
async fn upkeep(logs: Vec<Rc<Log>>, progress: Rc<Progress>, flush: FlushPolicy) {
    let tick = match flush {
        FlushPolicy::Interval(every) => every.min(Duration::from_millis(10)),
        _ => Duration::from_millis(10),
    };
    let mut last_print = Instant::now();
    let mut last_batches = 0u64;
    while !progress.done.get() {
        glommio::timer::sleep(tick).await;
        for log in &logs {
            if let Err(error) = log.tick(TimestampMs::now()).await {
                tracing::error!(%error, "log upkeep failed");
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let batches = progress.batches.get();
            let rate = (batches - last_batches) as f64 / last_print.elapsed().as_secs_f64();
            eprintln!("  {batches:>10} batches  {rate:>10.0} batches/s");
            last_print = Instant::now();
            last_batches = batches;
        }
    }
}

fn results(
    batches: u64,
    args: &EngineArgs,
    batch_bytes: usize,
    elapsed: Duration,
    stats: &LogStats,
    latency: &Histogram<u64>,
) -> EngineResults {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let bytes = batches * batch_bytes as u64;
    EngineResults {
        elapsed_s: secs,
        batches,
        records: batches * args.batch_records as u64,
        bytes,
        batches_per_s: batches as f64 / secs,
        records_per_s: (batches * args.batch_records as u64) as f64 / secs,
        mib_per_s: bytes as f64 / secs / f64::from(1u32 << 20),
        flushes: stats.flushes,
        syncs: stats.syncs,
        syncs_per_s: stats.syncs as f64 / secs,
        batches_per_sync: if stats.syncs == 0 {
            0.0
        } else {
            batches as f64 / stats.syncs as f64
        },
        bytes_written: stats.bytes_written,
        append_latency_us: Percentiles::of(latency),
    }
}

/// Opens every partition a `--keep` run left and times it.
async fn open_only(root: &Path, config: EngineConfig) -> anyhow::Result<OpenResults> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "no partitions under {}: run with --keep first",
            root.display()
        );
    }
    let started = Instant::now();
    let mut logs = Vec::new();
    for dir in &dirs {
        logs.push(PartitionLog::open(DmaStorage, dir, config.clone()).await?);
    }
    let open_s = started.elapsed().as_secs_f64();
    let (mut segments, mut data_bytes) = (0, 0);
    for log in &logs {
        let infos = log.segments();
        segments += infos.len();
        data_bytes += infos.iter().map(|s| s.data_len).sum::<u64>();
    }
    for log in logs {
        log.close().await?;
    }
    Ok(OpenResults {
        partitions: dirs.len(),
        segments,
        data_bytes,
        open_s,
    })
}
