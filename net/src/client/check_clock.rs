//! One timer for the leader checks of every request in flight (see [`super::leader`]).
//!
//! A check must not start before its request has waited `leader_check_after`, and almost
//! every request is answered long before that. A glommio timer per request cost a clock
//! read and an insert into and a removal from the executor's timer map each: 7% of a
//! producing client's CPU under one-record requests. Here the clock ticks every
//! `leader_check_every` while any request waits, and a request's wait is a slot in a slab
//! that the tick looks at; a check starts between `after` and `after` plus one tick.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;

/// A wait registered with the clock: its tick, and who to wake then.
struct Waiting {
    due: u64,
    waker: Option<Waker>,
}

/// Ticks while any request waits; see the module docs. Shared by a client's requests.
pub(super) struct CheckClock {
    every: Duration,
    ticks: Cell<u64>,
    waiting: RefCell<Slab<Waiting>>,
    ticking: Cell<bool>,
}

impl CheckClock {
    /// A clock of `every` (at least a millisecond) that is not ticking yet.
    pub(super) fn new(every: Duration) -> Rc<CheckClock> {
        Rc::new(CheckClock {
            every: every.max(Duration::from_millis(1)),
            ticks: Cell::new(0),
            waiting: RefCell::new(Slab::new()),
            ticking: Cell::new(false),
        })
    }

    /// Resolves at least `after` from now, and at most one tick later.
    pub(super) fn wait(self: &Rc<Self>, after: Duration) -> CheckWait {
        // The next tick may come at once: one more than `after` spans makes up for it.
        let span = after.as_nanos().div_ceil(self.every.as_nanos());
        let due = self
            .ticks
            .get()
            .saturating_add(u64::try_from(span).unwrap_or(u64::MAX))
            .saturating_add(1);
        CheckWait {
            clock: Rc::clone(self),
            due,
            slot: None,
        }
    }

    /// Ticks every `every` until nothing waits, waking the waits that are due.
    async fn tick(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(self.every).await;
            let now = self.ticks.get() + 1;
            self.ticks.set(now);
            let due: Vec<Waker> = {
                let mut waiting = self.waiting.borrow_mut();
                if waiting.is_empty() {
                    self.ticking.set(false);
                    return;
                }
                waiting
                    .iter_mut()
                    .filter(|(_, wait)| wait.due <= now)
                    .filter_map(|(_, wait)| wait.waker.take())
                    .collect()
            };
            for waker in due {
                waker.wake();
            }
        }
    }

    fn start_ticking(self: &Rc<Self>) {
        if !self.ticking.replace(true) {
            glommio::spawn_local(Rc::clone(self).tick()).detach();
        }
    }
}

/// [`CheckClock::wait`]'s future.
pub(super) struct CheckWait {
    clock: Rc<CheckClock>,
    due: u64,
    slot: Option<usize>,
}

impl Future for CheckWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.ticks.get() >= self.due {
            if let Some(slot) = self.slot.take() {
                self.clock.waiting.borrow_mut().remove(slot);
            }
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        match self.slot {
            Some(slot) => {
                if let Some(wait) = self.clock.waiting.borrow_mut().get_mut(slot) {
                    wait.waker = waker;
                }
            }
            None => {
                let due = self.due;
                let slot = self
                    .clock
                    .waiting
                    .borrow_mut()
                    .insert(Waiting { due, waker });
                self.slot = Some(slot);
                self.clock.start_ticking();
            }
        }
        Poll::Pending
    }
}

impl Drop for CheckWait {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.clock.waiting.borrow_mut().remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn on_executor<Fut: Future<Output = ()> + 'static>(test: fn() -> Fut) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(test)
            .expect("executor")
            .join()
            .expect("executor thread");
    }

    #[test]
    fn a_wait_ends_after_its_time_and_within_a_tick_more() {
        on_executor(|| async {
            let clock = CheckClock::new(Duration::from_millis(20));
            for after in [
                Duration::ZERO,
                Duration::from_millis(50),
                Duration::from_millis(100),
            ] {
                let started = Instant::now();
                clock.wait(after).await;
                let took = started.elapsed();
                assert!(took >= after, "{after:?}: {took:?}");
                // A tick of slack for the executor, beside the tick the wait may add.
                assert!(
                    took < after + Duration::from_millis(40) + Duration::from_millis(200),
                    "{after:?}: {took:?}"
                );
            }
        });
    }

    #[test]
    fn the_clock_stops_once_nothing_waits_and_waits_dropped_early_leave_no_slot() {
        on_executor(|| async {
            let clock = CheckClock::new(Duration::from_millis(5));
            {
                let mut early = Box::pin(clock.wait(Duration::from_secs(60)));
                let polled = futures::poll!(early.as_mut());
                assert!(polled.is_pending());
                assert_eq!(clock.waiting.borrow().len(), 1);
                assert!(clock.ticking.get());
            }
            assert_eq!(
                clock.waiting.borrow().len(),
                0,
                "a dropped wait leaves no slot"
            );
            let waits: Vec<_> = (0..100)
                .map(|_| clock.wait(Duration::from_millis(10)))
                .collect();
            futures::future::join_all(waits).await;
            assert_eq!(clock.waiting.borrow().len(), 0);
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert!(!clock.ticking.get(), "nothing waits: no more ticks");
            let ticks = clock.ticks.get();
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert_eq!(clock.ticks.get(), ticks);
            // And it starts again for the next wait.
            clock.wait(Duration::from_millis(10)).await;
            assert!(clock.ticks.get() > ticks);
        });
    }
}
