//! [`ReplicaDriver`]: the only async code of the replicator. It feeds inputs to one
//! [`PartitionReplica`] and performs its actions on a real [`PartitionLog`] and on a
//! [`Transport`], which `net` implements.
//!
//! ```text
//!  produce / receive / become_* / isr_updated / tick        (any task, never awaits the log)
//!        |  step(now, input), drain_actions
//!        v
//!  action queue (in order) --> run(): the one worker task, one action at a time
//!        Append   -> append_replicated_start per batch -> step(Appended{..})
//!                    the flusher (beside the worker) waits for the newest append to be
//!                    durable -> step(Appended{..}) again
//!        Truncate -> log.truncate
//!        Reset    -> log.reset (a follower behind its leader's log start)
//!        Ship     -> log.read [prev_offset, until) -> transport.send
//!        Send     -> transport.send
//!        Answer   -> the waiting produce future (oneshot per RequestId)
//!  ProposeIsr -> proposals outbox, drained by the caller (the controller client)
//! ```
//!
//! Order: the replica's actions are performed strictly in the order it queued them, by
//! one task (`run`), so a ship never reads a batch whose append has not been performed
//! and a truncation never overtakes an append. Appends are only *inserted* in order;
//! their flush is awaited beside the worker, so one flush (and fdatasync) serves every
//! batch appended meanwhile, as on the leader.
//!
//! Storage reports: the driver steps `Appended { written_end, durable_end }` whenever the
//! log's acknowledged end (what its flush policy promises: synced under `always`,
//! written otherwise) or durable end moved: after an append, after the flusher's wait,
//! and on `tick` (policies `interval` and `never` sync in the background). `acks=leader`
//! is answered below the acknowledged end, never below the log end alone: a batch only
//! in memory is not written. No report is made
//! while a queued truncation or reset is not yet performed: the log's durable end would
//! then cover offsets the replica has already cut, and their replacements would count as
//! durable before they are written. The same reports carry the log start when retention
//! (the engine's `tick`, capped at the high watermark kept here) moved it: `Retained`.
//!
//! Snapshots: beside the replica, the driver keeps a [`ReplicaSnapshot`] (producers and
//! epochs) of exactly the batches the log holds, applied as each append is inserted and
//! cut with each truncation, so it is the log's state at every await. When an insert
//! finds the log rolled (the batch is the first of a new active segment), the state
//! before that batch is written as the snapshot at the segment's base; a clean stop
//! writes one at the log end. `open` restores the newest usable snapshot and replays only
//! the batches after it ([`Recovery`] says what it did); a damaged one, or one whose
//! offset is not a batch boundary of the log, falls back to the next older, and then to
//! the whole log.
//!
//! Single-threaded: the replica sits in a `RefCell` that is never borrowed across an
//! `.await`; share the driver as `Rc<ReplicaDriver<..>>` and spawn [`ReplicaDriver::run`]
//! on the shard's executor.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::pin::pin;
use std::rc::Rc;

use bytes::BytesMut;
use futures::channel::oneshot;
use futures::future::{Either, select};
use shardlog_engine::batch::BatchHeader;
use shardlog_engine::{
    Error as EngineError, LeaderEpoch, Offset, PartitionLog, PendingAppend, Storage,
};

use crate::config::ReplicaConfig;
use crate::error::ProduceError;
use crate::ids::{Incarnation, NodeId, RequestId, Tick};
use crate::local_queue::LocalQueue;
use crate::message::{Batches, Message};
use crate::replica::{Acks, Action, Input, Member, PartitionReplica, Produced};
use crate::replica_snapshot::ReplicaSnapshot;
use crate::throttle::MoveThrottle;

/// Bytes asked of one log read while assembling a ship.
const SHIP_READ_BYTES: usize = 1 << 20;
/// The most bytes of batches one ship carries (a frame holds 64 MiB): a follower far
/// behind (a replica a move added, catching up from the log start) gets its backlog in
/// ships of this size, pipelined, instead of one ship of the whole log.
const SHIP_BYTES_MAX: usize = 8 << 20;

