//! The cluster's state as the replication tests read it: the controller leader's own
//! metadata (the authoritative view), waits for a state of every partition of the test
//! topic, one-line descriptions, and the set-up every replication test starts from.

use std::time::Duration;

use shardlog_net::api::{MetadataResponse, PartitionMetadata, TopicConfig};
use shardlog_net::client::{Client, ClientConfig};

use super::cluster::{Cluster, Links, partition};
use super::load::TOPIC;

/// Bound on every wait for the cluster to reach a state (elections, ISR changes).
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// The controller leader's own metadata, asking only `nodes` (the controller must be one
/// of them and say it leads): the authoritative view, where a node that was down, paused
/// or cut off may still hold a stale one.
pub fn controller_view(cluster: &Cluster, nodes: &[usize]) -> Result<MetadataResponse, String> {
    let (asked, meta) = cluster
        .metadata_from(nodes)
        .ok_or_else(|| format!("none of nodes {nodes:?} answers"))?;
    let controller = meta
        .controller
        .ok_or_else(|| format!("node {asked} knows no controller"))? as usize;
    if !nodes.contains(&controller) {
        return Err(format!("node {asked} names controller {controller}"));
    }
    let meta = cluster
        .metadata(controller)
        .map_err(|e| format!("controller {controller}: {e}"))?;
    if meta.controller != u32::try_from(controller).ok() {
        return Err(format!("node {controller} no longer leads the controller"));
    }
    Ok(meta)
}

/// Waits until `check` holds in the controller's view (asking only `nodes`); returns the
/// view and the time it took.
pub fn wait_view(
    cluster: &mut Cluster,
    what: &str,
    nodes: &[usize],
    check: impl Fn(&MetadataResponse) -> Result<(), String>,
) -> (MetadataResponse, Duration) {
    cluster.wait_for(what, WAIT_MAX, |c| {
        let meta = controller_view(c, nodes)?;
        check(&meta).map(|()| meta)
    })
}

/// `check` on every partition of the topic (which must have some).
pub fn every_partition(
    meta: &MetadataResponse,
    check: impl Fn(&PartitionMetadata) -> bool,
) -> Result<(), String> {
    let topic = meta
        .topics
        .iter()
        .find(|t| t.name == TOPIC)
        .ok_or_else(|| format!("no topic {TOPIC}"))?;
    if topic.partitions.is_empty() {
        return Err(format!("{TOPIC} has no partitions"));
    }
    match topic.partitions.iter().find(|p| !check(p)) {
        Some(state) => Err(format!("{state:?}")),
        None => Ok(()),
    }
}

/// One line per partition: leader, epoch, ISR.
pub fn describe(meta: &MetadataResponse) -> String {
    meta.topics
        .iter()
        .filter(|t| t.name == TOPIC)
        .flat_map(|t| &t.partitions)
        .map(|p| {
            format!(
                "{TOPIC}/{}: leader {:?} epoch {} isr {:?}",
                p.partition, p.leader, p.leader_epoch, p.isr
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How many partitions the topic has, as the first node that answers knows it.
pub fn topic_partitions(cluster: &Cluster) -> u32 {
    let (_, meta) = cluster.metadata_any().expect("a node that answers");
    let topic = meta.topics.iter().find(|t| t.name == TOPIC);
    let count = topic.map_or(0, |t| t.partitions.len());
    u32::try_from(count).unwrap()
}

/// Every node.
pub fn all(cluster: &Cluster) -> Vec<usize> {
    (0..cluster.len()).collect()
}

/// Every node but `node`.
pub fn others(cluster: &Cluster, node: usize) -> Vec<usize> {
    (0..cluster.len()).filter(|&n| n != node).collect()
}

/// Whether the partition's ISR holds every node.
pub fn full_isr(p: &PartitionMetadata) -> bool {
    p.leader.is_some() && p.isr.len() == 3
}

/// The leader of `partition_id` and its state, in the controller's view.
pub fn leader(cluster: &mut Cluster, partition_id: u32) -> (usize, PartitionMetadata) {
    let nodes = all(cluster);
    let (meta, _) = wait_view(cluster, "a leader", &nodes, |m| {
        partition(m, TOPIC, partition_id)
            .and_then(|p| p.leader)
            .map(drop)
            .ok_or_else(|| describe(m))
    });
    let p = partition(&meta, TOPIC, partition_id).unwrap().clone();
    (p.leader.unwrap() as usize, p)
}

/// Three nodes with a controller, and the topic with `partitions` partitions, every one
/// led and fully in sync.
pub fn setup(links: Links, partitions: u32) -> Cluster {
    setup_on(Cluster::start(3, links), partitions)
}

/// [`setup`] on a cluster already started (of any size, with any flags): waits for its
/// controller, creates the topic (replication factor 3) and waits until every partition is
/// led and fully in sync.
pub fn setup_on(mut cluster: Cluster, partitions: u32) -> Cluster {
    let took = cluster.wait_for_controller(WAIT_MAX);
    eprintln!("controller elected, every node live, after {took:?}");
    let brokers = cluster.brokers();
    super::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        let config = TopicConfig {
            min_insync: Some(2),
            ..TopicConfig::default()
        };
        // Replication factor 0: the servers' default (--replication-factor 3).
        client
            .create_topic(TOPIC, partitions, 0, config)
            .await
            .unwrap();
    });
    let nodes = all(&cluster);
    let (meta, took) = wait_view(&mut cluster, "the topic fully in sync", &nodes, |m| {
        every_partition(m, |p| full_isr(p) && p.replicas.len() == 3)
    });
    eprintln!(
        "topic created, fully in sync after {took:?}: {}",
        describe(&meta)
    );
    cluster
}
