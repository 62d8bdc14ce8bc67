//! The leader's side: follower progress, pipelined ships of the stored batch bytes, the
//! high watermark over the ISR, the producers' answers and the ISR proposals.
//!
//! Each follower has a `next_offset` the leader ships from; a new batch is shipped to
//! every follower whose pipeline is at the log end at once, without waiting for acks (up
//! to `ships_inflight_max`). A follower that says a ship did not continue its log
//! (`resend`), or is silent for `retry_ms`, is shipped again from its acked log end.
//! Empty ships every `heartbeat_ms` carry the high watermark.
//!
//! A follower whose next offset is below the leader's log start (retention deleted what
//! it needs, e.g. it was down for a while) is sent a `LogStart` instead of a ship and
//! shipped nothing more until it acks again: it restarts its log at the log start (a
//! reset) and acks from there (Kafka's OFFSET_OUT_OF_RANGE path). Retention stops at the
//! high watermark, so the log start is always committed; a reset follower's durable end
//! is then at most the high watermark and counts for nothing new, and it rejoins the ISR
//! only once caught up, like any lagging follower.
//!
//! The high watermark is the smallest durable end over the *maximal* ISR (the committed
//! one plus members a pending proposal adds or removes), so that an ISR change the
//! controller has not confirmed never lets it outrun a replica the controller could
//! elect; it does not advance while the committed ISR is below `min_insync` (quorum.rs).
//! Invariants: the leader is in its ISR; the high watermark never moves back; a leader
//! never truncates. It stops leading only on the controller's word, never on a peer's
//! (a `Fenced` is ignored: see `on_message`).

use std::collections::{BTreeMap, VecDeque};

use bytes::BytesMut;

use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::{LeaderEpoch, Offset};

use crate::config::ReplicaConfig;
use crate::error::ProduceError;
use crate::ids::{Incarnation, NodeId, RequestId, Tick};
use crate::isr::{self, Lag};
use crate::local_log::LocalLog;
use crate::message::{EpochAnswer, EpochQuery, Fenced, LogStart, Message, Ship, ShipAck};
use crate::producer_state::SequenceCheck;
use crate::quorum::{self, AckDecision};
use crate::replica::{Acks, Action, Member, Produced, Step};

/// What the leader knows of one follower.
#[derive(Clone, Debug)]
struct Progress {
    /// The incarnation heard from; `None` before the first message.
    incarnation: Option<Incarnation>,
    /// It restarted while in the ISR and must leave it before it may rejoin (KIP-903).
    restarted: bool,
    log_end: Offset,
    durable_end: Offset,
    /// Where the next ship starts; `None` until the follower has reconciled and acked.
    next_offset: Option<Offset>,
    inflight: u32,
    last_ship_at: Tick,
    /// When the follower last acked more, or the leader last shipped to it with nothing
    /// unacked: ships unacked for `retry_ms` from then were lost, and go again.
    progressed_at: Tick,
    caught_up_at: Tick,
    /// The leader's log end at `probe_at`: acking it proves the follower caught up then.
    probe: Offset,
    probe_at: Tick,
}

#[derive(Clone, Debug)]
struct Waiter {
    request: RequestId,
    acks: Acks,
    produced: Produced,
    deadline: Tick,
}

#[derive(Clone, Debug)]
struct Proposal {
    isr: Vec<NodeId>,
    sent_at: Tick,
}

/// Producers waiting for their acknowledgement.
#[derive(Debug, Default)]
struct Waiters {
    /// `acks=all`: answered when the high watermark passes the batch.
    all: VecDeque<Waiter>,
    /// `acks=leader`: answered when the leader's storage has it.
    leader: VecDeque<Waiter>,
}

impl Waiters {
    fn len(&self) -> usize {
        self.all.len() + self.leader.len()
    }
}

/// The controller's word on a partition's replicas, as a leader takes it.
#[derive(Clone, Debug)]
pub(crate) struct Membership {
    /// Every replica, the leader included.
    pub(crate) replicas: Vec<NodeId>,
    /// The committed ISR.
    pub(crate) isr: Vec<NodeId>,
    /// Its version (the partition epoch).
    pub(crate) isr_version: u64,
    /// What the controller knows of each replica.
    pub(crate) members: Vec<Member>,
}

