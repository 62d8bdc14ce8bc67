//! Moving a client connection to the shard its requests go to. Every shard accepts on the
//! client port (SO_REUSEPORT), so a connection lands on whichever shard the kernel picks;
//! a request for a partition another shard owns then crosses to that shard's inbox and its
//! answer crosses back. Unloaded, that hop was about half of a produce's time here (p50
//! about 122 us with it, 70 us without: README, "Issue 15, a seventh sitting").
//!
//! Once [`MOVE_AFTER`] partition requests in a row went to one other shard, each alone in
//! flight on its connection, the connection stops reading, lets what it has in flight be
//! answered, and that shard takes its socket: from then on its requests are served where
//! their partitions live. A client that uses partitions of several shards, or keeps
//! several requests in flight, builds no such streak and stays where it landed
//! ([`Affinity::note`] says why).
//!
//! Only the socket and what the connection has proven (its SASL principal) move, so only a
//! connection without TLS (whose state lives in the stream), between SASL exchanges, with
//! no request in flight and no byte read ahead moves. The requests the client sends
//! meanwhile wait in the kernel's socket buffer and are read by the new shard.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, LocalBoxFuture, select};
use futures::io::{AsyncBufRead, AsyncWriteExt};
use glommio::net::TcpStream;

use super::limits::Slot;
use super::listener::{Buffered, ClientStream, Connection, Opened, open_moved};
use super::reply_budget::ReplyBudget;
use crate::local_split::{self, LocalReadHalf, LocalWriteHalf};
use crate::server::metrics::{self, Counter};
use crate::server::security::{Principal, Session};
use crate::server::shard::{Shard, ShardMsg, owner_shard};

/// Partition requests in a row for one other shard before a connection moves there: a
/// few, so a client that alternates between shards never moves, and each move (which
/// waits for the connection's requests in flight) is paid for by many requests after it.
pub(crate) const MOVE_AFTER: u32 = 16;

/// The shards that own the partitions a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owners {
    /// It names none (metadata, groups, admin): it neither counts nor breaks a streak.
    None,
    /// They all belong to this shard.
    One(usize),
    /// They belong to more than one shard: wherever the connection is, some hop.
    Several,
}

impl Owners {
    /// The owners of `partitions` (topic and partition) on a node of `shards` shards.
    pub(crate) fn of<'a>(
        partitions: impl IntoIterator<Item = (&'a str, u32)>,
        shards: usize,
    ) -> Owners {
        partitions
            .into_iter()
            .fold(Owners::None, |owners, (topic, partition)| {
                let owner = owner_shard(topic, partition, shards);
                match owners {
                    Owners::None => Owners::One(owner),
                    Owners::One(o) if o == owner => owners,
                    Owners::One(_) | Owners::Several => Owners::Several,
                }
            })
    }
}

/// Which shard a connection's latest partition requests went to, and how many in a row.
#[derive(Debug, Default)]
pub(crate) struct Affinity {
    owner: Option<usize>,
    streak: u32,
}

impl Affinity {
    /// Notes a request for partitions of `owners`. `alone`: no other request of the
    /// connection was in flight. A request that was not alone breaks the streak, as one
    /// for several shards does: a pipelining client stays where it landed, since there a
    /// hop puts reading and appending on two threads (with 2 shards and one connection at
    /// 256 in flight, 168k to 182k records/s with the hop against 92k to 139k without:
    /// README, "Issue 15, a sixth sitting").
    pub(crate) fn note(&mut self, owners: Owners, alone: bool) {
        match owners {
            Owners::None => {}
            Owners::One(owner) if alone && self.owner == Some(owner) => {
                self.streak = self.streak.saturating_add(1);
            }
            Owners::One(owner) if alone => (self.owner, self.streak) = (Some(owner), 1),
            Owners::One(_) | Owners::Several => (self.owner, self.streak) = (None, 0),
        }
    }

