//! The peer listener: where the other nodes of the cluster connect, and only they. A
//! connection starts with a handshake (`crate::peer::auth`: mutual TLS or an HMAC
//! challenge over the cluster secret) that proves which node is speaking; every message
//! after it must name that node as its sender, or it is dropped and counted. Served:
//!
//! - `Replicate` (fire and forget): to the shard that owns the partition, whose replica
//!   checks the envelope's sender;
//! - `Controller` (fire and forget): to shard 0's controller voter, with the proven
//!   sender, on its lane (`cluster::controller`: never behind the data path's messages);
//! - `CreateTopic` / `DeleteTopic`: a node that does not lead the controller passes a
//!   client's topic change to the one that does (`ops::topics`), and gets the answer;
//! - `AllocateProducerIds`: a node asks the controller leader for a block of producer
//!   ids for itself (`ops::producer_ids`).
//!
//! - `BindShard` (the first frame of a link, from a dialer that waits for the answer): the
//!   link moves to this node's shard of the dialing shard's number, which answers and
//!   serves it, so the ships and acks of a shard's partitions arrive on the shard that
//!   owns them here too (`api::peer_link`). A link over TLS, or naming a shard this node
//!   lacks, stays where it landed; `Replicate` then crosses to the owner as before.
//!
//! Anything else is a client api: refused with an error reply.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{Either, LocalBoxFuture, select};
use glommio::net::{Preallocated, TcpListener, TcpStream};
use shardlog_replicator::NodeId;

use crate::api::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, Api, ArchivedReplicateRequest,
    BindShardRequest, BindShardResponse, ControllerRequest, REPLICATE_VERSION, VERSION,
};
use crate::error_code::ErrorCode;
use crate::frame::FrameHeader;
use crate::peer::auth::{self, PeerSecurity, PeerStream};
use crate::server::cluster::controller::ControllerMsg;
use crate::server::metrics::{self, Counter};
use crate::server::ops::producer_ids;
use crate::server::protocol::moving::{self, PlainSocket};
use crate::server::protocol::shardlog::reply::{Reply, error_reply, reply};
use crate::server::protocol::shardlog::{acls, handlers, placement};
use crate::server::shard::{Shard, ShardMsg, owner_shard};
use crate::wire::{self, Frame, ReadError};

/// Socket receive buffer of a peer connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// A peer link after its handshake.
type Link = PeerStream<TcpStream<Preallocated>>;

/// Accepts peer connections until the shard stops; each is served as its own task.
pub(crate) async fn serve(shard: Rc<Shard>, listener: TcpListener, security: Arc<PeerSecurity>) {
    let mut stopping = shard.stopping();
    loop {
        match select(std::pin::pin!(listener.accept()), &mut stopping).await {
            Either::Left((Ok(stream), _)) => {
                let (shard, security) = (shard.clone(), security.clone());
                glommio::spawn_local(async move { connection(shard, stream, &security).await })
                    .detach();
            }
            Either::Left((Err(e), _)) => {
                tracing::warn!(shard = shard.id, error = %e, "peer accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
            Either::Right(_) => break,
        }
    }
}

async fn connection(shard: Rc<Shard>, stream: TcpStream, security: &PeerSecurity) {
    let address = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    let me = shard.node.node_id;
    let members = shard.cluster.config.voters();
    let stream = stream.buffered_with(Preallocated::new(READ_BUFFER_BYTES));
    let (mut stream, from) =
        match auth::accept(security, stream, me, |id| members.contains(&id)).await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(peer = %address, error = %e, "peer handshake refused");
                return;
            }
        };
    let from = NodeId(from);
    tracing::debug!(%address, peer = from.0, "peer connected");
    let mut stopping = shard.stopping();
    let Some(first) = next_frame(&mut stream, &mut stopping, from).await else {
        return;
    };
    let first = if first.header.api == Api::BindShard as u16 && first.header.version == VERSION {
        match bind(&shard, from, stream, &first, &address).await {
            Bound::Here(here) => {
                stream = here;
                First::Bound(first.header)
            }
            Bound::Gone => return,
        }
    } else {
        First::Frame(first)
    };
    serve_link(shard, from, stream, first).await;
}

