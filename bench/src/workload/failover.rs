//! `shardlog-bench failover`: how long a partition is unavailable when its leader dies.
//!
//! Each round waits until partition 0 of the topic has a leader and a full ISR, produces
//! until acknowledgements flow, runs `--kill-cmd` for the leader (the clock starts when it
//! returns), then produces one record at a time (`acks=all`, retrying every 10 ms,
//! idempotently unless `--idempotence false`) until one is acknowledged: that gap is the
//! round's failover time. Metadata must then name another
//! leader (else the round is an error: the "failover" was the old leader coming back).
//! Finally `--restart-cmd` brings the node back and the round waits until it is in sync.
//! Commands are shell templates where `{node}` is the leader's node id.

use std::process::Command as Process;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use shardlog_engine::record::BatchBuilder;
use shardlog_net::api::{Acks, PartitionMetadata};
use shardlog_net::client::{Client, ClientConfig};

use crate::args::FailoverArgs;
use crate::workload::net_common::{build_batch, on_executor, value_bytes};
use crate::workload::produce::ensure_topic;

/// How long a round waits for the partition to be led and in sync.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Records produced before the kill, to be sure acknowledgements flow.
const WARM_RECORDS: usize = 20;

/// One round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// The leader killed.
    pub killed: u32,
    /// The leader after.
    pub new_leader: u32,
    /// From the kill to the first acknowledged produce, ms.
    pub failover_ms: f64,
}

/// The rounds and their summary.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// Every round, in order.
    pub rounds: Vec<Round>,
    /// Median failover time, ms.
    pub p50_ms: f64,
    /// Longest failover time, ms.
    pub max_ms: f64,
    /// Whether the producer was idempotent (`--idempotence`).
    pub idempotence: bool,
}

impl FailoverReport {
    /// Writes the rounds and the summary to `out` (stdout).
    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "round\tkilled\tnew_leader\tfailover_ms")?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                out,
                "{}\t{}\t{}\t{:.1}",
                i + 1,
                r.killed,
                r.new_leader,
                r.failover_ms
            )?;
        }
        writeln!(
            out,
            "failover over {} kills (idempotence={}): p50 {:.1} ms, max {:.1} ms",
            self.rounds.len(),
            self.idempotence,
            self.p50_ms,
            self.max_ms
        )?;
        Ok(())
    }
}

/// Runs `--kills` rounds.
pub fn run(args: FailoverArgs) -> anyhow::Result<FailoverReport> {
    if args.kills == 0 {
        bail!("--kills must be at least 1");
    }
    on_executor(move || async move {
        ensure_topic(&args.brokers, ClientConfig::default(), &args.topic, 1).await?;
        // Retries every 10 ms (a failed attempt is resent at once after a metadata
        // refresh), by the client: an idempotent batch keeps its sequence across them.
        let config = ClientConfig {
            request_timeout: Duration::from_secs(5),
            retries: 1000,
            retry_backoff: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(10),
            idempotence: args.idempotence,
            ..crate::sasl::client_config()
        };
        let mut rounds = Vec::with_capacity(args.kills);
        for round in 1..=args.kills {
            let client = Client::connect(&args.brokers, config.clone()).await?;
            let killed = settled_leader(&client, &args.topic).await?;
            let mut builder = BatchBuilder::new();
            let value = value_bytes(args.record_size);
            for _ in 0..WARM_RECORDS {
                let batch = build_batch(&mut builder, 1, &value);
                produce_until_acked(&client, &args.topic, batch).await;
            }
            shell(&args.kill_cmd, killed).await?;
            let killed_at = Instant::now();
            let batch = build_batch(&mut builder, 1, &value);
            produce_until_acked(&client, &args.topic, batch).await;
            let failover = killed_at.elapsed();
            let new_leader = partition(&client, &args.topic)
                .await?
                .leader
                .context("no leader after an acknowledged produce")?;
            if new_leader == killed {
                bail!("round {round}: node {killed} still leads after its kill");
            }
            let failover_ms = failover.as_secs_f64() * 1000.0;
            eprintln!(
                "round {round}: killed {killed}, node {new_leader} acknowledged after {failover_ms:.1} ms"
            );
            rounds.push(Round {
                killed,
                new_leader,
                failover_ms,
            });
            shell(&args.restart_cmd, killed).await?;
        }
        let client = Client::connect(&args.brokers, config.clone()).await?;
        settled_leader(&client, &args.topic).await?;
        Ok(summary(rounds, args.idempotence))
    })
}

fn summary(rounds: Vec<Round>, idempotence: bool) -> FailoverReport {
    let mut times: Vec<f64> = rounds.iter().map(|r| r.failover_ms).collect();
    times.sort_by(f64::total_cmp);
    let p50_ms = times[(times.len() - 1) / 2];
    let max_ms = times.last().copied().unwrap_or_default();
    FailoverReport {
        rounds,
        p50_ms,
        max_ms,
        idempotence,
    }
}

/// Produces `batch` with `acks=all` until it is acknowledged: the client retries every
/// 10 ms (see `run`); a failure after all that is tried again here.
async fn produce_until_acked(client: &Client, topic: &str, batch: bytes::Bytes) {
    loop {
        match client.produce(topic, 0, Acks::All, batch.clone()).await {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "produce failed; retrying");
                let _ = client.metadata(&[topic.to_owned()]).await;
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Waits until partition 0 has a leader and every replica in its ISR; the leader.
async fn settled_leader(client: &Client, topic: &str) -> anyhow::Result<u32> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Ok(p) = partition(client, topic).await
            && let Some(leader) = p.leader
            && p.isr.len() == p.replicas.len()
        {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            bail!(
                "partition 0 of {topic} did not settle (leader and full ISR) in {SETTLE_TIMEOUT:?}"
            );
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}

async fn partition(client: &Client, topic: &str) -> anyhow::Result<PartitionMetadata> {
    let metadata = client.metadata(&[topic.to_owned()]).await?;
    metadata
        .topics
        .into_iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.partitions.into_iter().find(|p| p.partition == 0))
        .with_context(|| format!("no partition 0 of {topic} in metadata"))
}

/// Runs a command template with `{node}` replaced, off the executor, and waits for it.
async fn shell(template: &str, node: u32) -> anyhow::Result<()> {
    let command = template.replace("{node}", &node.to_string());
    let shown = command.clone();
    let status = glommio::executor()
        .spawn_blocking(move || Process::new("sh").arg("-c").arg(&command).status())
        .await
        .with_context(|| format!("running {shown:?}"))?;
    let command = shown;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
