//! The web console and the JSON it polls, on the admin listener:
//! - `GET /` (and `/index.html`): one static page, `console/index.html`, embedded in the
//!   binary (no build step, nothing fetched from outside: it works offline);
//! - `GET /v1/status`: [`status::status`] of a fresh gather of every shard;
//! - `GET /v1/series`: the last ten minutes of per-second samples, which
//!   [`sample_every_second`] takes from the metrics registry (summed over the shards)
//!   in the admin task queue, so the data path never waits for it.

use std::rc::Rc;
use std::time::Duration;

use futures::future::{Either, select};

use super::AdminContext;
use super::http::Response;
use super::series::{Reading, SeriesDocument};
use super::status::{self, ControllerFacts, NodeFacts};
use crate::server::metrics::histogram::BUCKETS_SECONDS;
use crate::server::metrics::{Api, Latency, Protocol, Snapshot};
use crate::server::ops::observe::{self, NodeReport};
use crate::server::shard::Shard;

/// The page, embedded.
pub(crate) const INDEX_HTML: &str = include_str!("console/index.html");

/// How often a series sample is taken.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

const JSON: &str = "application/json";

/// `GET /`.
pub(crate) fn index() -> Response {
    Response {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML.as_bytes().to_vec(),
    }
}

/// `GET /v1/status`.
pub(crate) async fn status_json(ctx: Rc<AdminContext>) -> Response {
    let report = observe::gather(&ctx.shard).await;
    let facts = node_facts(&ctx.shard);
    json(&status::status(&report, &facts))
}

/// `GET /v1/series`.
pub(crate) fn series_json(ctx: &AdminContext) -> Response {
    let ring = ctx.series.borrow();
    json(&SeriesDocument {
        interval_ms: u64::try_from(SAMPLE_EVERY.as_millis()).unwrap_or(u64::MAX),
        samples: ring.samples().collect(),
    })
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response {
            status: 200,
            content_type: JSON,
            body,
        },
        Err(e) => {
            tracing::warn!(error = %e, "encoding an admin JSON answer");
            Response::error(500)
        }
    }
}

/// This node's facts: the shard the admin listener runs on is shard 0, which holds the
/// controller voter.
fn node_facts(shard: &Shard) -> NodeFacts {
    let controller = shard
        .cluster
        .controller
        .as_ref()
        .map(|service| ControllerFacts {
            term: service.term(),
            leading: service.is_leader(),
            heartbeat_ages_ms: service
                .heartbeat_ages_ms()
                .into_iter()
                .map(|(node, age)| (node.0, age))
                .collect(),
            free_bytes: service
                .free_bytes()
                .into_iter()
                .map(|(node, free)| (node.0, free))
                .collect(),
        });
    NodeFacts {
        node_id: shard.node.node_id,
        shards: shard.node.shards,
        uptime_ms: shard.cluster.now().0,
        controller,
    }
}

/// Takes a series sample every [`SAMPLE_EVERY`] until the shard stops (run in the admin
/// task queue).
pub(crate) async fn sample_every_second(ctx: Rc<AdminContext>) {
    let mut stopping = ctx.shard.stopping();
    loop {
        let tick = std::pin::pin!(glommio::timer::sleep(SAMPLE_EVERY));
        if let Either::Right(_) = select(tick, &mut stopping).await {
            return;
        }
        let report = observe::gather(&ctx.shard).await;
        if !report.missing.is_empty() {
            // Sums without a shard would look like counters going back, then jumping.
            continue;
        }
        let at_ms = ctx.shard.cluster.now().0;
        ctx.series.borrow_mut().record(reading(at_ms, &report));
    }
}

/// The cumulative counters of a gather, summed over the shards that answered.
fn reading(at_ms: u64, report: &NodeReport) -> Reading {
    let mut sum = Snapshot::empty();
    for shard in &report.shards {
        sum.add(&shard.metrics);
    }
    let total = |api: Api| {
        Protocol::ALL
            .iter()
            .fold((0, 0), |(records, bytes), protocol| {
                let counts = sum.api(*protocol, api);
                (records + counts.records, bytes + counts.bytes)
            })
    };
    let (produce_records, produce_bytes) = total(Api::Produce);
    let (fetch_records, fetch_bytes) = total(Api::Fetch);
    let histogram = sum.latency(Latency::Produce);
    let mut produce_latency: Vec<(f64, u64)> = BUCKETS_SECONDS
        .iter()
        .copied()
        .zip(histogram.cumulative())
        .collect();
    produce_latency.push((f64::INFINITY, histogram.count()));
    Reading {
        at_ms,
        produce_records,
        produce_bytes,
        fetch_records,
        fetch_bytes,
        produce_latency,
    }
}