/// A link's first frame, which `serve_link` answers (or serves) before reading on.
enum First {
    /// `BindShard`, from a dialer that waits for its answer.
    Bound(FrameHeader),
    /// Anything else (a dialer that does not bind).
    Frame(Frame),
}

/// Where a link that asked for a shard is served.
enum Bound {
    Here(Link),
    /// Handed to the shard it asked for, or closed.
    Gone,
}

/// Hands the link to the shard that `request` names, if that is another shard of this
/// node and the socket can move (no TLS, nothing read ahead); otherwise it stays.
async fn bind(shard: &Shard, from: NodeId, stream: Link, request: &Frame, address: &str) -> Bound {
    let to = match request.decode::<BindShardRequest>() {
        Ok(request) => usize::try_from(request.shard).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!(peer = from.0, error = %e, "invalid BindShard; serving the link here");
            return Bound::Here(stream);
        }
    };
    if to == shard.id || to >= shard.node.shards {
        return Bound::Here(stream);
    }
    let mut plain = match stream.into_plain() {
        Ok(plain) => plain,
        Err(tls) => return Bound::Here(tls),
    };
    let socket = match moving::take_plain(&mut plain, address) {
        PlainSocket::Taken(socket) => socket,
        PlainSocket::Stays => return Bound::Here(PeerStream::proven_plain(plain)),
        PlainSocket::Ended => return Bound::Gone,
    };
    drop(plain);
    let moved = MovedLink {
        socket,
        from,
        bind: request.header,
    };
    if let Some(inbox) = shard.inboxes.get(to) {
        // Dropped if that shard stopped: the dialer's bind fails and it dials again.
        if inbox.send_async(ShardMsg::PeerLink(moved)).await.is_ok() {
            metrics::count(Counter::PeerLinksMoved);
            tracing::debug!(
                peer = from.0,
                from = shard.id,
                to,
                "peer link moved to its shard"
            );
        }
    }
    Bound::Gone
}

/// A peer link on its way to the shard it asked for (`Api::BindShard`).
pub(crate) struct MovedLink {
    /// A descriptor of the link's socket, its only one once the old stream is gone.
    socket: OwnedFd,
    /// The node its handshake proved.
    from: NodeId,
    /// The `BindShard` request, answered by the shard that serves the link.
    bind: FrameHeader,
}

/// Serves a link handed over by another shard of this node, as its own task.
pub(crate) fn serve_moved(shard: &Rc<Shard>, moved: MovedLink) {
    // SAFETY: `socket` owns the descriptor of a connected TCP socket (`bind` cloned it
    // from a glommio stream and closed that stream's own), and the stream takes it over.
    let stream = unsafe { TcpStream::from_raw_fd(moved.socket.into_raw_fd()) };
    let stream =
        PeerStream::proven_plain(stream.buffered_with(Preallocated::new(READ_BUFFER_BYTES)));
    let shard = shard.clone();
    glommio::spawn_local(serve_link(
        shard,
        moved.from,
        stream,
        First::Bound(moved.bind),
    ))
    .detach();
}

