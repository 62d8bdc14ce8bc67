//! `shardlog-bench soak`: a fault-injection soak of a real cluster.
//!
//! The soak starts `--nodes` `shardlogd` processes on 127.0.0.1 (every node-to-node link
//! through a fault-injecting proxy, each data directory on a loop-mounted ext4 of its own
//! when disk faults are on), creates a topic (replication factor 3, min_insync 2; with
//! `retention`, 64 KiB segments and short retention), and runs idempotent `acks=all`
//! producers and consumers on every partition while the nemesis (`nemesis.rs`) injects
//! the seed's faults one after another. Then it heals everything, waits until every
//! partition has a leader and a full ISR, reads every partition from its log start to its
//! high watermark, and checks the whole history (`check.rs`). Every produce attempt and
//! answer, every read, every fault and the final read are written as JSON lines
//! (`history.rs`); `shardlog-bench soak-check FILE` checks a history again.
//!
//! Exit status: 0 when the checker found no violation, 1 otherwise (or when the run
//! itself failed). Ctrl-C ends the faults early and still heals, checks and cleans up.

mod check;
mod history;
mod load;
pub mod nemesis;
mod nodes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shardlog_net::api::{OffsetSpec, TopicConfig};
use shardlog_net::client::{Client, FetchOptions};

use crate::args::SoakArgs;
use history::{Event, History};
use load::LoadConfig;
use nemesis::{FaultKind, Schedule};
use nodes::Nodes;

/// The soak's topic.
const TOPIC: &str = "soak";
/// With `retention`: segment size, retention by size per partition and by age. The
/// consumers keep up with far less than this, so they read records before retention
/// deletes them.
const SEGMENT_BYTES: u64 = 64 << 10;
const RETENTION_BYTES: u64 = 1 << 20;
const RETENTION_MS: u64 = 60_000;
/// With disk faults (and no `retention`): segments small enough for the loop mounts, and
/// rolled often enough (about every 4 s per partition) that a full disk is hit.
const DISK_SEGMENT_BYTES: u64 = 128 << 10;
/// How long the cluster may take to have every partition led with a full ISR.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the final read of a partition may keep failing.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the soak; see the module docs.
pub fn run(args: &SoakArgs) -> anyhow::Result<()> {
    if args.nodes < 3 {
        bail!("--nodes must be at least 3 (replication factor 3)");
    }
    if args.record_size < 16 {
        bail!("--record-size must be at least 16");
    }
    let binary = shardlogd_binary(args)?;
    // `Shardlogd::launch` runs `$SHARDLOGD_BIN`.
    // SAFETY: no other thread runs yet (the soak starts its threads below).
    unsafe { std::env::set_var("SHARDLOGD_BIN", &binary) };
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone()).context("signal handler")?;
    }
    clear_dir(&args.dir)?;
    let history_path = args
        .history
        .clone()
        .unwrap_or_else(|| args.dir.join("history.jsonl"));
    let (mut nodes, kinds, disk_skipped) = prepare_nodes(args, binary)?;
    let history = History::create(&history_path)?;
    history.push(&Event::Start {
        unix_ms: unix_ms(),
        seed: args.seed,
        nodes: args.nodes,
        partitions: args.partitions,
        faults: kinds.iter().map(|k| k.name().to_owned()).collect(),
        disk_skipped: disk_skipped.clone(),
    });
    if let Some(why) = &disk_skipped {
        println!("disk faults skipped: {why}");
    }
    let outcome = soak(args, &mut nodes, &kinds, &history, &interrupted);
    history.flush()?;
    drop(nodes);
    outcome?;
    println!("history: {}", history_path.display());
    check_file(&history_path)
}

/// Checks a history file and prints the summary; an error when it holds violations.
pub fn check_file(path: &Path) -> anyhow::Result<()> {
    let events = history::read(path)?;
    let verdict = check::check(&events);
    print!("{}", verdict.summary());
    let violations = verdict.violations();
    if violations > 0 {
        bail!(
            "soak FAILED: {violations} violations (history {})",
            path.display()
        );
    }
    println!("soak passed: no violation");
    Ok(())
}

