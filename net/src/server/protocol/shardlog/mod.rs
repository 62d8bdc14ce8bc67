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
//! Reply bytes per connection are bounded (`ReplyBudget`, `--connection-reply-bytes`):
//! each request counts the reply it may bring from when it is read (a fetch its
//! `max_bytes`), settled to the reply's real size once made and given back once the
//! reply is written to the socket. While the count is at the budget the connection reads
//! no request, so a client that sends fetches and never reads the replies holds at most
//! the budget (plus the requests already begun) in the server, and its requests wait in
//! the socket buffers (TCP pushes back on it), not in memory.
//!
//! `ClientLimits`, shared by every shard (each accepts on the same port): past
//! `max_connections` open on the node, a new connection is accepted and closed at once;
//! a connection with no request in flight and no byte received for `idle_timeout` is
//! closed (a long poll or an acks=all produce outstanding keeps it open).

mod groups;
pub(crate) mod handlers;
pub(crate) mod reply;

use std::cell::Cell;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{Either, select};
use futures::io::{AsyncRead, AsyncReadExt};
use glommio::net::{Preallocated, TcpStream};

use crate::server::shard::Shard;
use crate::wire::{self, ReadError};
use reply::Reply;

/// Requests begun and not yet answered, per connection.
const IN_FLIGHT_MAX: u64 = 4096;
/// Socket receive buffer.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// The client listener's limits, one for the node, shared by its shards.
#[derive(Debug)]
pub(crate) struct ClientLimits {
    max_connections: usize,
    idle_timeout: Option<Duration>,
    /// Reply bytes one connection may owe before it stops reading requests.
    reply_bytes_max: usize,
    /// Connections open on the node.
    open: AtomicUsize,
    /// Refusals since the last warning.
    refused: AtomicU64,
    /// When the last refusal was logged, ms since `since` (`u64::MAX`: never).
    warned_at_ms: AtomicU64,
    since: Instant,
}

impl ClientLimits {
    pub(crate) fn new(
        max_connections: usize,
        idle_timeout: Option<Duration>,
        reply_bytes_max: usize,
    ) -> ClientLimits {
        ClientLimits {
            max_connections,
            idle_timeout,
            reply_bytes_max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            warned_at_ms: AtomicU64::new(u64::MAX),
            since: Instant::now(),
        }
    }

    /// A slot for a new connection, or `None` when the node has `max_connections` open.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before < self.max_connections {
            return Some(Slot(self.clone()));
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now_ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let warned = self.warned_at_ms.load(Ordering::Relaxed);
        let due = warned == u64::MAX || now_ms.saturating_sub(warned) >= 1000;
        if due
            && self
                .warned_at_ms
                .compare_exchange(warned, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.max_connections,
                refused = self.refused.swap(0, Ordering::Relaxed),
                "client connection limit reached: closing new connections \
                 (--max-connections)"
            );
        }
        None
    }
}

