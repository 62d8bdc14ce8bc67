//! One pipelined connection to a broker: any number of requests outstanding, matched to
//! their replies by correlation id. A writer task batches queued frames into few socket
//! writes; a reader task hands each reply to its waiter. When the socket fails, every
//! outstanding request fails with it and the connection is marked dead (the client opens
//! a new one on the next request). Request timeouts are enforced by one sweeper task per
//! connection, not a timer per request: a timer armed and cancelled per request costs
//! io_uring work on every request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::io::AsyncReadExt;
use glommio::net::{Preallocated, TcpStream};

use crate::client::ClientError;
use crate::wire::{self, Frame, Outgoing};

/// Socket receive buffer: most replies are read from it without a syscall each.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// How often the sweeper looks for requests past their deadline.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

type Reply = oneshot::Sender<Result<Frame, ClientError>>;
/// Where a request's reply arrives.
pub(crate) type ReplyReceiver = oneshot::Receiver<Result<Frame, ClientError>>;
type Waiters = RefCell<HashMap<u64, (Instant, Reply)>>;

struct Shared {
    waiters: Waiters,
    dead: Cell<bool>,
    addr: String,
    /// Closed when the connection dies, so the writer task ends and the socket is closed
    /// even while a holder keeps the `Connection` (else it would sit in CLOSE-WAIT).
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

impl Shared {
    fn fail_all(&self, why: &str) {
        self.dead.set(true);
        self.outgoing.close_channel();
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, (_, waiter)) in waiters {
            let _ = waiter.send(Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("{}: {why}", self.addr),
            ))));
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

/// A connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Rc<Shared>,
    timeout: Duration,
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

impl Connection {
    /// Connects to `addr` and starts the reader and writer tasks.
    pub(crate) async fn open(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::NoBroker(format!("{addr}: {e}")))?;
        refuse_self_connection(&stream)
            .map_err(|e| ClientError::NoBroker(format!("{addr}: {e}")))?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        let stream = stream.buffered_with(Preallocated::new(READ_BUFFER_BYTES));
        let (reader, writer) = stream.split();
        let (tx, rx) = mpsc::unbounded();
        let shared = Rc::new(Shared {
            waiters: RefCell::new(HashMap::new()),
            dead: Cell::new(false),
            addr: addr.to_owned(),
            outgoing: tx.clone(),
        });
        glommio::spawn_local(write_loop(shared.clone(), writer, rx)).detach();
        glommio::spawn_local(read_loop(shared.clone(), reader)).detach();
        glommio::spawn_local(sweep(Rc::downgrade(&shared))).detach();
        Ok(Connection {
            shared,
            timeout,
            outgoing: tx,
        })
    }

    /// Whether the socket failed; a dead connection is replaced.
    pub(crate) fn is_dead(&self) -> bool {
        self.shared.dead.get()
    }

    /// Queues a request (synchronously: requests leave in call order) and returns the
    /// receiver of its reply. `head` is a frame head from `encode_head` whose correlation
    /// is `correlation`.
    pub(crate) fn send(
        &self,
        correlation: u64,
        head: Vec<u8>,
        data: Bytes,
        expect_reply: bool,
    ) -> Result<Option<ReplyReceiver>, ClientError> {
        if self.is_dead() {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("{}: connection closed", self.shared.addr),
            )));
        }
        let receiver = expect_reply.then(|| {
            let (tx, rx) = oneshot::channel();
            let deadline = Instant::now() + self.timeout;
            self.shared
                .waiters
                .borrow_mut()
                .insert(correlation, (deadline, tx));
            rx
        });
        if self
            .outgoing
            .unbounded_send(Outgoing {
                head,
                data: if data.is_empty() {
                    Vec::new()
                } else {
                    vec![data]
                },
            })
            .is_err()
        {
            self.shared.waiters.borrow_mut().remove(&correlation);
            self.shared.fail_all("writer stopped");
            return Err(ClientError::Protocol("connection writer stopped".into()));
        }
        Ok(receiver)
    }
}

async fn write_loop<W: futures::io::AsyncWrite + Unpin>(
    shared: Rc<Shared>,
    writer: W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    if let Err(e) = wire::write_queue(writer, &mut queue).await {
        shared.fail_all(&e.to_string());
    }
}

async fn read_loop<R: futures::io::AsyncRead + Unpin>(shared: Rc<Shared>, mut reader: R) {
    loop {
        match wire::read_frame(&mut reader).await {
            Ok(Some(frame)) => {
                let waiter = shared
                    .waiters
                    .borrow_mut()
                    .remove(&frame.header.correlation);
                if let Some((_, waiter)) = waiter {
                    let _ = waiter.send(Ok(frame));
                }
            }
            Ok(None) => {
                shared.fail_all("closed by the broker");
                return;
            }
            Err(e) => {
                shared.fail_all(&e.to_string());
                return;
            }
        }
    }
}

/// Fails every request past its deadline with `Timeout`, until the connection is gone.
async fn sweep(shared: std::rc::Weak<Shared>) {
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
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(correlation, _)| *correlation)
            .collect();
        for correlation in expired {
            if let Some((_, waiter)) = shared.waiters.borrow_mut().remove(&correlation) {
                let _ = waiter.send(Err(ClientError::Timeout));
            }
        }
    }
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
