//! `Signal`: wakes every task waiting for the log's state to change (a flush finished,
//! a roll ended). Single-threaded: the shard that owns the log owns its signal.
//!
//! A waiter checks its condition, then awaits [`Signal::changed`]; no notification can
//! slip between the check and the wait, because on one thread another task only runs
//! once this one yields, and the future registers on its first poll.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A notify-all event.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Resolves after the next [`Signal::notify_all`].
    pub(crate) fn changed(&self) -> Changed<'_> {
        Changed {
            signal: self,
            generation: self.generation.get(),
        }
    }
}

/// Future of [`Signal::changed`].
pub(crate) struct Changed<'a> {
    signal: &'a Signal,
    generation: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