/// Where a replica's messages go. `send` only enqueues: it never blocks and never fails
/// (a message that cannot be delivered is dropped; the replica retries on its timers).
/// Not `Send`: an implementation may hold `Rc`s of the shard.
pub trait Transport {
    /// Enqueues `message` for the replica of this partition on node `to`.
    fn send(&self, to: NodeId, message: Message);
}

/// An ISR change the replica asks the controller for (its `ProposeIsr` action).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    /// The proposer's leader epoch.
    pub epoch: LeaderEpoch,
    /// The committed ISR version the proposal builds on.
    pub isr_version: u64,
    /// The proposed members.
    pub isr: Vec<NodeId>,
}

/// Why the worker stopped: the log failed. The partition must be closed and reopened
/// (the replica restarts from what the log recovers); nothing else is safe.
#[derive(Debug, thiserror::Error)]
#[error("replica {node}: storage failed: {source}")]
pub struct DriverError {
    /// The node.
    pub node: NodeId,
    /// The engine's error.
    #[source]
    pub source: EngineError,
}

/// How [`ReplicaDriver::open`] rebuilt the replica's state from its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The snapshot it started from; `None`: it replayed the log from its start.
    pub snapshot: Option<Offset>,
    /// Batches read and replayed after it.
    pub batches_replayed: u64,
    /// Their bytes.
    pub bytes_replayed: u64,
}

struct State {
    replica: PartitionReplica,
    now: Tick,
    next_request: u64,
    waiters: BTreeMap<RequestId, oneshot::Sender<Result<Produced, ProduceError>>>,
    proposals: Vec<IsrProposal>,
    /// Truncations and resets queued and not yet performed.
    truncates_pending: usize,
    /// The last `(written_end, durable_end)` reported to the replica.
    reported: (Offset, Offset),
    /// The last log start reported to the replica.
    reported_start: Offset,
    scratch: Vec<Action>,
}

/// Drives one partition replica against its log. See the module docs.
pub struct ReplicaDriver<S: Storage, T: Transport> {
    log: Rc<PartitionLog<S>>,
    transport: T,
    state: RefCell<State>,
    /// The replica's actions, performed in order by `run`.
    queue: LocalQueue<Action>,
    /// Appends started and not yet known durable: the flusher waits for the newest.
    flushes: LocalQueue<PendingAppend>,
    /// `run` was called (it may be only once).
    running: Cell<bool>,
    failed: Cell<bool>,
    /// `ReplicaConfig::durable_when_acked`.
    durable_when_acked: bool,
    /// The state of exactly the batches the log holds (see the module docs).
    image: RefCell<ReplicaSnapshot>,
    /// The active segment's base as last seen: an insert that finds another rolled.
    seen_active_base: Cell<Offset>,
    recovery: Recovery,
    /// The budget of ships to catching-up replicas (`Action::Ship::throttled`); `None`:
    /// unthrottled.
    throttle: RefCell<Option<Rc<MoveThrottle>>>,
}

impl<S: Storage, T: Transport> std::fmt::Debug for ReplicaDriver<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("ReplicaDriver")
            .field("replica", &state.replica)
            .field("truncates_pending", &state.truncates_pending)
            .field("reported", &state.reported)
            .field("failed", &self.failed.get())
            .finish_non_exhaustive()
    }
}

