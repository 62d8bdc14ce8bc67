//! `shardlog consume --topic T --group G`: prints records as a member of a consumer group
//! (`shardlog_net::client::GroupMember`), so several processes share the topic's
//! partitions.
//!
//! Each generation: join the group and get this member's partitions; start each at the
//! group's committed offset (moved into `[log_start, high_watermark]` with a note when
//! retention passed it), or at `--from` where the group committed none; long-poll them
//! all as `consume --follow` does and print records as they arrive. Every
//! `--commit-interval-ms` the position past the last record printed (and flushed) in
//! each partition is committed. When the group rebalances (a member joins, leaves or
//! dies), the member stops reading, commits, and joins again; a commit the group refuses
//! because the generation ended is not retried: the partition's next owner starts at the
//! last commit that succeeded, and re-prints what this member printed after it (at least
//! once, never lost). At the end (`--count` reached, SIGINT/SIGTERM, stdout closed) it
//! commits and leaves the group, so its partitions move at once and a restarted member
//! resumes right after the last record it printed.
//!
//! Brokers that do not answer are waited out as `consume --follow` waits them out
//! (`broker_outage.rs`); a coordinator that moves is followed by the client.

use std::collections::BTreeMap;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{Either, LocalBoxFuture, select};
use futures::stream::FuturesUnordered;
use shardlog_net::ErrorCode;
use shardlog_net::client::{
    Client, ClientConfig, ClientError, FetchOptions, Fetched, GroupConfig, GroupMember, Joined,
};

use super::consume::{Cursor, FOLLOW_MAX_WAIT, Flow, Printer, Range, connect_retried, retried};
use crate::Outcome;
use crate::args::{ConsumeArgs, ConsumeFrom};
use crate::broker_outage::{BrokerOutage, no_broker_answers};
use crate::error::ToolError;
use crate::online;

/// Heartbeats per session timeout: a member learns of a rebalance within a tenth of it.
const HEARTBEATS_PER_SESSION: u32 = 10;

/// Runs `consume --group`.
pub(super) async fn consume(args: ConsumeArgs, group: String) -> Result<Outcome, ToolError> {
    if !shardlog_net::api::valid_group_id(&group) {
        return Err(ToolError::Usage(format!(
            "invalid group id {group:?}: use 1 to {} bytes",
            shardlog_net::api::GROUP_ID_MAX
        )));
    }
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
    let session = Duration::from_millis(u64::from(args.session_timeout_ms.get()));
    let config = GroupConfig {
        session_timeout: session,
        heartbeat_interval: session / HEARTBEATS_PER_SESSION,
        ..GroupConfig::default()
    };
    let member = GroupMember::new(client.clone(), &group, vec![args.topic.clone()], config);
    let mut run = Membership {
        client,
        member,
        args: &args,
        group: &group,
        committed: BTreeMap::new(),
        positions: BTreeMap::new(),
    };
    let ended = run.generations(&mut printer, &mut outage).await;
    printer.flush()?;
    let left = run.finish().await;
    ended?;
    left?;
    Ok(printer.outcome)
}

/// How a generation ended.
enum End {
    /// `--count`, a stop signal, or a closed stdout.
    Stopped,
    /// The group rebalances: join again.
    Rejoin,
}

/// One consumer's life in the group.
struct Membership<'a> {
    client: Client,
    member: GroupMember,
    args: &'a ConsumeArgs,
    group: &'a str,
    /// Partition -> the offset last committed (by this member, or found at the start).
    committed: BTreeMap<u32, u64>,
    /// Partition -> the next offset to print, for this generation's partitions: past the
    /// last record printed and flushed.
    positions: BTreeMap<u32, u64>,
}

