//! A fault-injecting TCP proxy for one directed pair of nodes: node A's `--peers` names
//! the proxy as node B's address, and the proxy copies bytes both ways between A's
//! connections and B's real listen address (a thread per direction per connection).
//!
//! [`Proxy::cut`] is a network partition: the connections it carries are shut down, and
//! new ones are accepted but black-holed (read and thrown away, nothing forwarded or
//! answered) until [`Proxy::heal`], which closes the black-holed ones so the node opens
//! fresh links. Plain blocking std sockets: this runs on test threads (and the threads of
//! `shardlog-bench soak`), never on an executor.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the proxy waits to connect to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Every socket the proxy holds (both ends of each forwarded connection, and the
    /// black-holed ones), so `cut`, `heal` and drop can shut them down.
    forwarded: Mutex<Vec<TcpStream>>,
    blackholed: Mutex<Vec<TcpStream>>,
}

impl State {
    fn shut_all(sockets: &Mutex<Vec<TcpStream>>) {
        let sockets = std::mem::take(&mut *lock(sockets));
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// A proxy listening on 127.0.0.1 and forwarding to `target`.
pub struct Proxy {
    /// Where it listens: the address to give the node that should go through it.
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let accepting = state.clone();
        std::thread::spawn(move || accept_loop(&listener, target, &accepting));
        Ok(Proxy { addr, state })
    }

    /// Whether the proxy is cut.
    #[must_use]
    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// Partitions: shuts the carried connections down and black-holes new ones.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        State::shut_all(&self.state.forwarded);
    }

    /// Ends the partition: closes the black-holed connections (their node reconnects)
    /// and forwards new ones again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        State::shut_all(&self.state.blackholed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        State::shut_all(&self.state.forwarded);
        State::shut_all(&self.state.blackholed);
        // Wakes the accept loop so it sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, state: &Arc<State>) {
    for incoming in listener.incoming() {
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(incoming) = incoming else {
            continue;
        };
        let _ = incoming.set_nodelay(true);
        if state.cut.load(Ordering::SeqCst) {
            blackhole(incoming, state);
            continue;
        }
        let Ok(outgoing) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            // The target is down: the node sees its connection closed, as it would.
            continue;
        };
        let _ = outgoing.set_nodelay(true);
        let (Ok(a), Ok(b)) = (incoming.try_clone(), outgoing.try_clone()) else {
            continue;
        };
        {
            let mut forwarded = lock(&state.forwarded);
            forwarded.push(a);
            forwarded.push(b);
        }
        // A cut between the check above and the registration would miss this one.
        if state.cut.load(Ordering::SeqCst) {
            State::shut_all(&state.forwarded);
        }
        copy_both_ways(incoming, outgoing);
    }
}

/// Reads and drops everything the node sends on `socket` until `heal` closes it.
fn blackhole(socket: TcpStream, state: &Arc<State>) {
    let Ok(registered) = socket.try_clone() else {
        return;
    };
    lock(&state.blackholed).push(registered);
    std::thread::spawn(move || {
        let mut socket = socket;
        let mut buf = vec![0u8; 64 << 10];
        while matches!(socket.read(&mut buf), Ok(n) if n > 0) {}
    });
}

fn copy_both_ways(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    std::thread::spawn(move || copy(a, b));
    std::thread::spawn(move || copy(b2, a2));
}

/// Copies `from` to `to` until either fails or ends, then shuts both down (so the other
/// direction's thread ends too).
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// The sockets behind `sockets`: a thread that panicked holding the lock left them whole.
fn lock(sockets: &Mutex<Vec<TcpStream>>) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
    sockets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
