//! The simulated network between nodes: it drops, delays, duplicates and reorders
//! messages, and cuts every link of an isolated node.

use std::collections::BTreeSet;

use crate::ids::NodeId;
use crate::sim::rng::Rng;

/// Fault rates of one run.
#[derive(Clone, Copy, Debug)]
pub struct NetworkFaults {
    /// Per-mille chance a message is lost.
    pub drop_per_mille: u64,
    /// Per-mille chance a message arrives twice.
    pub duplicate_per_mille: u64,
    /// Largest delay in ms (delays are uniform in `1..=delay_ms_max`, so messages reorder).
    pub delay_ms_max: u64,
}

/// The network.
#[derive(Clone, Debug)]
pub struct Network {
    faults: NetworkFaults,
    isolated: BTreeSet<NodeId>,
    /// Messages sent, dropped, duplicated.
    pub counts: [u64; 3],
}

impl Network {
    /// A network with these fault rates and no partition.
    #[must_use]
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            faults,
            isolated: BTreeSet::new(),
            counts: [0; 3],
        }
    }

    /// Cuts every link of `node`.
    pub fn isolate(&mut self, node: NodeId) {
        self.isolated.insert(node);
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.isolated.clear();
    }

    /// Whether `node` is cut off.
    #[must_use]
    pub fn is_isolated(&self, node: NodeId) -> bool {
        self.isolated.contains(&node)
    }

    /// The delays after which copies of a message from `from` to `to` arrive: none, one
    /// or two.
    pub fn route(&mut self, rng: &mut Rng, from: NodeId, to: NodeId) -> Vec<u64> {
        self.counts[0] += 1;
        if self.is_isolated(from) || self.is_isolated(to) || rng.chance(self.faults.drop_per_mille)
        {
            self.counts[1] += 1;
            return Vec::new();
        }
        let mut delays = vec![rng.between(1, self.faults.delay_ms_max)];
        if rng.chance(self.faults.duplicate_per_mille) {
            self.counts[2] += 1;
            delays.push(rng.between(1, self.faults.delay_ms_max * 2));
        }
        delays
    }
}
