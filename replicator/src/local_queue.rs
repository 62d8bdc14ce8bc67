//! `LocalQueue`: a single-threaded FIFO with one consumer task, for the driver's action
//! and flush queues. A `futures::channel::mpsc` channel allocates a node for every
//! message (it is built for senders on other threads); this one keeps its items in a
//! `VecDeque` whose buffer is reused, so a produce costs the queue nothing once it has
//! grown to the depth in flight.
//!
//! `!Send`, like the driver that owns it. Unbounded, as the channels it replaces: what
//! enters it is bounded by the requests in flight, which the connections bound.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Poll, Waker};

/// A FIFO from any task of one thread to one consumer task. See the module docs.
#[derive(Debug)]
pub(crate) struct LocalQueue<T> {
    items: RefCell<VecDeque<T>>,
    /// The consumer waiting in `pop`, if it is.
    consumer: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl<T> Default for LocalQueue<T> {
    fn default() -> Self {
        LocalQueue {
            items: RefCell::new(VecDeque::new()),
            consumer: RefCell::new(None),
            closed: Cell::new(false),
        }
    }
}

impl<T> LocalQueue<T> {
    /// Appends `item`; `false` (and `item` dropped) once the queue is closed.
    pub(crate) fn push(&self, item: T) -> bool {
        if self.closed.get() {
            return false;
        }
        self.items.borrow_mut().push_back(item);
        self.wake();
        true
    }

    /// No more items: `pop` returns what is queued, then `None`.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.wake();
    }

    /// The next item without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        self.items.borrow_mut().pop_front()
    }

    /// The next item, waiting for one; `None` once closed and empty.
    pub(crate) async fn pop(&self) -> Option<T> {
        std::future::poll_fn(|cx| {
            if let Some(item) = self.try_pop() {
                return Poll::Ready(Some(item));
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            let mut consumer = self.consumer.borrow_mut();
            match consumer.as_mut() {
                Some(waker) => waker.clone_from(cx.waker()),
                None => *consumer = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    fn wake(&self) {
        let waker = self.consumer.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::future::Future;

    #[test]
    fn items_come_out_in_order_then_none_once_closed() {
        let queue = LocalQueue::default();
        assert!(queue.push(1));
        assert!(queue.push(2));
        assert_eq!(queue.pop().now_or_never(), Some(Some(1)));
        assert_eq!(queue.try_pop(), Some(2));
        assert_eq!(
            queue.pop().now_or_never(),
            None,
            "waits while open and empty"
        );
        assert!(queue.push(3));
        queue.close();
        assert!(!queue.push(4), "refused once closed");
        assert_eq!(queue.pop().now_or_never(), Some(Some(3)));
        assert_eq!(queue.pop().now_or_never(), Some(None));
    }

    #[test]
    fn a_push_wakes_the_waiting_consumer() {
        let queue = std::rc::Rc::new(LocalQueue::default());
        let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = Waker::from(std::sync::Arc::new(Flag(woken.clone())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut pop = std::pin::pin!(queue.pop());
        assert!(pop.as_mut().poll(&mut cx).is_pending());
        queue.push(7);
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(pop.as_mut().poll(&mut cx), Poll::Ready(Some(7)));
    }
}
