//! Fetch (v4 to v12: topics by name, no fetch sessions). Each partition is read through
//! `ops::reads::fetch`, in request order, each up to its `partition_max_bytes` and the
//! whole response up to `max_bytes`, except that the first batch found is returned even
//! when larger (so a consumer always makes progress). A partition past the response limit
//! gets no records (its high watermark still). Only committed records are ever visible
//! (reads stop at the high watermark), whatever the isolation level.
//!
//! Long poll: when fewer than `min_bytes` came back, the fetch waits (up to `max_wait_ms`,
//! capped by `FETCH_WAIT_MAX`) for any partition to get a batch past what was read, then
//! reads again, until `min_bytes` are there or the wait is over.
//!
//! KIP-320: a partition whose `current_leader_epoch` is older than the leader's gets
//! FENCED_LEADER_EPOCH, newer gets UNKNOWN_LEADER_EPOCH, from this shard's view. A moved
//! leader is NOT_LEADER_OR_FOLLOWER with `current_leader` (v12).
//!
//! The response is encoded field by field around the records, which go out as the stored
//! batches (`Fetched::chunks`), never copied (`request::ReplyWriter::chunks`).
//!
//! With authorization on, each topic needs read: a topic the connection may not read is
//! answered TOPIC_AUTHORIZATION_FAILED on each of its partitions (checked once, here).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use futures::FutureExt;
use futures::future::{Either, LocalBoxFuture, select, select_all};
use kafka_protocol::messages::fetch_response::{LeaderIdAndEpoch, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use kafka_protocol::protocol::{Encodable, StrBytes};

use shardlog_replicator::controller::acls::{Operation, Resource};

use super::errors;
use super::metadata::{current_leader, epoch_check};
use super::request::{self, Answer, Begun, Head, ReplyWriter, Request, done};
use crate::server::metrics::{self, Protocol};
use crate::server::ops::OpError;
use crate::server::ops::reads::{self, FETCH_BYTES_MAX, FETCH_WAIT_MAX, FetchOp, Fetched};
use crate::server::protocol::moving::Owners;
use crate::server::protocol::shardlog::handlers::FETCH_RESERVE_MIN;
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;

/// The first flexible version (compact encodings, tagged fields).
const FLEXIBLE_VERSION: i16 = 12;
/// Kafka's FETCH_SESSION_ID_NOT_FOUND: incremental fetch sessions are not kept.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
/// Partitions one fetch may name.
const PARTITIONS_MAX: usize = 10_000;

/// One partition asked for.
struct Wanted {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    /// Why the connection may not read it (authorization), if it may not.
    refused: Option<OpError>,
}

/// What one partition answers.
struct Read {
    error: Option<OpError>,
    /// KIP-320 refusal code, if any.
    epoch_error: Option<i16>,
    fetched: Fetched,
}

/// The whole fetch.
struct Plan {
    head: Head,
    topics: Vec<(StrBytes, Vec<Wanted>)>,
    max_bytes: usize,
    min_bytes: usize,
    deadline: Instant,
}

/// First phase: the fetch's reply bytes are counted; the reads are its completion.
pub(crate) async fn begin(shard: &Rc<Shard>, request: Request, session: &Session) -> Begun {
    let body: FetchRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return Begun::small(done(answer)),
    };
    let head = request.head;
    if head.version >= 7 && body.session_id != 0 {
        return Begun::small(done(session_refused(head)));
    }
    let max_bytes = usize::try_from(body.max_bytes)
        .unwrap_or(0)
        .clamp(1, FETCH_BYTES_MAX);
    let wait = Duration::from_millis(u64::try_from(body.max_wait_ms).unwrap_or(0));
    let mut topics = Vec::with_capacity(body.topics.len());
    let mut count = 0;
    let access = Access::new(shard, session);
    for topic in body.topics {
        let name = topic.topic.0;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let refused = access
            .check(Operation::Read, Resource::Topic(name.as_str()))
            .err();
        for p in topic.partitions {
            count += 1;
            partitions.push(Wanted {
                topic: name.as_str().to_owned(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                current_leader_epoch: p.current_leader_epoch,
                refused: refused.clone(),
            });
        }
        topics.push((name, partitions));
    }
    if count > PARTITIONS_MAX {
        let why = format!("a fetch of {count} partitions (at most {PARTITIONS_MAX})");
        return Begun::small(done(Answer::Close(why)));
    }
    let plan = Plan {
        head,
        topics,
        max_bytes,
        min_bytes: usize::try_from(body.min_bytes).unwrap_or(0).min(max_bytes),
        deadline: Instant::now() + wait.min(FETCH_WAIT_MAX),
    };
    let wanted = plan.topics.iter().flat_map(|(_, partitions)| partitions);
    let owners = Owners::of(
        wanted.filter_map(|w| Some((w.topic.as_str(), u32::try_from(w.partition).ok()?))),
        shard.node.shards,
    );
    let shard = shard.clone();
    Begun {
        completion: async move { serve(&shard, &plan).await }.boxed_local(),
        reply_bytes: max_bytes.max(FETCH_RESERVE_MIN) + request::REPLY_BYTES_SMALL,
        owners,
    }
}

/// Reads every partition, long-polling while fewer than `min_bytes` came back.
async fn serve(shard: &Rc<Shard>, plan: &Plan) -> Answer {
    loop {
        let reads = read_all(shard, plan).await;
        let bytes: usize = reads
            .iter()
            .flatten()
            .map(|r| r.fetched.chunks.iter().map(Bytes::len).sum::<usize>())
            .sum();
        let failed = reads
            .iter()
            .flatten()
            .any(|r| r.error.is_some() || r.epoch_error.is_some());
        let now = Instant::now();
        if bytes >= plan.min_bytes.max(1) || failed || now >= plan.deadline || shard.is_stopping() {
            count_fetched(plan, &reads, bytes);
            return encode(shard, plan, reads);
        }
        wait_for_more(shard, plan, &reads, plan.deadline - now).await;
    }
}

/// Counts the records (offsets advanced) and bytes a fetch returns.
fn count_fetched(plan: &Plan, reads: &[Vec<Read>], bytes: usize) {
    let records: u64 = plan
        .topics
        .iter()
        .zip(reads)
        .flat_map(|((_, wanted), reads)| wanted.iter().zip(reads))
        .filter(|(_, read)| !read.fetched.chunks.is_empty())
        .map(|(wanted, read)| {
            let from = u64::try_from(wanted.offset).unwrap_or(0);
            read.fetched.next_offset.saturating_sub(from)
        })
        .sum();
    metrics::records(Protocol::Kafka, metrics::Api::Fetch, records, bytes as u64);
}

/// Reads each partition in order, within the response's byte limit.
async fn read_all(shard: &Rc<Shard>, plan: &Plan) -> Vec<Vec<Read>> {
    let mut left = plan.max_bytes;
    let mut out = Vec::with_capacity(plan.topics.len());
    for (_, partitions) in &plan.topics {
        let mut reads = Vec::with_capacity(partitions.len());
        for wanted in partitions {
            let mut read = read_one(shard, wanted, wanted.max_bytes.min(left).max(1)).await;
            let size: usize = read.fetched.chunks.iter().map(Bytes::len).sum();
            if left == 0 {
                // Past the response's limit: the high watermark, no records.
                read.fetched.chunks.clear();
            } else {
                left = left.saturating_sub(size);
            }
            reads.push(read);
        }
        out.push(reads);
    }
    out
}

async fn read_one(shard: &Rc<Shard>, wanted: &Wanted, max_bytes: usize) -> Read {
    let failed = |error: OpError| Read {
        error: Some(error),
        epoch_error: None,
        fetched: Fetched::default(),
    };
    if let Some(refused) = &wanted.refused {
        return failed(refused.clone());
    }
    let (Ok(partition), Ok(offset)) = (
        u32::try_from(wanted.partition),
        u64::try_from(wanted.offset),
    ) else {
        return match u32::try_from(wanted.partition) {
            Err(_) => failed(OpError::UnknownPartition),
            Ok(_) => failed(OpError::OffsetOutOfRange(format!(
                "offset {}",
                wanted.offset
            ))),
        };
    };
    if let Some(code) = epoch_check(shard, &wanted.topic, partition, wanted.current_leader_epoch) {
        return Read {
            error: None,
            epoch_error: Some(code),
            fetched: Fetched::default(),
        };
    }
    let op = FetchOp {
        topic: wanted.topic.clone(),
        partition,
        offset,
        max_bytes,
        max_wait: Duration::ZERO,
        min_bytes: 0,
    };
    match reads::fetch(shard, op).await.await {
        Ok(fetched) => Read {
            error: None,
            epoch_error: None,
            fetched,
        },
        Err(e) => failed(e),
    }
}

/// Waits until some partition has a batch past what `reads` returned, or `wait` passes.
async fn wait_for_more(shard: &Rc<Shard>, plan: &Plan, reads: &[Vec<Read>], wait: Duration) {
    let mut polls: Vec<LocalBoxFuture<'static, ()>> = Vec::new();
    for ((_, partitions), reads) in plan.topics.iter().zip(reads) {
        for (wanted, read) in partitions.iter().zip(reads) {
            let Ok(partition) = u32::try_from(wanted.partition) else {
                continue;
            };
            let op = FetchOp {
                topic: wanted.topic.clone(),
                partition,
                offset: read
                    .fetched
                    .next_offset
                    .max(u64::try_from(wanted.offset).unwrap_or(0)),
                max_bytes: 1,
                max_wait: wait,
                min_bytes: 1,
            };
            let pending = reads::fetch(shard, op).await;
            polls.push(pending.map(|_| ()).boxed_local());
        }
    }
    if polls.is_empty() {
        glommio::timer::sleep(wait).await;
        return;
    }
    let timer = std::pin::pin!(glommio::timer::sleep(wait));
    match select(select_all(polls), timer).await {
        Either::Left(_) | Either::Right(_) => {}
    }
}

fn session_refused(head: Head) -> Answer {
    let write = |writer: &mut ReplyWriter| -> anyhow::Result<()> {
        let buf = writer.buffer();
        buf.put_i32(0);
        buf.put_i16(FETCH_SESSION_ID_NOT_FOUND);
        buf.put_i32(0);
        array_len(buf, head.version, 0)?;
        tagged_none(buf, head.version);
        Ok(())
    };
    finish(head, write)
}

fn finish(head: Head, write: impl FnOnce(&mut ReplyWriter) -> anyhow::Result<()>) -> Answer {
    let encoded = ReplyWriter::new(head).and_then(|mut writer| {
        write(&mut writer).map_err(|e| format!("encoding a fetch response: {e}"))?;
        writer.finish()
    });
    match encoded {
        Ok(reply) => Answer::Reply(reply),
        Err(e) => {
            tracing::error!(error = %e, "kafka fetch reply does not encode");
            Answer::Close(e)
        }
    }
}

/// The response: header fields, then per topic and partition the fields the codec
/// encodes, with each partition's records spliced in as its stored chunks.
fn encode(shard: &Shard, plan: &Plan, reads: Vec<Vec<Read>>) -> Answer {
    let head = plan.head;
    finish(head, |writer| {
        let buf = writer.buffer();
        buf.put_i32(0); // throttle_time_ms
        if head.version >= 7 {
            buf.put_i16(errors::NONE);
            buf.put_i32(0); // session_id: no session is kept
        }
        array_len(buf, head.version, plan.topics.len())?;
        for ((name, partitions), reads) in plan.topics.iter().zip(reads) {
            let buf = writer.buffer();
            string(buf, head.version, name.as_str())?;
            array_len(buf, head.version, partitions.len())?;
            for (wanted, read) in partitions.iter().zip(reads) {
                partition(shard, writer, head.version, wanted, read)?;
            }
            tagged_none(writer.buffer(), head.version);
        }
        tagged_none(writer.buffer(), head.version);
        Ok(())
    })
}

/// One partition: the codec encodes it with empty records, whose length (the last
/// field before the tagged fields) is then replaced by the chunks' and the chunks follow.
fn partition(
    shard: &Shard,
    writer: &mut ReplyWriter,
    version: i16,
    wanted: &Wanted,
    read: Read,
) -> anyhow::Result<()> {
    let mut data = PartitionData::default()
        .with_partition_index(wanted.partition)
        .with_aborted_transactions(None)
        .with_preferred_read_replica(BrokerId(-1));
    if let Some(code) = read.epoch_error {
        data = data
            .with_error_code(code)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1);
        data.encode(writer.buffer(), version)?;
        return Ok(());
    }
    if let Some(error) = read.error {
        data = data
            .with_error_code(errors::code(&error))
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1);
        if version >= FLEXIBLE_VERSION
            && matches!(error, OpError::NotLeader { .. })
            && let Some(leader) = u32::try_from(wanted.partition)
                .ok()
                .and_then(|p| current_leader(shard, &wanted.topic, p))
        {
            data.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(leader.id))
                .with_leader_epoch(leader.epoch);
        }
        data.encode(writer.buffer(), version)?;
        return Ok(());
    }
    let fetched = read.fetched;
    let high_watermark = i64::try_from(fetched.high_watermark).unwrap_or(i64::MAX);
    data = data
        .with_error_code(errors::NONE)
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(high_watermark)
        .with_log_start_offset(i64::try_from(fetched.log_start).unwrap_or(i64::MAX))
        .with_records(Some(Bytes::new()));
    let records_len: usize = fetched.chunks.iter().map(Bytes::len).sum();
    let buf = writer.buffer();
    data.encode(buf, version)?;
    // Empty records end the encoding as: v4-11, i32 0; v12, varint 1 (length + 1) and
    // varint 0 (no tagged fields, none being set). Cut them and write the real length.
    let tail: &[u8] = if version >= FLEXIBLE_VERSION {
        &[1, 0]
    } else {
        &[0, 0, 0, 0]
    };
    anyhow::ensure!(buf.ends_with(tail), "unexpected partition encoding");
    buf.truncate(buf.len() - tail.len());
    let len = i32::try_from(records_len)?;
    if version >= FLEXIBLE_VERSION {
        unsigned_varint(buf, u32::try_from(len)? + 1);
    } else {
        buf.put_i32(len);
    }
    writer.chunks(fetched.chunks);
    if version >= FLEXIBLE_VERSION {
        writer.buffer().put_u8(0);
    }
    Ok(())
}

