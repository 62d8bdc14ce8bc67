//! The shardlog protocol's front end: rkyv frames (`crate::frame`) on the client
//! listener, decoded and answered by `handlers`.
//!
//! One connection on a shard: the read loop takes frames in order and begins each
//! request (`handlers::begin`, the operations' first phase); each completion runs as its
//! own task and hands its reply to the writer task, which gathers replies into few
//! socket writes (replies carry the request's correlation id, so they may leave in any
//! order). At most `IN_FLIGHT_MAX` requests per connection are outstanding: past that,
//! reading pauses. A frame whose header breaks a limit closes the connection (the stream
//! cannot be resynchronised); a frame whose meta does not decode gets an error reply.
//!
//! Reply bytes per connection are bounded (`protocol::reply_budget`,
//! `--connection-reply-bytes`):
//! each request counts the reply it may bring from when it is read (a fetch its
//! `max_bytes`), settled to the reply's real size once made and given back once the
//! reply is written to the socket. While the count is at the budget the connection reads
//! no request, so a client that sends fetches and never reads the replies holds at most
//! the budget (plus the requests already begun) in the server, and its requests wait in
//! the socket buffers (TCP pushes back on it), not in memory.
//!
//! `ClientLimits` (`protocol::limits`), shared by every shard (each accepts on the same
//! port) and with the Kafka front end: past `max_connections` open on the node, a new
//! connection is accepted and closed at once; a connection with no request in flight and
//! no byte received for `idle_timeout` is closed (a long poll or an acks=all produce
//! outstanding keeps it open).

pub(crate) mod acls;
mod authorize;
mod groups;
pub(crate) mod handlers;
pub(crate) mod placement;
pub(crate) mod reply;
pub(crate) mod sasl;

use std::pin::Pin;
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{Either, LocalBoxFuture, select};

use super::idle::{Activity, idle_past};
use super::listener::{Connection, Opened};
use super::moving::{self, Affinity, Ending};
use super::reply_budget::ReplyBudget;
use crate::server::shard::Shard;
use crate::wire::{self, Frame, ReadError};
use reply::Reply;

/// Requests begun and not yet answered, per connection.
const IN_FLIGHT_MAX: u64 = 4096;

