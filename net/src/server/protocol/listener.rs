//! The accept loop both client front ends share: each accepted connection within the
//! node's `ClientLimits` is served as its own task by the front end's `serve` until the
//! shard is told to stop; past the limit it is closed at once. With TLS on the client
//! listeners (`security::tls`), the loop only takes the current acceptor; the handshake
//! runs in the connection's task ([`open`]), so a slow client delays no one else.

use std::io::{IoSlice, IoSliceMut};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, select};
use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use glommio::net::{Preallocated, TcpStream};

use super::idle::{Activity, Touching};
use super::limits::{ClientLimits, Slot};
use super::moving::Front;
use super::reply_budget::ReplyBudget;
use crate::local_split::{self, LocalReadHalf, LocalWriteHalf};
use crate::server::metrics::{self, Counter};
use crate::server::security::Session;
use crate::server::security::tls::{self, ListenerTls};
use crate::server::shard::Shard;

/// What a connection is served with.
pub(crate) struct Connection {
    /// Its place among the node's connections (given back when dropped).
    pub(crate) slot: Slot,
    pub(crate) idle_timeout: Option<std::time::Duration>,
    pub(crate) budget: Rc<ReplyBudget>,
    /// The TLS configuration current when it was accepted, if the listeners speak TLS.
    pub(crate) tls: Option<TlsAcceptor>,
}

/// Socket receive buffer of a client connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// A buffered client socket.
pub(crate) type Buffered = TcpStream<Preallocated>;

/// A client connection's byte stream: the socket itself, or TLS over it. An enum rather
/// than a boxed trait object so the plain path costs one predictable branch per call.
pub(crate) enum ClientStream {
    Plain(Buffered),
    Tls(Box<TlsStream<Buffered>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read_vectored(cx, bufs),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_close(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// An accepted stream made ready to serve, the same for both front ends.
pub(crate) struct Opened {
    /// The client's address, for logs.
    pub(crate) peer: String,
    /// Reads requests, noting in `activity` every read that brings bytes.
    pub(crate) reader: Touching<LocalReadHalf<ClientStream>>,
    pub(crate) writer: LocalWriteHalf<ClientStream>,
    /// The connection's signs of life: bytes received, answers sent (the idle timeout).
    pub(crate) activity: Rc<Activity>,
    /// Who the connection is: over TLS or not, and the principal its client certificate
    /// names.
    pub(crate) session: Rc<Session>,
}

/// Turns Nagle off (replies are gathered by the writer already), buffers reads and, with
/// `tls`, runs the TLS handshake. `None` if the handshake failed or timed out (counted,
/// logged at debug): the connection is closed.
pub(crate) async fn open(stream: TcpStream, tls: Option<TlsAcceptor>) -> Option<Opened> {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay");
    }
    let buffered = stream.buffered_with(Preallocated::new(READ_BUFFER_BYTES));
    let (stream, session) = match tls {
        None => (ClientStream::Plain(buffered), Session::new(false, None)),
        Some(acceptor) => match tls::handshake(&acceptor, buffered).await {
            Ok((stream, principal)) => {
                if let Some(principal) = &principal {
                    tracing::debug!(%peer, %principal, "TLS client certificate");
                }
                (
                    ClientStream::Tls(Box::new(stream)),
                    Session::new(true, principal),
                )
            }
            Err(e) => {
                metrics::count(Counter::TlsHandshakesFailed);
                tracing::debug!(%peer, error = %e, "TLS handshake failed; closing the connection");
                return None;
            }
        },
    };
    Some(Opened::new(peer, stream, Rc::new(session), Rc::default()))
}

impl Opened {
    /// `stream` split for a reader and a writer task, noting reads in `activity`.
    pub(crate) fn new(
        peer: String,
        stream: ClientStream,
        session: Rc<Session>,
        activity: Rc<Activity>,
    ) -> Opened {
        let (reader, writer) = local_split::split(stream);
        let reader = Touching {
            inner: reader,
            activity: activity.clone(),
        };
        Opened {
            peer,
            reader,
            writer,
            activity,
            session,
        }
    }
}

/// A socket that another shard of this node accepted and served (`moving`), made ready
/// to serve here: Nagle is already off; reads are buffered again.
pub(crate) fn open_moved(stream: TcpStream, session: Session) -> Opened {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let buffered = stream.buffered_with(Preallocated::new(READ_BUFFER_BYTES));
    Opened::new(
        peer,
        ClientStream::Plain(buffered),
        Rc::new(session),
        Rc::default(),
    )
}

/// Serves each connection of `listener` with `front`'s front end, as its own task, until
/// the shard is told to stop; with `tls`, each over TLS with the configuration current at
/// its accept.
pub(crate) async fn accept_until_stopped(
    shard: &Rc<Shard>,
    listener: glommio::net::TcpListener,
    limits: &Arc<ClientLimits>,
    tls: Option<&Arc<ListenerTls>>,
    front: Front,
) {
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
                    tls: tls.map(|tls| tls.acceptor()),
                };
                let serve = super::serve_accepted(front, shard.clone(), stream, connection);
                glommio::spawn_local(serve).detach();
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
