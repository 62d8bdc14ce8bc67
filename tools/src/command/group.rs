//! `shardlog group list|describe|reset-offsets --brokers B ...`: consumer groups.
//!
//! `list` asks every live broker for the groups it coordinates and prints
//! `group<TAB>state<TAB>protocol_type` per group, sorted. `describe G` prints a title line
//! (`group G: state S, protocol P, M members`), then a tab-separated table
//! with a header row: topic, partition, committed (the group's committed offset, `-` for
//! none), high_watermark, lag (high watermark minus committed, `-` without a commit),
//! member, client_id and client_host (`-` for a partition no member reads). Its rows are
//! every partition a member is assigned (read from the members' consumer-protocol
//! assignments) and every partition the group committed an offset for, sorted; a member
//! with no partition gets a row of its own with `-` for the partition's fields. A group
//! its coordinator does not know exits 1.
//!
//! `reset-offsets G --topic T --to earliest|latest|OFFSET` commits the new offset of
//! every partition of T for G and prints the title line and one `topic<TAB>partition<TAB>
//! offset` row per partition; an OFFSET outside a partition's `[log_start,
//! high_watermark]` is moved to the nearest end, with a note. As in Kafka, it is refused
//! (exit 1) while the group has members: their commits would overwrite it, and the
//! coordinator refuses a commit from outside a group with members anyway. `--dry-run`
//! prints the offsets without committing them.

use std::collections::BTreeMap;

use shardlog_net::api::{GroupDescription, MemberDescription, OffsetSpec, OffsetToCommit};
use shardlog_net::client::consumer_protocol::{Assignment, PROTOCOL_TYPE};
use shardlog_net::client::{Client, ClientError};

use super::topic::print_lines;
use crate::Outcome;
use crate::args::{GroupArgs, GroupCommand, GroupNameArgs, GroupResetArgs, ResetTo};
use crate::error::ToolError;
use crate::online;

/// The state of a group its coordinator does not know.
const DEAD: &str = "Dead";

/// Runs `group`.
pub fn run(args: GroupArgs) -> Result<Outcome, ToolError> {
    match args.command {
        GroupCommand::List(brokers) => online::run(&brokers, |client| async move {
            let groups = client
                .list_groups()
                .await
                .map_err(ToolError::request("list groups"))?;
            print_lines(
                groups
                    .into_iter()
                    .map(|g| format!("{}\t{}\t{}", g.group, g.state, g.protocol_type)),
            )?;
            Ok(Outcome::Clean)
        }),
        GroupCommand::Describe(args) => describe(args),
        GroupCommand::ResetOffsets(args) => reset_offsets(args),
    }
}

/// One row of `describe`'s table.
#[derive(Debug, Default)]
struct Row {
    committed: Option<u64>,
    member: Option<MemberIdentity>,
}

#[derive(Debug, Clone)]
struct MemberIdentity {
    member_id: String,
    client_id: String,
    client_host: String,
}

impl From<&MemberDescription> for MemberIdentity {
    fn from(member: &MemberDescription) -> MemberIdentity {
        MemberIdentity {
            member_id: member.member_id.clone(),
            client_id: member.client_id.clone(),
            client_host: member.client_host.clone(),
        }
    }
}

fn describe(args: GroupNameArgs) -> Result<Outcome, ToolError> {
    online::run(&args.brokers, move |client| async move {
        let group = args.group.as_str();
        let what = || format!("group {group}");
        let description = client
            .describe_group(group)
            .await
            .map_err(ToolError::request(what()))?;
        let committed = client
            .committed_offsets(group, None)
            .await
            .map_err(ToolError::request(format!(
                "group {group}: committed offsets"
            )))?;
        if description.state == DEAD && committed.is_empty() {
            eprintln!("shardlog: group {group} does not exist");
            return Ok(Outcome::ProblemsFound);
        }
        let mut rows: BTreeMap<(String, u32), Row> = BTreeMap::new();
        for offset in committed {
            let row = rows.entry((offset.topic, offset.partition)).or_default();
            row.committed = offset.offset;
        }
        let idle = assigned_rows(&description, &mut rows);
        let mut outcome = Outcome::Clean;
        let mut lines = vec![title(&description), HEADER.to_owned()];
        for ((topic, partition), row) in &rows {
            let end = client
                .list_offset(topic, *partition, OffsetSpec::Latest)
                .await;
            let high_watermark = match end {
                Ok(offset) => offset.unwrap_or(0),
                Err(e) => {
                    eprintln!("shardlog: {topic} partition {partition}: list offsets: {e}");
                    outcome = Outcome::ProblemsFound;
                    lines.push(table_row(topic, *partition, row, None));
                    continue;
                }
            };
            lines.push(table_row(topic, *partition, row, Some(high_watermark)));
        }
        for member in idle {
            lines.push(format!(
                "-\t-\t-\t-\t-\t{}\t{}\t{}",
                member.member_id, member.client_id, member.client_host
            ));
        }
        print_lines(lines)?;
        Ok(outcome)
    })
}

/// The table's header row.
const HEADER: &str =
    "topic\tpartition\tcommitted\thigh_watermark\tlag\tmember\tclient_id\tclient_host";

