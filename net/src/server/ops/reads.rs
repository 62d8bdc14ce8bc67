//! Fetch and ListOffsets, served by a partition's leading replica. Consumers only ever
//! see offsets below the high watermark. A fetch at the tail with a `max_wait` waits
//! (long poll) until `min_bytes` (at least one batch) are visible, the wait has passed,
//! or the shard stops, whichever comes first. A fetch's sizes and wait are capped and
//! made consistent first (`FetchOp::capped`): `max_bytes` at most `FETCH_BYTES_MAX`,
//! `min_bytes` at most `max_bytes`, the wait at most `FETCH_WAIT_MAX`; and a read cut
//! short by `max_bytes` while more is visible is answered at once, since waiting could
//! not make it bigger. Batches go out as stored (from the tail
//! cache or the disk): whole, never re-encoded.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{Either, LocalBoxFuture, select};
use shardlog_engine::batch::BatchHeader;
use shardlog_engine::{Offset, ReadBatches, TimestampMs};

use crate::server::cluster::Replica;
use crate::server::ops::{
    OpError, OpReply, PartitionOp, Pending, Place, answered, forward, locate_settled,
};
use crate::server::shard::{Log, Shard};

/// The most bytes one fetch returns (plus at most one batch beyond).
pub(crate) const FETCH_BYTES_MAX: usize = 16 << 20;
/// The longest long poll.
pub(crate) const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// A fetch of one partition.
pub(crate) struct FetchOp {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    /// The first offset wanted.
    pub(crate) offset: u64,
    /// At most this many bytes (at least one batch is returned), capped at
    /// `FETCH_BYTES_MAX`.
    pub(crate) max_bytes: usize,
    /// The longest wait for `min_bytes`; capped at `FETCH_WAIT_MAX`.
    pub(crate) max_wait: Duration,
    /// Bytes worth waiting for; a long poll waits for at least one batch.
    pub(crate) min_bytes: usize,
}

/// What a fetch returns.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// Offsets below it are committed.
    pub(crate) high_watermark: u64,
    /// The first offset held.
    pub(crate) log_start: u64,
    /// Where the next fetch continues.
    pub(crate) next_offset: u64,
    /// Whole batches as stored, back to back.
    pub(crate) chunks: Vec<Bytes>,
}

/// Which offset ListOffsets looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OffsetSpec {
    /// The first offset held.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first committed offset whose timestamp is at or after this.
    Timestamp(i64),
}

/// A ListOffsets of one partition.
pub(crate) struct ListOffsetsOp {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) spec: OffsetSpec,
}

/// OffsetForLeaderEpoch of one partition (KIP-101, KIP-320): where `epoch` ended in the
/// leader's log.
pub(crate) struct EpochEndOp {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) epoch: i32,
}

/// The largest epoch at or below the one asked for and the offset where it ended (the
/// next epoch's start, or the log end for the newest); `None` when the log holds no epoch
/// that old.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EpochEnd {
    pub(crate) epoch: i32,
    pub(crate) end_offset: u64,
}

/// The partition's leading replica on this shard, or where the request goes instead.
enum Served {
    Here(Rc<Replica>),
    Shard(usize),
}

async fn serving(shard: &Shard, topic: &str, partition: u32) -> Result<Served, OpError> {
    match locate_settled(shard, topic, partition).await? {
        Place::Here(replica) if replica.driver.leading().is_some() => Ok(Served::Here(replica)),
        Place::Here(replica) => Err(OpError::NotLeader {
            leader: shard.cluster.leader_of(&replica.topic, replica.partition),
        }),
        Place::Shard(owner) => Ok(Served::Shard(owner)),
        Place::Elsewhere { leader } => Err(OpError::NotLeader { leader }),
    }
}

impl FetchOp {
    /// The request within the server's limits and consistent: `max_bytes` in
    /// `1..=FETCH_BYTES_MAX`; the wait at most `FETCH_WAIT_MAX`; `min_bytes` at most
    /// `max_bytes` (a fetch never waits for more than it may return), and at least 1
    /// with a wait (a long poll waits for a batch).
    pub(crate) fn capped(mut self) -> FetchOp {
        self.max_bytes = self.max_bytes.clamp(1, FETCH_BYTES_MAX);
        self.max_wait = self.max_wait.min(FETCH_WAIT_MAX);
        self.min_bytes = self.min_bytes.min(self.max_bytes);
        if !self.max_wait.is_zero() {
            self.min_bytes = self.min_bytes.max(1);
        }
        self
    }
}

/// First phase of a fetch: route it; the read and any wait are the pending answer.
pub(crate) async fn fetch(shard: &Rc<Shard>, op: FetchOp) -> Pending<Fetched> {
    let replica = match serving(shard, &op.topic, op.partition).await {
        Ok(Served::Here(replica)) => replica,
        Ok(Served::Shard(owner)) => {
            let unwrap = |reply| match reply {
                OpReply::Fetched(result) => Some(result),
                _ => None,
            };
            return forward(shard, owner, PartitionOp::Fetch(op), unwrap).await;
        }
        Err(e) => return answered(Err(e)),
    };
    let op = op.capped();
    let stopping = shard.stopping();
    async move { serve_fetch(&replica, &op, stopping).await }.boxed_local()
}

