//! `shardlog cluster status --brokers B`: the cluster's controller and brokers, as the
//! broker that answers the Metadata request sees them. Each broker is asked at most once
//! per request, for at most 5 s, the next one from 300 ms on (live ones first).
//!
//! Output: a line `controller: N` (`controller: none` while no controller is known, which
//! is always so on a node that runs alone), then a tab-separated table with a header row:
//! node (id), address (`host:port`), live (`yes`/`no`: registered and not fenced),
//! replicas and leaders (partition replicas it holds and partitions it leads, over every
//! topic), state (`serving`; `draining` once decommissioned, `drained` when it holds
//! nothing more), one row per broker sorted by node id. Exit code 1 if any broker is not live (each is also named
//! on stderr) or the metadata lists none; having no controller does not fail by itself,
//! since a single node never has one.

use std::collections::BTreeMap;
use std::time::Duration;

use shardlog_net::api::{BrokerMetadata, MetadataResponse};
use shardlog_net::client::{Client, ClientConfig};

use crate::Outcome;
use crate::args::{ClusterArgs, ClusterCommand};
use crate::command::topic::print_lines;
use crate::error::ToolError;
use crate::online;

/// One attempt's budget. Status is what an operator runs while a node is down or paused; a
/// paused node's port still accepts connections (the kernel does that) but never answers.
/// The client asks the next broker 300 ms into a silent attempt (its metadata hedge), so
/// a paused node among live ones costs about that, and a list of only silent brokers
/// fails after this long.
const STATUS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `cluster`.
pub fn run(args: ClusterArgs) -> Result<Outcome, ToolError> {
    match args.command {
        ClusterCommand::Status(brokers) => {
            let config = ClientConfig {
                admin_timeout: STATUS_ATTEMPT_TIMEOUT,
                // One round over the brokers: status reports what it finds now (a
                // cluster still electing is reported as such) instead of waiting for a
                // better answer, which is what made it take 50 s against a paused node.
                retries: 0,
                ..ClientConfig::default()
            };
            online::run_with(
                &brokers,
                config,
                |client| async move { status(&client).await },
            )
        }
        ClusterCommand::Rebalance(args) => {
            let dry_run = args.dry_run;
            online::run(&args.brokers, move |client| async move {
                let said = client
                    .rebalance_replicas(dry_run)
                    .await
                    .map_err(ToolError::request("rebalance"))?;
                print_lines([said])?;
                Ok(Outcome::Clean)
            })
        }
    }
}

async fn status(client: &Client) -> Result<Outcome, ToolError> {
    let metadata = client
        .metadata(&[])
        .await
        .map_err(ToolError::request("cluster metadata"))?;
    let report = StatusReport::from(&metadata);
    print_lines(report.lines)?;
    if report.brokers == 0 {
        eprintln!(
            "shardlog: node {} answered with no brokers",
            metadata.node_id
        );
        return Ok(Outcome::ProblemsFound);
    }
    for broker in &report.not_live {
        eprintln!("shardlog: node {broker} is not live");
    }
    if report.not_live.is_empty() {
        Ok(Outcome::Clean)
    } else {
        Ok(Outcome::ProblemsFound)
    }
}

/// What `cluster status` prints, and what it found wrong.
#[derive(Debug, PartialEq, Eq)]
struct StatusReport {
    /// The controller line, the header row and one row per broker.
    lines: Vec<String>,
    /// How many brokers the metadata lists.
    brokers: usize,
    /// `id (address)` of every broker that is not live, by node id.
    not_live: Vec<String>,
}

