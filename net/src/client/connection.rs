//! One pipelined connection to a broker: any number of requests outstanding, matched to
//! their replies by correlation id. A writer task batches queued frames into few socket
//! writes; a reader task hands each reply to its waiter. When the socket fails, every
//! outstanding request fails with it and the connection is marked dead (the client opens
//! a new one on the next request). Request timeouts are enforced by one sweeper task per
//! connection, not a timer per request: a timer armed and cancelled per request costs
//! io_uring work on every request.
//!
//! Liveness (client connections only, [`Probe`]): a paused or hung broker keeps its socket
//! open, and the kernel keeps accepting (and acknowledging) bytes for it, so nothing fails
//! until each request's own timeout, which must be long (a long-poll fetch waits its
//! `max_wait`, an `acks=all` produce waits for the replicas). So when requests are
//! outstanding and no byte has moved either way for `Probe::after`, the sweeper sends a
//! tiny Metadata request (for the topic named ""), which a live broker answers at once
//! whatever else it is waiting for; if still no byte arrives within `Probe::timeout`, the
//! connection is declared dead and its requests fail with a (retriable) I/O error. Bytes
//! received, and bytes the socket accepted, count as life: a reply or an upload that is
//! merely slow is not mistaken for a dead broker.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use futures::channel::{mpsc, oneshot};
use futures::io::{AsyncRead, AsyncWrite};
use glommio::net::{Preallocated, TcpStream};

use crate::api::{Api, MetadataRequest, VERSION};
use crate::client::ClientError;
use crate::client::tls::ClientTls;
use crate::frame::encode_head;
use crate::wire::{self, Frame, Outgoing};

/// Socket receive buffer: most replies are read from it without a syscall each.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// How often the sweeper looks for requests past their deadline (and for silence).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The correlation id of liveness probes: far above any id a client or a node hands out
/// (they count up from 1), so a probe's reply never meets a waiter.
const PROBE_CORRELATION: u64 = u64::MAX;

type Reply = oneshot::Sender<Result<Frame, ClientError>>;
/// Where a request's reply arrives.
pub(crate) type ReplyReceiver = oneshot::Receiver<Result<Frame, ClientError>>;

/// A request waiting for its reply.
struct Waiter {
    /// When it was queued.
    sent: Instant,
    /// When it fails with `Timeout`.
    deadline: Instant,
    reply: Reply,
}

/// When to suspect a broker that stopped answering; see the module docs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    /// Silence, with requests outstanding, before a probe is sent.
    pub(crate) after: Duration,
    /// How long the probe may go unanswered before the connection is declared dead.
    pub(crate) timeout: Duration,
}

/// How a connection is opened and watched.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// The default time a request may wait for its reply ([`Connection::send`]).
    pub(crate) request_timeout: Duration,
    /// How long connecting may take.
    pub(crate) connect_timeout: Duration,
    /// Liveness probing, if any.
    pub(crate) probe: Option<Probe>,
}

struct Shared {
    waiters: RefCell<HashMap<u64, Waiter>>,
    dead: Cell<bool>,
    addr: String,
    /// Closed when the connection dies, so the writer task ends and the socket is closed
    /// even while a holder keeps the `Connection` (else it would sit in CLOSE-WAIT).
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// The last time a byte was received from the broker or accepted by the socket.
    last_progress: Cell<Instant>,
    /// When the outstanding liveness probe was queued.
    probe_sent: Cell<Option<Instant>>,
}

impl Shared {
    fn fail_all(&self, why: &str) {
        self.fail_all_with(|| {
            ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("{}: {why}", self.addr),
            ))
        });
    }

    /// Marks the connection dead and fails every outstanding request with `error()`.
    fn fail_all_with(&self, error: impl Fn() -> ClientError) {
        self.dead.set(true);
        self.outgoing.close_channel();
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, waiter) in waiters {
            let _ = waiter.reply.send(Err(error()));
        }
    }

    /// Bytes arrived: the broker is alive.
    fn heard(&self) {
        self.last_progress.set(Instant::now());
        self.probe_sent.set(None);
    }

    /// The socket accepted bytes. That proves less (the broker's kernel takes bytes in for
    /// a paused process until its buffers fill), so an outstanding probe is not answered
    /// by it; its wait restarts, since the probe may still be queued behind these bytes
    /// (its own write restarts it too, so it is timed from when it left).
    fn wrote(&self) {
        let now = Instant::now();
        self.last_progress.set(now);
        if self.probe_sent.get().is_some() {
            self.probe_sent.set(Some(now));
        }
    }
}

