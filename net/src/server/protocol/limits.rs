//! `ClientLimits`: the client listeners' limits, one for the node, shared by its shards
//! and by both client front ends (shardlog and Kafka): past `max_connections` open on the
//! node, a new connection is accepted and closed at once; a connection with no request in
//! flight and no byte received for `idle_timeout` is closed (`idle`); a connection owes
//! at most `reply_bytes_max` reply bytes before it stops reading (`reply_budget`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The client listeners' limits, one for the node, shared by its shards.
#[derive(Debug)]
pub(crate) struct ClientLimits {
    max_connections: usize,
    pub(crate) idle_timeout: Option<Duration>,
    /// Reply bytes one connection may owe before it stops reading requests.
    pub(crate) reply_bytes_max: usize,
    /// Connections open on the node.
    open: AtomicUsize,
    /// Refusals since the last warning.
    refused: AtomicU64,
    /// When the last refusal was logged, ms since `since` (`u64::MAX`: never).
    warned_at_ms: AtomicU64,
    since: Instant,
}

impl ClientLimits {
    pub(crate) fn new(
        max_connections: usize,
        idle_timeout: Option<Duration>,
        reply_bytes_max: usize,
    ) -> ClientLimits {
        ClientLimits {
            max_connections,
            idle_timeout,
            reply_bytes_max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            warned_at_ms: AtomicU64::new(u64::MAX),
            since: Instant::now(),
        }
    }

    /// Connections open on the node now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot for a new connection, or `None` when the node has `max_connections` open.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before < self.max_connections {
            return Some(Slot(self.clone()));
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now_ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let warned = self.warned_at_ms.load(Ordering::Relaxed);
        let due = warned == u64::MAX || now_ms.saturating_sub(warned) >= 1000;
        if due
            && self
                .warned_at_ms
                .compare_exchange(warned, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.max_connections,
                refused = self.refused.swap(0, Ordering::Relaxed),
                "client connection limit reached: closing new connections \
                 (--max-connections)"
            );
        }
        None
    }
}

/// An open connection's place in `ClientLimits::open`, given back on drop.
pub(crate) struct Slot(Arc<ClientLimits>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