/// Serves the frames of a link from node `from` until it closes or the shard stops.
async fn serve_link(shard: Rc<Shard>, from: NodeId, stream: Link, first: First) {
    let (mut reader, writer) = crate::local_split::split(stream);
    let (replies, queue) = mpsc::unbounded::<Reply>();
    let writer = glommio::spawn_local(async move {
        let mut queue = queue;
        if let Err(e) = wire::write_queue(writer, &mut queue).await {
            tracing::debug!(error = %e, "peer connection write failed");
            while queue.next().await.is_some() {}
        }
    });
    match first {
        First::Bound(header) => {
            let bound = BindShardResponse {
                error: ErrorCode::None.as_u16(),
                shard: u32::try_from(shard.id).unwrap_or(u32::MAX),
            };
            let _ = replies.unbounded_send(reply(&header, &bound, Vec::new()));
        }
        First::Frame(frame) => handle(&shard, from, frame, &replies).await,
    }
    let mut stopping = shard.stopping();
    while let Some(frame) = next_frame(&mut reader, &mut stopping, from).await {
        handle(&shard, from, frame, &replies).await;
        // Once the task quota is used up, lets the log's write and the replies go out
        // before the next ship is read (`ServerConfig::task_quota`).
        glommio::yield_if_needed().await;
    }
    drop(replies);
    writer.await;
}

/// A link's next frame; `None` once it closed, failed (logged) or the shard stops.
async fn next_frame<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    stopping: &mut LocalBoxFuture<'static, ()>,
    from: NodeId,
) -> Option<Frame> {
    match select(std::pin::pin!(wire::read_frame(reader)), stopping).await {
        Either::Left((Ok(frame), _)) => frame,
        Either::Right(_) => None,
        Either::Left((Err(ReadError::Io(e)), _)) => {
            tracing::debug!(peer = from.0, error = %e, "peer connection read failed");
            None
        }
        Either::Left((Err(ReadError::Frame(e)), _)) => {
            tracing::warn!(peer = from.0, error = %e, "bad peer frame; closing the connection");
            None
        }
    }
}

async fn handle(
    shard: &Rc<Shard>,
    from: NodeId,
    frame: Frame,
    replies: &mpsc::UnboundedSender<Reply>,
) {
    let header = frame.header;
    let api = Api::from_u16(header.api);
    let supported = if api == Some(Api::Replicate) {
        REPLICATE_VERSION
    } else {
        VERSION
    };
    if header.version != supported {
        let message = format!(
            "{} version {} (supported: {supported})",
            api.map_or_else(|| header.api.to_string(), |a| format!("{a:?}")),
            header.version
        );
        if api == Some(Api::Replicate) {
            // A node of another release: the operator needs to see it, not once per ship.
            shard.cluster.refuse_version(from, &message);
        }
        let _ = replies.unbounded_send(error_reply(
            &header,
            ErrorCode::UnsupportedVersion,
            &message,
        ));
        return;
    }
    match api {
        Some(Api::Replicate) => replicate(shard, from, frame).await,
        Some(Api::Controller) => match frame.decode::<ControllerRequest>() {
            Ok(request) => {
                let message = ControllerMsg {
                    from: Some(from),
                    request,
                    data: frame.data.freeze(),
                };
                // Fire and forget: a full lane drops it, the sender's timers resend.
                let _ = shard.cluster.controller_lane.try_send(message);
            }
            Err(e) => {
                tracing::warn!(peer = from.0, error = %e, "invalid controller message; dropped")
            }
        },
        Some(Api::CreateTopic | Api::DeleteTopic | Api::ReassignPartition) => {
            topic_change(shard, frame, replies).await
        }
        Some(Api::DrainNode | Api::RebalanceReplicas) => {
            let completion = placement::placement_change(shard, frame).await;
            relay(completion, replies);
        }
        Some(Api::UpsertUser | Api::DeleteUser) => {
            let completion =
                crate::server::protocol::shardlog::sasl::user_change(shard, frame).await;
            relay(completion, replies);
        }
        Some(Api::CreateAcl | Api::DeleteAcl) => {
            let completion = acls::acl_request(shard, frame).await;
            relay(completion, replies);
        }
        Some(Api::AllocateProducerIds) => allocate_producer_ids(shard, from, frame, replies).await,
        Some(other) => {
            let message = not_on_this_link(other);
            let _ =
                replies.unbounded_send(error_reply(&header, ErrorCode::InvalidRequest, &message));
        }
        None => {
            let message = format!("unknown api {}", header.api);
            let _ = replies.unbounded_send(error_reply(&header, ErrorCode::UnknownApi, &message));
        }
    }
}

