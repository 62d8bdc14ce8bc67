//! `shardlog topic create|list|describe|delete --brokers B ...`: topic administration.
//!
//! `create` prints one line with the partitions and the replication factor the brokers'
//! metadata shows afterwards (the server picks it when `--replication-factor` is absent;
//! "server's default" if the metadata does not show the topic yet). `list` prints one
//! topic name per line, sorted. `describe` prints a title line, then a tab-separated table
//! with a header row: partition, leader (`-` while there is none), epoch, replicas, isr
//! (node ids, comma-separated), log_start and high_watermark (from ListOffsets; `?` where
//! the partition did not answer, which also makes the exit code 1). After the table, one
//! line per partition whose replicas are moving: `reassigning partition P: target
//! 4,2,3, adding 4, removing 1`.

use std::io::{self, Write};

use futures::future::join_all;
use shardlog_net::ErrorCode;
use shardlog_net::api::{OffsetSpec, PartitionMetadata, TopicConfig, TopicMetadata};
use shardlog_net::client::{Client, ClientError};

use crate::Outcome;
use crate::args::{TopicArgs, TopicCommand, TopicCreateArgs, TopicDeleteArgs, TopicNameArgs};
use crate::error::ToolError;
use crate::online;

/// Runs `topic`.
pub fn run(args: TopicArgs) -> Result<Outcome, ToolError> {
    match args.command {
        TopicCommand::Create(args) => create(args),
        TopicCommand::List(brokers) => {
            online::run(&brokers, |client| async move { list(&client).await })
        }
        TopicCommand::Describe(args) => describe(args),
        TopicCommand::Delete(args) => delete(args),
    }
}

fn create(args: TopicCreateArgs) -> Result<Outcome, ToolError> {
    if !shardlog_net::api::valid_topic_name(&args.name) {
        return Err(ToolError::Usage(format!(
            "invalid topic name {:?}: use 1 to 249 of [a-zA-Z0-9._-], not \".\" or \"..\"",
            args.name
        )));
    }
    if let (Some(min_insync), Some(factor)) = (args.min_insync, args.replication_factor)
        && min_insync > factor
    {
        return Err(ToolError::Usage(format!(
            "--min-insync {min_insync} is more than --replication-factor {factor}"
        )));
    }
    let brokers = args.brokers.clone();
    online::run(&brokers, move |client| async move {
        let config = TopicConfig {
            segment_bytes: args.segment_bytes,
            retention_bytes: args.retention_bytes,
            retention_ms: args.retention_ms,
            min_insync: args.min_insync,
        };
        let partitions = args.partitions.get();
        // 0 asks for the server's default.
        let requested = args.replication_factor.unwrap_or(0);
        let created = client
            .create_topic(&args.name, partitions, requested, config)
            .await;
        let line = match created {
            Ok(()) => {
                let replication = created_replication(&client, &args.name)
                    .await
                    .or(args.replication_factor);
                let replication = replication.map_or_else(
                    || "server's default replication factor".to_owned(),
                    |factor| format!("replication factor {factor}"),
                );
                let min_insync = args
                    .min_insync
                    .map_or_else(String::new, |n| format!(", min insync {n}"));
                format!(
                    "created topic {} ({}, {replication}{min_insync})",
                    args.name,
                    plural(partitions as usize, "partition")
                )
            }
            Err(ClientError::Server {
                code: ErrorCode::TopicExists,
                ..
            }) if args.if_not_exists => format!("topic {} exists", args.name),
            Err(e) => return Err(ToolError::request(format!("create topic {}", args.name))(e)),
        };
        print_lines([line])?;
        Ok(Outcome::Clean)
    })
}

/// The replication factor the metadata shows for a topic just created (the replicas of
/// its first partition); `None` if the metadata does not show the topic: creating it
/// succeeded, so that is no reason to fail.
async fn created_replication(client: &Client, name: &str) -> Option<u16> {
    let topic = client.topic(name).await.ok()?;
    let replicas = topic.partitions.first()?.replicas.len();
    u16::try_from(replicas).ok()
}

async fn list(client: &Client) -> Result<Outcome, ToolError> {
    let metadata = client
        .metadata(&[])
        .await
        .map_err(ToolError::request("list topics"))?;
    let mut names: Vec<String> = metadata.topics.into_iter().map(|t| t.name).collect();
    names.sort();
    print_lines(names)?;
    Ok(Outcome::Clean)
}