impl<S: Storage, T: Transport> ReplicaDriver<S, T> {
    /// A driver for the replica `id` (in its `incarnation`) of the partition held by
    /// `log`, as opened (and recovered) by the engine. Restores the newest usable
    /// snapshot and replays the batches after it (all of them without one) before
    /// anything else, so the replica knows its log end, epochs and producers. `now` is
    /// the caller's clock at start.
    ///
    /// A log whose start is above offset 0 (retention deleted its head) starts the
    /// replica there. A log that is not contiguous from its start (a gap left by
    /// `shardlog repair`) is refused with [`EngineError::NotContiguous`].
    pub async fn open(
        log: Rc<PartitionLog<S>>,
        transport: T,
        config: ReplicaConfig,
        id: NodeId,
        incarnation: Incarnation,
        now: Tick,
    ) -> Result<Self, EngineError> {
        let durable_when_acked = config.durable_when_acked;
        let mut replica = PartitionReplica::new(config, id, incarnation);
        let (log_start, log_end) = (log.log_start(), log.log_end());
        let (image, recovery) = recover(&log).await?;
        replica.recover_state(log_start, &image);
        assert_eq!(replica.log_end(), log_end, "recovered log end");
        let active_base = log.active_base();
        Ok(ReplicaDriver {
            log,
            transport,
            state: RefCell::new(State {
                replica,
                now,
                next_request: 0,
                waiters: BTreeMap::new(),
                proposals: Vec::new(),
                truncates_pending: 0,
                reported: (log_end, log_end),
                reported_start: log_start,
                scratch: Vec::new(),
            }),
            queue: LocalQueue::default(),
            flushes: LocalQueue::default(),
            running: Cell::new(false),
            failed: Cell::new(false),
            durable_when_acked,
            image: RefCell::new(image),
            seen_active_base: Cell::new(active_base),
            recovery,
            throttle: RefCell::new(None),
        })
    }

    /// Sets the byte budget of ships to catching-up replicas (shared by a shard's
    /// drivers, or this partition's own when its move has a throttle); `None`: none.
    pub fn set_throttle(&self, throttle: Option<Rc<MoveThrottle>>) {
        *self.throttle.borrow_mut() = throttle;
    }

    /// How `open` rebuilt the replica's state.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Performs the replica's actions until [`ReplicaDriver::stop`] or a storage failure.
    /// Spawn it once, on the executor that owns the log.
    pub async fn run(&self) -> Result<(), DriverError> {
        assert!(
            !self.running.replace(true),
            "ReplicaDriver::run called twice"
        );
        let actions = async {
            while let Some(action) = self.queue.pop().await {
                self.perform(action).await?;
            }
            Ok(())
        };
        let flusher = async {
            loop {
                let Some(mut newest) = self.flushes.pop().await else {
                    return Ok(());
                };
                // Waiting for the newest covers every append before it.
                while let Some(next) = self.flushes.try_pop() {
                    newest = next;
                }
                self.log.append_wait(&newest).await?;
                self.report_storage();
            }
        };
        let result = match select(pin!(actions), pin!(flusher)).await {
            // Stopped: the flusher finishes its flush (dropping it mid-flush would stop
            // the log), then what was appended becomes durable (and reported).
            Either::Left((Ok(()), flusher)) => {
                self.flushes.close();
                match flusher.await {
                    Ok(()) => self.sync_at_stop().await,
                    Err(e) => Err(e),
                }
            }
            Either::Left((Err(e), _)) | Either::Right((Err(e), _)) => Err(e),
            Either::Right((Ok(()), _)) => {
                unreachable!("the flush queue closes only once the actions end")
            }
        };
        if let Err(source) = result {
            self.failed.set(true);
            self.queue.close();
            // Dropping the waiters answers their produce calls (NotLeader).
            self.state.borrow_mut().waiters.clear();
            return Err(DriverError {
                node: self.id(),
                source,
            });
        }
        Ok(())
    }

    /// Ends `run` once the actions queued so far are performed.
    pub fn stop(&self) {
        self.queue.close();
    }

    /// Produces `batch` (one record batch as the client sent it); resolves with the
    /// replica's answer. If the driver stops first, the answer is `NotLeader`.
    pub async fn produce(&self, acks: Acks, batch: BytesMut) -> Result<Produced, ProduceError> {
        self.submit(acks, batch).await
    }

