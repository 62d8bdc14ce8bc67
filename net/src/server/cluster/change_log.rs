//! How cluster changes are logged: one event per metadata change the controller applies
//! and one per role a replica is given, every one with structured fields (`topic`,
//! `partition`, `epoch`, `offset`, `peer` for another node) rather than text in the
//! message, so `--log-format json` lines can be filtered on them. `node` and `shard` come
//! from the shard's span.

use shardlog_replicator::NodeId;
use shardlog_replicator::controller::MetadataChange;
use shardlog_replicator::replica::Input;

/// Node ids as `0,1,2` (one field value; the same numbers as `peer`).
fn node_list(nodes: &[NodeId]) -> String {
    let ids: Vec<String> = nodes.iter().map(|n| n.0.to_string()).collect();
    ids.join(",")
}

/// Logs a change the controller applied to the cluster's metadata.
pub(crate) fn metadata_change(change: &MetadataChange) {
    match change {
        MetadataChange::NodeRegistered { node, address } => {
            tracing::info!(peer = node.0, address, "node registered");
        }
        MetadataChange::NodeFenced(node) => {
            tracing::warn!(peer = node.0, "node fenced");
        }
        MetadataChange::NodeUnfenced(node) => {
            tracing::info!(peer = node.0, "node unfenced: it is back");
        }
        MetadataChange::TopicCreated(topic) => tracing::info!(topic, "topic created"),
        MetadataChange::TopicDeleted(topic) => tracing::info!(topic, "topic deleted"),
        MetadataChange::UserCredentialSet { user, mechanism } => {
            tracing::info!(user, mechanism, "user credential set");
        }
        MetadataChange::UserDeleted(user) => tracing::info!(user, "user deleted"),
        MetadataChange::LeaderChanged {
            topic,
            partition,
            leader,
            leader_epoch,
            isr,
        } => match leader {
            Some(leader) => tracing::info!(
                topic,
                partition = partition.0,
                epoch = leader_epoch.0,
                leader = leader.0,
                isr = node_list(isr),
                "leader changed"
            ),
            None => tracing::warn!(
                topic,
                partition = partition.0,
                epoch = leader_epoch.0,
                isr = node_list(isr),
                "partition has no leader"
            ),
        },
        MetadataChange::IsrChanged {
            topic,
            partition,
            leader_epoch,
            isr,
        } => tracing::info!(
            topic,
            partition = partition.0,
            epoch = leader_epoch.0,
            isr = node_list(isr),
            "ISR changed"
        ),
        MetadataChange::ReplicasChanged {
            topic,
            partition,
            replicas,
            isr,
        } => tracing::info!(
            topic,
            partition = partition.0,
            replicas = node_list(replicas),
            isr = node_list(isr),
            "replicas changed"
        ),
        MetadataChange::AclChanged { added, binding } => {
            let acl = binding.to_string();
            let what = if *added { "ACL added" } else { "ACL removed" };
            tracing::info!(acl, "{what}");
        }
    }
}

/// Logs the role the controller's decision gives this node's replica of
/// `topic`/`partition`, whose log ends at `log_end` (the `offset` field).
pub(crate) fn replica_role(topic: &str, partition: u32, input: &Input, log_end: u64) {
    match input {
        Input::BecomeLeader { epoch, isr, .. } => tracing::info!(
            topic,
            partition,
            epoch = epoch.0,
            offset = log_end,
            isr = node_list(isr),
            "replica becomes the leader"
        ),
        Input::BecomeFollower { epoch, leader } => tracing::info!(
            topic,
            partition,
            epoch = epoch.0,
            offset = log_end,
            peer = leader.0,
            "replica becomes a follower"
        ),
        Input::IsrUpdated {
            epoch,
            isr_version,
            isr,
            ..
        } => tracing::debug!(
            topic,
            partition,
            epoch = epoch.0,
            isr_version,
            isr = node_list(isr),
            "replica's ISR updated"
        ),
        other => tracing::debug!(topic, partition, input = ?other, "replica input"),
    }
}