/// Serves a connection on this shard until the client leaves, the stream breaks, it
/// idles past `idle_timeout`, the shard stops, or it should move to another shard
/// (`protocol::moving`, which calls this again wherever the connection goes).
pub(crate) async fn serve_here(
    shard: &Rc<Shard>,
    mut opened: Opened,
    connection: &Connection,
) -> Ending {
    let writer = opened.writer;
    let budget = &connection.budget;
    let (replies, queue) = mpsc::unbounded::<Owed>();
    let writer = glommio::spawn_local(write_loop(writer, queue, budget.clone()));
    let permits = Rc::new(glommio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut stopping = shard.stopping();
    let mut affinity = Affinity::default();
    let mut moving_to = None;
    // The watch holds its own handle: `activity` stays with `opened`, which may move on.
    let watched = opened.activity.clone();
    let idle_timeout = connection.idle_timeout;
    let mut idle = std::pin::pin!(idle_past(idle_timeout, &watched, &permits, IN_FLIGHT_MAX));
    loop {
        if let Some(to) = affinity.destination(shard.id)
            && moving::may_move(&opened.session, &opened.reader.inner)
        {
            moving_to = moving::drained(&permits, IN_FLIGHT_MAX, &mut stopping)
                .await
                .then_some(to);
            break;
        }
        // Replies owed up to the budget: read nothing more until the client reads some.
        let room = std::pin::pin!(budget.room());
        if let Either::Right(_) = select(room, &mut stopping).await {
            break;
        }
        let Some(frame) = next_frame(
            &mut opened.reader,
            &mut stopping,
            idle.as_mut(),
            &opened.peer,
        )
        .await
        else {
            break;
        };
        let Ok(permit) = permits.acquire_static_permit(1).await else {
            break;
        };
        let alone = permits.available() == IN_FLIGHT_MAX - 1;
        shard.begin_request();
        let begun = handlers::begin(shard, frame, &opened.peer, &opened.session).await;
        affinity.note(begun.owners, alone);
        // Counted before the next read, so the next `room` sees it.
        budget.charge(begun.reply_bytes);
        let task = Task {
            shard: shard.clone(),
            replies: replies.clone(),
            budget: budget.clone(),
            activity: opened.activity.clone(),
            permit,
        };
        glommio::spawn_local(task.complete(begun)).detach();
        // Once the task quota is used up, or every 64 requests (`shard::turns`), lets the
        // log's write and the replies go out before the next request is read.
        shard.request_read();
        glommio::yield_if_needed().await;
    }
    // Replies still owed go out; the writer ends when the last completion is done.
    drop(replies);
    match (moving_to, writer.await) {
        (Some(to), Some(writer)) => {
            opened.writer = writer;
            Ending::Moving(to, opened)
        }
        (_, writer) => Ending::Closed(writer),
    }
}

/// The next frame, or `None` once the connection ends: the client left, the stream broke
/// or brought a bad frame, the connection idled past its timeout, or the shard stops.
async fn next_frame<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    stopping: &mut LocalBoxFuture<'static, ()>,
    idle: Pin<&mut impl Future<Output = ()>>,
    peer: &str,
) -> Option<Frame> {
    let read = std::pin::pin!(wire::read_frame(reader));
    match select(read, select(stopping, idle)).await {
        Either::Left((Ok(frame), _)) => frame,
        Either::Left((Err(ReadError::Io(e)), _)) => {
            tracing::debug!(%peer, error = %e, "connection read failed");
            None
        }
        Either::Left((Err(ReadError::Frame(e)), _)) => {
            tracing::warn!(%peer, error = %e, "bad frame; closing the connection");
            None
        }
        Either::Right((Either::Right(_), _)) => {
            tracing::debug!(%peer, "idle connection; closing it");
            None
        }
        Either::Right(_) => None,
    }
}

/// What a request's completion needs of its connection.
struct Task {
    shard: Rc<Shard>,
    replies: mpsc::UnboundedSender<Owed>,
    budget: Rc<ReplyBudget>,
    activity: Rc<Activity>,
    permit: glommio::sync::StaticPermit,
}

impl Task {
    /// Awaits a begun request's completion (its reply bytes already counted) and hands
    /// the reply to the writer, settling the count to the reply's size.
    async fn complete(self, begun: handlers::Begun) {
        let reserved = begun.reply_bytes;
        match begun.completion.await {
            Some(reply) => {
                let size =
                    reply.head.len() + reply.data.iter().map(bytes::Bytes::len).sum::<usize>();
                self.budget.settle(reserved, size);
                if let Err(unsent) = self.replies.unbounded_send(Owed { reply, size }) {
                    self.budget.release(unsent.into_inner().size);
                }
            }
            None => self.budget.release(reserved),
        }
        // Idleness counts from the last answer too: a long poll is not idle time.
        self.activity.note();
        drop(self.permit);
        self.shard.end_request();
    }
}

/// A reply and the bytes it counts against its connection's budget.
struct Owed {
    reply: Reply,
    size: usize,
}

impl std::borrow::Borrow<wire::Outgoing> for Owed {
    fn borrow(&self) -> &wire::Outgoing {
        &self.reply
    }
}

/// Writes replies as they come, giving back what each counted once it is written; the
/// writer comes back once every reply is written, unless the stream failed.
async fn write_loop<W: futures::io::AsyncWrite + Unpin>(
    writer: W,
    mut queue: mpsc::UnboundedReceiver<Owed>,
    budget: Rc<ReplyBudget>,
) -> Option<W> {
    let written = |owed: Owed| budget.release(owed.size);
    match wire::write_queue_noting(writer, &mut queue, written).await {
        Ok(writer) => Some(writer),
        Err(e) => {
            tracing::debug!(error = %e, "connection write failed");
            // Keep draining so completions never block on a dead connection.
            while let Some(owed) = queue.next().await {
                budget.release(owed.size);
            }
            None
        }
    }
}