fn array_len(buf: &mut bytes::BytesMut, version: i16, len: usize) -> anyhow::Result<()> {
    if version >= FLEXIBLE_VERSION {
        unsigned_varint(buf, u32::try_from(len)? + 1);
    } else {
        buf.put_i32(i32::try_from(len)?);
    }
    Ok(())
}

/// An empty tagged-fields section, in flexible versions.
fn tagged_none(buf: &mut bytes::BytesMut, version: i16) {
    if version >= FLEXIBLE_VERSION {
        buf.put_u8(0);
    }
}

/// A string: `i16` length then bytes; compact in flexible versions (varint length + 1).
fn string(buf: &mut bytes::BytesMut, version: i16, text: &str) -> anyhow::Result<()> {
    if version >= FLEXIBLE_VERSION {
        unsigned_varint(buf, u32::try_from(text.len())? + 1);
    } else {
        buf.put_i16(i16::try_from(text.len())?);
    }
    buf.put_slice(text.as_bytes());
    Ok(())
}

/// Kafka's unsigned varint: 7 bits a byte, low bits first, high bit set on all but the
/// last.
fn unsigned_varint(buf: &mut bytes::BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8(low_bits(value) | 0x80);
        value >>= 7;
    }
    buf.put_u8(low_bits(value));
}

/// The low 7 bits of `value`.
fn low_bits(value: u32) -> u8 {
    u8::try_from(value & 0x7f).unwrap_or_default()
}
