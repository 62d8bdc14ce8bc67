//! `/metrics`: every shard's registry summed, the node's replicas' offsets, the cluster
//! health counts from the controller's view, disk and connections, group lag. Each metric
//! is listed with its meaning in the README ("Admin port and metrics").

use std::collections::HashMap;

use shardlog_replicator::controller::Metadata;

use super::exposition::{Kind, Page};
use crate::server::metrics::{Api, Counter, Latency, Protocol, Snapshot};
use crate::server::ops::observe::{NodeReport, PartitionReport};

/// One of a replica's numbers.
type PartitionValue = fn(&PartitionReport) -> u64;

/// What the page shows besides the shards' reports.
pub(crate) struct NodeFacts {
    pub(crate) node_id: u32,
    /// Client connections open on the node (both protocols).
    pub(crate) connections: usize,
    /// Free bytes of the data directory's filesystem, as last measured.
    pub(crate) free_bytes: Option<u64>,
}

/// The whole page.
pub(crate) fn render(report: &NodeReport, facts: &NodeFacts) -> String {
    let mut page = Page::default();
    let mut sum = Snapshot::empty();
    for shard in &report.shards {
        sum.add(&shard.metrics);
    }
    api_counters(&mut page, &sum);
    for (latency, name, help) in Latency::ALL {
        page.family(name, Kind::Histogram, help);
        page.histogram(name, &[], sum.latency(latency));
    }
    for (counter, name, help) in Counter::ALL {
        page.single(name, Kind::Counter, help, sum.counter(counter) as f64);
    }
    partitions(&mut page, report);
    if let Some(view) = &report.view {
        cluster_counts(&mut page, &view.metadata);
    }
    node(&mut page, report, facts);
    group_lag(&mut page, report);
    page.finish()
}

fn api_counters(page: &mut Page, sum: &Snapshot) {
    let families = [
        (
            "shardlog_requests_total",
            "Client requests, by protocol and api.",
        ),
        (
            "shardlog_records_total",
            "Records produced (api produce) or returned (api fetch), by protocol.",
        ),
        (
            "shardlog_bytes_total",
            "Record batch bytes produced or returned, by protocol and api.",
        ),
    ];
    for (i, (name, help)) in families.into_iter().enumerate() {
        page.family(name, Kind::Counter, help);
        for protocol in Protocol::ALL {
            for api in Api::ALL {
                let counts = sum.api(protocol, api);
                let value = [counts.requests, counts.records, counts.bytes][i];
                let labels = [("protocol", protocol.label()), ("api", api.label())];
                page.sample(name, &labels, value as f64);
            }
        }
    }
}

fn partitions(page: &mut Page, report: &NodeReport) {
    let replicas = || report.shards.iter().flat_map(|s| s.partitions.iter());
    let gauges: [(&str, &str, PartitionValue); 4] = [
        (
            "shardlog_partition_log_start_offset",
            "First offset of each replica on this node.",
            |p| p.log_start,
        ),
        (
            "shardlog_partition_log_end_offset",
            "Offset after the last record of each replica on this node.",
            |p| p.log_end,
        ),
        (
            "shardlog_partition_high_watermark",
            "High watermark of each replica on this node (committed below it).",
            |p| p.high_watermark,
        ),
        (
            "shardlog_partition_size_bytes",
            "Bytes of record batches in each replica's segments on this node.",
            |p| p.bytes,
        ),
    ];
    for (name, help, value) in gauges {
        page.family(name, Kind::Gauge, help);
        for p in replicas() {
            let partition = p.partition.to_string();
            let labels = [("topic", p.topic.as_str()), ("partition", &partition)];
            page.sample(name, &labels, value(p) as f64);
        }
    }
    page.family(
        "shardlog_partition_leader",
        Kind::Gauge,
        "1 for each partition this node leads, 0 for those it follows.",
    );
    for p in replicas() {
        let partition = p.partition.to_string();
        let labels = [("topic", p.topic.as_str()), ("partition", &partition)];
        page.sample(
            "shardlog_partition_leader",
            &labels,
            f64::from(u8::from(p.leader)),
        );
    }
    let name = "shardlog_follower_lag_records";
    page.family(
        name,
        Kind::Gauge,
        "For partitions this node leads: the leader's log end minus each follower's \
         acknowledged log end.",
    );
    for p in replicas() {
        let partition = p.partition.to_string();
        for (follower, end) in &p.follower_log_ends {
            let follower = follower.to_string();
            let labels = [
                ("topic", p.topic.as_str()),
                ("partition", &partition),
                ("follower", &follower),
            ];
            page.sample(name, &labels, p.log_end.saturating_sub(*end) as f64);
        }
    }
}

