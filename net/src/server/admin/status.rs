//! `GET /v1/status`: the cluster as this node knows it, as JSON for operators and the
//! console. Field names are stable (the README lists them); a field this node cannot
//! know is `null`, never guessed:
//! - offsets (`log_start`, `high_watermark`, `log_end`) come from this node's replica of
//!   a partition, so they are `null` for partitions it holds no replica of;
//! - a follower's `lag` (leader's log end minus the follower's acknowledged log end) is
//!   known only where this node leads the partition;
//! - `heartbeat_age_ms` and `disk_free_bytes` come from the controller leader (sessions
//!   live in its memory), on the leader itself or, on any other node, from the report the
//!   leader sends every node a few times a second (`cluster::shared_sessions`); `null`
//!   without a fresh report (`disk_free_bytes` of this node is its own measure).
//!
//! [`status`] is a pure function of the shards' reports (`ops::observe`, the gather
//! `/metrics` uses too) and the controller's word ([`ControllerFacts`], read on shard 0
//! where the admin listener runs), so the JSON is tested without a server.

use std::collections::BTreeMap;

use serde::Serialize;
use shardlog_replicator::NodeId;
use shardlog_replicator::controller::{PartitionState, TopicInfo};

use crate::server::ops::observe::{GroupSummary, NodeReport, PartitionReport};

/// Bumped when a field changes meaning or goes away (adding fields does not).
pub(crate) const STATUS_VERSION: u32 = 1;

/// The document.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) version: u32,
    pub(crate) node: NodeStatus,
    pub(crate) controller: ControllerStatus,
    pub(crate) nodes: Vec<NodeEntry>,
    pub(crate) topics: Vec<TopicStatus>,
    pub(crate) groups: Vec<GroupStatus>,
}

/// The node answering.
#[derive(Debug, Serialize)]
pub(crate) struct NodeStatus {
    pub(crate) id: u32,
    pub(crate) shards: usize,
    pub(crate) uptime_ms: u64,
    /// False while the node is catching up with the controller after its start.
    pub(crate) has_view: bool,
    /// Shards that did not answer in time (their replicas and groups are missing).
    pub(crate) unanswered_shards: Vec<usize>,
}

/// The controller.
#[derive(Debug, Serialize)]
pub(crate) struct ControllerStatus {
    /// The controller leader, if known.
    pub(crate) leader: Option<u32>,
    /// The Raft term as this node's voter knows it.
    pub(crate) term: Option<u64>,
    /// The controller's applied Raft index this node's view shows.
    pub(crate) applied_index: u64,
    /// This node leads the controller.
    pub(crate) this_node_leads: bool,
}

/// A registered node.
#[derive(Debug, Serialize)]
pub(crate) struct NodeEntry {
    pub(crate) id: u32,
    pub(crate) address: String,
    pub(crate) kafka_address: Option<String>,
    /// `live` or `fenced` (missed its session, or replaced by a newer run).
    pub(crate) state: &'static str,
    pub(crate) fenced: bool,
    pub(crate) heartbeat_age_ms: Option<u64>,
    pub(crate) disk_free_bytes: Option<u64>,
    /// Bytes of batches in this node's replicas (this node only).
    pub(crate) disk_used_bytes: Option<u64>,
}

/// A topic.
#[derive(Debug, Serialize)]
pub(crate) struct TopicStatus {
    pub(crate) name: String,
    pub(crate) id: u64,
    pub(crate) replication_factor: u16,
    pub(crate) min_insync: u16,
    pub(crate) partitions: Vec<PartitionStatus>,
}

/// A partition.
#[derive(Debug, Serialize)]
pub(crate) struct PartitionStatus {
    pub(crate) partition: u32,
    pub(crate) leader: Option<u32>,
    pub(crate) leader_epoch: i32,
    pub(crate) replicas: Vec<u32>,
    pub(crate) isr: Vec<u32>,
    pub(crate) log_start: Option<u64>,
    pub(crate) high_watermark: Option<u64>,
    pub(crate) log_end: Option<u64>,
    /// Where the offsets come from: `leader` (this node leads), `follower` (this node's
    /// follower replica), or `none`.
    pub(crate) offsets_from: &'static str,
    /// Each follower's acknowledged log end and lag, where this node leads.
    pub(crate) followers: Vec<FollowerStatus>,
    pub(crate) under_replicated: bool,
    pub(crate) under_min_isr: bool,
    pub(crate) leaderless: bool,
}