fn describe(args: TopicNameArgs) -> Result<Outcome, ToolError> {
    online::run(&args.brokers, move |client| async move {
        let topic = topic_metadata(&client, &args.name).await?;
        let offsets = join_all(topic.partitions.iter().map(|p| {
            let client = &client;
            let name = &args.name;
            async move {
                let start = client.list_offset(name, p.partition, OffsetSpec::Earliest);
                let end = client.list_offset(name, p.partition, OffsetSpec::Latest);
                futures::future::join(start, end).await
            }
        }))
        .await;
        let replication = topic.partitions.first().map_or(0, |p| p.replicas.len());
        let mut lines = vec![
            format!(
                "topic {}: {}, replication factor {replication}",
                topic.name,
                plural(topic.partitions.len(), "partition")
            ),
            "partition\tleader\tepoch\treplicas\tisr\tlog_start\thigh_watermark".to_owned(),
        ];
        let mut outcome = Outcome::Clean;
        for (partition, (start, end)) in topic.partitions.iter().zip(offsets) {
            let mut show = |offset: Result<Option<u64>, ClientError>| match offset {
                Ok(Some(offset)) => offset.to_string(),
                Ok(None) => "-".to_owned(),
                Err(e) => {
                    eprintln!(
                        "shardlog: {} partition {}: list offsets: {e}",
                        topic.name, partition.partition
                    );
                    outcome = Outcome::ProblemsFound;
                    "?".to_owned()
                }
            };
            let (start, end) = (show(start), show(end));
            lines.push(partition_row(partition, &start, &end));
        }
        // Moves in progress, after the table (its columns stay what scripts parse).
        match client.reassignments(std::slice::from_ref(&args.name)).await {
            Ok(moves) => lines.extend(moves.iter().map(|m| {
                format!(
                    "reassigning partition {}: target {}, adding {}, removing {}",
                    m.partition,
                    super::partition::ids(&m.target),
                    super::partition::ids(&m.adding),
                    super::partition::ids(&m.removing)
                )
            })),
            Err(e) => eprintln!("shardlog: {}: list reassignments: {e}", topic.name),
        }
        print_lines(lines)?;
        Ok(outcome)
    })
}

/// The metadata of one topic; an unknown topic is a server error (exit code 1).
async fn topic_metadata(client: &Client, name: &str) -> Result<TopicMetadata, ToolError> {
    let what = || format!("topic {name}");
    let metadata = client
        .metadata(&[name.to_owned()])
        .await
        .map_err(ToolError::request(what()))?;
    let topic = metadata.topics.into_iter().find(|t| t.name == name);
    match topic {
        Some(topic) if topic.error == ErrorCode::None.as_u16() => Ok(topic),
        Some(topic) => Err(ToolError::request(what())(ClientError::Server {
            code: ErrorCode::from(topic.error),
            message: format!("topic {name}"),
        })),
        None => Err(ToolError::request(what())(ClientError::Server {
            code: ErrorCode::UnknownTopic,
            message: format!("topic {name} is not in the brokers' metadata"),
        })),
    }
}

fn partition_row(partition: &PartitionMetadata, start: &str, end: &str) -> String {
    let ids = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    format!(
        "{}\t{}\t{}\t{}\t{}\t{start}\t{end}",
        partition.partition,
        partition
            .leader
            .map_or_else(|| "-".to_owned(), |l| l.to_string()),
        partition.leader_epoch,
        ids(&partition.replicas),
        ids(&partition.isr),
    )
}

fn delete(args: TopicDeleteArgs) -> Result<Outcome, ToolError> {
    online::run(&args.brokers, move |client| async move {
        let line = match client.delete_topic(&args.name).await {
            Ok(()) => format!("deleted topic {}", args.name),
            Err(ClientError::Server {
                code: ErrorCode::UnknownTopic,
                ..
            }) if args.if_exists => format!("topic {} does not exist", args.name),
            Err(e) => return Err(ToolError::request(format!("delete topic {}", args.name))(e)),
        };
        print_lines([line])?;
        Ok(Outcome::Clean)
    })
}

/// Writes lines to stdout; a closed stdout ends the command quietly, never a panic.
pub(crate) fn print_lines(lines: impl IntoIterator<Item = String>) -> Result<(), ToolError> {
    let mut out = io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}").map_err(ToolError::stdout)?;
    }
    out.flush().map_err(ToolError::stdout)
}

/// `1 partition`, `3 partitions`.
fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(leader: Option<u32>) -> PartitionMetadata {
        PartitionMetadata {
            partition: 4,
            leader,
            leader_epoch: 7,
            replicas: vec![2, 0, 1],
            isr: vec![2, 1],
        }
    }

    #[test]
    fn partition_row_shows_leader_or_dash() {
        assert_eq!(
            partition_row(&partition(Some(2)), "10", "25"),
            "4\t2\t7\t2,0,1\t2,1\t10\t25"
        );
        assert_eq!(
            partition_row(&partition(None), "?", "?"),
            "4\t-\t7\t2,0,1\t2,1\t?\t?"
        );
    }
}
