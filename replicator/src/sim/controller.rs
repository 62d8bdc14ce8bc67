//! A scripted controller for the simulation (the Raft controller comes later): it holds
//! the leader, leader epoch and ISR with its version; it fences a node that missed its
//! session, electing a new leader from the ISR with a higher epoch (never an out-of-sync
//! replica: no unclean election); it applies a leader's ISR proposal only if it comes
//! from the current epoch, builds on the current ISR version and adds no fenced node.
//! Fencing and unfencing bump the version, as the real controller's partition epoch.

use std::collections::BTreeSet;

use shardlog_engine::LeaderEpoch;

use crate::ids::Incarnation;
use crate::ids::NodeId;
use crate::replica::{Input, Member};
use crate::sim::rng::Rng;

/// The controller's view of the one simulated partition.
#[derive(Clone, Debug)]
pub struct Controller {
    /// Current leader epoch.
    pub epoch: LeaderEpoch,
    /// Current leader, `None` while no ISR member is available.
    pub leader: Option<NodeId>,
    /// Committed ISR.
    pub isr: Vec<NodeId>,
    /// Its version.
    pub isr_version: u64,
    /// All replicas.
    pub replicas: Vec<NodeId>,
    /// Nodes whose session expired and that have not registered again.
    pub fenced: BTreeSet<NodeId>,
    /// Leader elections so far.
    pub elections: u64,
}

impl Controller {
    /// A partition on `replicas`, all in sync, no leader yet.
    #[must_use]
    pub fn new(replicas: Vec<NodeId>) -> Controller {
        Controller {
            epoch: LeaderEpoch(-1),
            leader: None,
            isr: replicas.clone(),
            isr_version: 0,
            replicas,
            fenced: BTreeSet::new(),
            elections: 0,
        }
    }

    /// Elects an unfenced ISR member other than `not` with a new epoch; false if none.
    pub fn elect(&mut self, rng: &mut Rng, not: Option<NodeId>) -> bool {
        let candidates: Vec<NodeId> = self
            .isr
            .iter()
            .copied()
            .filter(|n| !self.fenced.contains(n) && Some(*n) != not)
            .collect();
        let Some(chosen) = rng.pick(&candidates) else {
            return false;
        };
        self.leader = Some(chosen);
        self.epoch = LeaderEpoch(self.epoch.0 + 1);
        self.elections += 1;
        true
    }

    /// The node missed its session: out of the ISR (unless it is the last member), and a
    /// new leader if it led. Returns whether the leadership changed.
    pub fn fence(&mut self, rng: &mut Rng, node: NodeId) -> bool {
        self.fenced.insert(node);
        if self.isr.len() > 1 && self.isr.contains(&node) {
            self.isr.retain(|n| *n != node);
        }
        // As the real controller: a replica fenced is a new partition epoch.
        self.isr_version += 1;
        if self.leader == Some(node) {
            self.leader = None;
            self.elect(rng, None);
            return true;
        }
        false
    }

    /// The node registered again; elects it if the partition has no leader and it is in
    /// the ISR. Returns whether the leadership changed.
    pub fn unfence(&mut self, rng: &mut Rng, node: NodeId) -> bool {
        self.fenced.remove(&node);
        self.isr_version += 1;
        self.leader.is_none() && self.elect(rng, None)
    }

    /// Applies a proposal; `true` if accepted.
    pub fn propose(
        &mut self,
        from: NodeId,
        epoch: LeaderEpoch,
        isr_version: u64,
        isr: &[NodeId],
    ) -> bool {
        let valid = Some(from) == self.leader
            && epoch == self.epoch
            && isr_version == self.isr_version
            && isr.contains(&from)
            && isr.iter().all(|n| self.replicas.contains(n))
            && isr
                .iter()
                .all(|n| self.isr.contains(n) || !self.fenced.contains(n));
        if valid {
            self.isr = isr.to_vec();
            self.isr_version += 1;
        }
        valid
    }

    /// What `node` must be told now: its role in the current epoch.
    #[must_use]
    pub fn role_of(&self, node: NodeId) -> Option<Input> {
        let leader = self.leader?;
        if self.fenced.contains(&node) {
            return None;
        }
        Some(if node == leader {
            Input::BecomeLeader {
                epoch: self.epoch,
                replicas: self.replicas.clone(),
                isr: self.isr.clone(),
                isr_version: self.isr_version,
                members: self.members(),
            }
        } else {
            Input::BecomeFollower {
                epoch: self.epoch,
                leader,
            }
        })
    }

    /// The ISR update for the leader.
    #[must_use]
    pub fn isr_update(&self) -> Input {
        Input::IsrUpdated {
            epoch: self.epoch,
            isr_version: self.isr_version,
            isr: self.isr.clone(),
            members: self.members(),
        }
    }

    fn members(&self) -> Vec<Member> {
        self.replicas
            .iter()
            .map(|&node| Member {
                node,
                live: !self.fenced.contains(&node),
                incarnation: Incarnation(0),
            })
            .collect()
    }
}