impl From<&MetadataResponse> for StatusReport {
    fn from(metadata: &MetadataResponse) -> StatusReport {
        let controller = metadata
            .controller
            .map_or_else(|| "none".to_owned(), |id| id.to_string());
        let mut brokers: Vec<&BrokerMetadata> = metadata.brokers.iter().collect();
        brokers.sort_by_key(|broker| broker.node_id);
        let mut lines = vec![
            format!("controller: {controller}"),
            "node\taddress\tlive\treplicas\tleaders\tstate".to_owned(),
        ];
        let mut not_live = Vec::new();
        let (replicas, leaders) = held(metadata);
        for broker in &brokers {
            let address = address(broker);
            let live = if broker.live { "yes" } else { "no" };
            let id = broker.node_id;
            let holds = replicas.get(&id).copied().unwrap_or(0);
            let leads = leaders.get(&id).copied().unwrap_or(0);
            let state = match (broker.draining, holds) {
                (false, _) => "serving",
                (true, 0) => "drained",
                (true, _) => "draining",
            };
            lines.push(format!(
                "{id}\t{address}\t{live}\t{holds}\t{leads}\t{state}"
            ));
            if !broker.live {
                not_live.push(format!("{} ({address})", broker.node_id));
            }
        }
        StatusReport {
            lines,
            brokers: brokers.len(),
            not_live,
        }
    }
}

/// Replicas and leaderships per node, over every topic of the metadata.
fn held(metadata: &MetadataResponse) -> (BTreeMap<u32, usize>, BTreeMap<u32, usize>) {
    let mut replicas = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for p in metadata.topics.iter().flat_map(|t| &t.partitions) {
        for node in &p.replicas {
            *replicas.entry(*node).or_insert(0) += 1;
        }
        if let Some(leader) = p.leader {
            *leaders.entry(leader).or_insert(0) += 1;
        }
    }
    (replicas, leaders)
}

/// `host:port`, with an IPv6 host in brackets so the port stays unambiguous.
fn address(broker: &BrokerMetadata) -> String {
    if broker.host.contains(':') {
        format!("[{}]:{}", broker.host, broker.port)
    } else {
        format!("{}:{}", broker.host, broker.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(node_id: u32, host: &str, port: u16, live: bool) -> BrokerMetadata {
        BrokerMetadata {
            node_id,
            host: host.to_owned(),
            port,
            live,
            draining: false,
        }
    }

    fn metadata(controller: Option<u32>, brokers: Vec<BrokerMetadata>) -> MetadataResponse {
        MetadataResponse {
            node_id: 0,
            controller,
            brokers,
            topics: Vec::new(),
        }
    }

    #[test]
    fn single_node_without_controller_is_clean() {
        let report = StatusReport::from(&metadata(None, vec![broker(0, "127.0.0.1", 9092, true)]));
        assert_eq!(
            report.lines,
            [
                "controller: none",
                "node\taddress\tlive\treplicas\tleaders\tstate",
                "0\t127.0.0.1:9092\tyes\t0\t0\tserving"
            ]
        );
        assert_eq!(report.brokers, 1);
        assert!(report.not_live.is_empty());
    }

    #[test]
    fn rows_sorted_by_node_and_fenced_brokers_reported() {
        let report = StatusReport::from(&metadata(
            Some(2),
            vec![
                broker(2, "127.0.0.1", 19102, true),
                broker(0, "127.0.0.1", 19100, false),
                broker(1, "::1", 19101, true),
            ],
        ));
        assert_eq!(
            report.lines,
            [
                "controller: 2",
                "node\taddress\tlive\treplicas\tleaders\tstate",
                "0\t127.0.0.1:19100\tno\t0\t0\tserving",
                "1\t[::1]:19101\tyes\t0\t0\tserving",
                "2\t127.0.0.1:19102\tyes\t0\t0\tserving",
            ]
        );
        assert_eq!(report.brokers, 3);
        assert_eq!(report.not_live, ["0 (127.0.0.1:19100)"]);
    }

    #[test]
    fn no_brokers_counted() {
        let report = StatusReport::from(&metadata(Some(0), Vec::new()));
        assert_eq!(
            report.lines,
            [
                "controller: 0",
                "node\taddress\tlive\treplicas\tleaders\tstate"
            ]
        );
        assert_eq!(report.brokers, 0);
    }
}