/// A follower as its leader (this node) knows it.
#[derive(Debug, Serialize)]
pub(crate) struct FollowerStatus {
    pub(crate) node: u32,
    /// `null` before it first answered this leader.
    pub(crate) log_end: Option<u64>,
    pub(crate) lag: Option<u64>,
    pub(crate) in_isr: bool,
}

/// A consumer group this node coordinates.
#[derive(Debug, Serialize)]
pub(crate) struct GroupStatus {
    pub(crate) group_id: String,
    pub(crate) state: String,
    pub(crate) protocol_type: String,
    pub(crate) members: Vec<MemberStatus>,
    pub(crate) offsets: Vec<GroupOffsetStatus>,
    /// Sum of the known lags.
    pub(crate) lag: u64,
}

/// A member.
#[derive(Debug, Serialize)]
pub(crate) struct MemberStatus {
    pub(crate) member_id: String,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
}

/// A committed offset and how far it is behind the high watermark (where known).
#[derive(Debug, Serialize)]
pub(crate) struct GroupOffsetStatus {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) committed: i64,
    pub(crate) high_watermark: Option<u64>,
    pub(crate) lag: Option<u64>,
}

/// What this node is and what its controller voter knows, besides the shards' reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeFacts {
    pub(crate) node_id: u32,
    pub(crate) shards: usize,
    pub(crate) uptime_ms: u64,
    /// Shard 0's controller voter (every node has one).
    pub(crate) controller: Option<ControllerFacts>,
}

/// The controller voter's word.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ControllerFacts {
    pub(crate) term: u64,
    /// This node leads the controller.
    pub(crate) leading: bool,
    /// Milliseconds since each node's last heartbeat: the leader's sessions, here or as
    /// it last reported them to this node.
    pub(crate) heartbeat_ages_ms: BTreeMap<u32, u64>,
    /// Free bytes of each node's data directory: from heartbeats on the controller
    /// leader (here or as it last reported them), and this node's own as measured.
    pub(crate) free_bytes: BTreeMap<u32, u64>,
}

/// The document.
pub(crate) fn status(report: &NodeReport, facts: &NodeFacts) -> Status {
    let replicas: BTreeMap<(&str, u32), &PartitionReport> = report
        .shards
        .iter()
        .flat_map(|shard| shard.partitions.iter())
        .map(|r| ((r.topic.as_str(), r.partition), r))
        .collect();
    let controller = facts.controller.as_ref();
    let (nodes, topics, applied_index, leader) = match &report.view {
        Some(view) => (
            nodes(report, facts, view.metadata.nodes()),
            view.metadata
                .topics()
                .iter()
                .map(|(name, info)| topic(name, info, &replicas))
                .collect(),
            view.applied,
            view.controller.map(|n| n.0),
        ),
        None => (Vec::new(), Vec::new(), 0, None),
    };
    Status {
        version: STATUS_VERSION,
        node: NodeStatus {
            id: facts.node_id,
            shards: facts.shards,
            uptime_ms: facts.uptime_ms,
            has_view: report.view.is_some(),
            unanswered_shards: report.missing.clone(),
        },
        controller: ControllerStatus {
            leader,
            term: controller.map(|c| c.term),
            applied_index,
            this_node_leads: controller.is_some_and(|c| c.leading),
        },
        nodes,
        topics,
        groups: groups(report, &replicas),
    }
}

fn nodes(
    report: &NodeReport,
    facts: &NodeFacts,
    registered: &BTreeMap<NodeId, shardlog_replicator::controller::NodeInfo>,
) -> Vec<NodeEntry> {
    let controller = facts.controller.as_ref();
    let used: u64 = report
        .shards
        .iter()
        .flat_map(|shard| shard.partitions.iter())
        .map(|r| r.bytes)
        .sum();
    registered
        .iter()
        .map(|(id, info)| NodeEntry {
            id: id.0,
            address: info.address.clone(),
            kafka_address: info.kafka_address.clone(),
            state: if info.fenced { "fenced" } else { "live" },
            fenced: info.fenced,
            heartbeat_age_ms: controller.and_then(|c| c.heartbeat_ages_ms.get(&id.0).copied()),
            disk_free_bytes: controller.and_then(|c| c.free_bytes.get(&id.0).copied()),
            disk_used_bytes: (id.0 == facts.node_id).then_some(used),
        })
        .collect()
}

