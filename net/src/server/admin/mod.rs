//! The admin HTTP listener (`--admin-listen`, 127.0.0.1:9644 by default): `/metrics`
//! (Prometheus text), `/v1/health`, `/v1/ready`, and what other parts hook into
//! [`route`]. It runs on shard 0 only, in a task queue of low shares, so under load the
//! data path's tasks run first and a scrape waits. Shard 0 because it also holds the
//! controller's voter and the free-space measure the pages show; the other shards answer
//! its gathers from their inboxes.
//!
//! Bounds: a request head of at most 8 KiB (431 past it), read within
//! `READ_TIMEOUT` (the connection is closed past it), `CONNECTIONS_MAX` connections at
//! once (past it, closed at once), one request per connection, GET and HEAD only (405).

mod console;
mod exposition;
mod health;
pub(crate) mod http;
mod metrics_page;
mod series;
mod status;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{Either, LocalBoxFuture, select};
use glommio::net::{TcpListener, TcpStream};
use glommio::{Shares, TaskQueueHandle};

use crate::server::metrics::{self, Counter};
use crate::server::protocol::limits::ClientLimits;
use crate::server::shard::Shard;
use http::{Method, Request, Response};

/// Admin connections open at once; past it a new one is closed at once.
const CONNECTIONS_MAX: usize = 64;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing a response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The admin queue's shares: the default queue (the data path) has 1000.
const ADMIN_SHARES: usize = 10;

/// What the admin handlers work with.
pub(crate) struct AdminContext {
    /// The shard the listener runs on (shard 0).
    pub(crate) shard: Rc<Shard>,
    /// The client listeners' limits (their open connections are a metric).
    pub(crate) client_limits: Arc<ClientLimits>,
    /// The admin queue: handlers that spawn tasks spawn them here.
    pub(crate) queue: TaskQueueHandle,
    /// The console's per-second samples (`console::sample_every_second` fills it).
    pub(crate) series: RefCell<series::SeriesRing>,
}

/// A route's handler: the request's answer.
pub(crate) type Handler = fn(Rc<AdminContext>, Request) -> LocalBoxFuture<'static, Response>;

/// The handler of `path`, if any (404 otherwise). Other pages are added here.
pub(crate) fn route(path: &str) -> Option<Handler> {
    let handler: Handler = match path {
        "/metrics" => |ctx, _| metrics(ctx).boxed_local(),
        "/v1/health" => |_, _| futures::future::ready(health::live()).boxed_local(),
        "/v1/ready" => |ctx, _| health::ready(ctx).boxed_local(),
        "/" | "/index.html" => |_, _| futures::future::ready(console::index()).boxed_local(),
        "/v1/status" => |ctx, _| console::status_json(ctx).boxed_local(),
        "/v1/series" => |ctx, _| futures::future::ready(console::series_json(&ctx)).boxed_local(),
        _ => return None,
    };
    Some(handler)
}

/// `/metrics`.
async fn metrics(ctx: Rc<AdminContext>) -> Response {
    let report = crate::server::ops::observe::gather(&ctx.shard).await;
    let facts = metrics_page::NodeFacts {
        node_id: ctx.shard.node.node_id,
        connections: ctx.client_limits.open(),
        free_bytes: ctx
            .shard
            .cluster
            .controller
            .as_ref()
            .and_then(|c| c.own_free_bytes()),
    };
    Response {
        status: 200,
        content_type: exposition::CONTENT_TYPE,
        body: metrics_page::render(&report, &facts).into_bytes(),
    }
}

/// Serves `listener` on this shard, in a low-share task queue of its own, until the
/// shard stops.
pub(crate) fn spawn(shard: &Rc<Shard>, listener: TcpListener, client_limits: Arc<ClientLimits>) {
    let queue = glommio::executor().create_task_queue(
        Shares::Static(ADMIN_SHARES),
        glommio::Latency::NotImportant,
        "admin",
    );
    let ctx = Rc::new(AdminContext {
        shard: shard.clone(),
        client_limits,
        queue,
        series: RefCell::new(series::SeriesRing::default()),
    });
    match glommio::spawn_local_into(console::sample_every_second(ctx.clone()), queue) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::error!(error = %e, "the console's sampler could not start"),
    }
    let accept = accept_until_stopped(ctx, listener);
    match glommio::spawn_local_into(accept, queue) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::error!(error = %e, "the admin listener could not start"),
    }
}

async fn accept_until_stopped(ctx: Rc<AdminContext>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    let mut stopping = ctx.shard.stopping();
    loop {
        match select(std::pin::pin!(listener.accept()), &mut stopping).await {
            Either::Left((Ok(stream), _)) => {
                if open.get() >= CONNECTIONS_MAX {
                    tracing::debug!("admin connection limit reached: closing a new connection");
                    continue;
                }
                open.set(open.get() + 1);
                let (ctx2, open) = (ctx.clone(), open.clone());
                let served = async move {
                    serve(ctx2, stream).await;
                    open.set(open.get() - 1);
                };
                if let Ok(task) = glommio::spawn_local_into(served, ctx.queue) {
                    task.detach();
                }
            }
            Either::Left((Err(e), _)) => {
                tracing::warn!(error = %e, "admin accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            Either::Right(_) => break,
        }
    }
}

/// One connection: one request, one answer, closed.
async fn serve(ctx: Rc<AdminContext>, mut stream: TcpStream) {
    let request = {
        let read = std::pin::pin!(http::read_request(&mut stream));
        let timeout = std::pin::pin!(glommio::timer::sleep(READ_TIMEOUT));
        match select(read, timeout).await {
            Either::Left((request, _)) => request,
            Either::Right(_) => return,
        }
    };
    let (response, method) = match request {
        Ok(request) => {
            let method = request.method;
            let response = match route(&request.path) {
                Some(handler) => handler(ctx.clone(), request).await,
                None => Response::error(404),
            };
            (response, method)
        }
        Err(bad) => match bad.status() {
            Some(status) => {
                tracing::debug!(?bad, "bad admin request");
                (Response::error(status), Method::Get)
            }
            None => return,
        },
    };
    metrics::count(Counter::AdminRequests);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    if let Err(e) = http::write_response(&mut stream, &response, method).await {
        tracing::debug!(error = %e, "writing an admin response");
    }
    let _ = futures::io::AsyncWriteExt::close(&mut stream).await;
}
