//! The accept loop both client front ends share: each accepted connection within the
//! node's `ClientLimits` is served as its own task by the front end's `serve` until the
//! shard is told to stop; past the limit it is closed at once.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{Either, select};
use futures::io::{AsyncReadExt, ReadHalf, WriteHalf};
use glommio::net::{Preallocated, TcpStream};

use super::idle::Touching;
use super::limits::{ClientLimits, Slot};
use super::reply_budget::ReplyBudget;
use crate::server::metrics::{self, Counter};
use crate::server::shard::Shard;

/// What a connection is served with.
pub(crate) struct Connection {
    /// Its place among the node's connections (given back when dropped).
    pub(crate) slot: Slot,
    pub(crate) idle_timeout: Option<std::time::Duration>,
    pub(crate) budget: Rc<ReplyBudget>,
}

/// Socket receive buffer of a client connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// A buffered client stream.
type Buffered = TcpStream<Preallocated>;

/// An accepted stream made ready to serve, the same for both front ends.
pub(crate) struct Opened {
    /// The client's address, for logs.
    pub(crate) peer: String,
    /// Reads requests, noting in `active` when bytes arrive.
    pub(crate) reader: Touching<ReadHalf<Buffered>>,
    pub(crate) writer: WriteHalf<Buffered>,
    /// When the connection last received bytes or sent an answer (the idle timeout).
    pub(crate) active: Rc<Cell<Instant>>,
}

/// Turns Nagle off (replies are gathered by the writer already) and buffers reads.
pub(crate) fn open(stream: TcpStream) -> Opened {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay");
    }
    let (reader, writer) = stream
        .buffered_with(Preallocated::new(READ_BUFFER_BYTES))
        .split();
    let active = Rc::new(Cell::new(Instant::now()));
    let reader = Touching {
        inner: reader,
        active: active.clone(),
    };
    Opened {
        peer,
        reader,
        writer,
        active,
    }
}

/// Serves each connection of `listener` with `serve`, as its own task, until the shard is
/// told to stop.
pub(crate) async fn accept_until_stopped<F, S>(
    shard: &Rc<Shard>,
    listener: glommio::net::TcpListener,
    limits: &Arc<ClientLimits>,
    serve: S,
) where
    S: Fn(Rc<Shard>, TcpStream, Connection) -> F,
    F: Future<Output = ()> + 'static,
{
    let mut stopping = shard.stopping();
    loop {
        match select(std::pin::pin!(listener.accept()), &mut stopping).await {
            Either::Left((Ok(stream), _)) => {
                // Past the limit the stream is dropped here: the client sees it closed.
                let Some(slot) = limits.admit() else {
                    metrics::count(Counter::ConnectionsRefused);
                    continue;
                };
                metrics::count(Counter::ConnectionsAccepted);
                let connection = Connection {
                    slot,
                    idle_timeout: limits.idle_timeout,
                    budget: Rc::new(ReplyBudget::new(limits.reply_bytes_max)),
                };
                glommio::spawn_local(serve(shard.clone(), stream, connection)).detach();
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