/// Adds each member's assigned partitions to `rows`; returns the members with none.
fn assigned_rows(
    description: &GroupDescription,
    rows: &mut BTreeMap<(String, u32), Row>,
) -> Vec<MemberIdentity> {
    let mut idle = Vec::new();
    for member in &description.members {
        let assignment = if description.protocol_type == PROTOCOL_TYPE {
            Assignment::decode(&member.assignment).unwrap_or_else(|e| {
                eprintln!("shardlog: member {}: {e}", member.member_id);
                Assignment::default()
            })
        } else {
            Assignment::default()
        };
        let mut any = false;
        for (topic, partition) in assignment.iter() {
            any = true;
            let row = rows.entry((topic.to_owned(), partition)).or_default();
            row.member = Some(MemberIdentity::from(member));
        }
        if !any {
            idle.push(MemberIdentity::from(member));
        }
    }
    idle
}

fn title(description: &GroupDescription) -> String {
    let members = description.members.len();
    let protocol = if description.protocol.is_empty() {
        "-"
    } else {
        description.protocol.as_str()
    };
    format!(
        "group {}: state {}, protocol {protocol}, {members} member{}",
        description.group,
        description.state,
        if members == 1 { "" } else { "s" }
    )
}

fn table_row(topic: &str, partition: u32, row: &Row, high_watermark: Option<u64>) -> String {
    let committed = row
        .committed
        .map_or_else(|| "-".to_owned(), |c| c.to_string());
    let (end, lag) = match (high_watermark, row.committed) {
        (Some(end), Some(committed)) => {
            (end.to_string(), end.saturating_sub(committed).to_string())
        }
        (Some(end), None) => (end.to_string(), "-".to_owned()),
        (None, _) => ("?".to_owned(), "?".to_owned()),
    };
    let (member, client_id, host) = row.member.as_ref().map_or(("-", "-", "-"), |m| {
        (
            m.member_id.as_str(),
            m.client_id.as_str(),
            m.client_host.as_str(),
        )
    });
    format!("{topic}\t{partition}\t{committed}\t{end}\t{lag}\t{member}\t{client_id}\t{host}")
}

fn reset_offsets(args: GroupResetArgs) -> Result<Outcome, ToolError> {
    online::run(&args.brokers.clone(), move |client| async move {
        let group = args.group.as_str();
        let description = client
            .describe_group(group)
            .await
            .map_err(ToolError::request(format!("group {group}")))?;
        if !description.members.is_empty() {
            return Err(ToolError::Refused(format!(
                "group {group} has {} member(s) (state {}): stop its consumers first; offsets \
                 are reset only while a group has no members",
                description.members.len(),
                description.state
            )));
        }
        let offsets = new_offsets(&client, &args).await?;
        if !args.dry_run {
            let commits = offsets
                .iter()
                .map(|(partition, offset)| OffsetToCommit {
                    topic: args.topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect();
            client
                .commit_offsets(group, -1, "", commits)
                .await
                .map_err(ToolError::request(format!("group {group}: commit")))?;
        }
        let verb = if args.dry_run {
            "would reset (dry run, nothing committed)"
        } else {
            "reset"
        };
        let mut lines = vec![
            format!(
                "group {group}: {verb} topic {} to {}",
                args.topic,
                shown(args.to)
            ),
            "topic\tpartition\toffset".to_owned(),
        ];
        lines.extend(
            offsets
                .iter()
                .map(|(partition, offset)| format!("{}\t{partition}\t{offset}", args.topic)),
        );
        print_lines(lines)?;
        Ok(Outcome::Clean)
    })
}

fn shown(to: ResetTo) -> String {
    match to {
        ResetTo::Earliest => "earliest".to_owned(),
        ResetTo::Latest => "latest".to_owned(),
        ResetTo::Offset(offset) => offset.to_string(),
    }
}

/// Each partition of the topic and its new offset.
async fn new_offsets(
    client: &Client,
    args: &GroupResetArgs,
) -> Result<BTreeMap<u32, u64>, ToolError> {
    let topic = args.topic.as_str();
    let partitions = client
        .partition_count(topic)
        .await
        .map_err(ToolError::request(format!("topic {topic}")))?;
    let mut out = BTreeMap::new();
    for partition in 0..partitions {
        let list = |spec| async move {
            client
                .list_offset(topic, partition, spec)
                .await
                .map(|o| o.unwrap_or(0))
                .map_err(|e: ClientError| {
                    ToolError::request(format!("topic {topic} partition {partition}"))(e)
                })
        };
        let offset = match args.to {
            ResetTo::Earliest => list(OffsetSpec::Earliest).await?,
            ResetTo::Latest => list(OffsetSpec::Latest).await?,
            ResetTo::Offset(offset) => {
                let (start, end) = (
                    list(OffsetSpec::Earliest).await?,
                    list(OffsetSpec::Latest).await?,
                );
                let clamped = offset.clamp(start, end);
                if clamped != offset {
                    eprintln!(
                        "shardlog: topic {topic} partition {partition}: offset {offset} is \
                         outside [{start}, {end}]; using {clamped}"
                    );
                }
                clamped
            }
        };
        out.insert(partition, offset);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_dashes_for_what_is_missing() {
        let member = MemberIdentity {
            member_id: "m-1".into(),
            client_id: "shardlog".into(),
            client_host: "/127.0.0.1".into(),
        };
        let row = Row {
            committed: Some(7),
            member: Some(member),
        };
        assert_eq!(
            table_row("t", 2, &row, Some(10)),
            "t\t2\t7\t10\t3\tm-1\tshardlog\t/127.0.0.1"
        );
        let row = Row::default();
        assert_eq!(table_row("t", 0, &row, Some(4)), "t\t0\t-\t4\t-\t-\t-\t-");
        assert_eq!(table_row("t", 0, &row, None), "t\t0\t-\t?\t?\t-\t-\t-");
    }
}