fn topic(
    name: &str,
    info: &TopicInfo,
    replicas: &BTreeMap<(&str, u32), &PartitionReport>,
) -> TopicStatus {
    TopicStatus {
        name: name.to_owned(),
        id: info.id,
        replication_factor: info.replication_factor,
        min_insync: info.min_insync,
        partitions: (0u32..)
            .zip(&info.partitions)
            .map(|(partition, state)| {
                let local = replicas.get(&(name, partition)).copied();
                partition_status(partition, state, info.min_insync, local)
            })
            .collect(),
    }
}

fn partition_status(
    partition: u32,
    state: &PartitionState,
    min_insync: u16,
    local: Option<&PartitionReport>,
) -> PartitionStatus {
    let ids = |nodes: &[NodeId]| nodes.iter().map(|n| n.0).collect::<Vec<u32>>();
    let isr = ids(&state.isr);
    let followers = local
        .filter(|r| r.leader)
        .map(|r| {
            r.follower_log_ends
                .iter()
                .map(|(node, end)| FollowerStatus {
                    node: *node,
                    log_end: Some(*end),
                    lag: Some(r.log_end.saturating_sub(*end)),
                    in_isr: isr.contains(node),
                })
                .collect()
        })
        .unwrap_or_default();
    PartitionStatus {
        partition,
        leader: state.leader.map(|n| n.0),
        leader_epoch: state.leader_epoch.0,
        replicas: ids(&state.replicas),
        log_start: local.map(|r| r.log_start),
        high_watermark: local.map(|r| r.high_watermark),
        log_end: local.map(|r| r.log_end),
        offsets_from: match local {
            Some(r) if r.leader => "leader",
            Some(_) => "follower",
            None => "none",
        },
        followers,
        under_replicated: state.isr.len() < state.replicas.len(),
        under_min_isr: state.isr.len() < usize::from(min_insync),
        leaderless: state.leader.is_none(),
        isr,
    }
}

fn groups(
    report: &NodeReport,
    replicas: &BTreeMap<(&str, u32), &PartitionReport>,
) -> Vec<GroupStatus> {
    let summaries = report.shards.iter().flat_map(|shard| shard.groups.iter());
    let offsets: Vec<_> = report
        .shards
        .iter()
        .flat_map(|shard| shard.group_offsets.iter())
        .collect();
    summaries
        .map(|summary| {
            let offsets: Vec<GroupOffsetStatus> = offsets
                .iter()
                .filter(|o| o.group == summary.group_id)
                .map(|o| {
                    let high_watermark = replicas
                        .get(&(o.topic.as_str(), o.partition))
                        .map(|r| r.high_watermark);
                    // A committed offset of -1 (nothing consumed yet) lags the whole log.
                    let from = u64::try_from(o.offset).unwrap_or(0);
                    GroupOffsetStatus {
                        topic: o.topic.clone(),
                        partition: o.partition,
                        committed: o.offset,
                        high_watermark,
                        lag: high_watermark.map(|hw| hw.saturating_sub(from)),
                    }
                })
                .collect();
            group(summary, offsets)
        })
        .collect()
}