/// A leader of one leader epoch.
#[derive(Debug)]
pub struct Leader {
    epoch: LeaderEpoch,
    isr: Vec<NodeId>,
    isr_version: u64,
    /// What the controller knows of each replica: a fenced one is never proposed for
    /// the ISR (the controller would refuse, leaving the proposal, and with it the high
    /// watermark, which counts proposed members, stuck until it returns); a message from
    /// an incarnation newer than the registered one is not believed.
    members: Vec<Member>,
    proposal: Option<Proposal>,
    /// The log end at election: everything below it may be committed by an earlier leader.
    epoch_start: Offset,
    followers: BTreeMap<NodeId, Progress>,
    /// A follower's progress before the leader hears from it.
    template: Progress,
    /// Producers waiting, per acks level, in arrival order: see `settle`.
    waiters: Waiters,
    /// Where the storage has written up to (acks=leader answers).
    written_end: Offset,
    deposed: bool,
}

impl Leader {
    pub(crate) fn new(step: &mut Step<'_>, epoch: LeaderEpoch, membership: Membership) -> Leader {
        let Membership {
            replicas,
            mut isr,
            isr_version,
            members,
        } = membership;
        assert!(isr.contains(&step.id), "{} not in its ISR {isr:?}", step.id);
        assert!(replicas.contains(&step.id), "{} not a replica", step.id);
        isr.sort_unstable();
        let epoch_start = step.log.log_end;
        step.log.epochs.observe(epoch, epoch_start);
        let progress = Progress {
            incarnation: None,
            restarted: false,
            log_end: Offset(0),
            durable_end: Offset(0),
            next_offset: None,
            inflight: 0,
            last_ship_at: step.now,
            progressed_at: step.now,
            caught_up_at: step.now,
            probe: epoch_start,
            probe_at: step.now,
        };
        let followers = replicas
            .iter()
            .filter(|&&node| node != step.id)
            .map(|&node| (node, progress.clone()))
            .collect();
        let progress_template = progress;
        Leader {
            epoch,
            isr,
            isr_version,
            members,
            proposal: None,
            epoch_start,
            followers,
            template: progress_template,
            waiters: Waiters::default(),
            written_end: step.log.durable_end,
            deposed: false,
        }
    }

    /// Computes the high watermark (and answers what it allows) right after election.
    pub(crate) fn start(&mut self, step: &mut Step<'_>) {
        self.advance(step);
    }

    /// The log end at election.
    pub(crate) fn epoch_start(&self) -> Offset {
        self.epoch_start
    }

    pub(crate) fn deposed(&self) -> bool {
        self.deposed
    }

