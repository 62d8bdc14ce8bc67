//! Session tracking on the controller leader.
//!
//! Nodes heartbeat to the controller leader, which keeps the last heartbeat per node in
//! memory (not in the Raft log, like KRaft). [`Sessions::expired`] names the live nodes
//! whose session ran out; the controller proposes `FenceNode` for them once. A new
//! controller leader starts every live node with a full session (a grace period), so a
//! controller failover never fences a node that was heartbeating to the old leader.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{NodeId, Tick};

/// Last heartbeat per node, and the fences already proposed.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    timeout_ms: u64,
    last_seen: BTreeMap<NodeId, Tick>,
    fence_proposed: BTreeSet<NodeId>,
    unfence_proposed: BTreeSet<NodeId>,
}

impl Sessions {
    /// Sessions that expire `timeout_ms` after the last heartbeat.
    #[must_use]
    pub fn new(timeout_ms: u64) -> Sessions {
        Sessions {
            timeout_ms,
            ..Sessions::default()
        }
    }

    /// Forgets everything (this node stopped leading the controller).
    pub fn clear(&mut self) {
        self.last_seen.clear();
        self.fence_proposed.clear();
        self.unfence_proposed.clear();
    }

    /// Records a heartbeat from `node` at `now`.
    pub fn heartbeat(&mut self, node: NodeId, now: Tick) {
        let seen = self.last_seen.entry(node).or_insert(now);
        *seen = (*seen).max(now);
    }

    /// When `node`'s session expires, if it is tracked.
    #[must_use]
    pub fn expiry(&self, node: NodeId) -> Option<Tick> {
        self.last_seen.get(&node).map(|t| t.after(self.timeout_ms))
    }

    /// When `node` last heartbeated, if it is tracked.
    #[must_use]
    pub fn last_seen(&self, node: NodeId) -> Option<Tick> {
        self.last_seen.get(&node).copied()
    }

    /// The session expiry a heartbeat at `now` gives.
    #[must_use]
    pub fn expiry_from(&self, now: Tick) -> Tick {
        now.after(self.timeout_ms)
    }

    /// The fence of `node` was applied (or it came back): it may be fenced again later.
    pub fn settled(&mut self, node: NodeId) {
        self.fence_proposed.remove(&node);
        self.unfence_proposed.remove(&node);
    }

    /// Marks the unfencing of `node` proposed; false if it already is.
    pub fn propose_unfence(&mut self, node: NodeId) -> bool {
        self.unfence_proposed.insert(node)
    }

    /// Live nodes whose session expired at `now` and whose fence is not yet proposed;
    /// they are marked proposed. An untracked live node starts its session at `now`.
    pub fn expired(&mut self, now: Tick, live: &[NodeId]) -> Vec<NodeId> {
        let mut out = Vec::new();
        for node in live {
            let seen = *self.last_seen.entry(*node).or_insert(now);
            if now.since(seen) > self.timeout_ms && self.fence_proposed.insert(*node) {
                out.push(*node);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_once_and_grace_on_first_sight() {
        let mut s = Sessions::new(100);
        let live = [NodeId(1), NodeId(2)];
        assert!(s.expired(Tick(0), &live).is_empty());
        s.heartbeat(NodeId(1), Tick(90));
        assert_eq!(s.expired(Tick(150), &live), vec![NodeId(2)]);
        assert!(s.expired(Tick(160), &live).is_empty());
        assert_eq!(s.expired(Tick(191), &live), vec![NodeId(1)]);
        s.settled(NodeId(2));
        assert_eq!(s.expired(Tick(300), &live), vec![NodeId(2)]);
    }
}