fn group(summary: &GroupSummary, offsets: Vec<GroupOffsetStatus>) -> GroupStatus {
    GroupStatus {
        group_id: summary.group_id.clone(),
        state: summary.state.clone(),
        protocol_type: summary.protocol_type.clone(),
        members: summary
            .members
            .iter()
            .map(|m| MemberStatus {
                member_id: m.member_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
            })
            .collect(),
        lag: offsets.iter().filter_map(|o| o.lag).sum(),
        offsets,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use shardlog_replicator::controller::{Command, Metadata};

    use super::*;
    use crate::server::cluster::ClusterView;
    use crate::server::metrics::Snapshot;
    use crate::server::ops::observe::{GroupOffset, MemberSummary, ShardReport};

    /// Three nodes, node 3 fenced; topic `t` with two partitions of three replicas.
    fn view() -> ClusterView {
        let mut metadata = Metadata::default();
        let mut changes = Vec::new();
        let commands = [
            register(1),
            register(2),
            register(3),
            Command::CreateTopic {
                name: "t".into(),
                partitions: 2,
                replication_factor: 3,
                min_insync: 2,
                config: Vec::new(),
            },
            Command::FenceNode { node: 3 },
        ];
        for command in &commands {
            metadata.apply(command, &mut changes).expect("applies");
        }
        ClusterView {
            metadata,
            controller: Some(NodeId(1)),
            applied: 5,
            rejoined: true,
        }
    }

    fn register(node: u32) -> Command {
        Command::RegisterNode {
            node,
            address: format!("127.0.0.1:{}", 9000 + node),
            session_expires_ms: 0,
        }
    }

    fn leader_of(view: &ClusterView, partition: u32) -> u32 {
        let state = view.metadata.partition("t", partition).expect("partition");
        state.leader.expect("a leader").0
    }

    fn report(view: ClusterView) -> NodeReport {
        let partition = PartitionReport {
            topic: "t".into(),
            partition: 0,
            leader: true,
            log_start: 10,
            log_end: 100,
            high_watermark: 90,
            bytes: 4096,
            follower_log_ends: vec![(2, 95), (3, 40)],
        };
        let shard = ShardReport {
            shard: 0,
            serving: true,
            metrics: Snapshot::empty(),
            partitions: vec![partition],
            group_offsets: vec![GroupOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                offset: 70,
            }],
            groups: vec![GroupSummary {
                group_id: "g".into(),
                state: "Stable".into(),
                protocol_type: "consumer".into(),
                members: vec![MemberSummary {
                    member_id: "m-1".into(),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                }],
            }],
        };
        NodeReport {
            shards: vec![shard],
            missing: vec![1],
            view: Some(Arc::new(view)),
        }
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            node_id: 1,
            shards: 2,
            uptime_ms: 1234,
            controller: Some(ControllerFacts {
                term: 7,
                leading: true,
                heartbeat_ages_ms: BTreeMap::from([(1, 5), (2, 300)]),
                free_bytes: BTreeMap::from([(1, 1 << 30)]),
            }),
        }
    }

    fn document() -> Value {
        let status = status(&report(view()), &facts());
        serde_json::to_value(&status).expect("serializes")
    }

    fn keys(value: &Value) -> Vec<&str> {
        let object = value.as_object().expect("an object");
        object.keys().map(String::as_str).collect()
    }

    fn sorted(mut names: Vec<&'static str>) -> Vec<&'static str> {
        names.sort_unstable();
        names
    }

    #[test]
    fn top_level_field_names_are_the_documented_ones() {
        let doc = document();
        assert_eq!(
            keys(&doc),
            sorted(vec![
                "controller",
                "groups",
                "node",
                "nodes",
                "topics",
                "version"
            ])
        );
        assert_eq!(
            keys(&doc["node"]),
            sorted(vec![
                "has_view",
                "id",
                "shards",
                "unanswered_shards",
                "uptime_ms"
            ])
        );
        assert_eq!(
            keys(&doc["controller"]),
            sorted(vec!["applied_index", "leader", "term", "this_node_leads"])
        );
        assert_eq!(
            keys(&doc["groups"][0]),
            sorted(vec![
                "group_id",
                "lag",
                "members",
                "offsets",
                "protocol_type",
                "state"
            ])
        );
    }

    #[test]
    fn node_and_partition_field_names_are_the_documented_ones() {
        let doc = document();
        assert_eq!(
            keys(&doc["nodes"][0]),
            sorted(vec![
                "address",
                "disk_free_bytes",
                "disk_used_bytes",
                "fenced",
                "heartbeat_age_ms",
                "id",
                "kafka_address",
                "state"
            ])
        );
        assert_eq!(
            keys(&doc["topics"][0]["partitions"][0]),
            sorted(vec![
                "followers",
                "high_watermark",
                "isr",
                "leader",
                "leader_epoch",
                "leaderless",
                "log_end",
                "log_start",
                "offsets_from",
                "partition",
                "replicas",
                "under_min_isr",
                "under_replicated"
            ])
        );
        assert_eq!(
            keys(&doc["topics"][0]["partitions"][0]["followers"][0]),
            sorted(vec!["in_isr", "lag", "log_end", "node"])
        );
    }

    #[test]
    fn nodes_show_fencing_heartbeats_and_disk() {
        let doc = document();
        assert_eq!(doc["version"], json!(STATUS_VERSION));
        assert_eq!(doc["node"]["unanswered_shards"], json!([1]));
        assert_eq!(doc["controller"]["leader"], json!(1));
        assert_eq!(doc["controller"]["term"], json!(7));
        let nodes = doc["nodes"].as_array().expect("nodes");
        let states: Vec<&Value> = nodes.iter().map(|n| &n["state"]).collect();
        assert_eq!(states, [&json!("live"), &json!("live"), &json!("fenced")]);
        assert_eq!(nodes[2]["fenced"], json!(true));
        assert_eq!(nodes[1]["heartbeat_age_ms"], json!(300));
        assert_eq!(
            nodes[2]["heartbeat_age_ms"],
            Value::Null,
            "unknown, not guessed"
        );
        assert_eq!(nodes[0]["disk_free_bytes"], json!(1u64 << 30));
        assert_eq!(nodes[0]["disk_used_bytes"], json!(4096));
        assert_eq!(nodes[1]["disk_used_bytes"], Value::Null);
    }

    #[test]
    fn partitions_carry_offsets_and_lag_only_where_known() {
        let view = view();
        let leader = leader_of(&view, 0);
        let doc = serde_json::to_value(status(&report(view), &facts())).expect("json");
        let partitions = &doc["topics"][0]["partitions"];
        let p0 = &partitions[0];
        assert_eq!(p0["leader"], json!(leader));
        assert_eq!(p0["replicas"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            (&p0["log_start"], &p0["high_watermark"], &p0["log_end"]),
            (&json!(10), &json!(90), &json!(100))
        );
        assert_eq!(p0["offsets_from"], json!("leader"));
        assert_eq!(p0["followers"][0]["lag"], json!(5));
        assert_eq!(p0["followers"][1]["lag"], json!(60));
        let p1 = &partitions[1];
        assert_eq!(p1["offsets_from"], json!("none"));
        assert_eq!(p1["log_end"], Value::Null);
        assert_eq!(p1["followers"], json!([]));
        let group = &doc["groups"][0];
        assert_eq!(
            group["offsets"][0]["lag"],
            json!(20),
            "high watermark 90 - 70"
        );
        assert_eq!(group["lag"], json!(20));
        assert_eq!(group["members"][0]["client_id"], json!("c"));
    }

    /// (isr, leader) and the flags expected.
    type FlagsRow = (&'static [u32], Option<u32>, (bool, bool, bool));

    #[test]
    fn flags_follow_the_isr_and_the_leader() {
        let nodes = |ids: &[u32]| ids.iter().copied().map(NodeId).collect::<Vec<_>>();
        // (isr, leader) -> (under_replicated, under_min_isr, leaderless), min ISR 2 of 3.
        let table: [FlagsRow; 4] = [
            (&[1, 2, 3], Some(1), (false, false, false)),
            (&[1, 2], Some(1), (true, false, false)),
            (&[1], Some(1), (true, true, false)),
            (&[1], None, (true, true, true)),
        ];
        // Built from a real partition, so fields added to the state need no change here.
        let view = view();
        let base = view.metadata.partition("t", 0).expect("partition");
        for (isr, leader, expected) in table {
            let mut state = base.clone();
            state.replicas = nodes(&[1, 2, 3]);
            state.leader = leader.map(NodeId);
            state.isr = nodes(isr);
            let p = partition_status(0, &state, 2, None);
            let got = (p.under_replicated, p.under_min_isr, p.leaderless);
            assert_eq!(got, expected, "isr {isr:?} leader {leader:?}");
        }
    }

    #[test]
    fn a_node_catching_up_shows_no_cluster() {
        let report = NodeReport {
            shards: Vec::new(),
            missing: Vec::new(),
            view: None,
        };
        let doc = serde_json::to_value(status(&report, &NodeFacts::default())).expect("json");
        assert_eq!(doc["node"]["has_view"], json!(false));
        assert_eq!(doc["nodes"], json!([]));
        assert_eq!(doc["controller"]["leader"], Value::Null);
    }
}