/// Refuses a socket connected to itself. Dialling `127.0.0.1:P` while nothing listens
/// there, the kernel may pick `P` itself as the source port (when `P` is in the
/// ephemeral range), and the two ends meet in a TCP simultaneous open: the socket then
/// talks to itself and holds the port its peer needs to restart on. Seen with a node
/// redialling a dead peer; dropping the socket frees the port.
pub(crate) fn refuse_self_connection(stream: &TcpStream) -> std::io::Result<()> {
    let (local, peer) = (stream.local_addr()?, stream.peer_addr()?);
    if local == peer {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("connected to itself ({local}): nothing listens there"),
        ));
    }
    Ok(())
}

/// Connects to `addr` within `timeout`: no delay, a receive buffer, and never a socket
/// connected to itself.
pub(crate) async fn connect(
    addr: &str,
    timeout: Duration,
) -> Result<TcpStream<Preallocated>, ClientError> {
    let unreachable = |why: String| ClientError::NoBroker(format!("{addr}: {why}"));
    let target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("the name resolves to no address".to_owned()))?;
    // glommio refuses a zero timeout.
    let timeout = timeout.max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(target, timeout)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    refuse_self_connection(&stream).map_err(|e| unreachable(e.to_string()))?;
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    Ok(stream.buffered_with(Preallocated::new(READ_BUFFER_BYTES)))
}

/// A connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Rc<Shared>,
    timeout: Duration,
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

impl Connection {
    /// Connects to `addr` (over `tls`, if given, the handshake within the connect
    /// timeout too) and starts the reader, writer and sweeper tasks.
    pub(crate) async fn open_with(
        addr: &str,
        options: Options,
        tls: Option<&ClientTls>,
    ) -> Result<Connection, ClientError> {
        let started = Instant::now();
        let stream = connect(addr, options.connect_timeout).await?;
        let Some(tls) = tls else {
            return Connection::over(stream, addr, options);
        };
        let left = options
            .connect_timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let handshake = std::pin::pin!(tls.handshake(stream, addr));
        let timeout = std::pin::pin!(glommio::timer::sleep(left));
        match futures::future::select(handshake, timeout).await {
            futures::future::Either::Left((stream, _)) => Connection::over(stream?, addr, options),
            futures::future::Either::Right(_) => Err(ClientError::NoBroker(format!(
                "{addr}: no TLS handshake within {:?}",
                options.connect_timeout
            ))),
        }
    }

