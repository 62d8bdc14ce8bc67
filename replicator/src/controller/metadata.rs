//! The cluster metadata, applied from committed entries of the controller's Raft log.
//!
//! Applying is deterministic (ordered maps, no clock, no randomness): every controller
//! node that applies the same log holds the same [`Metadata`]. A command that does not
//! fit the current state is refused at apply time, with the same [`Refusal`] everywhere.
//! Invariants (checked after every apply in debug builds and with feature `verify`):
//! replicas are distinct, the ISR is a non-empty subset of them, the leader is in the
//! ISR, the ELR is disjoint from the ISR, and leader epochs never go back.

use std::collections::BTreeMap;

use shardlog_engine::{LeaderEpoch, PartitionId};

use super::acls::{AclError, Acls};
use super::command::{AdoptedData, Command, UserCredential};
use super::reassignment::{self, Reassignment};
use super::{failover, placement};
use crate::ids::{NodeId, Tick};

/// Longest topic name (Kafka's limit).
pub const MAX_TOPIC_NAME: usize = 249;
/// Most partitions per topic.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Most producer ids one `AllocateProducerIds` reserves.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1 << 20;
/// Longest user name.
pub const MAX_USER_NAME: usize = 128;
/// The SCRAM mechanisms a credential may be for, with their key lengths.
const SCRAM_MECHANISMS: [(&str, usize); 2] = [("SCRAM-SHA-256", 32), ("SCRAM-SHA-512", 64)];
/// Bounds of a credential's iteration count (RFC 7677's minimum; a bound on the work a
/// client is asked for).
const SCRAM_ITERATIONS: std::ops::RangeInclusive<u32> = 4096..=(1 << 20);
/// Longest salt.
const SCRAM_SALT_MAX: usize = 256;

/// A user name: 1..=128 of `[A-Za-z0-9._@-]` (no `,` or `=`, which SCRAM escapes, no
/// `:`, which separates a principal's type from its name).
#[must_use]
pub fn valid_user_name(name: &str) -> bool {
    (1..=MAX_USER_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Where it is reached (`host:port`).
    pub address: String,
    /// Where Kafka clients reach it (`host:port`), if it registered a Kafka listener.
    pub kafka_address: Option<String>,
    /// Fenced: missed its session, or restarted as a newer incarnation; leads nothing
    /// and may not join an ISR.
    pub fenced: bool,
    /// Decommissioned (`DrainNode`): its replicas move away, it receives no new ones.
    pub draining: bool,
    /// The incarnation registered (0 for registrations of earlier releases): a replica
    /// claiming a newer one is not believed.
    pub incarnation: u64,
    /// Session expiry as last logged (display only; the leader's tracker decides).
    pub session_expires: Tick,
}

/// One partition's assignment and leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    /// Replicas, preferred leader first; distinct nodes.
    pub replicas: Vec<NodeId>,
    /// The leader, `None` while no eligible replica is live (no unclean election).
    pub leader: Option<NodeId>,
    /// Bumped whenever the leader changes (also to `None`).
    pub leader_epoch: LeaderEpoch,
    /// In-sync replicas, in replica order; never empty.
    pub isr: Vec<NodeId>,
    /// Eligible leader replicas (KIP-966, simplified): members removed from the ISR while
    /// it was below `min_insync`, so they hold everything below the high watermark.
    pub elr: Vec<NodeId>,
    /// Bumped on every change of leader or ISR (KIP-497's partition epoch), and when a
    /// replica is fenced or comes back: an ISR proposal built on an older one is refused,
    /// so a leader that sees a newer one knows its pending proposal is dead.
    pub partition_epoch: u64,
    /// The move in progress (`ReassignPartition`), if any: see `reassignment`.
    pub reassignment: Option<Reassignment>,
}

impl PartitionState {
    /// The preferred leader: the first replica.
    #[must_use]
    pub fn preferred(&self) -> Option<NodeId> {
        self.replicas.first().copied()
    }
}

/// A topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Unique per creation: a re-created topic gets a new id.
    pub id: u64,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Smallest ISR that may advance the high watermark.
    pub min_insync: u16,
    /// Opaque configuration.
    pub config: Vec<(String, String)>,
    /// Partitions, indexed by partition number.
    pub partitions: Vec<PartitionState>,
}

