//! `ReplyBudget`: the reply bytes a client connection owes. Each request counts the reply
//! it may bring from when it is read (a fetch its `max_bytes`), settled to the reply's
//! real size once made and given back once the reply is written to the socket. While the
//! count is at the budget the connection reads no request, so a client that sends fetches
//! and never reads the replies holds at most the budget (plus the requests already begun)
//! in the server, and its requests wait in the socket buffers (TCP pushes back on it),
//! not in memory. Owned by one connection's tasks on one shard (`!Send`).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Reply bytes a connection owes; see the module docs.
pub(crate) struct ReplyBudget {
    bytes_max: usize,
    owed: Cell<usize>,
    /// The read loop, waiting for room.
    reader: Cell<Option<Waker>>,
}

impl ReplyBudget {
    pub(crate) fn new(bytes_max: usize) -> ReplyBudget {
        ReplyBudget {
            bytes_max,
            owed: Cell::new(0),
            reader: Cell::new(None),
        }
    }

    /// The bytes the connection may owe.
    pub(crate) fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    pub(crate) fn charge(&self, bytes: usize) {
        self.owed.set(self.owed.get() + bytes);
    }

    pub(crate) fn release(&self, bytes: usize) {
        let owed = self.owed.get();
        assert!(owed >= bytes, "released {bytes} of {owed} owed");
        self.owed.set(owed - bytes);
        if self.owed.get() < self.bytes_max
            && let Some(reader) = self.reader.take()
        {
            reader.wake();
        }
    }

    /// Replaces the count of a request (`reserved`) with its reply's `size`.
    pub(crate) fn settle(&self, reserved: usize, size: usize) {
        if size >= reserved {
            self.charge(size - reserved);
        } else {
            self.release(reserved - size);
        }
    }

    /// Resolves once less than the budget is owed.
    pub(crate) async fn room(&self) {
        poll_fn(|cx| {
            if self.owed.get() < self.bytes_max {
                Poll::Ready(())
            } else {
                self.reader.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }
}
