//! Idle client connections: `Touching` notes when a connection last received bytes, and
//! `idle_past` ends once it has had no request in flight and no byte received (nor answer
//! sent) for the idle timeout (a long poll or an acks=all produce outstanding keeps a
//! connection open).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::AsyncRead;

/// Ends once the connection has had no request in flight (`permits` all back, of
/// `in_flight_max`) and no byte received (nor answer sent) for `timeout`; never without
/// one.
pub(crate) async fn idle_past(
    timeout: Option<Duration>,
    active: &Cell<Instant>,
    permits: &glommio::sync::Semaphore,
    in_flight_max: u64,
) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let now = Instant::now();
        let deadline = active.get() + timeout;
        if permits.available() < in_flight_max {
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
pub(crate) struct Touching<R> {
    pub(crate) inner: R,
    pub(crate) active: Rc<Cell<Instant>>,
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