/// Why a committed command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The entry's bytes are not a command.
    #[error("undecodable command")]
    Undecodable,
    /// No such node.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// No such topic or partition.
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// The topic exists already.
    #[error("topic exists")]
    TopicExists,
    /// Bad topic parameters.
    #[error("invalid topic: {0}")]
    InvalidTopic(&'static str),
    /// Fewer live nodes than the replication factor.
    #[error("{needed} replicas need {needed} live nodes, {live} are live")]
    NotEnoughNodes {
        /// Replication factor asked for.
        needed: u16,
        /// Live (unfenced) nodes.
        live: usize,
    },
    /// A leader of another epoch proposed this (a stale or unknown leader).
    #[error("stale leader epoch {proposed}, current {current}")]
    StaleLeaderEpoch {
        /// Current epoch.
        current: LeaderEpoch,
        /// The proposal's epoch.
        proposed: LeaderEpoch,
    },
    /// An ISR change built on another partition epoch (a delayed or retried proposal).
    #[error("stale partition epoch {proposed}, current {current}")]
    StalePartitionEpoch {
        /// Current partition epoch.
        current: u64,
        /// The one the proposal built on.
        proposed: u64,
    },
    /// A registration of an incarnation older than the registered one.
    #[error("stale incarnation {proposed} of node {node}, registered {current}")]
    StaleIncarnation {
        /// The node.
        node: NodeId,
        /// The registered incarnation.
        current: u64,
        /// The proposed one.
        proposed: u64,
    },
    /// The proposed ISR breaks a rule.
    #[error("invalid ISR: {0}")]
    InvalidIsr(&'static str),
    /// No live ISR or ELR member to elect.
    #[error("no eligible leader")]
    NoEligibleLeader,
    /// A reassignment that breaks a rule.
    #[error("invalid reassignment: {0}")]
    InvalidReassignment(&'static str),
    /// The command would change nothing.
    #[error("no change")]
    NoChange,
    /// A user name or credential that breaks a rule.
    #[error("invalid user credential: {0}")]
    InvalidCredential(&'static str),
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// An ACL that breaks a bound, or one too many.
    #[error("{0}")]
    Acl(AclError),
    /// A producer id block that does not start at the next unreserved id (another block
    /// was reserved meanwhile), or of a size out of range.
    #[error("producer id block at {proposed}: the next unreserved id is {next}")]
    StaleProducerIdBlock {
        /// The next unreserved producer id.
        next: u64,
        /// The block's proposed first id.
        proposed: u64,
    },
}

impl From<AclError> for Refusal {
    fn from(error: AclError) -> Refusal {
        match error {
            AclError::NoChange => Refusal::NoChange,
            other => Refusal::Acl(other),
        }
    }
}

/// A change for the driver to publish (to brokers' replicas, metadata caches, clients).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataChange {
    /// A node registered (or re-registered).
    NodeRegistered {
        /// The node.
        node: NodeId,
        /// Its address.
        address: String,
    },
    /// A node was fenced.
    NodeFenced(NodeId),
    /// A fenced node is back.
    NodeUnfenced(NodeId),
    /// A topic was created (its partitions follow as `LeaderChanged`).
    TopicCreated(String),
    /// A topic was deleted.
    TopicDeleted(String),
    /// A partition's leader and epoch changed (or it was created).
    LeaderChanged {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// New leader, `None` if leaderless.
        leader: Option<NodeId>,
        /// New leader epoch.
        leader_epoch: LeaderEpoch,
        /// ISR.
        isr: Vec<NodeId>,
    },
    /// A partition's replicas changed (a move started, was replaced or cancelled).
    ReplicasChanged {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// The replicas now (during a move: the old ones and the added ones).
        replicas: Vec<NodeId>,
        /// ISR.
        isr: Vec<NodeId>,
    },
    /// A user's credential was set (created or replaced) for a mechanism.
    UserCredentialSet {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: String,
    },
    /// A user was deleted.
    UserDeleted(String),
    /// An ACL binding was added or removed (every node authorizes with the new set).
    AclChanged {
        /// Added, or removed.
        added: bool,
        /// The binding.
        binding: super::acls::AclBinding,
    },
    /// Only a partition's ISR changed.
    IsrChanged {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// Leader epoch (unchanged).
        leader_epoch: LeaderEpoch,
        /// New ISR.
        isr: Vec<NodeId>,
    },
}

/// The replicated cluster state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    nodes: BTreeMap<NodeId, NodeInfo>,
    topics: BTreeMap<String, TopicInfo>,
    topics_created: u64,
    /// The first producer id not yet reserved by any node (`AllocateProducerIds`).
    next_producer_id: u64,
    /// SASL users: their SCRAM credentials by mechanism name.
    users: BTreeMap<String, BTreeMap<String, UserCredential>>,
    /// ACL bindings (`CreateAcl`, `DeleteAcl`).
    acls: Acls,
}

impl Metadata {
    /// Registered nodes.
    #[must_use]
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    /// The replicas a topic of `partitions` x `replication_factor` created next would get
    /// (the placement `CreateTopic` applies), over the nodes live now.
    #[must_use]
    pub fn next_placement(&self, partitions: u32, replication_factor: u16) -> Vec<Vec<NodeId>> {
        placement::assign(
            &self.placeable_nodes(),
            partitions,
            replication_factor,
            self.topics_created,
        )
    }

    /// ACL bindings.
    #[must_use]
    pub fn acls(&self) -> &Acls {
        &self.acls
    }

    /// Topics by name.
    #[must_use]
    pub fn topics(&self) -> &BTreeMap<String, TopicInfo> {
        &self.topics
    }

    /// SASL users by name, each with its SCRAM credentials by mechanism name.
    #[must_use]
    pub fn users(&self) -> &BTreeMap<String, BTreeMap<String, UserCredential>> {
        &self.users
    }

    /// The first producer id no node has reserved: the `first` of the next
    /// `AllocateProducerIds`.
    #[must_use]
    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    /// One partition.
    #[must_use]
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionState> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    /// Registered and not fenced.
    #[must_use]
    pub fn is_live(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| !n.fenced)
    }

    /// Live nodes, by id.
    #[must_use]
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.fenced)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Live nodes that are not draining, by id: where new replicas go.
    #[must_use]
    pub fn placeable_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.fenced && !n.draining)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Applies one committed command; changes are appended to `changes`.
    pub fn apply(
        &mut self,
        command: &Command,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        let before = verify_enabled().then(|| self.clone());
        let outcome = self.apply_unchecked(command, changes);
        if outcome.is_ok() {
            // Any applied command may let a move commit: an ISR change that brought its
            // last adding replica in, a node back that can take over a leaving leader's
            // partition, a reassignment that adds nothing.
            reassignment::complete_all(self, changes);
        }
        if let Some(before) = before {
            if let Err(broken) = self.invariants(Some(&before)) {
                panic!("controller metadata invariant broken after {command:?}: {broken}");
            }
        }
        outcome
    }

    // One arm per command, each handing its fields to a method.
    #[allow(clippy::too_many_lines)]
    fn apply_unchecked(
        &mut self,
        command: &Command,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        match command {
            Command::RegisterNode {
                node,
                address,
                session_expires_ms,
            } => {
                let registration = (address.as_str(), None, Tick(*session_expires_ms));
                self.register(NodeId(*node), registration, None, changes)
            }
            Command::Register {
                node,
                address,
                incarnation,
                session_expires_ms,
            } => {
                let registration = (
                    address.as_str(),
                    Some(*incarnation),
                    Tick(*session_expires_ms),
                );
                self.register(NodeId(*node), registration, None, changes)
            }
            Command::RegisterListeners {
                node,
                listeners,
                incarnation,
                session_expires_ms,
            } => {
                let named = |name: &str| {
                    listeners
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, address)| address.as_str())
                };
                let address = named(super::command::SHARDLOG_LISTENER).unwrap_or_default();
                let registration = (address, Some(*incarnation), Tick(*session_expires_ms));
                let kafka = named(super::command::KAFKA_LISTENER);
                self.register(NodeId(*node), registration, kafka, changes)
            }
            Command::Heartbeat {
                node,
                session_expires_ms,
            } => self.heartbeat(NodeId(*node), Tick(*session_expires_ms), changes),
            Command::FenceNode { node } => self.fence(NodeId(*node), changes),
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                min_insync,
                config,
            } => {
                let spec = TopicSpec {
                    partitions: *partitions,
                    replication_factor: *replication_factor,
                    min_insync: *min_insync,
                };
                self.create_topic(name, spec, config, LeaderEpoch(0), changes)
            }
            Command::AdoptTopic {
                name,
                partitions,
                config,
                held,
            } => self.adopt_topic(name, *partitions, config, **held, changes),
            Command::DeleteTopic { name } => self.delete_topic(name, changes),
            Command::ChangeIsr {
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => {
                let epochs = (
                    LeaderEpoch(*leader_epoch),
                    Some(u64::from(*partition_epoch)),
                );
                self.change_isr(topic, *partition, epochs, new_isr, changes)
            }
            Command::LegacyChangeIsr {
                topic,
                partition,
                leader_epoch,
                new_isr,
            } => {
                let epochs = (LeaderEpoch(*leader_epoch), None);
                self.change_isr(topic, *partition, epochs, new_isr, changes)
            }
            Command::ElectLeader { topic, partition } => {
                self.elect_leader(topic, *partition, changes)
            }
            Command::AllocateProducerIds { .. } => self.allocate_producer_ids(command),
            Command::ReplicaOffline {
                topic,
                partition,
                node,
                leader_epoch,
                partition_epoch,
            } => {
                let epochs = (LeaderEpoch(*leader_epoch), u64::from(*partition_epoch));
                self.replica_offline(topic, *partition, NodeId(*node), epochs, changes)
            }
            Command::ReassignPartition {
                topic,
                partition,
                replicas,
                throttle_bytes,
            } => {
                let throttle = (*throttle_bytes != super::command::THROTTLE_NODE_DEFAULT)
                    .then_some(*throttle_bytes);
                self.reassign(topic, *partition, replicas, throttle, changes)
            }
            Command::DrainNode { node, draining } => self.drain_node(NodeId(*node), *draining),
            Command::UpsertUserCredential { user, credential } => {
                self.upsert_user_credential(user, credential, changes)
            }
            Command::DeleteUser { user } => {
                self.users.remove(user).ok_or(Refusal::UnknownUser)?;
                changes.push(MetadataChange::UserDeleted(user.clone()));
                Ok(())
            }
            Command::CreateAcl { binding } => {
                self.acls.add(binding)?;
                changes.push(MetadataChange::AclChanged {
                    added: true,
                    binding: (**binding).clone(),
                });
                Ok(())
            }
            Command::DeleteAcl { binding } => {
                self.acls.remove(binding)?;
                changes.push(MetadataChange::AclChanged {
                    added: false,
                    binding: (**binding).clone(),
                });
                Ok(())
            }
        }
    }

    /// `UpsertUserCredential`: checked here, at apply, since the entry may come from any
    /// proposer: a known mechanism, keys of its hash's length, iterations in bounds.
    fn upsert_user_credential(
        &mut self,
        user: &str,
        credential: &UserCredential,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        if !valid_user_name(user) {
            return Err(Refusal::InvalidCredential("bad user name"));
        }
        let Some((_, key_len)) = SCRAM_MECHANISMS
            .iter()
            .find(|(name, _)| *name == credential.mechanism)
        else {
            return Err(Refusal::InvalidCredential("unknown mechanism"));
        };
        if credential.stored_key.len() != *key_len || credential.server_key.len() != *key_len {
            return Err(Refusal::InvalidCredential("key length"));
        }
        if !SCRAM_ITERATIONS.contains(&credential.iterations) {
            return Err(Refusal::InvalidCredential("iterations out of range"));
        }
        if credential.salt.is_empty() || credential.salt.len() > SCRAM_SALT_MAX {
            return Err(Refusal::InvalidCredential("salt length"));
        }
        let credentials = self.users.entry(user.to_owned()).or_default();
        if credentials.get(&credential.mechanism) == Some(credential) {
            return Err(Refusal::NoChange);
        }
        credentials.insert(credential.mechanism.clone(), credential.clone());
        changes.push(MetadataChange::UserCredentialSet {
            user: user.to_owned(),
            mechanism: credential.mechanism.clone(),
        });
        Ok(())
    }

    /// `DrainNode`: marks `node` draining, or not.
    fn drain_node(&mut self, node: NodeId, draining: bool) -> Result<(), Refusal> {
        let info = self
            .nodes
            .get_mut(&node)
            .ok_or(Refusal::UnknownNode(node))?;
        if info.draining == draining {
            return Err(Refusal::NoChange);
        }
        info.draining = draining;
        Ok(())
    }

    /// `AllocateProducerIds`: reserves `[first, first + count)` for `node`, only at the
    /// next unreserved id, so no id is reserved twice whatever order proposals arrive in.
    /// Ids stay below `i64::MAX` (a batch's producer id is an `i64`; negative is none).
    fn allocate_producer_ids(&mut self, command: &Command) -> Result<(), Refusal> {
        let &Command::AllocateProducerIds { node, first, count } = command else {
            return Err(Refusal::NoChange);
        };
        let node = NodeId(node);
        if !self.nodes.contains_key(&node) {
            return Err(Refusal::UnknownNode(node));
        }
        let end = first.checked_add(u64::from(count));
        let fits = end.is_some_and(|end| end <= i64::MAX as u64);
        if first != self.next_producer_id || count == 0 || count > MAX_PRODUCER_ID_BLOCK || !fits {
            return Err(Refusal::StaleProducerIdBlock {
                next: self.next_producer_id,
                proposed: first,
            });
        }
        self.next_producer_id = end.unwrap_or(self.next_producer_id);
        Ok(())
    }

    /// `registration`: address, incarnation (`None` in entries of earlier releases),
    /// session expiry. A newer incarnation of a live node is a restart: the old one is
    /// fenced first.
    fn register(
        &mut self,
        node: NodeId,
        registration: (&str, Option<u64>, Tick),
        kafka_address: Option<&str>,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        let (address, incarnation, expires) = registration;
        let known = self.nodes.get(&node).cloned();
        let incarnation = match (incarnation, &known) {
            (Some(new), Some(info)) if new < info.incarnation => {
                return Err(Refusal::StaleIncarnation {
                    node,
                    current: info.incarnation,
                    proposed: new,
                });
            }
            (Some(new), Some(info)) if new > info.incarnation && !info.fenced => {
                // The node restarted: what its previous run led moves now.
                self.fence(node, changes)?;
                new
            }
            (Some(new), _) => new,
            (None, info) => info.as_ref().map_or(0, |i| i.incarnation),
        };
        let was_fenced = self.nodes.get(&node).is_some_and(|n| n.fenced);
        self.nodes.insert(
            node,
            NodeInfo {
                address: address.to_owned(),
                kafka_address: kafka_address.map(str::to_owned),
                fenced: false,
                draining: known.as_ref().is_some_and(|k| k.draining),
                session_expires: expires,
                incarnation,
            },
        );
        changes.push(MetadataChange::NodeRegistered {
            node,
            address: address.to_owned(),
        });
        if was_fenced {
            changes.push(MetadataChange::NodeUnfenced(node));
            failover::on_unfenced(self, node, changes);
        }
        Ok(())
    }

    fn heartbeat(
        &mut self,
        node: NodeId,
        expires: Tick,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        let info = self
            .nodes
            .get_mut(&node)
            .ok_or(Refusal::UnknownNode(node))?;
        info.session_expires = expires;
        if !info.fenced {
            return Ok(());
        }
        info.fenced = false;
        changes.push(MetadataChange::NodeUnfenced(node));
        failover::on_unfenced(self, node, changes);
        Ok(())
    }

    fn fence(&mut self, node: NodeId, changes: &mut Vec<MetadataChange>) -> Result<(), Refusal> {
        let info = self
            .nodes
            .get_mut(&node)
            .ok_or(Refusal::UnknownNode(node))?;
        if info.fenced {
            return Err(Refusal::NoChange);
        }
        info.fenced = true;
        changes.push(MetadataChange::NodeFenced(node));
        failover::on_fenced(self, node, changes);
        Ok(())
    }

    /// A topic a lone node already holds: replication factor 1, led at the data's newest
    /// epoch, producer ids reserved above the data's.
    fn adopt_topic(
        &mut self,
        name: &str,
        partitions: u32,
        config: &[(String, String)],
        held: AdoptedData,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        let spec = TopicSpec {
            partitions,
            replication_factor: 1,
            min_insync: 1,
        };
        let first = LeaderEpoch(held.leader_epoch.max(0));
        self.create_topic(name, spec, config, first, changes)?;
        self.next_producer_id = self.next_producer_id.max(held.producer_id_floor);
        Ok(())
    }

    fn create_topic(
        &mut self,
        name: &str,
        spec: TopicSpec,
        config: &[(String, String)],
        first_epoch: LeaderEpoch,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        spec.validate(name)?;
        if self.topics.contains_key(name) {
            return Err(Refusal::TopicExists);
        }
        let live = self.placeable_nodes();
        if live.len() < usize::from(spec.replication_factor) {
            return Err(Refusal::NotEnoughNodes {
                needed: spec.replication_factor,
                live: live.len(),
            });
        }
        let assignment = placement::assign(
            &live,
            spec.partitions,
            spec.replication_factor,
            self.topics_created,
        );
        let partitions: Vec<PartitionState> = assignment
            .into_iter()
            .map(|replicas| PartitionState {
                leader: replicas.first().copied(),
                leader_epoch: first_epoch,
                isr: replicas.clone(),
                elr: Vec::new(),
                partition_epoch: 0,
                reassignment: None,
                replicas,
            })
            .collect();
        changes.push(MetadataChange::TopicCreated(name.to_owned()));
        for (index, p) in (0u32..).zip(&partitions) {
            changes.push(leader_changed(name, index, p));
        }
        self.topics.insert(
            name.to_owned(),
            TopicInfo {
                id: self.topics_created,
                replication_factor: spec.replication_factor,
                min_insync: spec.min_insync,
                config: config.to_vec(),
                partitions,
            },
        );
        self.topics_created += 1;
        Ok(())
    }

    fn delete_topic(
        &mut self,
        name: &str,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        self.topics.remove(name).ok_or(Refusal::UnknownPartition)?;
        changes.push(MetadataChange::TopicDeleted(name.to_owned()));
        Ok(())
    }

    /// `epochs`: the proposer's leader epoch and the partition epoch its proposal builds
    /// on (`None` in entries of earlier releases, which did not check it).
    fn change_isr(
        &mut self,
        topic: &str,
        partition: u32,
        epochs: (LeaderEpoch, Option<u64>),
        new_isr: &[u32],
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        let live: Vec<NodeId> = self.live_nodes();
        let (min_insync, p) = self.partition_mut(topic, partition)?;
        let (proposed, builds_on) = epochs;
        if proposed != p.leader_epoch {
            return Err(Refusal::StaleLeaderEpoch {
                current: p.leader_epoch,
                proposed,
            });
        }
        if let Some(builds_on) = builds_on.filter(|e| *e != p.partition_epoch) {
            return Err(Refusal::StalePartitionEpoch {
                current: p.partition_epoch,
                proposed: builds_on,
            });
        }
        let leader = p
            .leader
            .ok_or(Refusal::InvalidIsr("partition has no leader"))?;
        let wanted: Vec<NodeId> = new_isr.iter().map(|n| NodeId(*n)).collect();
        if !wanted.contains(&leader) {
            return Err(Refusal::InvalidIsr("leader not in ISR"));
        }
        if wanted.iter().any(|n| !p.replicas.contains(n)) {
            return Err(Refusal::InvalidIsr("ISR member is not a replica"));
        }
        if (1..wanted.len()).any(|i| wanted[i..].contains(&wanted[i - 1])) {
            return Err(Refusal::InvalidIsr("duplicate ISR member"));
        }
        if wanted
            .iter()
            .any(|n| !p.isr.contains(n) && !live.contains(n))
        {
            return Err(Refusal::InvalidIsr("a fenced node may not join the ISR"));
        }
        let isr: Vec<NodeId> = p
            .replicas
            .iter()
            .copied()
            .filter(|n| wanted.contains(n))
            .collect();
        if isr == p.isr {
            return Err(Refusal::NoChange);
        }
        failover::set_isr(p, isr, min_insync);
        changes.push(MetadataChange::IsrChanged {
            topic: topic.to_owned(),
            partition: PartitionId(partition),
            leader_epoch: p.leader_epoch,
            isr: p.isr.clone(),
        });
        Ok(())
    }

    /// `ReplicaOffline`: see the command. `epochs`: the leader epoch the replica stopped
    /// in and the partition epoch the report builds on.
    fn replica_offline(
        &mut self,
        topic: &str,
        partition: u32,
        node: NodeId,
        epochs: (LeaderEpoch, u64),
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        let live = self.live_nodes();
        let (min_insync, p) = self.partition_mut(topic, partition)?;
        let (stopped_in, builds_on) = epochs;
        if builds_on != p.partition_epoch {
            return Err(Refusal::StalePartitionEpoch {
                current: p.partition_epoch,
                proposed: builds_on,
            });
        }
        if !p.replicas.contains(&node) {
            return Err(Refusal::InvalidIsr("not a replica of the partition"));
        }
        if failover::on_replica_offline(p, node, stopped_in, &live, min_insync) {
            changes.push(leader_changed(topic, partition, p));
            Ok(())
        } else {
            Err(Refusal::NoChange)
        }
    }

    /// `ReassignPartition`: see `reassignment`. `throttle_bytes`: `None` keeps the
    /// leader node's setting.
    fn reassign(
        &mut self,
        topic: &str,
        partition: u32,
        target: &[u32],
        throttle_bytes: Option<u64>,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        let (min_insync, p) = self.partition_mut(topic, partition)?;
        reassignment::reassign(&nodes, p, target, throttle_bytes, min_insync)?;
        changes.push(MetadataChange::ReplicasChanged {
            topic: topic.to_owned(),
            partition: PartitionId(partition),
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        });
        Ok(())
    }

    fn elect_leader(
        &mut self,
        topic: &str,
        partition: u32,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), Refusal> {
        let live = self.live_nodes();
        let (_, p) = self.partition_mut(topic, partition)?;
        let leader = failover::choose_leader(p, &live).ok_or(Refusal::NoEligibleLeader)?;
        if p.leader == Some(leader) {
            return Err(Refusal::NoChange);
        }
        failover::set_leader(p, Some(leader));
        changes.push(leader_changed(topic, partition, p));
        Ok(())
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<(u16, &mut PartitionState), Refusal> {
        let t = self
            .topics
            .get_mut(topic)
            .ok_or(Refusal::UnknownPartition)?;
        let index = usize::try_from(partition).map_err(|_| Refusal::UnknownPartition)?;
        let p = t
            .partitions
            .get_mut(index)
            .ok_or(Refusal::UnknownPartition)?;
        Ok((t.min_insync, p))
    }

    /// Every partition, mutably, with its topic's name and `min_insync` (failover's view).
    pub(crate) fn partitions_mut(
        &mut self,
    ) -> impl Iterator<Item = (&str, u32, u16, &mut PartitionState)> {
        self.topics.iter_mut().flat_map(|(name, t)| {
            let min_insync = t.min_insync;
            (0u32..)
                .zip(t.partitions.iter_mut())
                .map(move |(i, p)| (name.as_str(), i, min_insync, p))
        })
    }

    /// Checks the invariants; with `before`, also that no leader epoch went back.
    pub fn invariants(&self, before: Option<&Metadata>) -> Result<(), String> {
        for (name, t) in &self.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                check_partition(p).map_err(|e| format!("{name}/{i}: {e}"))?;
                let old = before
                    .and_then(|b| b.topics.get(name))
                    .filter(|o| o.id == t.id)
                    .and_then(|o| o.partitions.get(i));
                if let Some(old) = old {
                    if p.leader_epoch < old.leader_epoch || p.partition_epoch < old.partition_epoch
                    {
                        return Err(format!("{name}/{i}: epoch went back"));
                    }
                    if p.leader != old.leader && p.leader_epoch == old.leader_epoch {
                        return Err(format!("{name}/{i}: leader changed without a new epoch"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Parameters of a topic to create.
#[derive(Clone, Copy, Debug)]
struct TopicSpec {
    partitions: u32,
    replication_factor: u16,
    min_insync: u16,
}

impl TopicSpec {
    fn validate(&self, name: &str) -> Result<(), Refusal> {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_TOPIC_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(Refusal::InvalidTopic("bad name"));
        }
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(Refusal::InvalidTopic("partitions out of range"));
        }
        if self.replication_factor == 0 {
            return Err(Refusal::InvalidTopic("replication factor 0"));
        }
        if self.min_insync == 0 || self.min_insync > self.replication_factor {
            return Err(Refusal::InvalidTopic("min_insync out of range"));
        }
        Ok(())
    }
}

fn check_partition(p: &PartitionState) -> Result<(), &'static str> {
    if p.replicas.is_empty() {
        return Err("no replicas");
    }
    if (1..p.replicas.len()).any(|i| p.replicas[i..].contains(&p.replicas[i - 1])) {
        return Err("replicas not distinct");
    }
    if p.isr.is_empty() {
        return Err("empty ISR");
    }
    if p.isr.iter().chain(&p.elr).any(|n| !p.replicas.contains(n)) {
        return Err("ISR or ELR member is not a replica");
    }
    if p.elr.iter().any(|n| p.isr.contains(n)) {
        return Err("ELR overlaps ISR");
    }
    if p.leader.is_some_and(|l| !p.isr.contains(&l)) {
        return Err("leader not in ISR");
    }
    reassignment::check(p)
}

/// The change that publishes a partition's leadership.
pub(crate) fn leader_changed(topic: &str, partition: u32, p: &PartitionState) -> MetadataChange {
    MetadataChange::LeaderChanged {
        topic: topic.to_owned(),
        partition: PartitionId(partition),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        isr: p.isr.clone(),
    }
}

fn verify_enabled() -> bool {
    cfg!(any(debug_assertions, feature = "verify"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(mechanism: &str, key_len: usize, iterations: u32) -> Box<UserCredential> {
        Box::new(UserCredential {
            mechanism: mechanism.into(),
            salt: vec![7; 24],
            iterations,
            stored_key: vec![1; key_len],
            server_key: vec![2; key_len],
        })
    }

    fn upsert(user: &str, credential: Box<UserCredential>) -> Command {
        Command::UpsertUserCredential {
            user: user.into(),
            credential,
        }
    }

    /// Credentials are set per mechanism, checked at apply (any proposer's entry may
    /// reach the log), replaced, and deleted with their user.
    #[test]
    fn user_credentials_are_checked_set_and_deleted() {
        let mut metadata = Metadata::default();
        let mut changes = Vec::new();
        let sha256 = credential("SCRAM-SHA-256", 32, 4096);
        assert_eq!(
            metadata.apply(&upsert("alice", sha256.clone()), &mut changes),
            Ok(())
        );
        assert_eq!(
            metadata.apply(&upsert("alice", sha256.clone()), &mut changes),
            Err(Refusal::NoChange)
        );
        let sha512 = credential("SCRAM-SHA-512", 64, 8192);
        assert_eq!(
            metadata.apply(&upsert("alice", sha512), &mut changes),
            Ok(())
        );
        let mechanisms: Vec<&String> = metadata.users()["alice"].keys().collect();
        assert_eq!(mechanisms, ["SCRAM-SHA-256", "SCRAM-SHA-512"]);
        for (user, bad) in [
            ("alice", credential("SCRAM-SHA-1", 20, 4096)),
            ("alice", credential("SCRAM-SHA-256", 64, 4096)),
            ("alice", credential("SCRAM-SHA-256", 32, 4095)),
            ("a,b", credential("SCRAM-SHA-256", 32, 4096)),
            ("", credential("SCRAM-SHA-256", 32, 4096)),
        ] {
            assert!(
                matches!(
                    metadata.apply(&upsert(user, bad), &mut changes),
                    Err(Refusal::InvalidCredential(_))
                ),
                "{user:?}"
            );
        }
        let delete = Command::DeleteUser {
            user: "alice".into(),
        };
        assert_eq!(metadata.apply(&delete, &mut changes), Ok(()));
        assert_eq!(
            metadata.apply(&delete, &mut changes),
            Err(Refusal::UnknownUser)
        );
        assert!(metadata.users().is_empty());
        assert_eq!(
            changes,
            [
                MetadataChange::UserCredentialSet {
                    user: "alice".into(),
                    mechanism: "SCRAM-SHA-256".into()
                },
                MetadataChange::UserCredentialSet {
                    user: "alice".into(),
                    mechanism: "SCRAM-SHA-512".into()
                },
                MetadataChange::UserDeleted("alice".into()),
            ]
        );
    }
}
