//! Fetch and ListOffsets. Consumers only ever see offsets below the partition's visible
//! end (the high watermark). A fetch at the tail with `max_wait_ms` waits (long poll) for
//! `min_bytes` (at least one batch) to become visible, for the wait to pass, or for the
//! shard to stop, whichever comes first.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{Either, select};
use shardlog_engine::batch::BatchHeader;
use shardlog_engine::{Offset, ReadBatches, TimestampMs};

use crate::api::{
    ArchivedFetchRequest, ArchivedListOffsetsRequest, ArchivedOffsetSpec, FetchResponse,
    ListOffsetsResponse,
};
use crate::error_code::ErrorCode;
use crate::frame::FrameHeader;
use crate::server::cluster::Replica;
use crate::server::dispatch::{self, Completion, done, forward};
use crate::server::reply::{Reply, reply};
use crate::server::shard::{Log, Route, Shard};
use crate::wire::Frame;

/// The most bytes one fetch reply carries (plus at most one batch beyond).
const FETCH_BYTES_MAX: u32 = 16 << 20;
/// The longest long poll.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// The log a read is served from and, in cluster mode, its leading replica; or the route
/// when this shard does not serve it (another shard, a replica that does not lead, no
/// such partition). A replica that does not lead answers as `Elsewhere` with the leader.
fn readable(shard: &Shard, route: Route) -> Result<(Rc<Log>, Option<Rc<Replica>>), Route> {
    match route {
        Route::Local(log) => Ok((log, None)),
        Route::Replica(replica) if replica.driver.leading().is_some() => {
            Ok((replica.log().clone(), Some(replica)))
        }
        Route::Replica(replica) => {
            Err(Route::Elsewhere(shard.cluster.as_ref().and_then(|c| {
                c.leader_of(&replica.topic, replica.partition)
            })))
        }
        other => Err(other),
    }
}

/// Offsets below it are readable: the high watermark.
fn visible_end(log: &Log, replica: Option<&Replica>) -> Offset {
    replica.map_or_else(|| Shard::visible_end(log), Replica::visible_end)
}

#[derive(Clone, Copy)]
struct FetchArgs {
    offset: Offset,
    max_bytes: usize,
    max_wait: Duration,
    min_bytes: usize,
}

/// First phase of a fetch: route it; the read and any wait are the completion.
pub(crate) async fn fetch(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    let (route, args) = match frame.access::<ArchivedFetchRequest>() {
        Ok(r) => {
            let max_wait = Duration::from_millis(u64::from(r.max_wait_ms.to_native()));
            let args = FetchArgs {
                offset: Offset(r.offset.to_native()),
                max_bytes: r.max_bytes.to_native().clamp(1, FETCH_BYTES_MAX) as usize,
                max_wait: max_wait.min(FETCH_WAIT_MAX),
                // A long poll waits for at least one batch.
                min_bytes: (r.min_bytes.to_native() as usize).max(usize::from(!max_wait.is_zero())),
            };
            (shard.route(r.topic.as_str(), r.partition.to_native()), args)
        }
        Err(e) => return dispatch::invalid(&header, &e),
    };
    let (log, replica) = match readable(shard, route) {
        Ok(served) => served,
        Err(Route::Elsewhere(hint)) => return done(fetch_not_here(&header, hint)),
        Err(Route::Local(_) | Route::Replica(_)) => unreachable!("readable serves these"),
        Err(Route::Shard(owner)) => return forward(shard, owner, frame).await,
        Err(Route::UnknownTopic) => {
            return done(fetch_failed(
                &header,
                ErrorCode::UnknownTopic,
                "unknown topic",
            ));
        }
        Err(Route::UnknownPartition) => {
            return done(fetch_failed(
                &header,
                ErrorCode::UnknownPartition,
                "unknown partition",
            ));
        }
    };
    let stopping = shard.stopping();
    async move {
        let visible = || visible_end(&log, replica.as_deref());
        Some(serve_fetch(&log, visible, &header, args, stopping).await)
    }
    .boxed_local()
}

fn fetch_not_here(header: &FrameHeader, leader: Option<u32>) -> Reply {
    match leader {
        Some(leader) => {
            let meta = FetchResponse {
                error: ErrorCode::NotLeader.as_u16(),
                high_watermark: 0,
                log_start: 0,
                next_offset: 0,
                leader_hint: Some(leader),
                message: format!("node {leader} leads this partition"),
            };
            reply(header, &meta, Vec::new())
        }
        None => fetch_failed(
            header,
            ErrorCode::LeaderNotAvailable,
            "the partition has no leader",
        ),
    }
}