    /// The shard the connection should move to from shard `here`, if any.
    pub(crate) fn destination(&self, here: usize) -> Option<usize> {
        self.owner
            .filter(|&owner| owner != here && self.streak >= MOVE_AFTER)
    }
}

/// The front end that serves a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Front {
    Shardlog,
    Kafka,
}

/// How a front end's serving of a connection on one shard ended, every reply written.
pub(crate) enum Ending {
    /// The connection is done; its writer if it is still sound, to close.
    Closed(Option<LocalWriteHalf<ClientStream>>),
    /// Its requests go to shard `.0` and none is in flight: it may move there.
    Moving(usize, Opened),
}

/// Serves a connection with `serve_here`, a front end's loop on one shard, until it
/// ends, handing it to the shard each run of the loop asks for.
pub(crate) async fn serve(
    shard: Rc<Shard>,
    front: Front,
    mut opened: Opened,
    mut connection: Connection,
    serve_here: impl AsyncFn(&Rc<Shard>, Opened, &Connection) -> Ending,
) {
    loop {
        match serve_here(&shard, opened, &connection).await {
            Ending::Closed(Some(mut writer)) => {
                let _ = writer.close().await;
                return;
            }
            Ending::Closed(None) => return,
            Ending::Moving(to, stays) => {
                match hand_over(&shard, (front, to), stays, connection).await {
                    Some(back) => (opened, connection) = back,
                    None => return,
                }
            }
        }
    }
}

/// Whether a connection that should move may move now: it runs without TLS, between
/// SASL exchanges, and nothing of the client's is read ahead.
pub(crate) fn may_move(session: &Session, reader: &LocalReadHalf<ClientStream>) -> bool {
    !session.is_tls() && session.between_exchanges() && nothing_read_ahead(reader)
}

/// Whether nothing of the client's is read ahead on `reader`'s stream. Until the next
/// read nothing will be: a connection that waits for its requests in flight before it
/// moves then moves with all its unread bytes in the kernel.
fn nothing_read_ahead(reader: &LocalReadHalf<ClientStream>) -> bool {
    reader.with_stream(|stream| match stream {
        ClientStream::Plain(plain) => matches!(read_ahead(plain), ReadAhead::Nothing),
        ClientStream::Tls(_) => false,
    })
}

/// Waits until none of a connection's `in_flight_max` permits is taken: every request
/// answered (only the socket can move). `false` if the shard stops first.
pub(crate) async fn drained(
    permits: &glommio::sync::Semaphore,
    in_flight_max: u64,
    stopping: &mut LocalBoxFuture<'static, ()>,
) -> bool {
    let all = std::pin::pin!(permits.acquire(in_flight_max));
    matches!(select(all, stopping).await, Either::Left((Ok(_), _)))
}

/// A connection on its way to another shard of this node.
pub(crate) struct Moved {
    /// Who serves it there.
    pub(crate) front: Front,
    /// A descriptor of the connection's socket, its only one once the old stream is gone.
    socket: OwnedFd,
    /// Its place among the node's connections, kept across the move.
    slot: Slot,
    principal: Option<Principal>,
    idle_timeout: Option<Duration>,
    reply_bytes_max: usize,
}

impl Moved {
    /// The connection as the shard it moved to serves it, and by which front end.
    pub(crate) fn arrive(self) -> (Front, Opened, Connection) {
        // SAFETY: `socket` owns the descriptor of a connected TCP socket (`hand_over`
        // cloned it from a glommio stream and closed that stream's own), and the stream
        // built here takes that ownership.
        let stream = unsafe { TcpStream::from_raw_fd(self.socket.into_raw_fd()) };
        let opened = open_moved(stream, Session::new(false, self.principal));
        let connection = Connection {
            slot: self.slot,
            idle_timeout: self.idle_timeout,
            budget: Rc::new(ReplyBudget::new(self.reply_bytes_max)),
            tls: None,
        };
        (self.front, opened, connection)
    }
}

