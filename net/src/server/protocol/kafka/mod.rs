//! The Kafka protocol's front end, on the Kafka listener (`--kafka-listen`): Kafka's
//! size-prefixed frames, decoded and encoded with the `kafka-protocol` codecs, each
//! request answered through the operations (`server::ops`) like the shardlog front end.
//!
//! One connection on a shard: the read loop takes frames in order, at most
//! `FRAME_BYTES_MAX` each (a larger size closes the connection: the stream cannot be
//! resynchronised), and begins each request (`dispatch::begin`, the operations' first
//! phase, in request order, so produces to a partition keep their order). Each completion
//! runs as its own task, concurrently with the others; the writer awaits them in request
//! order and writes each reply as it comes, since Kafka clients match replies to requests
//! by order (a long poll delays the replies behind it, as in Kafka). A produce with
//! acks=0 gets no reply at all. A request of an unknown api, of a version not served or
//! that does not decode closes the connection once the replies before it are written.
//!
//! The connection limits, reply budget and idle timeout are the shardlog front end's
//! (`protocol::limits`, `reply_budget`, `idle`; one `ClientLimits` for both listeners).
//! Each request counts its possible reply against the budget from when it is read (a
//! fetch its capped `max_bytes`, at least `FETCH_RESERVE_MIN`), settled to the real size
//! once made and given back once written.

mod api_versions;
mod configs;
pub(crate) mod dispatch;
mod errors;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_ids;
pub(crate) mod request;
mod sasl;
mod topics;
pub(crate) mod versions;

use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, select};
use futures::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

use super::idle::{Activity, idle_past};
use super::listener::{Connection, Opened};
use super::moving::{self, Affinity, Ending};
use super::reply_budget::ReplyBudget;
use crate::server::shard::Shard;
use request::{Answer, KafkaReply};

/// Requests begun and not yet answered, per connection.
const IN_FLIGHT_MAX: u64 = 4096;
/// The largest request frame accepted: Kafka's `socket.request.max.bytes` default.
pub(crate) const FRAME_BYTES_MAX: usize = 100 << 20;
/// Writes below this size are gathered before reaching the socket.
const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// What a frame buffer holds before its bytes arrive; it doubles as they do, so a size
/// that announces 100 MiB costs memory only as the sender sends it.
const FRAME_FIRST_BYTES: usize = 64 << 10;

/// Serves a Kafka connection on this shard until the client leaves, the stream breaks, a
/// request closes it, it idles past `idle_timeout`, the shard stops, or it should move to
/// another shard (`protocol::moving`, which calls this again wherever the connection
/// goes).
pub(crate) async fn serve_here(
    shard: &Rc<Shard>,
    mut opened: Opened,
    connection: &Connection,
) -> Ending {
    let writer = opened.writer;
    let budget = &connection.budget;
    let (replies, queue) = mpsc::unbounded::<glommio::task::JoinHandle<Owed>>();
    let (closed_tx, mut closed) = oneshot::channel::<()>();
    let writer = glommio::spawn_local(write_in_order(writer, queue, budget.clone(), closed_tx));
    let permits = Rc::new(glommio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut stopping = shard.stopping();
    let (mut affinity, mut moving_to) = (Affinity::default(), None);
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
        let room = std::pin::pin!(budget.room());
        if let Either::Right(_) = select(room, select(&mut stopping, &mut closed)).await {
            break;
        }
        let read = std::pin::pin!(read_frame(&mut opened.reader));
        let ends = select(&mut stopping, select(idle.as_mut(), &mut closed));
        let frame = match select(read, ends).await {
            Either::Left((Ok(Some(frame)), _)) => frame,
            Either::Left((Ok(None), _)) => break,
            Either::Left((Err(e), _)) => {
                tracing::debug!(peer = %opened.peer, error = %e, "kafka connection read ended");
                break;
            }
            Either::Right(_) => break,
        };
        let Ok(permit) = permits.acquire_static_permit(1).await else {
            break;
        };
        let alone = permits.available() == IN_FLIGHT_MAX - 1;
        shard.begin_request();
        let begun = dispatch::begin(shard, frame, &opened.session).await;
        affinity.note(begun.owners, alone);
        budget.charge(begun.reply_bytes);
        let task = Task {
            shard: shard.clone(),
            budget: budget.clone(),
            activity: opened.activity.clone(),
            permit,
        };
        let handle = glommio::spawn_local(task.complete(begun)).detach();
        if replies.unbounded_send(handle).is_err() {
            break;
        }
        // Once the task quota is used up, or every 64 requests (`shard::turns`), lets the
        // log's write and the replies go out before the next request is read.
        shard.request_read();
        glommio::yield_if_needed().await;
    }
    drop(replies);
    match (moving_to, writer.await) {
        (Some(to), Some(writer)) => {
            opened.writer = writer;
            Ending::Moving(to, opened)
        }
        (_, writer) => Ending::Closed(writer),
    }
}