impl Membership<'_> {
    /// Generation after generation until the command is told to stop.
    async fn generations(
        &mut self,
        printer: &mut Printer,
        outage: &mut BrokerOutage,
    ) -> Result<(), ToolError> {
        loop {
            let Some(joined) = self.join(outage).await? else {
                return Ok(());
            };
            let partitions: Vec<u32> = joined
                .assignment
                .iter()
                .filter(|(topic, _)| *topic == self.args.topic)
                .map(|(_, partition)| partition)
                .collect();
            tracing::debug!(generation = joined.generation, ?partitions, "joined");
            let Some(cursors) = self.start(&partitions, outage).await? else {
                return Ok(());
            };
            let end = self.read(cursors, printer, outage).await?;
            // Commit what this generation printed before anyone else reads its partitions;
            // the last commit must not fail silently.
            self.commit(matches!(end, End::Stopped)).await?;
            match end {
                End::Stopped => return Ok(()),
                End::Rejoin => self.positions.clear(),
            }
        }
    }

    /// Joins the group, riding out brokers that do not answer; `None` if told to stop.
    async fn join(&mut self, outage: &mut BrokerOutage) -> Result<Option<Joined>, ToolError> {
        let what = format!("group {}: join", self.group);
        loop {
            let joined = {
                let join = pin!(self.member.join());
                match select(join, pin!(online::until_stopped())).await {
                    Either::Left((joined, _)) => joined,
                    Either::Right(((), _)) => return Ok(None),
                }
            };
            let e = match joined {
                Ok(joined) => {
                    outage.answered();
                    return Ok(Some(joined));
                }
                Err(e) if e.code().is_some_and(ErrorCode::is_retriable) => {
                    // No coordinator yet (an election, the offsets topic being made).
                    ToolError::Request {
                        what: what.clone(),
                        source: ClientError::NoBroker(e.to_string()),
                    }
                }
                Err(e) => ToolError::request(what.clone())(e),
            };
            if !no_broker_answers(&e) {
                return Err(e);
            }
            let pause = outage.failed(&what, &e);
            let sleep = pin!(glommio::timer::sleep(pause));
            if let Either::Right(_) = select(sleep, pin!(online::until_stopped())).await {
                return Ok(None);
            }
        }
    }

    /// Where each of `partitions` starts: the group's committed offset, or `--from`.
    async fn start(
        &mut self,
        partitions: &[u32],
        outage: &mut BrokerOutage,
    ) -> Result<Option<Vec<Cursor>>, ToolError> {
        let (member, args) = (&self.member, self.args);
        let what = format!("group {}: committed offsets", self.group);
        let committed = retried(outage, &what, || async {
            member
                .committed(&args.topic, partitions)
                .await
                .map_err(ToolError::request(what.clone()))
        })
        .await?;
        let Some(committed) = committed else {
            return Ok(None);
        };
        let mut cursors = Vec::with_capacity(partitions.len());
        for (partition, offset) in committed {
            let range = Range::of(&self.client, &args.topic, partition).await?;
            let next = match (offset, args.from) {
                (Some(offset), _) | (None, ConsumeFrom::Offset(offset)) => {
                    range.clamp(&args.topic, partition, offset)
                }
                (None, ConsumeFrom::Beginning) => range.log_start,
                (None, ConsumeFrom::End) => range.high_watermark,
            };
            if let Some(offset) = offset {
                self.committed.insert(partition, offset);
            }
            self.positions.insert(partition, next);
            cursors.push(Cursor {
                partition,
                next,
                end: None,
            });
        }
        Ok(Some(cursors))
    }

    /// Long-polls this generation's partitions and prints what arrives, committing every
    /// `--commit-interval-ms`, until the group rebalances or the command is told to stop.
    async fn read(
        &mut self,
        cursors: Vec<Cursor>,
        printer: &mut Printer,
        outage: &mut BrokerOutage,
    ) -> Result<End, ToolError> {
        let client = self.client.clone();
        let topic = self.args.topic.clone();
        let fetch = |cursor: Cursor, pause: Duration| -> LocalBoxFuture<'static, _> {
            let (client, topic) = (client.clone(), topic.clone());
            Box::pin(async move {
                if !pause.is_zero() {
                    glommio::timer::sleep(pause).await;
                }
                let fetched = follow_fetch(&client, &topic, cursor).await;
                (cursor, fetched)
            })
        };
        let mut pending: FuturesUnordered<_> = cursors
            .into_iter()
            .map(|cursor| fetch(cursor, Duration::ZERO))
            .collect();
        let every = Duration::from_millis(u64::from(self.args.commit_interval_ms.get()));
        let mut commit_at = Instant::now() + every;
        loop {
            let wait = commit_at.saturating_duration_since(Instant::now());
            let event = next_event(&mut pending, &self.member, wait).await;
            let (mut cursor, fetched) = match event {
                Event::Fetched(cursor, fetched) => (cursor, fetched),
                Event::Rejoin => return Ok(End::Rejoin),
                Event::Stop => return Ok(End::Stopped),
                Event::CommitDue => {
                    self.commit(false).await?;
                    commit_at = Instant::now() + every;
                    continue;
                }
            };
            let pause = match fetched {
                Ok(Some(fetched)) => {
                    outage.answered();
                    let flow = printer.print(&fetched, &mut cursor)?;
                    if !printer.closed() {
                        self.positions.insert(cursor.partition, cursor.next);
                    }
                    if flow == Flow::Stop {
                        return Ok(End::Stopped);
                    }
                    Duration::ZERO
                }
                Ok(None) => {
                    outage.answered();
                    match Range::of(&self.client, &self.args.topic, cursor.partition).await {
                        Ok(range) => {
                            let (topic, partition) = (&self.args.topic, cursor.partition);
                            cursor.next = range.clamp(topic, partition, cursor.next);
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

    /// Commits every position that moved since its last commit. A commit refused because
    /// the generation ended raises the member's rejoin flag and is dropped (the next owner
    /// starts at the last commit); brokers that do not answer are reported and tried at
    /// the next commit, unless this is the `last` one, which must not be lost silently.
    async fn commit(&mut self, last: bool) -> Result<(), ToolError> {
        let moved: Vec<(String, u32, u64)> = self
            .positions
            .iter()
            .filter(|(partition, next)| self.committed.get(partition) != Some(next))
            .map(|(partition, next)| (self.args.topic.clone(), *partition, *next))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        match self.member.commit(&moved).await {
            Ok(()) => {
                for (_, partition, next) in moved {
                    self.committed.insert(partition, next);
                }
                Ok(())
            }
            Err(e) if self.member.rejoin_needed() => {
                eprintln!(
                    "shardlog: group {}: the group rebalanced before this member committed \
                     ({e}); the partitions' next owners re-read from the last commit",
                    self.group
                );
                Ok(())
            }
            Err(e) => {
                let e = ToolError::request(format!("group {}: commit", self.group))(e);
                let retriable = no_broker_answers(&e)
                    || matches!(&e, ToolError::Request { source, .. }
                        if source.code().is_some_and(ErrorCode::is_retriable));
                if last || !retriable {
                    return Err(e);
                }
                eprintln!("shardlog: {e}; trying again at the next commit");
                Ok(())
            }
        }
    }

    /// Leaves the group (what was printed is committed already).
    async fn finish(self) -> Result<(), ToolError> {
        let what = format!("group {}: leave", self.group);
        self.member.leave().await.map_err(ToolError::request(what))
    }
}

/// What woke the read loop.
enum Event {
    Fetched(Cursor, Result<Option<Fetched>, ToolError>),
    Rejoin,
    Stop,
    CommitDue,
}

/// The next of: a fetch's answer, the group asking for a rejoin, a stop, the commit
/// timer (after `wait`).
async fn next_event<S>(pending: &mut S, member: &GroupMember, wait: Duration) -> Event
where
    S: futures::Stream<Item = (Cursor, Result<Option<Fetched>, ToolError>)> + Unpin,
{
    let fetched = async {
        match pending.next().await {
            Some((cursor, fetched)) => Event::Fetched(cursor, fetched),
            // No partitions in this generation: only the other events can end the wait.
            None => std::future::pending().await,
        }
    };
    let rejoin = async {
        member.rejoin_requested().await;
        Event::Rejoin
    };
    let stop = async {
        online::until_stopped().await;
        Event::Stop
    };
    let due = async {
        glommio::timer::sleep(wait).await;
        Event::CommitDue
    };
    let (rejoin, stop, due, fetched) = (pin!(rejoin), pin!(stop), pin!(due), pin!(fetched));
    // Rejoin and stop first: once either is due, no more records are printed.
    let others = pin!(select(rejoin, select(stop, due)));
    match select(others, fetched).await {
        Either::Left((Either::Left((event, _)), _)) => event,
        Either::Left((
            Either::Right((Either::Left((event, _)) | Either::Right((event, _)), _)),
            _,
        )) => event,
        Either::Right((event, _)) => event,
    }
}

/// A fetch at a partition's tail: `None` when the position is out of range.
async fn follow_fetch(
    client: &Client,
    topic: &str,
    cursor: Cursor,
) -> Result<Option<Fetched>, ToolError> {
    let options = FetchOptions {
        max_wait: FOLLOW_MAX_WAIT,
        min_bytes: 1,
        ..FetchOptions::default()
    };
    match client
        .fetch(topic, cursor.partition, cursor.next, options)
        .await
    {
        Ok(fetched) => Ok(Some(fetched)),
        Err(e) if e.code() == Some(ErrorCode::OffsetOutOfRange) => Ok(None),
        Err(e) => Err(ToolError::request(format!(
            "topic {topic} partition {} offset {}",
            cursor.partition, cursor.next
        ))(e)),
    }
}