/// Hands `opened` to shard `to`. The caller has waited for every request in flight to be
/// answered and for its writer task to end (`opened.writer` is back). `None` once the
/// connection has left this shard: moved, or closed because the client is gone or `to`
/// is stopping. `Some` gives it back to serve here: the client sent more, and the bytes
/// already read cannot move with the socket.
pub(crate) async fn hand_over(
    shard: &Shard,
    (front, to): (Front, usize),
    opened: Opened,
    connection: Connection,
) -> Option<(Opened, Connection)> {
    let Opened {
        peer,
        reader,
        writer,
        activity,
        session,
    } = opened;
    let stream = local_split::reunite(reader.inner, writer)?;
    let socket = match take_socket(stream, &peer) {
        Taken::Socket(socket) => socket,
        Taken::Stays(stream) => {
            return Some((Opened::new(peer, stream, session, activity), connection));
        }
        Taken::Ended => return None,
    };
    let moved = Moved {
        front,
        socket,
        slot: connection.slot,
        principal: session.principal(),
        idle_timeout: connection.idle_timeout,
        reply_bytes_max: connection.budget.bytes_max(),
    };
    let sent = match shard.inboxes.get(to) {
        Some(inbox) => inbox.send_async(ShardMsg::Connection(moved)).await.is_ok(),
        None => false,
    };
    if sent {
        metrics::count(Counter::ConnectionsMoved);
        tracing::debug!(%peer, ?front, from = shard.id, to, "connection moved to its partitions' shard");
    }
    None
}

/// What [`take_socket`] made of a stream.
enum Taken {
    /// The socket alone, the stream closed.
    Socket(OwnedFd),
    /// The stream, to serve where it is.
    Stays(ClientStream),
    /// Nothing: the client is gone.
    Ended,
}

/// The socket under `stream` without the stream, if nothing of the client's is read ahead.
fn take_socket(mut stream: ClientStream, peer: &str) -> Taken {
    let ClientStream::Plain(plain) = &mut stream else {
        return Taken::Stays(stream);
    };
    match take_plain(plain, peer) {
        PlainSocket::Taken(socket) => Taken::Socket(socket),
        PlainSocket::Stays => Taken::Stays(stream),
        PlainSocket::Ended => Taken::Ended,
    }
}

/// What [`take_plain`] can do with a socket.
pub(crate) enum PlainSocket {
    /// A descriptor of its own; the stream's closes as the stream drops.
    Taken(OwnedFd),
    /// Bytes are read ahead (they cannot go with the socket), or the descriptor could not
    /// be cloned: the stream is served where it is.
    Stays,
    /// The other end closed its side (or the socket failed).
    Ended,
}

/// A descriptor for the socket under `plain` (a client connection or a peer link without
/// TLS), if nothing is read ahead: then dropping `plain` leaves the connection whole.
pub(crate) fn take_plain(plain: &mut Buffered, peer: &str) -> PlainSocket {
    match read_ahead(plain) {
        ReadAhead::Nothing => {}
        ReadAhead::Bytes => return PlainSocket::Stays,
        ReadAhead::Ended => return PlainSocket::Ended,
    }
    // SAFETY: the descriptor is the stream's, open while `plain` is borrowed here; the
    // clone is a descriptor of its own for the same socket.
    let cloned = unsafe { BorrowedFd::borrow_raw(plain.as_raw_fd()) }.try_clone_to_owned();
    match cloned {
        Ok(socket) => PlainSocket::Taken(socket),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "could not move a connection; serving it here");
            PlainSocket::Stays
        }
    }
}

/// What a socket's read buffer holds.
enum ReadAhead {
    /// Nothing: the client's next bytes are still in the kernel.
    Nothing,
    /// Bytes read from the socket and not yet taken.
    Bytes,
    /// The client closed its side (or the socket failed).
    Ended,
}