async fn serve_fetch(
    log: &Log,
    visible_end: impl Fn() -> Offset,
    header: &FrameHeader,
    args: FetchArgs,
    mut stopping: futures::future::LocalBoxFuture<'static, ()>,
) -> Reply {
    let deadline = Instant::now() + args.max_wait;
    loop {
        let (log_start, log_end) = (log.log_start(), log.log_end());
        let visible = visible_end();
        if args.offset < log_start || args.offset > log_end {
            let message = format!("offset {} outside [{log_start}, {log_end}]", args.offset);
            return fetch_failed(header, ErrorCode::OffsetOutOfRange, &message);
        }
        let mut read = ReadBatches {
            chunks: Vec::new(),
            next_offset: args.offset,
        };
        if args.offset < visible {
            match log.read(args.offset, args.max_bytes).await {
                Ok(r) => read = below(r, visible),
                Err(e) => return fetch_failed(header, ErrorCode::from(&e), &e.to_string()),
            }
        }
        let now = Instant::now();
        if read.bytes() >= args.min_bytes || now >= deadline {
            let meta = FetchResponse {
                error: ErrorCode::None.as_u16(),
                high_watermark: visible.0,
                log_start: log_start.0,
                next_offset: read.next_offset.0,
                leader_hint: None,
                message: String::new(),
            };
            return reply(header, &meta, read.chunks);
        }
        let changed = std::pin::pin!(log.changed());
        let timer = std::pin::pin!(glommio::timer::sleep(deadline - now));
        if let Either::Right(_) = select(select(changed, timer), &mut stopping).await {
            return fetch_failed(header, ErrorCode::ShuttingDown, "the server is stopping");
        }
    }
}

/// Cuts `read` before the first batch at or past `visible`: consumers never see a batch
/// the flush policy (later: the in-sync replicas) has not acknowledged.
fn below(read: ReadBatches, visible: Offset) -> ReadBatches {
    let mut out = ReadBatches {
        chunks: Vec::with_capacity(read.chunks.len()),
        next_offset: read.next_offset.min(visible),
    };
    for chunk in read.chunks {
        let mut position = 0;
        let mut cut = None;
        while let Some(rest) = chunk.get(position..)
            && let Ok(h) = BatchHeader::parse(rest)
        {
            if h.next_offset() > visible {
                cut = Some((position, h.base_offset));
                break;
            }
            position += h.size as usize;
        }
        match cut {
            None => out.chunks.push(chunk),
            Some((position, base)) => {
                if position > 0 {
                    out.chunks.push(Bytes::slice(&chunk, ..position));
                }
                out.next_offset = base;
                return out;
            }
        }
    }
    out
}

fn fetch_failed(header: &FrameHeader, code: ErrorCode, message: &str) -> Reply {
    let meta = FetchResponse {
        error: code.as_u16(),
        high_watermark: 0,
        log_start: 0,
        next_offset: 0,
        leader_hint: None,
        message: message.to_owned(),
    };
    reply(header, &meta, Vec::new())
}

/// ListOffsets: earliest, latest (the visible end), or the first offset at or after a
/// timestamp among the visible ones.
pub(crate) async fn list_offsets(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    let (route, spec) = match frame.access::<ArchivedListOffsetsRequest>() {
        Ok(r) => {
            let spec = match r.spec {
                ArchivedOffsetSpec::Earliest => None,
                ArchivedOffsetSpec::Latest => Some(None),
                ArchivedOffsetSpec::Timestamp(t) => Some(Some(TimestampMs(t.to_native()))),
            };
            (shard.route(r.topic.as_str(), r.partition.to_native()), spec)
        }
        Err(e) => return dispatch::invalid(&header, &e),
    };
    let (log, replica) = match readable(shard, route) {
        Ok(served) => served,
        Err(Route::Elsewhere(hint)) => return done(offsets_not_here(&header, hint)),
        Err(Route::Local(_) | Route::Replica(_)) => unreachable!("readable serves these"),
        Err(Route::Shard(owner)) => return forward(shard, owner, frame).await,
        Err(Route::UnknownTopic) => {
            return done(offsets(
                &header,
                Err((ErrorCode::UnknownTopic, "unknown topic".into())),
            ));
        }
        Err(Route::UnknownPartition) => {
            return done(offsets(
                &header,
                Err((ErrorCode::UnknownPartition, "unknown partition".into())),
            ));
        }
    };
    async move {
        let visible = visible_end(&log, replica.as_deref());
        let result = match spec {
            None => Ok(Some(log.log_start())),
            Some(None) => Ok(Some(visible)),
            Some(Some(t)) => log
                .offset_for_timestamp(t)
                .await
                .map(|o| o.filter(|o| *o < visible))
                .map_err(|e| (ErrorCode::from(&e), e.to_string())),
        };
        Some(offsets(&header, result))
    }
    .boxed_local()
}

fn offsets_not_here(header: &FrameHeader, leader: Option<u32>) -> Reply {
    let meta = ListOffsetsResponse {
        error: match leader {
            Some(_) => ErrorCode::NotLeader,
            None => ErrorCode::LeaderNotAvailable,
        }
        .as_u16(),
        offset: None,
        leader_hint: leader,
        message: String::new(),
    };
    reply(header, &meta, Vec::new())
}

fn offsets(header: &FrameHeader, result: Result<Option<Offset>, (ErrorCode, String)>) -> Reply {
    let meta = match result {
        Ok(offset) => ListOffsetsResponse {
            error: ErrorCode::None.as_u16(),
            offset: offset.map(|o| o.0),
            leader_hint: None,
            message: String::new(),
        },
        Err((code, message)) => ListOffsetsResponse {
            error: code.as_u16(),
            offset: None,
            leader_hint: None,
            message,
        },
    };
    reply(header, &meta, Vec::new())
}
