//! `shardlog partition reassign --brokers B --topic T --partition P --replicas 2,3,4
//! [--throttle-bytes N] [--wait [--timeout S]]`: moves a partition's replicas.
//!
//! Output: `reassigning T/P to 2,3,4` once the controller has started the move (or
//! found the partition on those replicas already). With `--wait`, a progress line each second while
//! the move runs, tab-separated: `elapsed_s`, `leader`, `replicas`, `isr`, `adding`,
//! `removing` (node ids, comma-separated, `-` for none), then `reassigned T/P to 2,3,4
//! in S s` with the final leader. Exit code 1 if the server refuses the move (unknown
//! partition or node, too few replicas for the topic's `min_insync`) or, with `--wait`,
//! if it is not over within `--timeout` seconds.

use std::time::{Duration, Instant};

use shardlog_net::api::PartitionMove;
use shardlog_net::client::{Client, ClientError};

use crate::Outcome;
use crate::args::{PartitionArgs, PartitionCommand, PartitionReassignArgs};
use crate::command::topic::print_lines;
use crate::error::ToolError;
use crate::online;

/// How often `--wait` looks at the move.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Runs `partition`.
pub fn run(args: PartitionArgs) -> Result<Outcome, ToolError> {
    match args.command {
        PartitionCommand::Reassign(args) => reassign(args),
    }
}

fn reassign(args: PartitionReassignArgs) -> Result<Outcome, ToolError> {
    let mut seen = args.replicas.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != args.replicas.len() {
        return Err(ToolError::Usage(format!(
            "--replicas {}: a node may hold one replica",
            ids(&args.replicas)
        )));
    }
    let brokers = args.brokers.clone();
    online::run(&brokers, move |client| async move {
        let what = format!("reassign {}/{}", args.topic, args.partition);
        let started = Instant::now();
        client
            .reassign_partition(
                &args.topic,
                args.partition,
                &args.replicas,
                args.throttle_bytes,
            )
            .await
            .map_err(ToolError::request(what.clone()))?;
        // The controller leader applied it; other nodes learn of it a moment later, so
        // their metadata is not asked here.
        let target = ids(&args.replicas);
        print_lines([format!(
            "reassigning {}/{} to {target}",
            args.topic, args.partition
        )])?;
        if !args.wait {
            return Ok(Outcome::Clean);
        }
        wait(&client, &args, started).await
    })
}

/// Polls until the partition has no move in progress and its replicas are the target.
async fn wait(
    client: &Client,
    args: &PartitionReassignArgs,
    started: Instant,
) -> Result<Outcome, ToolError> {
    let what = || format!("reassign {}/{}", args.topic, args.partition);
    let deadline = started + Duration::from_secs(args.timeout);
    print_lines(["elapsed_s\tleader\treplicas\tisr\tadding\tremoving".to_owned()])?;
    loop {
        let moving = find_move(client, &args.topic, args.partition)
            .await
            .map_err(ToolError::request(what()))?;
        let metadata = client
            .metadata(std::slice::from_ref(&args.topic))
            .await
            .map_err(ToolError::request(what()))?;
        let partition = metadata
            .topics
            .iter()
            .filter(|t| t.name == args.topic)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition == args.partition);
        let elapsed = started.elapsed().as_secs_f64();
        let leader = partition
            .and_then(|p| p.leader)
            .map_or_else(|| "-".to_owned(), |l| l.to_string());
        let replicas = partition.map(|p| p.replicas.clone()).unwrap_or_default();
        let (adding, removing) = moving
            .as_ref()
            .map(|m| (m.adding.clone(), m.removing.clone()))
            .unwrap_or_default();
        print_lines([format!(
            "{elapsed:.1}\t{leader}\t{}\t{}\t{}\t{}",
            ids(&replicas),
            ids(&partition.map(|p| p.isr.clone()).unwrap_or_default()),
            ids(&adding),
            ids(&removing)
        )])?;
        if moving.is_none() && replicas == args.replicas {
            print_lines([format!(
                "reassigned {}/{} to {} in {elapsed:.1} s, leader {leader}",
                args.topic,
                args.partition,
                ids(&args.replicas)
            )])?;
            return Ok(Outcome::Clean);
        }
        if moving.is_none() {
            // Replaced by another reassignment, or the metadata answering is behind.
            tracing::debug!(
                ?replicas,
                "no move in progress, replicas not the target yet"
            );
        }
        if Instant::now() >= deadline {
            eprintln!("shardlog: {}: not over after {} s", what(), args.timeout);
            return Ok(Outcome::ProblemsFound);
        }
        glommio::timer::sleep(POLL_EVERY).await;
    }
}

async fn find_move(
    client: &Client,
    topic: &str,
    partition: u32,
) -> Result<Option<PartitionMove>, ClientError> {
    let moves = client.reassignments(&[topic.to_owned()]).await?;
    Ok(moves.into_iter().find(|m| m.partition == partition))
}

/// Node ids comma-separated, `-` for none.
pub(crate) fn ids(nodes: &[u32]) -> String {
    if nodes.is_empty() {
        return "-".to_owned();
    }
    nodes
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