/// Looks into `stream`'s read buffer without waiting: an empty buffer is refilled only
/// with what the kernel already has.
fn read_ahead(stream: &mut Buffered) -> ReadAhead {
    let waker = futures::task::noop_waker();
    match Pin::new(stream).poll_fill_buf(&mut Context::from_waker(&waker)) {
        Poll::Pending => ReadAhead::Nothing,
        Poll::Ready(Ok(bytes)) if !bytes.is_empty() => ReadAhead::Bytes,
        Poll::Ready(_) => ReadAhead::Ended,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use glommio::net::{Preallocated, TcpListener};

    use super::*;

    /// Bytes read ahead keep a stream where it is; with none the socket comes away whole
    /// (the client's next bytes arrive through it); a closed client ends it.
    #[test]
    fn a_socket_comes_away_only_with_nothing_read_ahead() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let mut client = TcpStream::connect(addr).await.unwrap();
                let buffered =
                    |s: TcpStream| ClientStream::Plain(s.buffered_with(Preallocated::new(1024)));
                let mut stream = buffered(listener.accept().await.unwrap());

                client.write_all(b"abc").await.unwrap();
                let mut first = [0u8; 1];
                stream.read_exact(&mut first).await.unwrap();
                let Taken::Stays(mut stream) = take_socket(stream, "test") else {
                    panic!("moved with \"bc\" read ahead");
                };
                let mut rest = [0u8; 2];
                stream.read_exact(&mut rest).await.unwrap();
                assert_eq!((&first, &rest), (b"a", b"bc"));

                let Taken::Socket(socket) = take_socket(stream, "test") else {
                    panic!("stayed with nothing read ahead");
                };
                client.write_all(b"moved").await.unwrap();
                // SAFETY: `socket` owns the descriptor of the accepted, connected socket.
                let moved = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
                let mut moved = buffered(moved);
                let mut got = [0u8; 5];
                moved.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"moved");
                moved.write_all(b"ok").await.unwrap();
                let mut reply = [0u8; 2];
                client.read_exact(&mut reply).await.unwrap();
                assert_eq!(&reply, b"ok");

                drop(client);
                glommio::timer::sleep(Duration::from_millis(50)).await;
                assert!(matches!(take_socket(moved, "test"), Taken::Ended));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn owners_of_a_request_are_one_shard_or_several() {
        assert_eq!(Owners::of([], 4), Owners::None);
        let one = owner_shard("t", 0, 4);
        assert_eq!(
            Owners::of([("t", 0), ("t", 4), ("t", 8)], 4),
            Owners::One(one)
        );
        assert_eq!(Owners::of([("t", 0), ("t", 1)], 4), Owners::Several);
        assert_eq!(Owners::of([("t", 0), ("t", 1)], 1), Owners::One(0));
    }

    #[test]
    fn a_streak_for_another_shard_moves_and_anything_else_stays() {
        let mut affinity = Affinity::default();
        for _ in 0..MOVE_AFTER - 1 {
            affinity.note(Owners::One(1), true);
            affinity.note(Owners::None, false);
        }
        assert_eq!(affinity.destination(0), None, "one request short");
        affinity.note(Owners::One(1), true);
        assert_eq!(affinity.destination(0), Some(1));
        assert_eq!(affinity.destination(1), None, "already there");

        affinity.note(Owners::One(0), true);
        assert_eq!(affinity.destination(1), None, "the streak is broken");
        let mut alternating = Affinity::default();
        for i in 0..10 * MOVE_AFTER as usize {
            alternating.note(Owners::One(i % 2), true);
            assert_eq!(alternating.destination(2), None);
        }
        let mut mixed = Affinity::default();
        for i in 0..10 * MOVE_AFTER {
            let owners = if i % 8 == 0 {
                Owners::Several
            } else {
                Owners::One(1)
            };
            mixed.note(owners, true);
            assert_eq!(mixed.destination(0), None);
        }
        let mut pipelined = Affinity::default();
        for i in 0..10 * MOVE_AFTER {
            pipelined.note(Owners::One(1), i % 4 != 0);
            assert_eq!(pipelined.destination(0), None);
        }
    }
}