/// Why a frame could not be read; the connection closes.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame size {0}: 1 to {FRAME_BYTES_MAX} bytes")]
    Size(i32),
}

/// Reads the next frame (without its size). `Ok(None)` at a clean end of stream.
async fn read_frame<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Bytes>, ReadError> {
    let mut size = [0u8; 4];
    let first = reader.read(&mut size).await?;
    if first == 0 {
        return Ok(None);
    }
    if let Some(rest) = size.get_mut(first..) {
        reader.read_exact(rest).await?;
    }
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size)
        .ok()
        .filter(|len| (1..=FRAME_BYTES_MAX).contains(len))
        .ok_or(ReadError::Size(size))?;
    let mut data = Vec::new();
    while data.len() < len {
        let filled = data.len();
        let target = len.min(filled.saturating_mul(2).max(FRAME_FIRST_BYTES));
        data.reserve_exact(target - filled);
        data.resize(target, 0);
        if let Some(unfilled) = data.get_mut(filled..) {
            reader.read_exact(unfilled).await?;
        }
    }
    Ok(Some(Bytes::from(data)))
}

/// What a request's completion needs of its connection.
struct Task {
    shard: Rc<Shard>,
    budget: Rc<ReplyBudget>,
    activity: Rc<Activity>,
    permit: glommio::sync::StaticPermit,
}

/// A request's answer and the reply bytes it counts until written.
struct Owed {
    answer: Answer,
    size: usize,
}

impl Task {
    /// Awaits a begun request's completion and settles its count to the reply's size.
    async fn complete(self, begun: request::Begun) -> Owed {
        let reserved = begun.reply_bytes;
        let answer = begun.completion.await;
        let size = match &answer {
            Answer::Reply(reply) => reply.size(),
            Answer::Nothing | Answer::Close(_) => 0,
        };
        self.budget.settle(reserved, size);
        // Idleness counts from the last answer too: a long poll is not idle time.
        self.activity.note();
        drop(self.permit);
        self.shard.end_request();
        Owed { answer, size }
    }
}

/// Writes the answers in request order, each once its completion is done, flushing
/// before waiting on one that is not; gives back what each counted once written. On a
/// `Close` answer or a failed write it signals `closed` (the read loop stops) and keeps
/// awaiting the rest without writing, so every completion is settled.
async fn write_in_order<W: AsyncWrite + Unpin>(
    writer: W,
    mut queue: mpsc::UnboundedReceiver<glommio::task::JoinHandle<Owed>>,
    budget: Rc<ReplyBudget>,
    closed: oneshot::Sender<()>,
) -> Option<W> {
    let mut out = Out {
        writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer),
        closed: Some(closed),
    };
    let mut next = None;
    loop {
        let mut handle = match next.take() {
            Some(handle) => handle,
            None => {
                out.flush().await;
                match queue.next().await {
                    Some(handle) => handle,
                    None => break,
                }
            }
        };
        let owed = match futures::poll!(&mut handle) {
            Poll::Ready(owed) => owed,
            Poll::Pending => {
                out.flush().await;
                handle.await
            }
        };
        // `None`: the task was cancelled (the executor is going away).
        if let Some(owed) = owed {
            out.write(&owed.answer).await;
            budget.release(owed.size);
        }
        next = queue.try_recv().ok();
    }
    out.flush().await;
    out.is_open().then(|| out.writer.into_inner())
}

/// The connection's write side; `closed` is taken (and signalled) once it is closed.
struct Out<W: AsyncWrite + Unpin> {
    writer: BufWriter<W>,
    closed: Option<oneshot::Sender<()>>,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    fn is_open(&self) -> bool {
        self.closed.is_some()
    }

    fn close(&mut self) {
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }

    async fn flush(&mut self) {
        if self.is_open()
            && let Err(e) = self.writer.flush().await
        {
            tracing::debug!(error = %e, "kafka connection write failed");
            self.close();
        }
    }

    async fn write(&mut self, answer: &Answer) {
        if !self.is_open() {
            return;
        }
        match answer {
            Answer::Reply(reply) => {
                if let Err(e) = write_reply(&mut self.writer, reply).await {
                    tracing::debug!(error = %e, "kafka connection write failed");
                    self.close();
                }
            }
            Answer::Nothing => {}
            Answer::Close(why) => {
                tracing::info!(why, "closing a kafka connection");
                let _ = self.writer.flush().await;
                self.close();
            }
        }
    }
}

async fn write_reply<W: AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    reply: &KafkaReply,
) -> std::io::Result<()> {
    for piece in &reply.pieces {
        writer.write_all(piece).await?;
    }
    Ok(())
}