fn soak(
    args: &SoakArgs,
    nodes: &mut Nodes,
    kinds: &[FaultKind],
    history: &History,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let all: Vec<usize> = (0..nodes.len()).collect();
    nodes.start(&all)?;
    let config = LoadConfig {
        brokers: nodes.brokers(),
        topic: TOPIC.to_owned(),
        partitions: args.partitions,
        batch_records: args.batch_records,
        interval: Duration::from_millis(args.interval_ms),
        pad: args.record_size - 16,
        idempotence: args.idempotence,
    };
    let retention = kinds.contains(&FaultKind::Retention);
    create_topic(&config, retention, kinds.contains(&FaultKind::Disk))?;
    eprintln!("soak: {} nodes up, topic {TOPIC} in sync", nodes.len());
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..args.producers {
        producers.push(load::spawn_producer(
            p,
            config.clone(),
            history.clone(),
            stop_producers.clone(),
        )?);
    }
    let mut consumers = Vec::new();
    for c in 0..args.consumers {
        consumers.push(load::spawn_consumer(
            c,
            config.clone(),
            history.clone(),
            stop_consumers.clone(),
        )?);
    }
    let faults = run_nemesis(args, nodes, kinds, history, interrupted);
    eprintln!("soak: {faults} faults injected; healing");
    nodes.heal_everything()?;
    stop_producers.store(true, Ordering::SeqCst);
    for producer in producers {
        join(producer, "producer")?;
    }
    let settled = settle(&config, history);
    stop_consumers.store(true, Ordering::SeqCst);
    for consumer in consumers {
        join(consumer, "consumer")?;
    }
    final_read(&config, history)?;
    eprintln!("soak: final read done (settled: {settled})");
    Ok(())
}

/// Injects faults until the duration or the fault count is reached (or Ctrl-C).
/// Returns the number injected.
fn run_nemesis(
    args: &SoakArgs,
    nodes: &mut Nodes,
    kinds: &[FaultKind],
    history: &History,
    interrupted: &AtomicBool,
) -> u64 {
    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let done = || started.elapsed() >= duration || interrupted.load(Ordering::SeqCst);
    let mut schedule = Schedule::new(
        args.seed,
        kinds,
        nodes.len(),
        args.hold_ms.clone(),
        args.gap_ms.clone(),
    );
    let mut n = 0u64;
    while !done() && args.max_faults.is_none_or(|max| n < max) {
        let Some(fault) = schedule.next_fault() else {
            nemesis::sleep_unless(duration, &done);
            break;
        };
        n += 1;
        if let Err(e) = nemesis::apply(nodes, history, n, &fault, &done) {
            eprintln!(
                "soak: fault {n} ({:?} on node {}): {e:#}",
                fault.kind, fault.node
            );
        }
        if n % 50 == 0 {
            eprintln!("soak: {n} faults, {:.0} s", started.elapsed().as_secs_f64());
        }
        nemesis::sleep_unless(fault.gap, &done);
    }
    n
}

/// Nodes with loop mounts when disk faults are asked for and mounting works; else
/// without, and the reason disk faults were skipped.
fn prepare_nodes(
    args: &SoakArgs,
    binary: PathBuf,
) -> anyhow::Result<(Nodes, Vec<FaultKind>, Option<String>)> {
    let extra: Vec<String> = args
        .node_args
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut kinds = args.faults.clone();
    kinds.dedup();
    let disk = kinds.contains(&FaultKind::Disk);
    if disk {
        match Nodes::prepare(&args.dir, args.nodes, binary.clone(), extra.clone(), true) {
            Ok(nodes) => return Ok((nodes, kinds, None)),
            Err(e) => {
                kinds.retain(|k| *k != FaultKind::Disk);
                let nodes = Nodes::prepare(&args.dir, args.nodes, binary, extra, false)?;
                return Ok((nodes, kinds, Some(format!("{e:#}"))));
            }
        }
    }
    let nodes = Nodes::prepare(&args.dir, args.nodes, binary, extra, false)?;
    Ok((nodes, kinds, None))
}