/// Partitions whose live in-sync replicas are fewer than their replicas, fewer than
/// their topic's `min_insync`, or that have no live leader, as the controller's view
/// says. A fenced node (its session expired) counts as out of sync at once, before the
/// leader drops it from the ISR.
pub(crate) fn health_counts(metadata: &Metadata) -> (u64, u64, u64) {
    let (mut under_replicated, mut under_min_isr, mut leaderless) = (0, 0, 0);
    for topic in metadata.topics().values() {
        for p in &topic.partitions {
            let live_isr = p.isr.iter().filter(|n| metadata.is_live(**n)).count();
            under_replicated += u64::from(live_isr < p.replicas.len());
            under_min_isr += u64::from(live_isr < usize::from(topic.min_insync));
            leaderless += u64::from(!p.leader.is_some_and(|l| metadata.is_live(l)));
        }
    }
    (under_replicated, under_min_isr, leaderless)
}

fn cluster_counts(page: &mut Page, metadata: &Metadata) {
    let (under_replicated, under_min_isr, leaderless) = health_counts(metadata);
    page.single(
        "shardlog_under_replicated_partitions",
        Kind::Gauge,
        "Partitions of the cluster with fewer live in-sync replicas than replicas \
         (the controller's view).",
        under_replicated as f64,
    );
    page.single(
        "shardlog_under_min_isr_partitions",
        Kind::Gauge,
        "Partitions of the cluster with fewer live in-sync replicas than min_insync: \
         acks=all produce to them fails.",
        under_min_isr as f64,
    );
    page.single(
        "shardlog_leaderless_partitions",
        Kind::Gauge,
        "Partitions of the cluster without a live leader.",
        leaderless as f64,
    );
    let live = metadata.live_nodes().len();
    page.single(
        "shardlog_nodes",
        Kind::Gauge,
        "Nodes registered with the controller.",
        metadata.nodes().len() as f64,
    );
    page.single(
        "shardlog_nodes_live",
        Kind::Gauge,
        "Registered nodes that are not fenced.",
        live as f64,
    );
}

fn node(page: &mut Page, report: &NodeReport, facts: &NodeFacts) {
    let on_disk: u64 = report
        .shards
        .iter()
        .flat_map(|s| s.partitions.iter())
        .map(|p| p.bytes)
        .sum();
    page.single(
        "shardlog_disk_used_bytes",
        Kind::Gauge,
        "Bytes of record batches in every replica's segments on this node.",
        on_disk as f64,
    );
    if let Some(free) = facts.free_bytes {
        page.single(
            "shardlog_disk_free_bytes",
            Kind::Gauge,
            "Bytes free in the data directory's filesystem (measured every few seconds).",
            free as f64,
        );
    }
    page.single(
        "shardlog_connections",
        Kind::Gauge,
        "Client connections open on this node (shardlog and Kafka protocols).",
        facts.connections as f64,
    );
    let node_id = facts.node_id.to_string();
    page.family(
        "shardlog_shard_serving",
        Kind::Gauge,
        "1 for each shard that answered the scrape and has the controller's view.",
    );
    for shard in &report.shards {
        let id = shard.shard.to_string();
        let labels = [("node", node_id.as_str()), ("shard", id.as_str())];
        page.sample(
            "shardlog_shard_serving",
            &labels,
            f64::from(u8::from(shard.serving)),
        );
    }
    for id in &report.missing {
        let id = id.to_string();
        let labels = [("node", node_id.as_str()), ("shard", id.as_str())];
        page.sample("shardlog_shard_serving", &labels, 0.0);
    }
}

/// Lag of each group this node coordinates, for partitions with a replica on this node
/// (whose high watermark the node knows): high watermark minus committed offset.
fn group_lag(page: &mut Page, report: &NodeReport) {
    let high_watermarks: HashMap<(&str, u32), u64> = report
        .shards
        .iter()
        .flat_map(|s| s.partitions.iter())
        .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
        .collect();
    let name = "shardlog_group_lag_records";
    page.family(
        name,
        Kind::Gauge,
        "For groups this node coordinates: high watermark minus the committed offset, \
         per topic partition with a replica on this node.",
    );
    for offset in report.shards.iter().flat_map(|s| s.group_offsets.iter()) {
        let Some(hw) = high_watermarks.get(&(offset.topic.as_str(), offset.partition)) else {
            continue;
        };
        let committed = u64::try_from(offset.offset).unwrap_or(0);
        let partition = offset.partition.to_string();
        let labels = [
            ("group", offset.group.as_str()),
            ("topic", offset.topic.as_str()),
            ("partition", &partition),
        ];
        page.sample(name, &labels, hw.saturating_sub(committed) as f64);
    }
}