    pub(crate) fn follower_log_ends(&self) -> impl Iterator<Item = (NodeId, Offset)> + '_ {
        self.followers.iter().map(|(id, p)| (*id, p.log_end))
    }

    pub(crate) fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    /// Answers every waiting producer `NotLeader`: this replica no longer leads.
    pub(crate) fn step_down(&mut self, step: &mut Step<'_>) {
        self.deposed = true;
        for waiter in self
            .waiters
            .all
            .drain(..)
            .chain(self.waiters.leader.drain(..))
        {
            step.answer(waiter.request, Err(ProduceError::NotLeader));
        }
    }

    pub(crate) fn produce(
        &mut self,
        step: &mut Step<'_>,
        request: RequestId,
        acks: Acks,
        mut bytes: BytesMut,
    ) {
        let header = match self.admit(step, acks, &bytes) {
            Ok(header) => header,
            Err(error) => return step.answer(request, Err(error)),
        };
        let produced = match step.log.producers.check(&header) {
            SequenceCheck::Append => {
                let base_offset = step.log.log_end;
                batch::patch_base(&mut bytes, base_offset, self.epoch);
                let header = BatchHeader {
                    base_offset,
                    leader_epoch: self.epoch,
                    ..header
                };
                step.log.appended(&header);
                let log_end = step.log.log_end;
                step.actions.push(Action::Append {
                    batches: bytes.freeze(),
                    log_end,
                });
                self.ship_all(step);
                Produced {
                    base_offset,
                    last_offset: header.last_offset(),
                    duplicate: false,
                }
            }
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } => Produced {
                base_offset,
                last_offset,
                duplicate: true,
            },
            SequenceCheck::OutOfOrder { expected } => {
                let found = header.base_sequence;
                return step.answer(
                    request,
                    Err(ProduceError::OutOfOrderSequence { expected, found }),
                );
            }
            SequenceCheck::Fenced { current } => {
                return step.answer(request, Err(ProduceError::ProducerFenced { current }));
            }
        };
        let waiter = Waiter {
            request,
            acks,
            produced,
            deadline: step.now.after(step.config.request_timeout_ms),
        };
        match acks {
            Acks::All => self.waiters.all.push_back(waiter),
            Acks::Leader => self.waiters.leader.push_back(waiter),
        }
        self.settle(step);
    }

    fn admit(
        &self,
        step: &Step<'_>,
        acks: Acks,
        bytes: &[u8],
    ) -> Result<BatchHeader, ProduceError> {
        if self.deposed {
            return Err(ProduceError::NotLeader);
        }
        // The one check of a produced batch (the driver does not check it again).
        let header = batch::validate_produced(bytes).map_err(ProduceError::CorruptBatch)?;
        if acks == Acks::All && !quorum::admits_acks_all(self.isr.len(), step.config.min_insync) {
            return Err(ProduceError::NotEnoughReplicas);
        }
        if self.waiters.len() >= step.config.waiters_max {
            return Err(ProduceError::Busy);
        }
        Ok(header)
    }

    /// Answers the waiters whose batches are committed (or written, for acks=leader), and
    /// those past their deadline. Each queue is in arrival order, which is offset order
    /// (a new batch gets the log end) and deadline order (a fixed timeout after arrival),
    /// so only its front is looked at: this runs on every produce and every ack. A retried
    /// duplicate answered with older offsets is in the queue out of offset order; it is
    /// answered no later than the waiter ahead of it (the high watermark only grows).
    fn settle(&mut self, step: &mut Step<'_>) {
        let high_watermark = step.log.high_watermark;
        let written_end = self.written_end;
        let now = step.now;
        let done = |waiter: &Waiter| {
            let last = waiter.produced.last_offset;
            match waiter.acks {
                Acks::All => quorum::acks_all(last, high_watermark) == AckDecision::Ack,
                Acks::Leader => last < written_end,
            }
        };
        for queue in [&mut self.waiters.all, &mut self.waiters.leader] {
            while let Some(front) = queue.front() {
                let result = if done(front) {
                    Ok(front.produced)
                } else if now >= front.deadline {
                    let base_offset = front.produced.base_offset;
                    Err(ProduceError::Timeout { base_offset })
                } else {
                    break;
                };
                let request = front.request;
                queue.pop_front();
                step.answer(request, result);
            }
        }
    }

    pub(crate) fn on_appended(&mut self, step: &mut Step<'_>, written_end: Offset) {
        self.written_end = self.written_end.max(written_end.min(step.log.log_end));
        self.advance(step);
    }

    pub(crate) fn on_isr_updated(
        &mut self,
        step: &mut Step<'_>,
        epoch: LeaderEpoch,
        isr_version: u64,
        mut isr: Vec<NodeId>,
        members: Vec<Member>,
    ) {
        if epoch != self.epoch || isr_version <= self.isr_version {
            return;
        }
        self.members = members;
        self.follow_members(step);
        isr.sort_unstable();
        if !isr.contains(&step.id) {
            // The controller no longer counts this leader in sync: it is being replaced.
            self.step_down(step);
        }
        self.isr = isr;
        self.isr_version = isr_version;
        // The controller refuses a proposal built on an older version, so one still
        // pending can never be applied now: forget it.
        self.proposal = None;
        for (node, progress) in &mut self.followers {
            if !self.isr.contains(node) {
                progress.restarted = false;
            }
        }
        self.advance(step);
    }

    /// The replicas changed (a move added or removed some): followers are tracked for
    /// exactly the members (the controller lists every replica; an empty list says
    /// nothing of them). An added one has not caught up with anything yet: it may join
    /// the ISR only once it acknowledged the log end as of now (the probe), and holds
    /// everything committed (the ISR rule).
    fn follow_members(&mut self, step: &Step<'_>) {
        if self.members.is_empty() {
            return;
        }
        let members: Vec<NodeId> = self
            .members
            .iter()
            .map(|m| m.node)
            .filter(|node| *node != step.id)
            .collect();
        self.followers.retain(|node, _| members.contains(node));
        for node in members {
            // Shipped an empty ship at the log end on the next heartbeat: a replica
            // that kept its log across a removal and a return (both views coalesced)
            // only answers ships, and answers this one with where its log ends.
            self.followers.entry(node).or_insert_with(|| Progress {
                next_offset: Some(step.log.log_end),
                last_ship_at: step.now,
                progressed_at: step.now,
                caught_up_at: Tick(0),
                probe: step.log.log_end,
                probe_at: step.now,
                ..self.template.clone()
            });
        }
    }

    /// The driver sent `[prev_offset, sent_until)` of a ship that asked for more: the
    /// follower's pipeline continues from there (at once, or on the next tick when the
    /// throttle sent nothing). Ships queued after the shortened one start past its end:
    /// the follower answers them with a `resend`, which restarts it at its log end.
    pub(crate) fn on_ship_shortened(
        &mut self,
        step: &mut Step<'_>,
        to: NodeId,
        prev_offset: Offset,
        sent_until: Offset,
    ) {
        let Some(progress) = self.followers.get_mut(&to) else {
            return;
        };
        match progress.next_offset {
            Some(next) if next > sent_until && prev_offset <= sent_until => {
                progress.next_offset = Some(sent_until);
            }
            _ => return,
        }
        if sent_until == prev_offset {
            // Nothing went out, so no ack will free its slot; the next tick ships again.
            progress.inflight = progress.inflight.saturating_sub(1);
            return;
        }
        self.ship_to(step, to);
    }

    pub(crate) fn on_message(&mut self, step: &mut Step<'_>, from: NodeId, message: Message) {
        match message {
            Message::ShipAck(ack) => self.on_ack(step, from, ack),
            Message::EpochQuery(query) => self.on_query(step, from, query),
            // A leader steps down on the controller's word only (a new role, or an ISR
            // without it), never on a peer's: `Fenced` is remote input that any replica
            // can send with any epoch, and obeyed it left the partition without a serving
            // leader while the controller still named this one. A leader that really was
            // replaced commits nothing meanwhile (its followers refuse its ships and ack
            // only their own epoch) and hears of its successor from the controller.
            Message::Ship(ship) if ship.epoch() < self.epoch => {
                let leader_epoch = self.epoch.0;
                step.send(from, Message::Fenced(Fenced { leader_epoch }));
            }
            Message::Ship(_)
            | Message::EpochAnswer(_)
            | Message::Fenced(_)
            | Message::LogStart(_) => {}
        }
    }

    /// Takes a message's incarnation; false if it is older than the one known, or newer
    /// than the one the controller registered (remote input: no run of the node has
    /// registered it, so it is not believed).
    fn meet(&mut self, from: NodeId, incarnation: Incarnation) -> bool {
        let registered = self
            .members
            .iter()
            .find(|m| m.node == from)
            .map_or(Incarnation(0), |m| m.incarnation);
        if registered != Incarnation(0) && incarnation > registered {
            return false;
        }
        let in_isr = self.isr.contains(&from);
        let Some(progress) = self.followers.get_mut(&from) else {
            return false;
        };
        match progress.incarnation {
            Some(known) if known > incarnation => false,
            Some(known) if known == incarnation => true,
            known => {
                progress.restarted = known.is_some() && in_isr;
                progress.incarnation = Some(incarnation);
                progress.log_end = Offset(0);
                progress.durable_end = Offset(0);
                progress.next_offset = None;
                progress.inflight = 0;
                true
            }
        }
    }

    fn on_query(&mut self, step: &mut Step<'_>, from: NodeId, query: EpochQuery) {
        if LeaderEpoch(query.leader_epoch) != self.epoch || self.deposed {
            return;
        }
        if !self.meet(from, Incarnation(query.incarnation)) {
            return;
        }
        if let Some(progress) = self.followers.get_mut(&from) {
            // It is reconciling: ship nothing until it acks its log end.
            progress.next_offset = None;
            progress.inflight = 0;
        }
        let entry = step
            .log
            .epochs
            .end_offset_for_epoch(LeaderEpoch(query.epoch), step.log.log_end);
        let answer = EpochAnswer {
            leader_epoch: self.epoch.0,
            query_epoch: query.epoch,
            epoch: entry.epoch.0,
            end_offset: entry.start_offset.0,
        };
        step.send(from, Message::EpochAnswer(answer));
    }

    fn on_ack(&mut self, step: &mut Step<'_>, from: NodeId, ack: ShipAck) {
        if LeaderEpoch(ack.leader_epoch) != self.epoch || self.deposed {
            return;
        }
        if !self.meet(from, Incarnation(ack.incarnation)) {
            return;
        }
        let leader_end = step.log.log_end;
        let now = step.now;
        let Some(progress) = self.followers.get_mut(&from) else {
            return;
        };
        let log_end = Offset(ack.log_end).min(leader_end);
        if log_end > progress.log_end {
            progress.progressed_at = now;
        }
        progress.log_end = progress.log_end.max(log_end);
        progress.durable_end = progress
            .durable_end
            .max(Offset(ack.durable_end).min(log_end));
        progress.inflight = progress.inflight.saturating_sub(1);
        match progress.next_offset {
            Some(next) if ack.resend && log_end < next => {
                progress.next_offset = Some(log_end);
                progress.inflight = 0;
            }
            Some(_) => {}
            None => progress.next_offset = Some(log_end),
        }
        if log_end >= leader_end {
            progress.caught_up_at = now;
            progress.probe = leader_end;
            progress.probe_at = now;
        } else if log_end >= progress.probe {
            progress.caught_up_at = progress.caught_up_at.max(progress.probe_at);
            progress.probe = leader_end;
            progress.probe_at = now;
        }
        self.ship_to(step, from);
        self.advance(step);
    }

    /// Recomputes the high watermark, answers producers, proposes ISR changes.
    fn advance(&mut self, step: &mut Step<'_>) {
        if self.deposed {
            return;
        }
        // Every Appended step of every produce comes here: the ISR, sorted and without
        // duplicates as it is kept, is the maximal set as it stands, without a copy.
        let merged: Vec<NodeId>;
        let maximal: &[NodeId] = match &self.proposal {
            None if self.isr.is_sorted_by(|a, b| a < b) => &self.isr,
            proposal => {
                let mut all = self.isr.clone();
                all.extend(proposal.iter().flat_map(|p| p.isr.iter().copied()));
                all.sort_unstable();
                all.dedup();
                merged = all;
                &merged
            }
        };
        let durable_ends = maximal.iter().map(|node| {
            if *node == step.id {
                step.log.durable_end
            } else {
                self.followers
                    .get(node)
                    .map_or(Offset(0), |p| p.durable_end)
            }
        });
        let candidate =
            quorum::high_watermark(durable_ends, self.isr.len(), step.config.min_insync);
        if let Some(candidate) = candidate {
            step.log.raise_high_watermark(candidate);
        }
        self.settle(step);
        self.propose_isr(step);
    }

    fn lags(&self) -> Vec<Lag> {
        self.followers
            .iter()
            .map(|(&node, p)| Lag {
                node,
                caught_up_at: p.caught_up_at,
                durable_end: p.durable_end,
                known: p.incarnation.is_some() && !p.restarted,
                restarted: p.restarted,
                offline: self.members.iter().any(|m| m.node == node && !m.live),
            })
            .collect()
    }

    fn propose_isr(&mut self, step: &mut Step<'_>) {
        if self.proposal.is_some() {
            return;
        }
        let lags = self.lags();
        let lag_ms = step.config.replica_lag_ms;
        let floor = step.log.high_watermark.max(self.epoch_start);
        let changed = isr::shrink(step.id, &self.isr, &lags, step.now, lag_ms)
            .or_else(|| isr::expand(&self.isr, &lags, step.now, lag_ms, floor));
        if let Some(isr) = changed {
            self.proposal = Some(Proposal {
                isr: isr.clone(),
                sent_at: step.now,
            });
            step.actions.push(Action::ProposeIsr {
                epoch: self.epoch,
                isr_version: self.isr_version,
                isr,
            });
        }
    }

    fn ship_all(&mut self, step: &mut Step<'_>) {
        let nodes: Vec<NodeId> = self.followers.keys().copied().collect();
        for node in nodes {
            self.ship_to(step, node);
        }
    }

    /// Ships `[next_offset, log_end)` to `node` if its pipeline has room.
    fn ship_to(&mut self, step: &mut Step<'_>, node: NodeId) {
        let log_end = step.log.log_end;
        let Some(progress) = self.followers.get_mut(&node) else {
            return;
        };
        let Some(next) = progress.next_offset else {
            return;
        };
        if next >= log_end || self.deposed {
            return;
        }
        if next < step.log.log_start {
            // What it needs is deleted: it must restart at the log start. Nothing more is
            // shipped until it acks (its ack after the reset, or its silence timer's,
            // which lands here again if the message was lost).
            progress.next_offset = None;
            progress.inflight = 0;
            progress.last_ship_at = step.now;
            let message = LogStart {
                leader_epoch: self.epoch.0,
                log_start: step.log.log_start.0,
                high_watermark: step.log.high_watermark.0,
            };
            step.send(node, Message::LogStart(message));
            return;
        }
        if progress.inflight >= step.config.ships_inflight_max {
            return;
        }
        if next == progress.log_end {
            progress.progressed_at = step.now;
        }
        progress.next_offset = Some(log_end);
        progress.inflight += 1;
        progress.last_ship_at = step.now;
        let ship = self.ship_head(step.log, next);
        let throttled = self.catching_up(node);
        step.actions.push(Action::Ship {
            to: node,
            ship,
            until: log_end,
            throttled,
        });
    }

    /// Whether `node` is a replica a move is adding that is not in sync yet.
    fn catching_up(&self, node: NodeId) -> bool {
        !self.isr.contains(&node) && self.members.iter().any(|m| m.node == node && m.catching_up)
    }

    fn ship_head(&self, log: &LocalLog, prev_offset: Offset) -> Ship {
        Ship {
            leader_epoch: self.epoch.0,
            prev_offset: prev_offset.0,
            prev_epoch: log.epochs.epoch_before(prev_offset).0,
            high_watermark: log.high_watermark.0,
            batches: crate::message::Batches::default(),
        }
    }

    pub(crate) fn tick(&mut self, step: &mut Step<'_>) {
        if self.deposed {
            return;
        }
        let nodes: Vec<NodeId> = self.followers.keys().copied().collect();
        for node in nodes {
            self.resend_or_heartbeat(step, node);
        }
        if let Some(proposal) = &mut self.proposal {
            if step.now.since(proposal.sent_at) >= step.config.retry_ms {
                proposal.sent_at = step.now;
                step.actions.push(Action::ProposeIsr {
                    epoch: self.epoch,
                    isr_version: self.isr_version,
                    isr: proposal.isr.clone(),
                });
            }
        }
        self.advance(step);
    }

    fn resend_or_heartbeat(&mut self, step: &mut Step<'_>, node: NodeId) {
        let now = step.now;
        let Some(progress) = self.followers.get_mut(&node) else {
            return;
        };
        let Some(next) = progress.next_offset else {
            return;
        };
        // Measured from the follower's last progress, not from the last message sent:
        // heartbeats go out every `heartbeat_ms` and must not hide lost ships.
        if next > progress.log_end && now.since(progress.progressed_at) >= step.config.retry_ms {
            progress.next_offset = Some(progress.log_end);
            progress.inflight = 0;
        }
        self.ship_to(step, node);
        let Some(progress) = self.followers.get_mut(&node) else {
            return;
        };
        if now.since(progress.last_ship_at) >= step.config.heartbeat_ms {
            progress.last_ship_at = now;
            // At what the follower acked: a heartbeat past it, while ships to it are on
            // their way, made the follower ask for a resend and the leader ship it all
            // again, every heartbeat, so a catch-up slower than a heartbeat crawled. A
            // follower not heard from yet is probed at the next offset instead: its
            // answer tells where its log ends.
            let acked = progress.incarnation.map(|_| progress.log_end);
            let at = match (progress.next_offset, acked) {
                (Some(next), Some(acked)) => next.min(acked),
                (next, acked) => next.or(acked).unwrap_or(progress.log_end),
            };
            let ship = self.ship_head(step.log, at);
            step.actions.push(Action::Ship {
                to: node,
                ship,
                until: at,
                throttled: false,
            });
        }
    }

    pub(crate) fn invariants(&self, id: NodeId, config: &ReplicaConfig, log: &LocalLog) {
        assert!(
            self.isr.contains(&id) || self.deposed,
            "leader {id} not in ISR {:?}",
            self.isr
        );
        assert!(
            self.waiters.len() <= config.waiters_max,
            "{} waiters",
            self.waiters.len()
        );
        assert!(
            self.epoch_start <= log.log_end,
            "{} > {}",
            self.epoch_start,
            log.log_end
        );
        for (node, progress) in &self.followers {
            assert!(*node != id, "leader tracks itself");
            assert!(
                progress.durable_end <= progress.log_end,
                "{node}: {progress:?}"
            );
            assert!(
                progress.inflight <= config.ships_inflight_max,
                "{node}: {progress:?}"
            );
        }
    }
}
