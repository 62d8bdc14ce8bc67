//! Newtypes of the replication core: node ids, request ids and time.
//!
//! Time is data here: a [`Tick`] is milliseconds on a clock the driver owns (monotonic in
//! the server, virtual in the simulation). The state machines never read a clock.

use std::fmt;

/// A node (broker) of the cluster; one replica of a partition lives on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Milliseconds on the driver's monotonic clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(pub u64);

impl Tick {
    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Tick) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The tick `ms` milliseconds later.
    #[must_use]
    pub fn after(self, ms: u64) -> Tick {
        Tick(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Tick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Chosen by the driver for each produce request, echoed in its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// How many times a node has started: a restarted replica is a new incarnation, so the
/// leader can tell its acks from those of the replica it replaced (KIP-903's broker epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(pub u64);
