//! Log upkeeps that run side by side: one log's upkeep (a roll's sync of a whole segment,
//! an interval sync waiting for the flushes under way, a preallocation on a slow disk)
//! never holds up another log's, nor the replica timers, which run in their own loop.
//!
//! A round starts the upkeep of every log whose previous upkeep has ended; a log still
//! busy is skipped until the round after it is done, so a slow log never has two
//! upkeeps at once.

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;
use std::pin::pin;

use futures::StreamExt;
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;

/// The upkeeps under way, each resolving to its log's key.
pub(crate) struct Upkeeps<K, F> {
    running: FuturesUnordered<F>,
    busy: HashSet<K>,
}

impl<K: Hash + Eq + Clone, F: Future<Output = K>> Upkeeps<K, F> {
    pub(crate) fn new() -> Self {
        Upkeeps {
            running: FuturesUnordered::new(),
            busy: HashSet::new(),
        }
    }

    /// Starts one round: `start(key)` for every key whose upkeep is not under way.
    pub(crate) fn start_round(
        &mut self,
        keys: impl IntoIterator<Item = K>,
        start: impl Fn(K) -> F,
    ) {
        for key in keys {
            if self.busy.insert(key.clone()) {
                self.running.push(start(key));
            }
        }
    }

    /// Drives the upkeeps under way until `until` resolves.
    pub(crate) async fn run_until<T>(&mut self, until: impl Future<Output = T>) -> T {
        let mut until = pin!(until);
        loop {
            match select(until.as_mut(), self.running.next()).await {
                Either::Left((value, _)) => return value,
                Either::Right((Some(key), _)) => {
                    self.busy.remove(&key);
                }
                Either::Right((None, _)) => return until.await,
            }
        }
    }

    /// Waits for every upkeep under way to end.
    pub(crate) async fn finish(&mut self) {
        while let Some(key) = self.running.next().await {
            self.busy.remove(&key);
        }
    }

    /// Whether `key`'s upkeep is under way.
    #[cfg(test)]
    fn is_busy(&self, key: &K) -> bool {
        self.busy.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;
    use std::task::Poll;

    use futures::channel::oneshot;
    use futures::future::LocalBoxFuture;

    use super::*;

    type Started = Rc<RefCell<HashMap<&'static str, u32>>>;

    /// An upkeep of `key` that counts its start and ends when `gate` (if any) opens.
    fn upkeep(
        key: &'static str,
        started: &Started,
        gate: Option<oneshot::Receiver<()>>,
    ) -> LocalBoxFuture<'static, &'static str> {
        *started.borrow_mut().entry(key).or_default() += 1;
        Box::pin(async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            key
        })
    }

    /// Pending once (waking itself), then ready: one turn for the upkeeps under way.
    async fn a_turn() {
        let mut yielded = false;
        futures::future::poll_fn(|cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
    }

    #[test]
    fn a_slow_upkeep_holds_up_neither_the_others_nor_a_second_of_its_own() {
        futures::executor::block_on(async {
            let started: Started = Rc::default();
            let (open, gate) = oneshot::channel();
            let gate = RefCell::new(Some(gate));
            let start = |key| {
                let held = if key == "slow" {
                    gate.borrow_mut().take()
                } else {
                    None
                };
                upkeep(key, &started, held)
            };
            let mut upkeeps = Upkeeps::new();
            for _ in 0..3 {
                upkeeps.start_round(["slow", "quick"], start);
                upkeeps.run_until(a_turn()).await;
            }
            assert_eq!(started.borrow()["quick"], 3, "the quick log's upkeeps");
            assert_eq!(started.borrow()["slow"], 1, "the slow log's upkeeps");
            assert!(upkeeps.is_busy(&"slow"));
            // The slow one ends: the next round starts it again.
            open.send(()).expect("the slow upkeep waits");
            upkeeps.run_until(a_turn()).await;
            assert!(!upkeeps.is_busy(&"slow"));
            upkeeps.start_round(["slow", "quick"], start);
            assert_eq!(started.borrow()["slow"], 2, "the slow log's upkeeps");
            upkeeps.finish().await;
            assert!(!upkeeps.is_busy(&"slow") && !upkeeps.is_busy(&"quick"));
        });
    }
}
