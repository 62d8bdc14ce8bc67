//! A request's way through a shard, in two phases. `begin` runs in the order requests
//! arrive on a connection (or in a shard's inbox): it checks the api and version, finds
//! the partition's shard, and does what must stay ordered (a produce gets its offsets
//! there). It returns a `Completion`, awaited concurrently with later requests: waiting
//! for the flush, long-polling a fetch, or waiting for the owner shard's answer.

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, ready};

use crate::api::{Api, VERSION};
use crate::error_code::ErrorCode;
use crate::frame::FrameHeader;
use crate::server::admin;
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
        // Replication messages need cluster mode, which this server does not run yet;
        // they are never answered, so one arriving here is only logged and dropped.
        Api::Replicate => {
            tracing::warn!(
                correlation = header.correlation,
                "replication message for a single node; dropped"
            );
            ready(None).boxed_local()
        }
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
