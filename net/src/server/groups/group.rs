//! One consumer group's state machine (Kafka's classic `GroupMetadata` and
//! `GroupCoordinator` rules), sans-IO: inputs are method calls carrying the time
//! (`Tick`, in ms), JoinGroup and SyncGroup answers are outputs the caller drains
//! ([`Group::drain_answers`]), everything else is answered at once.
//!
//! States: `Empty` (no members; may hold offsets) -> a join -> `PreparingRebalance`
//! (waiting for every known member to join again, up to the rebalance timeout, and for
//! the initial delay of an empty group) -> `CompletingRebalance` (a new generation: the
//! leader got every member's metadata; waiting for its SyncGroup) -> `Stable` (every
//! member has its assignment). A join with new metadata, a leave, or a member whose
//! session times out starts another rebalance. `Dead`: the coordinator let the group go
//! (leadership lost); it answers nothing again.
//!
//! Fencing: a heartbeat, sync or commit names its generation and member id; a member
//! that is not in the group gets `UnknownMemberId`, another generation
//! `IllegalGeneration`, and while members must join again `RebalanceInProgress`.
//!
//! Invariants (checked by [`Group::invariants`] after every input in tests): the leader
//! is a member; `Empty` has no members; `Stable` and `CompletingRebalance` have a
//! protocol; the generation never goes back.

use std::collections::BTreeMap;

use bytes::Bytes;
use shardlog_replicator::Tick;

use crate::server::groups::{GroupConfig, GroupError};
use crate::server::ops::groups::{
    GroupDescription, HeartbeatOp, JoinGroupOp, Joined, JoinedMember, MemberDescription,
    SyncGroupOp, Synced,
};

/// The caller's handle on a waiting JoinGroup or SyncGroup.
pub(crate) type Token = u64;

/// The states of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's name of the state (DescribeGroups, ListGroups).
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// An answer to a waiting JoinGroup or SyncGroup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Join(Token, Result<Joined, GroupError>),
    Sync(Token, Result<Synced, GroupError>),
}

/// A committed offset as the coordinator holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: Option<String>,
    pub(crate) commit_timestamp: i64,
    /// Where its record is in the offsets partition: an older record never overwrites
    /// a newer one.
    pub(crate) record_offset: u64,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    client_host: String,
    session_timeout_ms: u32,
    rebalance_timeout_ms: u32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heard: Tick,
    /// Its JoinGroup waiting for the rebalance to complete.
    join: Option<Token>,
    /// Its SyncGroup waiting for the leader's assignments.
    sync: Option<Token>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn expired(&self, now: Tick) -> bool {
        // A member waiting for the group is not expected to heartbeat.
        self.join.is_none()
            && self.sync.is_none()
            && now.since(self.last_heard) > u64::from(self.session_timeout_ms)
    }
}

/// One group. Owned by the shard that owns its offsets partition; `!Send` by use.
#[derive(Debug)]
pub(crate) struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Members given an id by `MemberIdRequired`, with when that id expires.
    pending: BTreeMap<String, Tick>,
    /// PreparingRebalance: joins are answered at the latest then.
    rebalance_deadline: Tick,
    /// PreparingRebalance of an empty group: not answered before then.
    initial_delay_until: Tick,
    /// Committed offsets by (topic, partition).
    offsets: BTreeMap<(String, u32), OffsetEntry>,
    /// Makes member ids unique across coordinators (a new one after each load).
    id_seed: u64,
    ids_given: u64,
    answers: Vec<Answer>,
}

