//! A per-thread observer of segment fdatasyncs: the server sets one on each shard's
//! thread to feed its fdatasync latency histogram; without one a sync costs a
//! thread-local read more. A plain function pointer, so the engine knows nothing of the
//! server's metrics.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static OBSERVER: Cell<Option<fn(Duration)>> = const { Cell::new(None) };
}

/// Calls `observer` with the duration of every segment fdatasync on this thread.
pub fn set(observer: fn(Duration)) {
    OBSERVER.with(|o| o.set(Some(observer)));
}

/// Reports one fdatasync that took `took`.
pub(crate) fn observe(took: Duration) {
    if let Some(observer) = OBSERVER.with(Cell::get) {
        observer(took);
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
        observe(Duration::from_millis(1));
        set(|_| SEEN.with(|s| s.set(s.get() + 1)));
        observe(Duration::from_millis(1));
        observe(Duration::from_millis(2));
        assert_eq!(SEEN.with(Cell::get), 2);
    }
}
