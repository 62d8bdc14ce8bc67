//! Observing the node: what every shard holds (its metrics registry, its replicas'
//! offsets, the committed offsets of the groups it coordinates), gathered by one shard
//! with a message to each shard's inbox and answered on that shard's thread. The admin
//! listener renders it (`/metrics`, readiness); other front ends may too.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{Either, join_all, select};

use crate::server::cluster::ClusterView;
use crate::server::metrics;
use crate::server::shard::{Shard, ShardMsg};

/// How long a gather waits for a shard's answer (a shard that does not answer is
/// reported missing, not waited for).
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// One replica on a shard, as a scrape sees it.
#[derive(Clone, Debug)]
pub(crate) struct PartitionReport {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    /// Whether this replica leads its partition now.
    pub(crate) leader: bool,
    pub(crate) log_start: u64,
    pub(crate) log_end: u64,
    pub(crate) high_watermark: u64,
    /// Bytes of record batches in its segments.
    pub(crate) bytes: u64,
    /// For a leader: each follower's acknowledged log end.
    pub(crate) follower_log_ends: Vec<(u32, u64)>,
}

/// A committed offset of a group a shard coordinates.
#[derive(Clone, Debug)]
pub(crate) struct GroupOffset {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) offset: i64,
}

/// A group a shard coordinates, for the console (`/v1/status`).
#[derive(Clone, Debug)]
pub(crate) struct GroupSummary {
    pub(crate) group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
    pub(crate) state: String,
    pub(crate) protocol_type: String,
    pub(crate) members: Vec<MemberSummary>,
}

/// A member of a group.
#[derive(Clone, Debug)]
pub(crate) struct MemberSummary {
    pub(crate) member_id: String,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
}

/// What one shard answers.
#[derive(Clone, Debug)]
pub(crate) struct ShardReport {
    pub(crate) shard: usize,
    /// The shard has the controller's view and is not stopping.
    pub(crate) serving: bool,
    pub(crate) metrics: metrics::Snapshot,
    pub(crate) partitions: Vec<PartitionReport>,
    pub(crate) group_offsets: Vec<GroupOffset>,
    /// The groups it coordinates, with their members.
    pub(crate) groups: Vec<GroupSummary>,
}

/// What a gather found.
#[derive(Debug)]
pub(crate) struct NodeReport {
    /// The shards that answered, by id.
    pub(crate) shards: Vec<ShardReport>,
    /// Shards that did not answer in time (or are gone).
    pub(crate) missing: Vec<usize>,
    /// The gathering shard's view of the controller's metadata, if it has one.
    pub(crate) view: Option<Arc<ClusterView>>,
}

/// Asks every shard (this one included, through its inbox like the others) for its
/// report and waits for the answers, at most `SHARD_ANSWER_TIMEOUT` each.
pub(crate) async fn gather(shard: &Rc<Shard>) -> NodeReport {
    let asks = shard
        .inboxes
        .iter()
        .enumerate()
        .map(|(id, inbox)| async move {
            let (reply, answer) = oneshot::channel();
            if inbox.send_async(ShardMsg::Report { reply }).await.is_err() {
                return Err(id);
            }
            let timeout = std::pin::pin!(glommio::timer::sleep(SHARD_ANSWER_TIMEOUT));
            match select(answer, timeout).await {
                Either::Left((Ok(report), _)) => Ok(report),
                _ => Err(id),
            }
        });
    let mut report = NodeReport {
        shards: Vec::new(),
        missing: Vec::new(),
        view: shard.cluster.view(),
    };
    for answer in join_all(asks).await {
        match answer {
            Ok(shard_report) => report.shards.push(shard_report),
            Err(id) => report.missing.push(id),
        }
    }
    report
}

/// This shard's report (run on its thread, from its inbox).
pub(crate) fn report_here(shard: &Shard) -> ShardReport {
    let partitions = shard
        .cluster
        .all_replicas()
        .iter()
        .map(|replica| {
            let log = replica.log();
            let driver = &replica.driver;
            PartitionReport {
                topic: replica.topic.to_string(),
                partition: replica.partition,
                leader: driver.leading().is_some(),
                log_start: log.log_start().0,
                log_end: driver.log_end().0,
                high_watermark: driver.high_watermark().0,
                bytes: log.segments().iter().map(|s| s.data_len).sum(),
                follower_log_ends: driver
                    .follower_log_ends()
                    .into_iter()
                    .map(|(node, end)| (node.0, end.0))
                    .collect(),
            }
        })
        .collect();
    ShardReport {
        shard: shard.id,
        serving: shard.cluster.view().is_some() && !shard.is_stopping(),
        metrics: metrics::Snapshot::take(),
        partitions,
        group_offsets: shard.groups.committed_offsets(),
        groups: shard.groups.summaries(),
    }
}