/// An open connection's place in `ClientLimits::open`, given back on drop.
struct Slot(Arc<ClientLimits>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves each connection of the client listener as its own task until the shard is
/// told to stop.
pub(crate) async fn accept_until_stopped(
    shard: &Rc<Shard>,
    listener: glommio::net::TcpListener,
    limits: &Arc<ClientLimits>,
) {
    let mut stopping = shard.stopping();
    loop {
        match select(std::pin::pin!(listener.accept()), &mut stopping).await {
            Either::Left((Ok(stream), _)) => {
                // Past the limit the stream is dropped here: the client sees it closed.
                if let Some(slot) = limits.admit() {
                    let connection = Connection {
                        slot,
                        idle_timeout: limits.idle_timeout,
                        budget: Rc::new(ReplyBudget::new(limits.reply_bytes_max)),
                    };
                    glommio::spawn_local(serve(shard.clone(), stream, connection)).detach();
                }
            }
            Either::Left((Err(e), _)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
            Either::Right(_) => break,
        }
    }
}

/// What a connection is served with.
struct Connection {
    /// Its place among the node's connections.
    slot: Slot,
    idle_timeout: Option<Duration>,
    budget: Rc<ReplyBudget>,
}

/// Serves a connection until the client leaves, the stream breaks, it idles past
/// `idle_timeout`, or the shard stops.
async fn serve(shard: Rc<Shard>, stream: TcpStream, connection: Connection) {
    let Connection {
        slot,
        idle_timeout,
        budget,
    } = connection;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay");
    }
    let stream = stream.buffered_with(Preallocated::new(READ_BUFFER_BYTES));
    let (reader, writer) = stream.split();
    let active = Rc::new(Cell::new(Instant::now()));
    let mut reader = Touching {
        inner: reader,
        active: active.clone(),
    };
    let (replies, queue) = mpsc::unbounded::<Owed>();
    let writer = glommio::spawn_local(write_loop(writer, queue, budget.clone()));
    let permits = Rc::new(glommio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut stopping = shard.stopping();
    let mut idle = std::pin::pin!(idle_past(idle_timeout, &active, &permits));
    loop {
        // Replies owed up to the budget: read nothing more until the client reads some.
        let room = std::pin::pin!(budget.room());
        if let Either::Right(_) = select(room, &mut stopping).await {
            break;
        }
        let read = std::pin::pin!(wire::read_frame(&mut reader));
        let frame = match select(read, select(&mut stopping, idle.as_mut())).await {
            Either::Left((Ok(Some(frame)), _)) => frame,
            Either::Left((Ok(None), _)) => break,
            Either::Left((Err(ReadError::Io(e)), _)) => {
                tracing::debug!(%peer, error = %e, "connection read failed");
                break;
            }
            Either::Left((Err(ReadError::Frame(e)), _)) => {
                tracing::warn!(%peer, error = %e, "bad frame; closing the connection");
                break;
            }
            Either::Right((Either::Right(_), _)) => {
                tracing::debug!(%peer, "idle connection; closing it");
                break;
            }
            Either::Right(_) => break,
        };
        let Ok(permit) = permits.acquire_static_permit(1).await else {
            break;
        };
        shard.begin_request();
        let begun = handlers::begin(&shard, frame, &peer).await;
        // Counted before the next read, so the next `room` sees it.
        budget.charge(begun.reply_bytes);
        let task = Task {
            shard: shard.clone(),
            replies: replies.clone(),
            budget: budget.clone(),
            active: active.clone(),
            permit,
        };
        glommio::spawn_local(task.complete(begun)).detach();
    }
    // Replies still owed go out; the writer ends when the last completion is done.
    drop(replies);
    writer.await;
    drop(slot);
}

/// What a request's completion needs of its connection.
struct Task {
    shard: Rc<Shard>,
    replies: mpsc::UnboundedSender<Owed>,
    budget: Rc<ReplyBudget>,
    active: Rc<Cell<Instant>>,
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
        self.active.set(Instant::now());
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

/// Reply bytes a connection owes (see the module docs): counted when a request is read,
/// settled to the reply's size once it is made, given back once it is written. Owned by
/// the connection's tasks on one shard.
struct ReplyBudget {
    bytes_max: usize,
    owed: Cell<usize>,
    /// The read loop, waiting for room.
    reader: Cell<Option<Waker>>,
}

impl ReplyBudget {
    fn new(bytes_max: usize) -> ReplyBudget {
        ReplyBudget {
            bytes_max,
            owed: Cell::new(0),
            reader: Cell::new(None),
        }
    }

    fn charge(&self, bytes: usize) {
        self.owed.set(self.owed.get() + bytes);
    }

    fn release(&self, bytes: usize) {
        let owed = self.owed.get();
        assert!(owed >= bytes, "released {bytes} of {owed} owed");
        self.owed.set(owed - bytes);
        if self.owed.get() < self.bytes_max
            && let Some(reader) = self.reader.take()
        {
            reader.wake();
        }
    }

    /// Replaces the count of a request (`reserved`) with its reply's `size`.
    fn settle(&self, reserved: usize, size: usize) {
        if size >= reserved {
            self.charge(size - reserved);
        } else {
            self.release(reserved - size);
        }
    }

    /// Resolves once less than the budget is owed.
    async fn room(&self) {
        poll_fn(|cx| {
            if self.owed.get() < self.bytes_max {
                Poll::Ready(())
            } else {
                self.reader.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }
}

/// Ends once the connection has had no request in flight and no byte received (nor
/// answer sent) for `timeout`; never without one.
async fn idle_past(
    timeout: Option<Duration>,
    active: &Cell<Instant>,
    permits: &glommio::sync::Semaphore,
) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let now = Instant::now();
        let deadline = active.get() + timeout;
        if permits.available() < IN_FLIGHT_MAX {
            // Requests outstanding: not idle; look again later.
            glommio::timer::sleep(timeout).await;
        } else if now >= deadline {
            return;
        } else {
            glommio::timer::sleep(deadline - now).await;
        }
    }
}

/// A reader that notes when it last received bytes.
struct Touching<R> {
    inner: R,
    active: Rc<Cell<Instant>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Touching<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.active.set(Instant::now());
        }
        polled
    }
}

/// Writes replies as they come, giving back what each counted once it is written.
async fn write_loop<W: futures::io::AsyncWrite + Unpin>(
    writer: W,
    mut queue: mpsc::UnboundedReceiver<Owed>,
    budget: Rc<ReplyBudget>,
) {
    let written = |owed: Owed| budget.release(owed.size);
    if let Err(e) = wire::write_queue_noting(writer, &mut queue, written).await {
        tracing::debug!(error = %e, "connection write failed");
        // Keep draining so completions never block on a dead connection.
        while let Some(owed) = queue.next().await {
            budget.release(owed.size);
        }
    }
}