impl Group {
    /// A new, empty group; `id_seed` differs between coordinators (and loads).
    pub(crate) fn new(id: &str, id_seed: u64) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: Tick(0),
            initial_delay_until: Tick(0),
            offsets: BTreeMap::new(),
            id_seed,
            ids_given: 0,
            answers: Vec::new(),
        }
    }

    /// The group's state.
    pub(crate) fn state(&self) -> GroupState {
        self.state
    }

    /// The group's protocol type (`consumer`), once a member joined.
    pub(crate) fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or_default()
    }

    /// Answers to waiting joins and syncs since the last call.
    pub(crate) fn drain_answers(&mut self) -> Vec<Answer> {
        std::mem::take(&mut self.answers)
    }

    /// Whether it has neither members nor offsets (the coordinator may forget it).
    pub(crate) fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty() && self.offsets.is_empty()
    }

    /// JoinGroup; the answer comes out through [`Group::drain_answers`] (at once for a
    /// refusal, or when the rebalance completes).
    pub(crate) fn join(&mut self, now: Tick, token: Token, op: JoinGroupOp, config: &GroupConfig) {
        let refused = self.check_join(&op, config);
        if let Err(e) = refused {
            self.answers.push(Answer::Join(token, Err(e)));
            self.invariants();
            return;
        }
        if op.member_id.is_empty() {
            let member_id = self.new_member_id(&op.client_id);
            if op.require_known_member_id {
                let expires = Tick(now.0 + u64::from(op.session_timeout_ms));
                self.pending.insert(member_id.clone(), expires);
                self.answers.push(Answer::Join(
                    token,
                    Err(GroupError::MemberIdRequired(member_id)),
                ));
            } else {
                self.add_member(now, token, member_id, op, config);
            }
        } else if self.pending.remove(&op.member_id).is_some() {
            let member_id = op.member_id.clone();
            self.add_member(now, token, member_id, op, config);
        } else if self.members.contains_key(&op.member_id) {
            self.rejoin(now, token, op, config);
        } else {
            self.answers
                .push(Answer::Join(token, Err(GroupError::UnknownMemberId)));
        }
        self.complete_join_if_ready(now);
        self.invariants();
    }

    fn check_join(&self, op: &JoinGroupOp, config: &GroupConfig) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if op.group_instance_id.is_some() {
            return Err(GroupError::StaticMembershipUnsupported);
        }
        let timeouts = config.session_timeout_ms_min..=config.session_timeout_ms_max;
        if !timeouts.contains(&op.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout(op.session_timeout_ms));
        }
        if op.protocol_type.is_empty() || op.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if self.members.is_empty() {
            return Ok(());
        }
        if self.protocol_type.as_deref() != Some(op.protocol_type.as_str()) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        // A member rejoining may change its own protocols: judge against the others.
        let shared = op.protocols.iter().any(|(name, _)| {
            self.members
                .iter()
                .filter(|(id, _)| **id != op.member_id)
                .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
        });
        if shared {
            Ok(())
        } else {
            Err(GroupError::InconsistentGroupProtocol)
        }
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.ids_given += 1;
        let prefix: String = client_id.chars().take(64).collect();
        format!("{prefix}-{:016x}-{}", self.id_seed, self.ids_given)
    }

    fn add_member(
        &mut self,
        now: Tick,
        token: Token,
        member_id: String,
        op: JoinGroupOp,
        config: &GroupConfig,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(op.protocol_type.clone());
        }
        let member = Member {
            client_id: op.client_id,
            client_host: op.client_host,
            session_timeout_ms: op.session_timeout_ms,
            rebalance_timeout_ms: op.rebalance_timeout_ms,
            protocol_type: op.protocol_type,
            protocols: op.protocols,
            assignment: Bytes::new(),
            last_heard: now,
            join: Some(token),
            sync: None,
        };
        self.members.insert(member_id, member);
        self.prepare_rebalance(now, config);
    }

    fn rejoin(&mut self, now: Tick, token: Token, op: JoinGroupOp, config: &GroupConfig) {
        let is_leader = self.leader.as_deref() == Some(op.member_id.as_str());
        let Some(member) = self.members.get_mut(&op.member_id) else {
            return;
        };
        let same = member.protocols == op.protocols;
        member.last_heard = now;
        member.session_timeout_ms = op.session_timeout_ms;
        member.rebalance_timeout_ms = op.rebalance_timeout_ms;
        member.protocols = op.protocols;
        if let Some(old) = member.join.replace(token) {
            self.answers
                .push(Answer::Join(old, Err(GroupError::RebalanceInProgress)));
        }
        match self.state {
            GroupState::PreparingRebalance => {}
            // The member missed its join answer: the same generation again, unless
            // it changed its metadata or leads (the leader rejoins to reassign).
            GroupState::CompletingRebalance if same => {
                let joined = self.joined_for(&op.member_id);
                if let Some(member) = self.members.get_mut(&op.member_id) {
                    member.join = None;
                }
                self.answers.push(Answer::Join(token, Ok(joined)));
            }
            GroupState::Stable if same && !is_leader => {
                let joined = self.joined_for(&op.member_id);
                if let Some(member) = self.members.get_mut(&op.member_id) {
                    member.join = None;
                }
                self.answers.push(Answer::Join(token, Ok(joined)));
            }
            _ => self.prepare_rebalance(now, config),
        }
    }

    /// Starts a rebalance (or extends the initial delay of one starting).
    fn prepare_rebalance(&mut self, now: Tick, config: &GroupConfig) {
        let longest = self
            .members
            .values()
            .map(|m| u64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        match self.state {
            GroupState::PreparingRebalance => {
                // A new member during the initial delay pushes it out, within the
                // rebalance timeout (Kafka's delayed initial join).
                if self.initial_delay_until > now {
                    let delay = config.initial_rebalance_delay_ms;
                    self.initial_delay_until = Tick((now.0 + delay).min(self.rebalance_deadline.0));
                }
                self.rebalance_deadline = self.rebalance_deadline.max(Tick(now.0 + longest));
                return;
            }
            GroupState::Empty => {
                self.initial_delay_until = Tick(now.0 + config.initial_rebalance_delay_ms);
            }
            GroupState::CompletingRebalance => self.answer_syncs(&GroupError::RebalanceInProgress),
            GroupState::Stable | GroupState::Dead => {}
        }
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Tick(now.0 + longest.max(config.initial_rebalance_delay_ms));
    }

    fn answer_syncs(&mut self, error: &GroupError) {
        for member in self.members.values_mut() {
            if let Some(token) = member.sync.take() {
                self.answers.push(Answer::Sync(token, Err(error.clone())));
            }
        }
    }

    /// Completes the rebalance when every member has joined again (after the initial
    /// delay) or the rebalance timeout passed.
    fn complete_join_if_ready(&mut self, now: Tick) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join.is_some());
        let timed_out = now >= self.rebalance_deadline;
        if !(timed_out || all_joined && now >= self.initial_delay_until) {
            return;
        }
        // Members that did not join again in time are out.
        self.members.retain(|_, m| m.join.is_some());
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let joined = self.joined_for(&id);
            if let Some(member) = self.members.get_mut(&id) {
                member.last_heard = now;
                member.assignment = Bytes::new();
                if let Some(token) = member.join.take() {
                    self.answers.push(Answer::Join(token, Ok(joined)));
                }
            }
        }
    }

    /// The protocol every member supports that most members prefer (ties: the name
    /// first in order, so every coordinator picks the same).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(name, _)| name.to_owned())
    }

    fn joined_for(&self, member_id: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    group_instance_id: None,
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type().to_owned(),
            protocol_name: protocol,
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    /// The checks a heartbeat, sync or commit of a member passes first.
    fn check_member(&self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                got: generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    /// SyncGroup; answered through [`Group::drain_answers`].
    pub(crate) fn sync(&mut self, now: Tick, token: Token, op: SyncGroupOp) {
        let answer = self.sync_now(now, token, op);
        if let Some(result) = answer {
            self.answers.push(Answer::Sync(token, result));
        }
        self.invariants();
    }

    fn sync_now(
        &mut self,
        now: Tick,
        token: Token,
        op: SyncGroupOp,
    ) -> Option<Result<Synced, GroupError>> {
        if op.group_instance_id.is_some() {
            return Some(Err(GroupError::StaticMembershipUnsupported));
        }
        if let Err(e) = self.check_member(&op.member_id, op.generation) {
            return Some(Err(e));
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let type_differs = op
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_differs = op.protocol_name.as_ref().is_some_and(|n| *n != protocol);
        if type_differs || name_differs {
            return Some(Err(GroupError::InconsistentGroupProtocol));
        }
        let is_leader = self.leader.as_deref() == Some(op.member_id.as_str());
        let member = self.members.get_mut(&op.member_id)?;
        member.last_heard = now;
        match self.state {
            GroupState::PreparingRebalance => Some(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable => Some(Ok(self.synced(&op.member_id))),
            GroupState::CompletingRebalance => {
                if let Some(old) = member.sync.replace(token) {
                    self.answers
                        .push(Answer::Sync(old, Err(GroupError::RebalanceInProgress)));
                }
                if is_leader {
                    self.assign(op.assignments);
                }
                None
            }
            GroupState::Empty | GroupState::Dead => Some(Err(GroupError::UnknownMemberId)),
        }
    }

    /// The leader's assignments: every member gets its own (none: empty) and the
    /// group is stable.
    fn assign(&mut self, assignments: Vec<(String, Bytes)>) {
        let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
        for (id, member) in &mut self.members {
            member.assignment = given.remove(id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let synced = self.synced(&id);
            if let Some(token) = self.members.get_mut(&id).and_then(|m| m.sync.take()) {
                self.answers.push(Answer::Sync(token, Ok(synced)));
            }
        }
    }

    fn synced(&self, member_id: &str) -> Synced {
        Synced {
            protocol_type: self.protocol_type().to_owned(),
            protocol_name: self.protocol.clone().unwrap_or_default(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Heartbeat: `Ok` while the member is in the current, settled generation.
    pub(crate) fn heartbeat(&mut self, now: Tick, op: &HeartbeatOp) -> Result<(), GroupError> {
        if op.group_instance_id.is_some() {
            return Err(GroupError::StaticMembershipUnsupported);
        }
        self.check_member(&op.member_id, op.generation)?;
        if let Some(member) = self.members.get_mut(&op.member_id) {
            member.last_heard = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup of one member; the rest of the group rebalances.
    pub(crate) fn leave(
        &mut self,
        now: Tick,
        member_id: &str,
        config: &GroupConfig,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.pending.remove(member_id).is_some() {
            return Ok(());
        }
        let Some(member) = self.members.remove(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        self.removed(now, member, config);
        self.invariants();
        Ok(())
    }

    /// A member is gone (left or expired): its waiting requests are answered and the
    /// group rebalances (or empties).
    fn removed(&mut self, now: Tick, member: Member, config: &GroupConfig) {
        if let Some(token) = member.join {
            self.answers
                .push(Answer::Join(token, Err(GroupError::UnknownMemberId)));
        }
        if let Some(token) = member.sync {
            self.answers
                .push(Answer::Sync(token, Err(GroupError::UnknownMemberId)));
        }
        if self
            .leader
            .as_ref()
            .is_some_and(|l| !self.members.contains_key(l))
        {
            self.leader = None;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance if self.members.is_empty() => {
                self.answer_syncs(&GroupError::RebalanceInProgress);
                self.state = GroupState::Empty;
                self.generation += 1;
                self.protocol = None;
                self.protocol_type = None;
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, config);
            }
            GroupState::PreparingRebalance => self.complete_join_if_ready(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Timers: members whose session passed are removed; a rebalance whose time is up
    /// completes; ids given by `MemberIdRequired` and never used expire.
    pub(crate) fn tick(&mut self, now: Tick, config: &GroupConfig) {
        if self.state == GroupState::Dead {
            return;
        }
        self.pending.retain(|_, expires| *expires > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.expired(now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(member) = self.members.remove(&id) {
                tracing::info!(group = self.id, member = id, "member's session timed out");
                self.removed(now, member, config);
            }
        }
        self.complete_join_if_ready(now);
        self.invariants();
    }

    /// The checks of an OffsetCommit before its record is written. A commit from outside
    /// any generation (-1, no member id) is allowed while the group has no members.
    pub(crate) fn check_commit(
        &mut self,
        now: Tick,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if instance_id.is_some() {
            return Err(GroupError::StaticMembershipUnsupported);
        }
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        self.check_member(member_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heard = now;
        }
        // PreparingRebalance accepts the current generation's commits: an eager
        // consumer commits what it consumed before it joins again (as Kafka does).
        match self.state {
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// A commit's record is committed (or a loaded record): the offset is the group's,
    /// unless a later record already set it.
    pub(crate) fn apply_offset(&mut self, topic: &str, partition: u32, entry: OffsetEntry) {
        let key = (topic.to_owned(), partition);
        match self.offsets.get(&key) {
            Some(held) if held.record_offset > entry.record_offset => {}
            _ => {
                self.offsets.insert(key, entry);
            }
        }
    }

    /// The committed offset of one partition.
    pub(crate) fn offset(&self, topic: &str, partition: u32) -> Option<&OffsetEntry> {
        self.offsets.get(&(topic.to_owned(), partition))
    }

    /// Every committed offset.
    pub(crate) fn offsets(&self) -> impl Iterator<Item = (&(String, u32), &OffsetEntry)> {
        self.offsets.iter()
    }

    /// DescribeGroups' view.
    pub(crate) fn describe(&self) -> GroupDescription {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state.name().to_owned(),
            protocol_type: self.protocol_type().to_owned(),
            protocol_name: protocol.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: None,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The coordinator lets the group go: waiting requests hear `NotCoordinator`.
    pub(crate) fn unload(&mut self) {
        let error = GroupError::NotCoordinator { coordinator: None };
        for member in self.members.values_mut() {
            if let Some(token) = member.join.take() {
                self.answers.push(Answer::Join(token, Err(error.clone())));
            }
            if let Some(token) = member.sync.take() {
                self.answers.push(Answer::Sync(token, Err(error.clone())));
            }
        }
        self.state = GroupState::Dead;
    }

    /// Local invariants (see the module docs); checked in tests after every input.
    fn invariants(&self) {
        if cfg!(not(test)) {
            return;
        }
        if let Some(leader) = &self.leader {
            assert!(
                self.members.contains_key(leader),
                "leader {leader} not a member"
            );
        }
        if self.state == GroupState::Empty {
            assert!(self.members.is_empty(), "an empty group has members");
        }
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            assert!(self.protocol.is_some(), "{:?} without protocol", self.state);
            assert!(self.leader.is_some(), "{:?} without leader", self.state);
        }
        for member in self.members.values() {
            assert!(
                self.protocol_type.as_ref() == Some(&member.protocol_type),
                "a member of another protocol type"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION_MS: u32 = 10_000;
    const REBALANCE_MS: u32 = 30_000;

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        }
    }

    fn join_op(member_id: &str, protocols: &[&str]) -> JoinGroupOp {
        JoinGroupOp {
            group_id: "g".into(),
            member_id: member_id.into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| ((*p).to_owned(), Bytes::from(format!("{member_id}:{p}"))))
                .collect(),
            require_known_member_id: false,
            client_id: "c".into(),
            ..JoinGroupOp::default()
        }
    }

    /// Drives one group and keeps the answers by token.
    struct Harness {
        group: Group,
        config: GroupConfig,
        next: Token,
        joins: BTreeMap<Token, Result<Joined, GroupError>>,
        syncs: BTreeMap<Token, Result<Synced, GroupError>>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                group: Group::new("g", 7),
                config: config(),
                next: 0,
                joins: BTreeMap::new(),
                syncs: BTreeMap::new(),
            }
        }

        fn collect(&mut self) {
            for answer in self.group.drain_answers() {
                match answer {
                    Answer::Join(t, r) => assert!(self.joins.insert(t, r).is_none(), "twice"),
                    Answer::Sync(t, r) => assert!(self.syncs.insert(t, r).is_none(), "twice"),
                }
            }
        }

        fn join(&mut self, now: u64, op: JoinGroupOp) -> Token {
            self.next += 1;
            let config = self.config.clone();
            self.group.join(Tick(now), self.next, op, &config);
            self.collect();
            self.next
        }

        fn sync(&mut self, now: u64, member: &str, generation: i32, assign: bool) -> Token {
            self.next += 1;
            let assignments = if assign {
                self.group
                    .members
                    .keys()
                    .map(|m| (m.clone(), Bytes::from(format!("for {m}"))))
                    .collect()
            } else {
                Vec::new()
            };
            let op = SyncGroupOp {
                group_id: "g".into(),
                generation,
                member_id: member.into(),
                assignments,
                ..SyncGroupOp::default()
            };
            self.group.sync(Tick(now), self.next, op);
            self.collect();
            self.next
        }

        fn tick(&mut self, now: u64) {
            let config = self.config.clone();
            self.group.tick(Tick(now), &config);
            self.collect();
        }

        fn heartbeat(&mut self, now: u64, member: &str, generation: i32) -> Result<(), GroupError> {
            let op = HeartbeatOp {
                group_id: "g".into(),
                generation,
                member_id: member.into(),
                group_instance_id: None,
            };
            self.group.heartbeat(Tick(now), &op)
        }

        fn joined(&self, token: Token) -> &Joined {
            match self.joins.get(&token) {
                Some(Ok(joined)) => joined,
                other => panic!("join {token}: {other:?}"),
            }
        }

        fn synced(&self, token: Token) -> &Synced {
            match self.syncs.get(&token) {
                Some(Ok(synced)) => synced,
                other => panic!("sync {token}: {other:?}"),
            }
        }

        /// A new member through the MEMBER_ID_REQUIRED round; returns its id and the
        /// token of its second join.
        fn new_member(&mut self, now: u64) -> (String, Token) {
            let mut op = join_op("", &["range", "roundrobin"]);
            op.require_known_member_id = true;
            let first = self.join(now, op);
            let Some(Err(GroupError::MemberIdRequired(id))) = self.joins.get(&first).cloned()
            else {
                panic!("expected MemberIdRequired: {:?}", self.joins.get(&first));
            };
            (
                id.clone(),
                self.join(now, join_op(&id, &["range", "roundrobin"])),
            )
        }

        /// Every member syncs (the leader with assignments); the group is stable.
        fn sync_all(&mut self, now: u64, leader: &str, generation: i32) {
            let members: Vec<String> = self.group.members.keys().cloned().collect();
            let mut tokens = Vec::new();
            for m in members.iter().filter(|m| *m != leader) {
                tokens.push((m.clone(), self.sync(now, m, generation, false)));
            }
            tokens.push((leader.to_owned(), self.sync(now, leader, generation, true)));
            for (member, token) in tokens {
                assert_eq!(
                    self.synced(token).assignment,
                    Bytes::from(format!("for {member}"))
                );
            }
            assert_eq!(self.group.state(), GroupState::Stable);
        }
    }

    #[test]
    fn two_members_join_get_a_generation_and_their_assignments() {
        let mut h = Harness::new();
        let (a, ta) = h.new_member(0);
        // One member alone: its join completes at once (no initial delay here).
        assert_eq!(h.joined(ta).generation, 1);
        h.sync_all(1, &a, 1);
        let (b, tb) = h.new_member(2);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert!(!h.joins.contains_key(&tb), "b waits for a to join again");
        assert_eq!(h.heartbeat(3, &a, 1), Err(GroupError::RebalanceInProgress));
        let ta2 = h.join(4, join_op(&a, &["range", "roundrobin"]));
        let (ja, jb) = (h.joined(ta2).clone(), h.joined(tb).clone());
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!(ja.leader, a);
        assert_eq!(ja.protocol_name, "range");
        assert_eq!(ja.members.len(), 2, "the leader sees every member");
        assert!(jb.members.is_empty(), "a follower sees none");
        let metadata: Vec<&Bytes> = ja.members.iter().map(|m| &m.metadata).collect();
        assert!(metadata.contains(&&Bytes::from(format!("{b}:range"))));
        assert_eq!(h.group.state(), GroupState::CompletingRebalance);
        h.sync_all(5, &a, 2);
        assert_eq!(h.heartbeat(6, &b, 2), Ok(()));
    }

    #[test]
    fn a_third_member_joins_and_a_rebalance_follows() {
        let mut h = Harness::new();
        let (a, _) = h.new_member(0);
        h.sync_all(0, &a, 1);
        let (b, tb) = h.new_member(1);
        let ta = h.join(1, join_op(&a, &["range", "roundrobin"]));
        assert_eq!(h.joined(tb).generation, 2);
        assert_eq!(h.joined(ta).generation, 2);
        h.sync_all(2, &a, 2);
        let (_c, tc) = h.new_member(3);
        assert_eq!(h.heartbeat(4, &b, 2), Err(GroupError::RebalanceInProgress));
        let ta = h.join(5, join_op(&a, &["range", "roundrobin"]));
        assert!(!h.joins.contains_key(&tc), "c waits for b");
        let tb = h.join(6, join_op(&b, &["range", "roundrobin"]));
        for t in [ta, tb, tc] {
            assert_eq!(h.joined(t).generation, 3);
        }
        assert_eq!(h.joined(ta).members.len(), 3);
        h.sync_all(7, &a, 3);
    }

    #[test]
    fn a_member_that_stops_heartbeating_is_removed_after_its_session() {
        let mut h = Harness::new();
        let (a, _) = h.new_member(0);
        let (b, tb) = h.new_member(0);
        let ta = h.join(0, join_op(&a, &["range"]));
        assert_eq!(h.joined(tb).generation, 2);
        assert_eq!(h.joined(ta).generation, 2);
        h.sync_all(1, &a, 2);
        let session = u64::from(SESSION_MS);
        // b heartbeats, a does not.
        for now in (1_000..session).step_by(1_000) {
            assert_eq!(h.heartbeat(now, &b, 2), Ok(()));
            h.tick(now);
        }
        assert_eq!(h.group.state(), GroupState::Stable);
        assert_eq!(h.heartbeat(session, &b, 2), Ok(()));
        h.tick(session + 2);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            h.heartbeat(session + 3, &a, 2),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            h.heartbeat(session + 3, &b, 2),
            Err(GroupError::RebalanceInProgress)
        );
        let tb = h.join(session + 4, join_op(&b, &["range"]));
        let joined = h.joined(tb);
        assert_eq!((joined.generation, joined.leader.as_str()), (3, b.as_str()));
        assert_eq!(joined.members.len(), 1);
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let mut h = Harness::new();
        let (a, _) = h.new_member(0);
        h.sync_all(0, &a, 1);
        let (b, tb) = h.new_member(10);
        // a keeps heartbeating (REBALANCE_IN_PROGRESS) but never joins again.
        for now in (1_000..10 + u64::from(REBALANCE_MS)).step_by(5_000) {
            assert_eq!(
                h.heartbeat(now, &a, 1),
                Err(GroupError::RebalanceInProgress)
            );
            h.tick(now);
        }
        h.tick(10 + u64::from(REBALANCE_MS) - 1);
        assert!(!h.joins.contains_key(&tb));
        h.tick(10 + u64::from(REBALANCE_MS));
        let joined = h.joined(tb);
        assert_eq!((joined.generation, joined.leader.as_str()), (2, b.as_str()));
        assert_eq!(
            h.heartbeat(10 + u64::from(REBALANCE_MS), &a, 1),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn a_leave_rebalances_the_rest_and_the_last_leave_empties_the_group() {
        let mut h = Harness::new();
        let (a, _) = h.new_member(0);
        let (b, _) = h.new_member(0);
        let ta = h.join(0, join_op(&a, &["range"]));
        assert_eq!(h.joined(ta).generation, 2);
        h.sync_all(0, &a, 2);
        let config = h.config.clone();
        assert_eq!(h.group.leave(Tick(1), &a, &config), Ok(()));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        let tb = h.join(2, join_op(&b, &["range"]));
        assert_eq!(h.joined(tb).leader, b, "the leader left: a new one");
        assert_eq!(h.joined(tb).generation, 3);
        assert_eq!(h.group.leave(Tick(3), &b, &config), Ok(()));
        assert_eq!(h.group.state(), GroupState::Empty);
        assert_eq!(
            h.group.leave(Tick(3), &b, &config),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn a_stale_generation_is_fenced_from_heartbeat_sync_and_commit() {
        let mut h = Harness::new();
        let (a, _) = h.new_member(0);
        h.sync_all(0, &a, 1);
        let (b, _) = h.new_member(1);
        let ta = h.join(1, join_op(&a, &["range", "roundrobin"]));
        assert_eq!(h.joined(ta).generation, 2);
        h.sync_all(2, &a, 2);
        let stale = Err(GroupError::IllegalGeneration { got: 1, current: 2 });
        assert_eq!(h.heartbeat(3, &a, 1), stale);
        assert_eq!(h.group.check_commit(Tick(3), 1, &a, None), stale);
        let t = h.sync(3, &b, 1, false);
        assert_eq!(
            h.syncs.get(&t),
            Some(&Err(GroupError::IllegalGeneration { got: 1, current: 2 }))
        );
        assert_eq!(h.group.check_commit(Tick(3), 2, &a, None), Ok(()));
        assert_eq!(
            h.group.check_commit(Tick(3), 2, "nobody", None),
            Err(GroupError::UnknownMemberId)
        );
        // A commit from outside any generation only while the group has no members.
        assert_eq!(
            h.group.check_commit(Tick(3), -1, "", None),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            Group::new("other", 1).check_commit(Tick(3), -1, "", None),
            Ok(())
        );
    }

    #[test]
    fn a_commit_is_refused_while_completing_and_accepted_while_preparing() {
        let mut h = Harness::new();
        let (a, ta) = h.new_member(0);
        assert_eq!(h.joined(ta).generation, 1);
        assert_eq!(
            h.group.check_commit(Tick(1), 1, &a, None),
            Err(GroupError::RebalanceInProgress)
        );
        h.sync_all(1, &a, 1);
        let _ = h.new_member(2);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(h.group.check_commit(Tick(3), 1, &a, None), Ok(()));
    }

    #[test]
    fn protocols_must_be_shared_and_the_most_preferred_common_one_wins() {
        let mut h = Harness::new();
        let ta = h.join(0, join_op("", &["cooperative-sticky", "range"]));
        let a = h.joined(ta).member_id.clone();
        assert_eq!(h.joined(ta).protocol_name, "cooperative-sticky");
        h.sync_all(0, &a, 1);
        let refused = h.join(1, join_op("", &["roundrobin"]));
        assert_eq!(
            h.joins.get(&refused),
            Some(&Err(GroupError::InconsistentGroupProtocol))
        );
        let mut other_type = join_op("", &["range"]);
        other_type.protocol_type = "connect".into();
        let refused = h.join(1, other_type);
        assert_eq!(
            h.joins.get(&refused),
            Some(&Err(GroupError::InconsistentGroupProtocol))
        );
        let tb = h.join(2, join_op("", &["range", "cooperative-sticky"]));
        let ta = h.join(2, join_op(&a, &["cooperative-sticky", "range"]));
        // One vote each: the tie goes to the name first in order.
        assert_eq!(h.joined(ta).protocol_name, "cooperative-sticky");
        assert_eq!(h.joined(tb).protocol_name, "cooperative-sticky");
    }

    #[test]
    fn refusals_of_bad_joins() {
        let mut h = Harness::new();
        let mut op = join_op("", &["range"]);
        op.session_timeout_ms = 10;
        let t = h.join(0, op);
        assert_eq!(
            h.joins.get(&t),
            Some(&Err(GroupError::InvalidSessionTimeout(10)))
        );
        let t = h.join(0, join_op("ghost", &["range"]));
        assert_eq!(h.joins.get(&t), Some(&Err(GroupError::UnknownMemberId)));
        let mut op = join_op("", &["range"]);
        op.group_instance_id = Some("static-1".into());
        let t = h.join(0, op);
        assert_eq!(
            h.joins.get(&t),
            Some(&Err(GroupError::StaticMembershipUnsupported))
        );
        let t = h.join(0, join_op("", &[]));
        assert_eq!(
            h.joins.get(&t),
            Some(&Err(GroupError::InconsistentGroupProtocol))
        );
    }

    #[test]
    fn an_unused_member_id_expires_and_the_initial_delay_gathers_members() {
        let mut h = Harness::new();
        h.config.initial_rebalance_delay_ms = 3000;
        let mut op = join_op("", &["range"]);
        op.require_known_member_id = true;
        let t = h.join(0, op);
        let Some(Err(GroupError::MemberIdRequired(id))) = h.joins.get(&t).cloned() else {
            panic!("{:?}", h.joins.get(&t));
        };
        h.tick(u64::from(SESSION_MS) + 1);
        let t = h.join(u64::from(SESSION_MS) + 2, join_op(&id, &["range"]));
        assert_eq!(h.joins.get(&t), Some(&Err(GroupError::UnknownMemberId)));
        let ta = h.join(20_000, join_op("", &["range"]));
        let tb = h.join(21_000, join_op("", &["range"]));
        h.tick(23_999);
        assert!(
            !h.joins.contains_key(&ta),
            "the delay runs from the last member"
        );
        h.tick(24_000);
        assert_eq!(h.joined(ta).members.len(), 2);
        assert_eq!(h.joined(tb).generation, 1);
    }

    #[test]
    fn unloading_answers_waiting_requests_not_coordinator() {
        let mut h = Harness::new();
        let (a, _) = h.new_member(0);
        h.sync_all(0, &a, 1);
        let (_b, tb) = h.new_member(1);
        h.group.unload();
        h.collect();
        assert_eq!(
            h.joins.get(&tb),
            Some(&Err(GroupError::NotCoordinator { coordinator: None }))
        );
        assert_eq!(
            h.heartbeat(2, &a, 1),
            Err(GroupError::CoordinatorNotAvailable)
        );
    }

    #[test]
    fn a_newer_commit_record_is_never_overwritten_by_an_older_one() {
        let mut group = Group::new("g", 1);
        let entry = |offset, record_offset| OffsetEntry {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp: 0,
            record_offset,
        };
        group.apply_offset("t", 0, entry(10, 5));
        group.apply_offset("t", 0, entry(3, 4));
        assert_eq!(group.offset("t", 0).map(|e| e.offset), Some(10));
        group.apply_offset("t", 0, entry(12, 6));
        assert_eq!(group.offset("t", 0).map(|e| e.offset), Some(12));
    }
}