    /// [`ReplicaDriver::produce`] split for callers that must keep request order: the
    /// replica takes the batch (and gives it its offsets) before this returns; the future
    /// only waits for the answer.
    pub fn submit(
        &self,
        acks: Acks,
        batch: BytesMut,
    ) -> impl Future<Output = Result<Produced, ProduceError>> + 'static {
        let (sender, receiver) = oneshot::channel();
        if self.failed.get() {
            let _ = sender.send(Err(ProduceError::NotLeader));
        } else {
            let request = {
                let mut state = self.state.borrow_mut();
                state.next_request += 1;
                let request = RequestId(state.next_request);
                state.waiters.insert(request, sender);
                request
            };
            self.step(Input::Produce {
                request,
                acks,
                batch,
            });
        }
        async move { receiver.await.unwrap_or(Err(ProduceError::NotLeader)) }
    }

    /// A message from the replica on node `from` (decoded and validated by the caller).
    pub fn receive(&self, from: NodeId, message: Message) {
        self.step(Input::Received { from, message });
    }

    /// The controller made this replica the leader of `epoch`; `members` is what it knows
    /// of each replica.
    pub fn become_leader(
        &self,
        epoch: LeaderEpoch,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        isr_version: u64,
        members: Vec<Member>,
    ) {
        self.step(Input::BecomeLeader {
            epoch,
            replicas,
            isr,
            isr_version,
            members,
        });
    }

    /// A controller decision for this replica, as [`crate::controller::replica_input`]
    /// makes it from the metadata: `BecomeLeader`, `BecomeFollower` or `IsrUpdated`
    /// (any other input is not the controller's and is ignored).
    pub fn control(&self, input: Input) {
        let decision = matches!(
            input,
            Input::BecomeLeader { .. } | Input::BecomeFollower { .. } | Input::IsrUpdated { .. }
        );
        debug_assert!(decision, "not a controller decision: {input:?}");
        if decision {
            self.step(input);
        }
    }

    /// The controller made this replica a follower of `leader` in `epoch`.
    pub fn become_follower(&self, epoch: LeaderEpoch, leader: NodeId) {
        self.step(Input::BecomeFollower { epoch, leader });
    }

    /// The controller's ISR for `epoch` at a new version (after a proposal, or a replica
    /// fenced or back); `members` is what it knows of each replica.
    pub fn isr_updated(
        &self,
        epoch: LeaderEpoch,
        isr_version: u64,
        isr: Vec<NodeId>,
        members: Vec<Member>,
    ) {
        self.step(Input::IsrUpdated {
            epoch,
            isr_version,
            isr,
            members,
        });
    }

    /// Time passed: `now` is the caller's monotonic clock in ms (an earlier value than the
    /// last is taken as the last). Also reports the log's progress if it moved.
    pub fn tick(&self, now: Tick) {
        {
            let mut state = self.state.borrow_mut();
            state.now = state.now.max(now);
        }
        self.step(Input::Tick);
        self.report_storage();
    }

    /// The ISR changes the replica asked for since the last call, oldest first.
    pub fn take_proposals(&self) -> Vec<IsrProposal> {
        std::mem::take(&mut self.state.borrow_mut().proposals)
    }

    /// The node.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.state.borrow().replica.id()
    }

    /// The replica's high watermark.
    #[must_use]
    pub fn high_watermark(&self) -> Offset {
        self.state.borrow().replica.high_watermark()
    }

    /// [`PartitionReplica::served_high_watermark`].
    #[must_use]
    pub fn served_high_watermark(&self) -> Option<Offset> {
        self.state.borrow().replica.served_high_watermark()
    }

    /// The replica's log end (appends queued included).
    #[must_use]
    pub fn log_end(&self) -> Offset {
        self.state.borrow().replica.log_end()
    }

    /// The epoch this replica leads, if it does.
    #[must_use]
    pub fn leading(&self) -> Option<LeaderEpoch> {
        self.state.borrow().replica.leading()
    }

    /// [`PartitionReplica::follower_log_ends`].
    #[must_use]
    pub fn follower_log_ends(&self) -> Vec<(NodeId, Offset)> {
        self.state.borrow().replica.follower_log_ends()
    }

    /// The committed ISR, if this replica leads.
    #[must_use]
    pub fn isr(&self) -> Option<Vec<NodeId>> {
        self.state.borrow().replica.isr().map(<[NodeId]>::to_vec)
    }

    /// The log.
    #[must_use]
    pub fn log(&self) -> &Rc<PartitionLog<S>> {
        &self.log
    }

    /// The storage failed and the worker stopped.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.failed.get()
    }

    /// Steps the replica and queues its actions. Never awaits.
    fn step(&self, input: Input) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state.replica.step(state.now, input);
        state.replica.drain_actions(&mut state.scratch);
        for action in state.scratch.drain(..) {
            match action {
                Action::ProposeIsr {
                    epoch,
                    isr_version,
                    isr,
                } => state.proposals.push(IsrProposal {
                    epoch,
                    isr_version,
                    isr,
                }),
                action => {
                    if matches!(action, Action::Truncate { .. } | Action::Reset { .. }) {
                        state.truncates_pending += 1;
                    }
                    // Fails only once stopped: the actions are dropped with the driver.
                    let _ = self.queue.push(action);
                }
            }
        }
        // The log keeps the high watermark for its checkpoint: raise it, never past what
        // the log holds (a follower's replica may be ahead of appends still queued).
        let high_watermark = state.replica.high_watermark().min(self.log.log_end());
        if high_watermark > self.log.high_watermark() {
            self.log.set_high_watermark(high_watermark);
        }
    }

    /// Tells the replica how far the log is acknowledged and durable, and where it starts,
    /// if that moved and no truncation or reset is pending.
    fn report_storage(&self) {
        let log_start = self.log.log_start();
        let moved = {
            let mut state = self.state.borrow_mut();
            let moved = state.truncates_pending == 0 && log_start > state.reported_start;
            if moved {
                state.reported_start = log_start;
            }
            moved
        };
        if moved {
            self.step(Input::Retained { log_start });
        }
        let written_end = self.log.acked_end();
        let durable = if self.durable_when_acked {
            written_end
        } else {
            self.log.durable_end()
        };
        let durable_end = durable.min(written_end);
        {
            let mut state = self.state.borrow_mut();
            if state.truncates_pending > 0 || state.reported == (written_end, durable_end) {
                return;
            }
            state.reported = (written_end, durable_end);
        }
        self.step(Input::Appended {
            written_end,
            durable_end,
        });
    }

    async fn perform(&self, action: Action) -> Result<(), EngineError> {
        match action {
            Action::Append { batches, log_end } => {
                let mut rest = batches;
                let mut newest = None;
                // Inserted in order here; made durable by the flusher, so one flush
                // serves every batch appended meanwhile (group commit). The replica
                // validated every batch (a leader each produced one, a follower each
                // shipped one), so the CRC is not computed again.
                while !rest.is_empty() {
                    let header =
                        BatchHeader::parse(&rest).map_err(shardlog_engine::Error::InvalidBatch)?;
                    let size = (header.size as usize).min(rest.len());
                    newest = Some(self.log.append_validated_start(rest.split_to(size)).await?);
                    self.snapshot_on_roll(&header).await;
                    self.image.borrow_mut().apply(&header);
                }
                let end = self.log.log_end();
                assert_eq!(end, log_end, "{}: append ends at {end}", self.id());
                self.report_storage();
                if let Some(pending) = newest {
                    // The receiver lives as long as `run`, which performs this.
                    let _ = self.flushes.push(pending);
                }
            }
            Action::Truncate { log_end } => {
                let end = self.log.truncate(log_end).await?;
                assert_eq!(end, log_end, "{}: truncation inside a batch", self.id());
                self.image.borrow_mut().truncate(log_end);
                self.seen_active_base.set(self.log.active_base());
                self.state.borrow_mut().truncates_pending -= 1;
                self.report_storage();
            }
            Action::Reset { log_start } => {
                self.log.reset(log_start).await?;
                // The engine deleted every snapshot with the log; the state restarts empty.
                *self.image.borrow_mut() = ReplicaSnapshot::empty(log_start);
                self.seen_active_base.set(self.log.active_base());
                {
                    let mut state = self.state.borrow_mut();
                    state.truncates_pending -= 1;
                    state.reported_start = log_start;
                }
                self.report_storage();
            }
            Action::Send { to, message } => self.transport.send(to, message),
            Action::Ship {
                to,
                ship,
                until,
                throttled,
            } => self.ship(to, ship, until, throttled).await?,
            Action::Answer { request, result } => {
                let waiter = self.state.borrow_mut().waiters.remove(&request);
                if let Some(waiter) = waiter {
                    // The producer may have gone away: nobody to tell.
                    let _ = waiter.send(result);
                }
            }
            Action::ProposeIsr { .. } => unreachable!("proposals bypass the queue"),
        }
        Ok(())
    }

    /// Called right after `header`'s batch was inserted, before the image takes it: if
    /// the log rolled, this batch is the first of the new active segment, and the image
    /// is the state of everything before it, written as the snapshot at its base.
    async fn snapshot_on_roll(&self, header: &BatchHeader) {
        let base = self.log.active_base();
        if base == self.seen_active_base.get() {
            return;
        }
        self.seen_active_base.set(base);
        // A roll happens only on an insert or, by age, between two: so the batch just
        // inserted starts the new segment. Anything else writes nothing.
        if base != header.base_offset {
            return;
        }
        let payload = {
            let image = self.image.borrow();
            assert_eq!(image.log_end(), base, "{}: image behind the log", self.id());
            image.encode()
        };
        // A failure is logged by the engine; an older snapshot (or a longer replay) serves.
        let _ = self.log.write_snapshot(base, &payload).await;
    }

    /// A clean stop: the snapshot at the log end, so that the next open replays nothing.
    /// Makes what was appended durable, reports it, and snapshots the state at the end.
    async fn sync_at_stop(&self) -> Result<(), EngineError> {
        self.log.sync().await?;
        self.report_storage();
        self.snapshot_at_stop().await;
        Ok(())
    }

    async fn snapshot_at_stop(&self) {
        let end = self.log.log_end();
        if self.log.snapshot_offsets().last() == Some(&end) {
            return;
        }
        let payload = {
            let image = self.image.borrow();
            assert_eq!(image.log_end(), end, "{}: image behind the log", self.id());
            image.encode()
        };
        let _ = self.log.write_snapshot(end, &payload).await;
    }

    /// Sends `ship` with the stored batches of `[prev_offset, until)`, or of a prefix of
    /// them (at most `SHIP_BYTES_MAX`, and what the throttle allows when `throttled`),
    /// telling the replica where a shortened ship ended.
    async fn ship(
        &self,
        to: NodeId,
        mut ship: crate::message::Ship,
        until: Offset,
        throttled: bool,
    ) -> Result<(), EngineError> {
        let prev_offset = Offset(ship.prev_offset);
        let throttle = if throttled {
            self.throttle.borrow().clone()
        } else {
            None
        };
        let now = self.state.borrow().now;
        let budget = throttle.as_ref().and_then(|t| t.budget(now));
        let bytes_max = budget.map_or(SHIP_BYTES_MAX, |b| b.min(SHIP_BYTES_MAX));
        let shortened = |sent_until| Input::ShipShortened {
            to,
            prev_offset,
            sent_until,
        };
        if bytes_max == 0 && until > prev_offset {
            self.step(shortened(prev_offset));
            return Ok(());
        }
        let Some((batches, end)) = self.read_range(prev_offset, until, bytes_max).await? else {
            return Ok(());
        };
        if let Some(throttle) = &throttle {
            throttle.spend(batches.bytes());
        }
        ship.batches = batches;
        self.transport.send(to, Message::Ship(ship));
        if end < until {
            self.step(shortened(end));
        }
        Ok(())
    }

    /// The stored batches of `[from, until)`, or of its prefix that ends at the first
    /// batch boundary at or past `bytes_max` bytes (at least one batch), with where it
    /// ends; `None` if the log no longer holds that range (truncated meanwhile): the
    /// replica resends on its timer. The batches are slices of the buffers the log's
    /// reads returned (tail cache or disk), not copies.
    async fn read_range(
        &self,
        from: Offset,
        until: Offset,
        bytes_max: usize,
    ) -> Result<Option<(Batches, Offset)>, EngineError> {
        let mut out = Batches::default();
        let mut at = from;
        while at < until && out.bytes() < bytes_max {
            let read = match self.log.read(at, SHIP_READ_BYTES).await {
                Ok(read) => read,
                Err(EngineError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if read.chunks.is_empty() {
                return Ok(None);
            }
            for chunk in &read.chunks {
                let Some(next) = take_run(chunk, &mut out, at, until, bytes_max) else {
                    return Ok(None);
                };
                at = next;
            }
        }
        Ok((at <= until).then_some((out, at)))
    }
}

/// Adds to `out` the run of `chunk`'s batches that starts at offset `at`, below `until`,
/// until `out` holds `bytes_max` bytes (one slice of `chunk`); returns the offset after
/// it, or `None` if `chunk` does not continue at `at` (the log changed under the read).
fn take_run(
    chunk: &bytes::Bytes,
    out: &mut Batches,
    mut at: Offset,
    until: Offset,
    bytes_max: usize,
) -> Option<Offset> {
    let mut bytes = out.bytes();
    let mut run: Option<(usize, usize)> = None;
    let mut count = 0u32;
    for (position, header) in crate::message::headers(chunk) {
        if header.base_offset >= until || bytes >= bytes_max {
            break;
        }
        if header.base_offset != at {
            return None;
        }
        let end = position + header.size as usize;
        run = Some((run.map_or(position, |(start, _)| start), end));
        count += 1;
        bytes += header.size as usize;
        at = header.next_offset();
    }
    if let Some((start, end)) = run {
        out.push(chunk.slice(start..end), count);
    }
    Some(at)
}

/// The state of the log's batches: the newest usable snapshot plus the batches after it,
/// or, without one, every batch from the log start.
async fn recover<S: Storage>(
    log: &PartitionLog<S>,
) -> Result<(ReplicaSnapshot, Recovery), EngineError> {
    let (log_start, log_end) = (log.log_start(), log.log_end());
    for offset in log.snapshot_offsets().into_iter().rev() {
        if offset < log_start || offset > log_end {
            continue;
        }
        let decoded = match log.read_snapshot(offset).await {
            // The engine logged why.
            None => None,
            Some(payload) => ReplicaSnapshot::decode(&payload, offset)
                .inspect_err(|error| {
                    tracing::warn!(dir = %log.dir().display(), %offset, %error, "snapshot not used");
                })
                .ok(),
        };
        if let Some(state) = decoded {
            match replay(log, state).await {
                Ok((state, mut recovery)) => {
                    recovery.snapshot = Some(offset);
                    return Ok((state, recovery));
                }
                Err(EngineError::NotContiguous { log_end, found }) => {
                    tracing::warn!(dir = %log.dir().display(), %offset, %log_end, %found, "snapshot not at a batch boundary; not used");
                }
                Err(e) => return Err(e),
            }
        }
        // Unusable now is unusable for good: left in place it would stay the newest and
        // keep a clean stop from writing a good one at the same offset.
        if let Err(error) = log.delete_snapshot(offset).await {
            tracing::warn!(dir = %log.dir().display(), %offset, %error, "deleting an unusable snapshot failed");
        }
    }
    replay(log, ReplicaSnapshot::empty(log_start)).await
}

/// Applies the log's batches from `state.log_end()` to the log end to `state`.
async fn replay<S: Storage>(
    log: &PartitionLog<S>,
    mut state: ReplicaSnapshot,
) -> Result<(ReplicaSnapshot, Recovery), EngineError> {
    let log_end = log.log_end();
    let mut recovery = Recovery::default();
    while state.log_end() < log_end {
        let at = state.log_end();
        let read = log.read(at, SHIP_READ_BYTES).await?;
        for (header, bytes) in read.batches() {
            if header.base_offset != state.log_end() {
                return Err(EngineError::NotContiguous {
                    log_end: state.log_end(),
                    found: header.base_offset,
                });
            }
            state.apply(&header);
            recovery.batches_replayed += 1;
            recovery.bytes_replayed += bytes.len() as u64;
        }
        if state.log_end() == at {
            // Nothing read below the log end: the log has a hole here.
            return Err(EngineError::NotContiguous {
                log_end: at,
                found: read.next_offset,
            });
        }
    }
    Ok((state, recovery))
}
