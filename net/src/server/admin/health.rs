//! `/v1/health` (the process serves HTTP at all: 200) and `/v1/ready` (200 once the
//! controller has this run of the node registered and every shard has its view and
//! answers; 503 with the reason otherwise), for load balancers and orchestrators.

use std::rc::Rc;

use super::AdminContext;
use super::http::Response;
use crate::server::ops::observe;

/// `/v1/health`: answered at all means live.
pub(crate) fn live() -> Response {
    Response::text(200, "ok\n")
}

/// `/v1/ready`.
pub(crate) async fn ready(ctx: Rc<AdminContext>) -> Response {
    let report = observe::gather(&ctx.shard).await;
    match not_ready_reason(&report) {
        None => Response::text(200, "ready\n"),
        Some(reason) => Response::text(503, format!("not ready: {reason}\n")),
    }
}

/// Why the node does not serve yet, if it does not.
fn not_ready_reason(report: &observe::NodeReport) -> Option<String> {
    let Some(view) = report.view.as_ref() else {
        return Some("no view of the controller's metadata yet".to_owned());
    };
    if !view.rejoined {
        // Until then the controller may still count a previous run of this node as live
        // and hand it leaderships this run will be fenced out of.
        return Some("this run is not registered with the controller yet".to_owned());
    }
    if let Some(shard) = report.missing.first() {
        return Some(format!("shard {shard} did not answer"));
    }
    report.shards.iter().find(|s| !s.serving).map(|s| {
        format!(
            "shard {} has no view of the controller's metadata yet, or is stopping",
            s.shard
        )
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::cluster::ClusterView;
    use crate::server::metrics::Snapshot;
    use crate::server::ops::observe::{NodeReport, ShardReport};

    fn shard(id: usize, serving: bool) -> ShardReport {
        ShardReport {
            shard: id,
            serving,
            metrics: Snapshot::empty(),
            partitions: Vec::new(),
            group_offsets: Vec::new(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn ready_only_registered_with_a_view_and_every_shard_serving() {
        let view = Some(Arc::new(ClusterView {
            rejoined: true,
            ..ClusterView::default()
        }));
        let report = |view, shards, missing| NodeReport {
            shards,
            missing,
            view,
        };
        let ready = report(view.clone(), vec![shard(0, true), shard(1, true)], vec![]);
        assert_eq!(not_ready_reason(&ready), None);
        let no_view = report(None, vec![shard(0, true)], vec![]);
        assert!(not_ready_reason(&no_view).is_some_and(|r| r.contains("view")));
        let silent = report(view.clone(), vec![shard(0, true)], vec![1]);
        assert_eq!(
            not_ready_reason(&silent).as_deref(),
            Some("shard 1 did not answer")
        );
        let behind = report(view, vec![shard(0, true), shard(1, false)], vec![]);
        assert!(not_ready_reason(&behind).is_some_and(|r| r.starts_with("shard 1")));
        let unregistered = Some(Arc::new(ClusterView::default()));
        let unregistered = report(unregistered, vec![shard(0, true)], vec![]);
        assert!(not_ready_reason(&unregistered).is_some_and(|r| r.contains("registered")));
    }
}