async fn serve_fetch(
    replica: &Replica,
    op: &FetchOp,
    mut stopping: LocalBoxFuture<'static, ()>,
) -> Result<Fetched, OpError> {
    let log = replica.log();
    let offset = Offset(op.offset);
    let deadline = Instant::now() + op.max_wait;
    loop {
        let (log_start, log_end) = (log.log_start(), log.log_end());
        let Some(visible) = replica.visible_end() else {
            // A new leader catching up to its epoch start: wait for it, within the wait.
            let now = Instant::now();
            if now >= deadline {
                return Err(not_settled());
            }
            wait_changed(log, deadline - now, &mut stopping).await?;
            continue;
        };
        if offset < log_start || offset > log_end {
            return Err(OpError::OffsetOutOfRange(format!(
                "offset {offset} outside [{log_start}, {log_end}]"
            )));
        }
        let mut read = ReadBatches {
            chunks: Vec::new(),
            next_offset: offset,
        };
        if offset < visible {
            read = below(
                log.read(offset, op.max_bytes)
                    .await
                    .map_err(|e| OpError::from(&e))?,
                visible,
            );
        }
        let now = Instant::now();
        // Cut short by `max_bytes` (or a segment's end) with more visible: waiting would
        // not make it bigger.
        let more_visible = !read.chunks.is_empty() && read.next_offset < visible;
        if read.bytes() >= op.min_bytes || more_visible || now >= deadline {
            return Ok(Fetched {
                high_watermark: visible.0,
                log_start: log_start.0,
                next_offset: read.next_offset.0,
                chunks: read.chunks,
            });
        }
        if replica.driver.leading().is_none() {
            return Err(OpError::NotLeader { leader: None });
        }
        wait_changed(log, deadline - now, &mut stopping).await?;
    }
}

/// Waits until the log changes (an append, a new high watermark), `wait` passes or the
/// shard stops.
async fn wait_changed(
    log: &Log,
    wait: Duration,
    stopping: &mut LocalBoxFuture<'static, ()>,
) -> Result<(), OpError> {
    let changed = std::pin::pin!(log.changed());
    let timer = std::pin::pin!(glommio::timer::sleep(wait));
    match select(select(changed, timer), stopping).await {
        Either::Left(_) => Ok(()),
        Either::Right(_) => Err(OpError::ShuttingDown),
    }
}

/// A new leader's high watermark has not reached its epoch start yet: retriable.
fn not_settled() -> OpError {
    OpError::NotAvailable(
        "the partition's new leader has not yet committed its epoch start; retry".to_owned(),
    )
}

/// Cuts `read` before the first batch at or past `visible`: consumers never see a batch
/// the in-sync replicas have not acknowledged.
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

/// ListOffsets: earliest, latest (the high watermark), or the first committed offset at
/// or after a timestamp (`None` if there is none).
pub(crate) async fn list_offsets(shard: &Rc<Shard>, op: ListOffsetsOp) -> Pending<Option<Offset>> {
    let replica = match serving(shard, &op.topic, op.partition).await {
        Ok(Served::Here(replica)) => replica,
        Ok(Served::Shard(owner)) => {
            let unwrap = |reply| match reply {
                OpReply::Offset(result) => Some(result),
                _ => None,
            };
            return forward(shard, owner, PartitionOp::ListOffsets(op), unwrap).await;
        }
        Err(e) => return answered(Err(e)),
    };
    async move {
        let log: &Log = replica.log();
        let Some(visible) = replica.visible_end() else {
            return Err(not_settled());
        };
        match op.spec {
            OffsetSpec::Earliest => Ok(Some(log.log_start())),
            OffsetSpec::Latest => Ok(Some(visible)),
            OffsetSpec::Timestamp(t) => log
                .offset_for_timestamp(TimestampMs(t))
                .await
                .map(|o| o.filter(|o| *o < visible))
                .map_err(|e| OpError::from(&e)),
        }
    }
    .boxed_local()
}

/// OffsetForLeaderEpoch, from the leading replica's leader-epoch history.
pub(crate) async fn end_offset_for_epoch(
    shard: &Rc<Shard>,
    op: EpochEndOp,
) -> Pending<Option<EpochEnd>> {
    let replica = match serving(shard, &op.topic, op.partition).await {
        Ok(Served::Here(replica)) => replica,
        Ok(Served::Shard(owner)) => {
            let unwrap = |reply| match reply {
                OpReply::EpochEnd(result) => Some(result),
                _ => None,
            };
            return forward(shard, owner, PartitionOp::EpochEnd(op), unwrap).await;
        }
        Err(e) => return answered(Err(e)),
    };
    let log: &Log = replica.log();
    let found = log
        .checkpoint()
        .end_offset_for_epoch(shardlog_engine::LeaderEpoch(op.epoch), log.log_end())
        .map(|entry| EpochEnd {
            epoch: entry.epoch.0,
            end_offset: entry.start_offset.0,
        });
    answered(Ok(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(max_bytes: usize, min_bytes: usize, max_wait_ms: u64) -> FetchOp {
        FetchOp {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_bytes,
            max_wait: Duration::from_millis(max_wait_ms),
            min_bytes,
        }
        .capped()
    }

    #[test]
    fn sizes_and_waits_are_capped_and_consistent() {
        let capped = op(1000, 1 << 20, 5000);
        assert_eq!((capped.max_bytes, capped.min_bytes), (1000, 1000));
        let capped = op(usize::MAX, usize::MAX, u64::MAX);
        assert_eq!(capped.max_bytes, FETCH_BYTES_MAX);
        assert_eq!(capped.min_bytes, FETCH_BYTES_MAX);
        assert_eq!(capped.max_wait, FETCH_WAIT_MAX);
        let capped = op(0, 0, 100);
        assert_eq!((capped.max_bytes, capped.min_bytes), (1, 1));
        let capped = op(0, 0, 0);
        assert_eq!((capped.max_bytes, capped.min_bytes), (1, 0));
    }
}
