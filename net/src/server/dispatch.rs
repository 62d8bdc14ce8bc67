//! A request's way through a shard, in two phases. `begin` runs in the order requests
//! arrive on a connection (or in a shard's inbox): it checks the api and version, finds
//! the partition's shard, and does what must stay ordered (a produce gets its offsets
//! there). It returns a `Completion`, awaited concurrently with later requests: waiting
//! for the flush, long-polling a fetch, or waiting for the owner shard's answer.

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, ready};

use crate::api::{Api, ControllerRequest, VERSION};
use crate::error_code::ErrorCode;
use crate::frame::FrameHeader;
use crate::server::admin;
use crate::server::cluster::ClusterRoute;
use crate::server::inbox::ShardMsg;
use crate::server::produce;
use crate::server::reads;
use crate::server::reply::{Reply, error_reply};
use crate::server::shard::Shard;
use crate::wire::Frame;

/// The second phase of a request: its reply, or `None` when none is owed.
pub(crate) type Completion = LocalBoxFuture<'static, Option<Reply>>;

/// A completion that is already done.
pub(crate) fn done(reply: Reply) -> Completion {
    ready(Some(reply)).boxed_local()
}

/// The first phase; see the module docs.
pub(crate) async fn begin(shard: &std::rc::Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    if shard.is_stopping() {
        return done(error_reply(
            &header,
            ErrorCode::ShuttingDown,
            "the server is stopping",
        ));
    }
    let Some(api) = Api::from_u16(header.api) else {
        let message = format!("unknown api {}", header.api);
        return done(error_reply(&header, ErrorCode::UnknownApi, &message));
    };
    if header.version != VERSION {
        let message = format!("{api:?} version {} (supported: {VERSION})", header.version);
        return done(error_reply(
            &header,
            ErrorCode::UnsupportedVersion,
            &message,
        ));
    }
    match api {
        Api::Metadata => done(admin::metadata(shard, &frame)),
        Api::CreateTopic | Api::DeleteTopic if shard.id == 0 => {
            admin::change(shard.clone(), frame).boxed_local()
        }
        Api::CreateTopic | Api::DeleteTopic => forward(shard, 0, frame).await,
        Api::Produce => produce::begin(shard, frame).await,
        Api::Fetch => reads::fetch(shard, frame).await,
        Api::ListOffsets => reads::list_offsets(shard, frame).await,
        Api::Replicate => replicate(shard, frame).await,
        Api::Controller if shard.id == 0 => {
            controller(shard, &frame);
            ready(None).boxed_local()
        }
        Api::Controller => forward(shard, 0, frame).await,
    }
}

/// A replication message: to the shard that owns the partition, then its replica. Never
/// answered (the replicas resend on their timers), so anything wrong is logged and dropped.
async fn replicate(shard: &std::rc::Rc<Shard>, frame: Frame) -> Completion {
    let none = || ready(None).boxed_local();
    let Some(cluster) = &shard.cluster else {
        tracing::warn!("replication message for a node without --peers; dropped");
        return none();
    };
    let route = match frame.access::<crate::api::ArchivedReplicateRequest>() {
        Ok(meta) => cluster.route(
            shard.id,
            shard.node.shards,
            meta.topic.as_str(),
            meta.partition.to_native(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "invalid replication message; dropped");
            return none();
        }
    };
    match route {
        ClusterRoute::Shard(owner) => {
            if let Some(peer) = shard.peers.get(owner) {
                // Dropped if the owner stopped: the replicas resend.
                let _ = peer.send_async(ShardMsg::Replicate(frame)).await;
            }
        }
        ClusterRoute::Replica(_) => replicate_here(shard, &frame),
        _ => {}
    }
    none()
}

/// A replication message for a replica of this shard: decoded (validated) and handed over.
pub(crate) fn replicate_here(shard: &Shard, frame: &Frame) {
    let Some(cluster) = &shard.cluster else {
        return;
    };
    match crate::peer::decode(frame) {
        Ok((topic, envelope)) => cluster.receive(&topic, envelope),
        Err(e) => tracing::warn!(error = %e, "invalid replication message; dropped"),
    }
}

/// A controller message, on shard 0.
fn controller(shard: &Shard, frame: &Frame) {
    let Some(service) = shard.cluster.as_ref().and_then(|c| c.controller.as_ref()) else {
        tracing::warn!("controller message for a node without --peers; dropped");
        return;
    };
    match frame.decode::<ControllerRequest>() {
        Ok(request) => service.handle(request, &frame.data.clone().freeze()),
        Err(e) => tracing::warn!(error = %e, "invalid controller message; dropped"),
    }
}

/// Hands the request to the shard that owns its partition; the completion is that
/// shard's answer.
pub(crate) async fn forward(shard: &Shard, owner: usize, frame: Frame) -> Completion {
    let header = frame.header;
    let (tx, rx) = oneshot::channel();
    let Some(peer) = shard.peers.get(owner) else {
        return done(error_reply(&header, ErrorCode::Unknown, "no such shard"));
    };
    if peer
        .send_async(ShardMsg::Request { frame, reply: tx })
        .await
        .is_err()
    {
        return done(stopped(&header));
    }
    async move { rx.await.unwrap_or_else(|_| Some(stopped(&header))) }.boxed_local()
}

fn stopped(header: &FrameHeader) -> Reply {
    error_reply(header, ErrorCode::ShuttingDown, "the owning shard stopped")
}

/// The reply to a request whose meta does not decode.
pub(crate) fn invalid(header: &FrameHeader, error: &crate::frame::FrameError) -> Completion {
    done(error_reply(
        header,
        ErrorCode::InvalidRequest,
        &error.to_string(),
    ))
}