    /// A connection over a stream already connected (and, between peers, authenticated)
    /// to `addr`: starts the reader, writer and sweeper tasks.
    pub(crate) fn over<S>(
        stream: S,
        addr: &str,
        options: Options,
    ) -> Result<Connection, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (reader, writer) = crate::local_split::split(stream);
        let (tx, rx) = mpsc::unbounded();
        let shared = Rc::new(Shared {
            waiters: RefCell::new(HashMap::default()),
            dead: Cell::new(false),
            addr: addr.to_owned(),
            outgoing: tx.clone(),
            last_progress: Cell::new(Instant::now()),
            probe_sent: Cell::new(None),
        });
        let probe = match options.probe {
            Some(probe) => Some((probe, probe_head()?)),
            None => None,
        };
        let writer = Progress {
            inner: writer,
            shared: shared.clone(),
        };
        let reader = Progress {
            inner: reader,
            shared: shared.clone(),
        };
        glommio::spawn_local(write_loop(shared.clone(), writer, rx)).detach();
        glommio::spawn_local(read_loop(shared.clone(), reader)).detach();
        glommio::spawn_local(sweep(Rc::downgrade(&shared), probe)).detach();
        Ok(Connection {
            shared,
            timeout: options.request_timeout,
            outgoing: tx,
        })
    }

    /// Whether the socket failed; a dead connection is replaced.
    pub(crate) fn is_dead(&self) -> bool {
        self.shared.dead.get()
    }

    /// Declares the connection dead: every outstanding request fails with an I/O error
    /// naming `why`, and the socket is closed.
    pub(crate) fn close(&self, why: &str) {
        if !self.is_dead() {
            self.shared.fail_all(why);
        }
    }

    /// Stops waiting for the reply to `correlation` (its caller gave up on it).
    pub(crate) fn forget(&self, correlation: u64) {
        self.shared.waiters.borrow_mut().remove(&correlation);
    }

    /// Queues a request (synchronously: requests leave in call order) and returns the
    /// receiver of its reply, which waits at most the connection's request timeout.
    /// `head` is a frame head from `encode_head` whose correlation is `correlation`.
    pub(crate) fn send(
        &self,
        correlation: u64,
        head: Vec<u8>,
        data: Bytes,
        expect_reply: bool,
    ) -> Result<Option<ReplyReceiver>, ClientError> {
        self.send_within(correlation, head, data, expect_reply, self.timeout)
    }

    /// [`Connection::send`] whose reply waits at most `timeout`.
    pub(crate) fn send_within(
        &self,
        correlation: u64,
        head: Vec<u8>,
        data: Bytes,
        expect_reply: bool,
        timeout: Duration,
    ) -> Result<Option<ReplyReceiver>, ClientError> {
        let chunks = if data.is_empty() {
            Vec::new()
        } else {
            vec![data]
        };
        self.send_chunks_within(correlation, head, chunks, expect_reply, timeout)
    }

    /// [`Connection::send`] of a frame whose data region is `chunks`, back to back (a
    /// ship's batches as the leader's log holds them: written as they are, never joined).
    pub(crate) fn send_chunks(
        &self,
        correlation: u64,
        head: Vec<u8>,
        chunks: Vec<Bytes>,
        expect_reply: bool,
    ) -> Result<Option<ReplyReceiver>, ClientError> {
        self.send_chunks_within(correlation, head, chunks, expect_reply, self.timeout)
    }

    fn send_chunks_within(
        &self,
        correlation: u64,
        head: Vec<u8>,
        chunks: Vec<Bytes>,
        expect_reply: bool,
        timeout: Duration,
    ) -> Result<Option<ReplyReceiver>, ClientError> {
        if self.is_dead() {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("{}: connection closed", self.shared.addr),
            )));
        }
        let receiver = expect_reply.then(|| {
            let (tx, rx) = oneshot::channel();
            let sent = Instant::now();
            let waiter = Waiter {
                sent,
                deadline: sent + timeout,
                reply: tx,
            };
            self.shared.waiters.borrow_mut().insert(correlation, waiter);
            rx
        });
        if self
            .outgoing
            .unbounded_send(Outgoing { head, data: chunks })
            .is_err()
        {
            self.shared.waiters.borrow_mut().remove(&correlation);
            self.shared.fail_all("writer stopped");
            return Err(ClientError::Protocol("connection writer stopped".into()));
        }
        Ok(receiver)
    }
}

/// The head of a liveness probe: Metadata for the topic named "", which no topic is
/// (names are checked at creation), so the answer is one small `UnknownTopic` entry.
fn probe_head() -> Result<Vec<u8>, ClientError> {
    let request = MetadataRequest {
        topics: vec![String::new()],
    };
    let mut head = Vec::new();
    encode_head(
        &mut head,
        Api::Metadata as u16,
        VERSION,
        PROBE_CORRELATION,
        0,
        &request,
        0,
    )
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(head)
}