/// Removes what an earlier soak left in `dir` (only the soak's own files: `dir` may be
/// anything the user named).
fn clear_dir(dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("node-") {
            let mount = path.join("mnt");
            // A soak that was killed may have left its mount.
            let _ = std::process::Command::new("umount")
                .arg(&mount)
                .stderr(std::process::Stdio::null())
                .status();
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        } else if name == "history.jsonl" || name == "cluster.secret" {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn shardlogd_binary(args: &SoakArgs) -> anyhow::Result<PathBuf> {
    let binary = match &args.shardlogd {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("shardlogd"),
    };
    if !binary.is_file() {
        bail!(
            "no shardlogd at {} (build it: cargo build -p shardlog-net, or pass --shardlogd)",
            binary.display()
        );
    }
    Ok(binary)
}

fn create_topic(config: &LoadConfig, retention: bool, disk: bool) -> anyhow::Result<()> {
    let config = config.clone();
    crate::workload::net_common::on_executor(move || async move {
        let client = Client::connect(&config.brokers, load::client_config()).await?;
        let mut topic = TopicConfig {
            min_insync: Some(2),
            ..TopicConfig::default()
        };
        if disk {
            // A new segment is preallocated whole: the default 128 MiB ones would not
            // fit four partitions on a node's 256 MiB filesystem.
            topic.segment_bytes = Some(DISK_SEGMENT_BYTES);
        }
        if retention {
            topic.segment_bytes = Some(SEGMENT_BYTES);
            topic.retention_bytes = Some(RETENTION_BYTES);
            topic.retention_ms = Some(RETENTION_MS);
        }
        client
            .create_topic(&config.topic, config.partitions, 3, topic)
            .await
            .context("creating the soak's topic")?;
        match in_sync(&client, &config).await {
            Ok(true) => Ok(()),
            _ => wait_in_sync(&client, &config).await.map(drop),
        }
    })
}

/// Waits until every partition has a leader and a full ISR; records the outcome.
fn settle(config: &LoadConfig, history: &History) -> bool {
    let config = config.clone();
    let outcome = crate::workload::net_common::on_executor(move || async move {
        let client = Client::connect(&config.brokers, load::client_config()).await?;
        wait_in_sync(&client, &config).await
    });
    let (ok, state) = match outcome {
        Ok(state) => (true, state),
        Err(e) => (false, format!("{e:#}")),
    };
    history.push(&Event::Settled {
        t: history.now(),
        ok,
        state: state.clone(),
    });
    if !ok {
        eprintln!("soak: the cluster did not settle: {state}");
    }
    ok
}

async fn wait_in_sync(client: &Client, config: &LoadConfig) -> anyhow::Result<String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let state = describe(client, config).await;
        if let Ok((true, state)) = &state {
            return Ok(state.clone());
        }
        if Instant::now() > deadline {
            let state = state.map_or_else(|e| format!("{e:#}"), |(_, s)| s);
            bail!("not every partition led with a full ISR after {SETTLE_TIMEOUT:?}: {state}");
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
}

async fn in_sync(client: &Client, config: &LoadConfig) -> anyhow::Result<bool> {
    Ok(describe(client, config).await?.0)
}

/// Whether every partition has a leader and a full ISR, and each one's state.
async fn describe(client: &Client, config: &LoadConfig) -> anyhow::Result<(bool, String)> {
    let metadata = client.metadata(std::slice::from_ref(&config.topic)).await?;
    let topic = metadata
        .topics
        .into_iter()
        .find(|t| t.name == config.topic)
        .context("no soak topic in the metadata")?;
    let mut ok = topic.partitions.len() == config.partitions as usize;
    let mut parts = Vec::new();
    for p in &topic.partitions {
        ok &= p.leader.is_some() && p.isr.len() == p.replicas.len();
        parts.push(format!(
            "p{} leader {:?} epoch {} isr {:?}/{:?}",
            p.partition, p.leader, p.leader_epoch, p.isr, p.replicas
        ));
    }
    Ok((ok, parts.join("; ")))
}

/// Reads every partition from its log start to its high watermark into the history.
fn final_read(config: &LoadConfig, history: &History) -> anyhow::Result<()> {
    let config = config.clone();
    let history = history.clone();
    crate::workload::net_common::on_executor(move || async move {
        let client = Client::connect(&config.brokers, load::client_config()).await?;
        for partition in 0..config.partitions {
            let (log_start, hw, error) =
                read_partition(&client, &config, partition, &history).await;
            history.push(&Event::FinalEnd {
                t: history.now(),
                partition,
                log_start,
                hw,
                error,
            });
        }
        Ok(())
    })
}

/// (log start, hw, error) of a partition's final read.
async fn read_partition(
    client: &Client,
    config: &LoadConfig,
    partition: u32,
    history: &History,
) -> (u64, u64, Option<String>) {
    let deadline = Instant::now() + FINAL_READ_TIMEOUT;
    let options = FetchOptions {
        max_bytes: 1 << 20,
        ..FetchOptions::default()
    };
    let (mut log_start, mut hw, mut offset) = (0, 0, None::<u64>);
    loop {
        let failed = match offset {
            None => match client
                .list_offset(&config.topic, partition, OffsetSpec::Earliest)
                .await
            {
                Ok(start) => {
                    log_start = start.unwrap_or(0);
                    offset = Some(log_start);
                    continue;
                }
                Err(e) => e,
            },
            Some(at) => match client.fetch(&config.topic, partition, at, options).await {
                Ok(fetched) => {
                    hw = fetched.high_watermark;
                    if fetched.log_start > at {
                        // Retention went past where the read was.
                        log_start = fetched.log_start;
                        offset = Some(log_start);
                        continue;
                    }
                    let records = load::records_of(&fetched, partition, history, "final read");
                    history.push(&Event::Final {
                        t: history.now(),
                        partition,
                        records,
                    });
                    let next = fetched.next_offset.max(at);
                    offset = Some(next);
                    if next >= hw {
                        return (log_start, hw, None);
                    }
                    continue;
                }
                Err(e) => e,
            },
        };
        if Instant::now() > deadline {
            return (log_start, hw, Some(failed.to_string()));
        }
        tracing::debug!(partition, error = %failed, "final read: retrying");
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
}

fn join(handle: std::thread::JoinHandle<anyhow::Result<()>>, what: &str) -> anyhow::Result<()> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("a {what} thread panicked"))?
        .with_context(|| format!("a {what}"))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