/// Why the peer listener refuses `api` on an open link.
fn not_on_this_link(api: Api) -> String {
    match api {
        Api::BindShard => "BindShard is only a link's first frame".to_owned(),
        other => format!("{other:?} is a client api: send it to the client listener"),
    }
}

/// A topic change passed on by a node that does not lead the controller: applied (or
/// passed on again) as a client's topic change is, and answered on this connection.
async fn topic_change(shard: &Rc<Shard>, frame: Frame, replies: &mpsc::UnboundedSender<Reply>) {
    let completion = handlers::topic_change(shard, frame).await;
    let replies = replies.clone();
    glommio::spawn_local(async move {
        if let Some(reply) = completion.await {
            let _ = replies.unbounded_send(reply);
        }
    })
    .detach();
}

/// Sends `completion`'s reply once it is made, without holding up the frames after it.
fn relay(completion: handlers::Completion, replies: &mpsc::UnboundedSender<Reply>) {
    let replies = replies.clone();
    glommio::spawn_local(async move {
        if let Some(reply) = completion.await {
            let _ = replies.unbounded_send(reply);
        }
    })
    .detach();
}

/// A node asks this one, as the controller leader, for a block of producer ids: for
/// itself only (the request must name the proven sender).
async fn allocate_producer_ids(
    shard: &Rc<Shard>,
    from: NodeId,
    frame: Frame,
    replies: &mpsc::UnboundedSender<Reply>,
) {
    let header = frame.header;
    let request = match frame.decode::<AllocateProducerIdsRequest>() {
        Ok(request) if request.node == from.0 => request,
        Ok(request) => {
            let message = format!(
                "node {from} asked for producer ids for node {}",
                request.node
            );
            tracing::warn!(peer = from.0, "{message}; refused");
            let _ =
                replies.unbounded_send(error_reply(&header, ErrorCode::InvalidRequest, &message));
            return;
        }
        Err(e) => {
            let message = e.to_string();
            let _ =
                replies.unbounded_send(error_reply(&header, ErrorCode::InvalidRequest, &message));
            return;
        }
    };
    let pending = producer_ids::allocate_for(shard, from, request.count).await;
    let replies = replies.clone();
    glommio::spawn_local(async move {
        let response = match pending.await {
            Ok(first) => AllocateProducerIdsResponse {
                error: ErrorCode::None.as_u16(),
                first,
                count: request.count,
                message: String::new(),
            },
            Err(e) => AllocateProducerIdsResponse {
                error: e.code().as_u16(),
                first: 0,
                count: 0,
                message: e.to_string(),
            },
        };
        let _ = replies.unbounded_send(reply(&header, &response, Vec::new()));
    })
    .detach();
}

/// A replication message: to the shard that owns the partition. In arrival order
/// (awaited), so one peer's messages for a partition keep their order.
async fn replicate(shard: &Rc<Shard>, from: NodeId, frame: Frame) {
    let owner = match frame.access::<ArchivedReplicateRequest>() {
        Ok(meta) => owner_shard(
            meta.topic.as_str(),
            meta.envelope.partition.to_native(),
            shard.node.shards,
        ),
        Err(e) => {
            tracing::warn!(peer = from.0, error = %e, "invalid replication message; dropped");
            return;
        }
    };
    if owner == shard.id {
        shard.cluster.receive_frame(from, frame);
    } else if let Some(inbox) = shard.inboxes.get(owner) {
        metrics::count(Counter::ReplicateForwarded);
        // Dropped if the owner stopped: the replicas resend.
        let _ = inbox.send_async(ShardMsg::Replicate { from, frame }).await;
    }
}
