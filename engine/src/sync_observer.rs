//! A per-thread observer of segment syncs (fdatasyncs, and the O_DSYNC writes that
//! replace them under `flush=always`): the server sets one on each shard's thread to feed
//! its latency histograms; without one a sync costs a thread-local read more. A plain
//! function pointer, so the engine knows nothing of the server's metrics.

use std::cell::Cell;
use std::time::Duration;

/// How a flush made its data durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// An fdatasync after the flush's writes.
    Fdatasync,
    /// The flush's writes themselves, O_DSYNC (`flush=always`), timed together.
    DurableWrites,
}

/// What the server calls with each sync.
pub type Observer = fn(SyncKind, Duration);

thread_local! {
    static OBSERVER: Cell<Option<Observer>> = const { Cell::new(None) };
}

/// Calls `observer` with the kind and duration of every segment sync on this thread.
pub fn set(observer: Observer) {
    OBSERVER.with(|o| o.set(Some(observer)));
}

/// Reports one sync of `kind` that took `took`.
pub(crate) fn observe(kind: SyncKind, took: Duration) {
    if let Some(observer) = OBSERVER.with(Cell::get) {
        observer(kind, took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observer_of_this_thread_sees_each_sync() {
        thread_local! {
            static SEEN: Cell<u32> = const { Cell::new(0) };
        }
        observe(SyncKind::Fdatasync, Duration::from_millis(1));
        set(|_, _| SEEN.with(|s| s.set(s.get() + 1)));
        observe(SyncKind::Fdatasync, Duration::from_millis(1));
        observe(SyncKind::DurableWrites, Duration::from_millis(2));
        assert_eq!(SEEN.with(Cell::get), 2);
    }
}
