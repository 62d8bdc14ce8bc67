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

pub(crate) mod handlers;
pub(crate) mod reply;

use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{Either, select};
use futures::io::AsyncReadExt;
use glommio::net::{Preallocated, TcpStream};

use crate::server::shard::Shard;
use crate::wire::{self, ReadError};
use reply::Reply;

/// Requests begun and not yet answered, per connection.
const IN_FLIGHT_MAX: u64 = 4096;
/// Socket receive buffer.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Serves each connection of the client listener as its own task until the shard is
/// told to stop.
pub(crate) async fn accept_until_stopped(shard: &Rc<Shard>, listener: glommio::net::TcpListener) {
    let mut stopping = shard.stopping();
    loop {
        match select(std::pin::pin!(listener.accept()), &mut stopping).await {
            Either::Left((Ok(stream), _)) => {
                glommio::spawn_local(serve(shard.clone(), stream)).detach();
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

/// Serves a connection until the client leaves, the stream breaks, or the shard stops.
async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay");
    }
    let stream = stream.buffered_with(Preallocated::new(READ_BUFFER_BYTES));
    let (mut reader, writer) = stream.split();
    let (replies, queue) = mpsc::unbounded::<Reply>();
    let writer = glommio::spawn_local(write_loop(writer, queue));
    let permits = Rc::new(glommio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut stopping = shard.stopping();
    loop {
        let frame = match select(std::pin::pin!(wire::read_frame(&mut reader)), &mut stopping).await
        {
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
            Either::Right(_) => break,
        };
        let Ok(permit) = permits.acquire_static_permit(1).await else {
            break;
        };
        shard.begin_request();
        let completion = handlers::begin(&shard, frame).await;
        let replies = replies.clone();
        let task_shard = shard.clone();
        glommio::spawn_local(async move {
            if let Some(reply) = completion.await {
                let _ = replies.unbounded_send(reply);
            }
            drop(permit);
            task_shard.end_request();
        })
        .detach();
    }
    // Replies still owed go out; the writer ends when the last completion is done.
    drop(replies);
    writer.await;
}

async fn write_loop<W: futures::io::AsyncWrite + Unpin>(
    writer: W,
    mut queue: mpsc::UnboundedReceiver<Reply>,
) {
    if let Err(e) = wire::write_queue(writer, &mut queue).await {
        tracing::debug!(error = %e, "connection write failed");
        // Keep draining so completions never block on a dead connection.
        while queue.next().await.is_some() {}
    }
}
