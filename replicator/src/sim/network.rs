//! The simulated network between nodes: it drops, delays, duplicates and reorders
//! messages, and cuts the links of an isolated node: its replication links always, its
//! controller links (Raft, heartbeats, ISR proposals) too when the cut includes them.

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
    /// Per-mille chance a message also arrives once more, late: a copy delayed
    /// `STRAGGLER_MS` (a retransmission on a slow path, a request relayed by a node that
    /// was cut off), so a proposal or a ship can arrive after later ones took effect.
    pub straggle_per_mille: u64,
}

/// The delay of a straggling copy, ms.
pub const STRAGGLER_MS: (u64, u64) = (100, 1_500);

/// The network.
#[derive(Clone, Debug)]
pub struct Network {
    faults: NetworkFaults,
    isolated: BTreeSet<NodeId>,
    controller_cut: BTreeSet<NodeId>,
    /// Messages sent, dropped, duplicated (stragglers included).
    pub counts: [u64; 3],
}

impl Network {
    /// A network with these fault rates and no partition.
    #[must_use]
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            faults,
            isolated: BTreeSet::new(),
            controller_cut: BTreeSet::new(),
            counts: [0; 3],
        }
    }

    /// Cuts the replication links of `node`, and its controller links if `controller`.
    pub fn isolate(&mut self, node: NodeId, controller: bool) {
        self.isolated.insert(node);
        if controller {
            self.controller_cut.insert(node);
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.isolated.clear();
        self.controller_cut.clear();
    }

    /// Whether `node`'s links of this kind are cut.
    #[must_use]
    pub fn is_isolated(&self, node: NodeId, controller: bool) -> bool {
        if controller {
            self.controller_cut.contains(&node)
        } else {
            self.isolated.contains(&node)
        }
    }

    /// Whether any node is cut off.
    #[must_use]
    pub fn any_isolated(&self) -> bool {
        !self.isolated.is_empty()
    }

    /// The delays after which copies of a message from `from` to `to` arrive: none, one
    /// or two. `controller`: a message of the controller plane.
    pub fn route(&mut self, rng: &mut Rng, from: NodeId, to: NodeId, controller: bool) -> Vec<u64> {
        self.counts[0] += 1;
        let cut = self.is_isolated(from, controller) || self.is_isolated(to, controller);
        if cut || rng.chance(self.faults.drop_per_mille) {
            self.counts[1] += 1;
            return Vec::new();
        }
        let mut delays = vec![rng.between(1, self.faults.delay_ms_max)];
        if rng.chance(self.faults.duplicate_per_mille) {
            self.counts[2] += 1;
            delays.push(rng.between(1, self.faults.delay_ms_max * 2));
        }
        if rng.chance(self.faults.straggle_per_mille) {
            self.counts[2] += 1;
            delays.push(rng.between(STRAGGLER_MS.0, STRAGGLER_MS.1));
        }
        delays
    }
}
