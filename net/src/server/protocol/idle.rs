//! Idle client connections: `Touching` counts the reads that brought bytes, the request
//! tasks count the answers they send (`Activity`), and `idle_past` ends once a connection
//! has had no request in flight and neither count moved for the idle timeout (a long poll
//! or an acks=all produce outstanding keeps a connection open).

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::AsyncRead;

/// How often per timeout `idle_past` looks at a connection: it is closed between the
/// timeout and 9/8 of it after its last byte received or answer sent.
const LOOKS_PER_TIMEOUT: u32 = 8;

/// Signs of life on a connection, counted rather than timed: reading the clock on every
/// socket read cost 3% of a shard's CPU under one small request per read (README, "Issue
/// 15, a sixth sitting"), while `idle_past` needs to know only whether any came.
#[derive(Debug, Default)]
pub(crate) struct Activity(Cell<u64>);

impl Activity {
    /// Notes a sign of life: bytes received, an answer sent.
    pub(crate) fn note(&self) {
        self.0.set(self.0.get().wrapping_add(1));
    }

    fn count(&self) -> u64 {
        self.0.get()
    }
}

/// Ends once the connection has had no request in flight (`permits` all back, of
/// `in_flight_max`) and no sign of life (`activity`) for `timeout`, looked at
/// `LOOKS_PER_TIMEOUT` times per timeout; never without one.
pub(crate) async fn idle_past(
    timeout: Option<Duration>,
    activity: &Activity,
    permits: &glommio::sync::Semaphore,
    in_flight_max: u64,
) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    // Rounded up, so that LOOKS_PER_TIMEOUT looks span the whole timeout.
    let look = timeout / LOOKS_PER_TIMEOUT + Duration::from_nanos(1);
    let (mut seen, mut quiet_since) = (activity.count(), Instant::now());
    loop {
        glommio::timer::sleep(look).await;
        let now = Instant::now();
        let count = activity.count();
        if count != seen || permits.available() < in_flight_max {
            (seen, quiet_since) = (count, now);
        } else if now.duration_since(quiet_since) >= timeout {
            return;
        }
    }
}

/// A reader that notes every read that brought bytes.
pub(crate) struct Touching<R> {
    pub(crate) inner: R,
    pub(crate) activity: std::rc::Rc<Activity>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Touching<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.note();
        }
        polled
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::rc::Rc;

    use super::*;

    /// A quiet connection ends between the timeout and 9/8 of it (plus timer slack); signs
    /// of life, or a request in flight, keep it open, and the timeout counts from the last.
    #[test]
    fn idle_past_counts_from_the_last_sign_of_life() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let timeout = Duration::from_millis(80);
                let permits = Rc::new(glommio::sync::Semaphore::new(4));
                let activity = Rc::new(Activity::default());

                let start = Instant::now();
                idle_past(Some(timeout), &activity, &permits, 4).await;
                let quiet = start.elapsed();
                assert!(quiet >= timeout && quiet < timeout * 2, "{quiet:?}");

                let noting = {
                    let activity = activity.clone();
                    glommio::spawn_local(async move {
                        for _ in 0..10 {
                            glommio::timer::sleep(Duration::from_millis(20)).await;
                            activity.note();
                        }
                        Instant::now()
                    })
                };
                idle_past(Some(timeout), &activity, &permits, 4).await;
                let last = noting.await;
                let after_last = last.elapsed();
                assert!(
                    after_last >= timeout,
                    "ended {after_last:?} after the last note"
                );

                permits.acquire(1).await.unwrap();
                // A request in flight for longer than the timeout, answered (a note, as a
                // request task does) and its permit given back.
                let release = {
                    let (permits, activity) = (permits.clone(), activity.clone());
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_millis(200)).await;
                        activity.note();
                        permits.signal(1);
                        Instant::now()
                    })
                };
                idle_past(Some(timeout), &activity, &permits, 4).await;
                let released = release.await;
                assert!(
                    released.elapsed() >= timeout,
                    "ended with a request in flight"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
