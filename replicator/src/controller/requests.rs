//! What nodes ask of the controller leader: their sessions (a heartbeat, or a
//! registration when the leader does not know this run of the node) and their partition
//! leaders' ISR changes. net's controller service and the simulation both call these, so
//! one copy of the rules runs in both.

use std::collections::BTreeMap;

use shardlog_engine::LeaderEpoch;

use super::{Command, Controller, ControllerError, ProposalId};
use crate::ids::{NodeId, Tick};

/// When the leader last proposed each node's registration (rate limit).
#[derive(Clone, Debug, Default)]
pub(crate) struct Registrations {
    proposed: BTreeMap<NodeId, Tick>,
}

/// An ISR change asked for by a partition leader (its replica's `ProposeIsr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The proposer's leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch (the replica's `isr_version`) the change builds on.
    pub partition_epoch: u64,
    /// The proposed members.
    pub isr: Vec<NodeId>,
}

impl Controller {
    /// A node's session message on the controller leader: renews the session of a known
    /// incarnation ([`Controller::heartbeat`]); registers a node the metadata does not
    /// know, or a newer incarnation of it (a restart, whose previous run the registration
    /// fences at once), at most once per `register_every_ms` per node. Only the voters
    /// (the cluster's members) may join.
    pub fn session(
        &mut self,
        node: NodeId,
        address: &str,
        incarnation: u64,
    ) -> Result<(), ControllerError> {
        self.session_listening(node, address, None, incarnation)
    }

    /// [`Controller::session`] of a node with a Kafka listener at `kafka_address`.
    pub fn session_listening(
        &mut self,
        node: NodeId,
        address: &str,
        kafka_address: Option<&str>,
        incarnation: u64,
    ) -> Result<(), ControllerError> {
        if !self.is_voter(node) {
            return Err(ControllerError::UnknownNode(node));
        }
        match self.heartbeat(node, incarnation) {
            Err(ControllerError::UnknownNode(_) | ControllerError::NewIncarnation(_)) => {
                let now = self.now;
                let due = self
                    .registrations
                    .proposed
                    .get(&node)
                    .is_none_or(|at| now.since(*at) >= self.config.register_every_ms);
                if due {
                    self.registrations.proposed.insert(node, now);
                    self.register_listening(node, address, kafka_address, incarnation)?;
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Proposes `change`, sent by node `sender` (proven by the transport), on the
    /// controller leader: refused unless the sender leads the partition in this node's
    /// metadata. Whether it applies (current leader and partition epochs, a valid ISR) is
    /// decided when it is applied ([`super::Metadata::apply`]); a lost proposal is made
    /// again by the replica on its timer.
    pub fn propose_isr(
        &mut self,
        sender: NodeId,
        change: IsrChange,
    ) -> Result<ProposalId, ControllerError> {
        self.check_leader()?;
        let leads = self
            .metadata
            .partition(&change.topic, change.partition)
            .is_some_and(|p| p.leader == Some(sender));
        if !leads {
            return Err(ControllerError::NotPartitionLeader(sender));
        }
        let partition_epoch = u32::try_from(change.partition_epoch)
            .map_err(|_| ControllerError::Config("partition epoch out of range"))?;
        self.propose(Command::ChangeIsr {
            topic: change.topic,
            partition: change.partition,
            leader_epoch: change.leader_epoch.0,
            partition_epoch,
            new_isr: change.isr.iter().map(|n| n.0).collect(),
        })
    }

    /// Proposes moving `partition` of `topic` to `replicas` (preferred leader first) on
    /// the controller leader: the one entry point for replica moves, for an operator's
    /// `shardlog partition reassign` and for the placement policies (decommission,
    /// re-placement, rebalance). `throttle_bytes`: bytes per second the leader ships to
    /// the catching-up replicas, `None` for the leader node's `move_throttle_bytes`,
    /// `Some(0)` for none. Whether it applies (known nodes, distinct, at least
    /// `min_insync`, a replaced move's leader kept) is decided when it is applied; the
    /// move then runs by itself and commits once every target replica is in the ISR
    /// (watch [`super::PartitionState::reassignment`] become `None`).
    pub fn reassign(
        &mut self,
        topic: &str,
        partition: u32,
        replicas: &[NodeId],
        throttle_bytes: Option<u64>,
    ) -> Result<ProposalId, ControllerError> {
        self.propose(Command::ReassignPartition {
            topic: topic.to_owned(),
            partition,
            replicas: replicas.iter().map(|n| n.0).collect(),
            throttle_bytes: throttle_bytes.unwrap_or(super::command::THROTTLE_NODE_DEFAULT),
        })
    }
}