/// A socket half that notes every byte moved as a sign of life.
struct Progress<S> {
    inner: S,
    shared: Rc<Shared>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Progress<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            self.shared.heard();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Progress<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            // The socket accepts bytes only as the broker's kernel takes them in; a paused
            // broker's buffers fill within a few MiB, so this cannot hide it for long,
            // while a large upload over a slow link keeps counting as progress.
            self.shared.wrote();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Rc<Shared>,
    writer: W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    if let Err(e) = wire::write_queue(writer, &mut queue).await {
        shared.fail_all(&e.to_string());
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Rc<Shared>, mut reader: R) {
    loop {
        match wire::read_frame(&mut reader).await {
            Ok(Some(frame)) => {
                let waiter = shared
                    .waiters
                    .borrow_mut()
                    .remove(&frame.header.correlation);
                if let Some(waiter) = waiter {
                    let _ = waiter.reply.send(Ok(frame));
                }
            }
            Ok(None) => {
                shared.fail_all("closed by the broker");
                return;
            }
            Err(wire::ReadError::Io(e)) if is_tls_failure(&e) => {
                // TLS 1.3 servers check the client's certificate after the client's side
                // of the handshake is done: the refusal arrives as an alert on the first
                // read. It will come again on any retry, so it is no I/O error.
                let reason = e.to_string();
                shared.fail_all_with(|| ClientError::Tls {
                    addr: shared.addr.clone(),
                    reason: reason.clone(),
                });
                return;
            }
            Err(e) => {
                shared.fail_all(&e.to_string());
                return;
            }
        }
    }
}

/// Whether an I/O error of a TLS stream is TLS refusing (a bad certificate, an alert
/// received), rather than the socket failing.
pub(crate) fn is_tls_failure(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

/// Fails every request past its deadline with `Timeout`, and probes a silent broker (see
/// the module docs), until the connection is gone.
async fn sweep(shared: std::rc::Weak<Shared>, probe: Option<(Probe, Vec<u8>)>) {
    loop {
        glommio::timer::sleep(SWEEP_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.dead.get() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<u64> = shared
            .waiters
            .borrow()
            .iter()
            .filter(|(_, waiter)| waiter.deadline <= now)
            .map(|(correlation, _)| *correlation)
            .collect();
        for correlation in expired {
            if let Some(waiter) = shared.waiters.borrow_mut().remove(&correlation) {
                let _ = waiter.reply.send(Err(ClientError::Timeout));
            }
        }
        if let Some((probe, head)) = &probe
            && let Err(why) = check_liveness(&shared, *probe, head, now)
        {
            tracing::debug!(addr = %shared.addr, %why, "declaring a connection dead");
            shared.fail_all(&why);
            return;
        }
    }
}

/// Sends a probe after `probe.after` of silence with requests outstanding; `Err` once a
/// probe went unanswered for `probe.timeout`.
fn check_liveness(shared: &Shared, probe: Probe, head: &[u8], now: Instant) -> Result<(), String> {
    if let Some(sent) = shared.probe_sent.get() {
        let waited = now.saturating_duration_since(sent);
        if waited >= probe.timeout {
            return Err(format!(
                "no reply to a liveness probe within {:?} (the broker stopped answering)",
                probe.timeout
            ));
        }
        return Ok(());
    }
    let Some(oldest) = shared.waiters.borrow().values().map(|w| w.sent).min() else {
        return Ok(());
    };
    let quiet_since = oldest.max(shared.last_progress.get());
    if now.saturating_duration_since(quiet_since) < probe.after {
        return Ok(());
    }
    let queued = shared.outgoing.unbounded_send(Outgoing {
        head: head.to_vec(),
        data: Vec::new(),
    });
    if queued.is_err() {
        return Err("writer stopped".to_owned());
    }
    shared.probe_sent.set(Some(now));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use super::*;

    /// A socket bound to a port and connected to that same port: what the kernel can
    /// hand a client dialling a dead peer's ephemeral port.
    fn self_connected() -> std::net::TcpStream {
        // SAFETY: plain socket calls on a descriptor this function owns; every result is
        // checked, and the descriptor is handed to a TcpStream that closes it.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::sa_family_t::try_from(libc::AF_INET).unwrap();
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap();
            let ptr = (&raw const addr).cast::<libc::sockaddr>();
            assert_eq!(libc::bind(fd, ptr, len), 0);
            let mut bound: libc::sockaddr_in = std::mem::zeroed();
            let mut bound_len = len;
            let bound_ptr = (&raw mut bound).cast::<libc::sockaddr>();
            assert_eq!(libc::getsockname(fd, bound_ptr, &raw mut bound_len), 0);
            assert_eq!(libc::connect(fd, bound_ptr, bound_len), 0, "self-connect");
            std::net::TcpStream::from_raw_fd(fd)
        }
    }

    #[test]
    fn a_socket_connected_to_itself_is_refused() {
        let socket = self_connected();
        assert_eq!(socket.local_addr().unwrap(), socket.peer_addr().unwrap());
        let fd = std::os::fd::IntoRawFd::into_raw_fd(socket);
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                // SAFETY: `fd` was just released by the std stream, so this owns it.
                let stream = unsafe { TcpStream::from_raw_fd(fd) };
                let error = refuse_self_connection(&stream).unwrap_err();
                assert!(error.to_string().contains("connected to itself"), "{error}");
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let normal = TcpStream::connect(listener.local_addr().unwrap())
                    .await
                    .unwrap();
                refuse_self_connection(&normal).unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
