//! The follower's side: reconcile with a new leader by leader epoch, then append the
//! leader's ships if they continue the log, and ack log end and durable end.
//!
//! On becoming a follower of epoch E, the replica asks the leader where the latest epoch
//! of its own log ends there (EpochQuery) and truncates to the answer, repeating with
//! older epochs until both logs hold the same epoch (KIP-101, KIP-279; decision in
//! `leader_epoch.rs`). Only then does it ack, and the leader ships from its log end.
//! A ship continues the log if it starts at the log end and its `prev_epoch` is the
//! epoch of the follower's last batch; a ship starting past the log end gets a `resend`
//! ack, one starting before it has its known prefix skipped. Every batch is validated
//! before it is appended: bytes from a peer are input. Length and CRC are checked once,
//! when the ship is received (`message::open`); offsets and epochs here, against the log.
//! Ships of an older epoch are answered `Fenced`.
//!
//! A leader whose log starts past this follower's next offset (retention deleted what it
//! needs) says so with `LogStart`; if the log ends below that start, the follower empties
//! it and restarts it there (an `Action::Reset`), then acks and is shipped from there on.
//! It never resets below its own log end, so never below its high watermark: what it
//! discards lies below the leader's log start, which is committed (the leader's retention
//! stops at its high watermark) and deleted there.

use shardlog_engine::{LeaderEpoch, Offset};

use crate::ids::{NodeId, Tick};
use crate::leader_epoch::Reconcile;
use crate::message::{self, EpochAnswer, EpochQuery, Fenced, LogStart, Message, Ship, ShipAck};
use crate::replica::{Action, Step};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the answer about `query`.
    Reconciling { query: LeaderEpoch, sent_at: Tick },
    /// The log is a prefix of the leader's.
    Following,
}

/// A follower of one leader epoch.
#[derive(Debug)]
pub struct Follower {
    epoch: LeaderEpoch,
    leader: NodeId,
    phase: Phase,
    /// When the leader was last heard from, or this follower last acked. A leader ships
    /// nothing to a follower until it acks once after reconciling, so a lost ack would
    /// leave both waiting: silent for `retry_ms`, the follower acks again.
    last_contact: Tick,
}

impl Follower {
    pub(crate) fn new(step: &mut Step<'_>, epoch: LeaderEpoch, leader: NodeId) -> Follower {
        let mut follower = Follower {
            epoch,
            leader,
            phase: Phase::Following,
            last_contact: step.now,
        };
        follower.query(step, step.log.epochs.last_epoch());
        follower
    }

    fn query(&mut self, step: &mut Step<'_>, query: LeaderEpoch) {
        self.phase = Phase::Reconciling {
            query,
            sent_at: step.now,
        };
        let message = Message::EpochQuery(EpochQuery {
            leader_epoch: self.epoch.0,
            incarnation: step.incarnation.0,
            epoch: query.0,
        });
        step.send(self.leader, message);
    }

    /// Tells the leader the log end and durable end.
    pub(crate) fn ack(&mut self, step: &mut Step<'_>, resend: bool) {
        if self.phase != Phase::Following {
            return;
        }
        self.last_contact = step.now;
        let ack = ShipAck {
            leader_epoch: self.epoch.0,
            incarnation: step.incarnation.0,
            log_end: step.log.log_end.0,
            durable_end: step.log.durable_end.0,
            resend,
        };
        step.send(self.leader, Message::ShipAck(ack));
    }

    pub(crate) fn on_message(&mut self, step: &mut Step<'_>, from: NodeId, message: Message) {
        match message {
            Message::Ship(ship) => self.on_ship(step, from, &ship),
            Message::LogStart(start) => self.on_log_start(step, from, start),
            Message::EpochAnswer(answer) if from == self.leader => self.on_answer(step, answer),
            Message::EpochQuery(query) if LeaderEpoch(query.leader_epoch) < self.epoch => {
                let leader_epoch = self.epoch.0;
                step.send(from, Message::Fenced(Fenced { leader_epoch }));
            }
            Message::EpochAnswer(_)
            | Message::EpochQuery(_)
            | Message::ShipAck(_)
            | Message::Fenced(_) => {}
        }
    }

    fn on_answer(&mut self, step: &mut Step<'_>, answer: EpochAnswer) {
        let Phase::Reconciling { query, .. } = self.phase else {
            return;
        };
        if LeaderEpoch(answer.leader_epoch) != self.epoch
            || LeaderEpoch(answer.query_epoch) != query
        {
            return;
        }
        let decision = step.log.epochs.reconcile(
            step.log.log_end,
            LeaderEpoch(answer.epoch),
            Offset(answer.end_offset),
        );
        // Nothing below the log start is held: an answer below it cuts everything held.
        let log_start = step.log.log_start;
        let decision = match decision {
            Reconcile::Done { log_end } => Reconcile::Done {
                log_end: log_end.max(log_start),
            },
            Reconcile::Again { log_end, query } => Reconcile::Again {
                log_end: log_end.max(log_start),
                query,
            },
        };
        let cut_to = match decision {
            Reconcile::Done { log_end } | Reconcile::Again { log_end, .. } => log_end,
        };
        if cut_to < step.log.high_watermark {
            // No correct leader asks to cut what is committed: remote input that would
            // break this replica's invariant is refused (the query is asked again on
            // the retry timer), never obeyed and never asserted.
            return;
        }
        match decision {
            Reconcile::Done { log_end } => {
                step.truncate(log_end);
                self.phase = Phase::Following;
                self.ack(step, false);
            }
            Reconcile::Again { log_end, query } => {
                step.truncate(log_end);
                self.query(step, query);
            }
        }
    }

    fn on_ship(&mut self, step: &mut Step<'_>, from: NodeId, ship: &Ship) {
        if ship.epoch() < self.epoch {
            let leader_epoch = self.epoch.0;
            return step.send(from, Message::Fenced(Fenced { leader_epoch }));
        }
        if ship.epoch() > self.epoch || from != self.leader || self.phase != Phase::Following {
            return;
        }
        self.last_contact = step.now;
        let log_end = step.log.log_end;
        let prev_offset = Offset(ship.prev_offset);
        if prev_offset > log_end {
            return self.ack(step, true);
        }
        // Only a log holding a batch before `log_end` can disagree about its epoch, and
        // only a leader that knows it (`NONE`: its log starts there after a restart).
        if prev_offset == log_end
            && log_end > step.log.log_start
            && LeaderEpoch(ship.prev_epoch) != LeaderEpoch::NONE
            && LeaderEpoch(ship.prev_epoch) != step.log.epochs.epoch_before(log_end)
        {
            // Divergence the reconciliation missed (a defence, not a path): do it again.
            let last = step.log.epochs.last_epoch();
            return self.query(step, last);
        }
        if !self.continues_log(step, ship) {
            return;
        }
        Self::append_new(step, ship);
        step.log.raise_high_watermark(Offset(ship.high_watermark));
        self.ack(step, false);
    }

    /// The leader's log starts at `start.log_start`: restart this log there if it ends
    /// below it, then ack (the leader ships from the acked log end).
    fn on_log_start(&mut self, step: &mut Step<'_>, from: NodeId, start: LogStart) {
        let epoch = LeaderEpoch(start.leader_epoch);
        if epoch < self.epoch {
            let leader_epoch = self.epoch.0;
            return step.send(from, Message::Fenced(Fenced { leader_epoch }));
        }
        if epoch > self.epoch || from != self.leader || self.phase != Phase::Following {
            return;
        }
        let log_start = Offset(start.log_start);
        if log_start > Offset(start.high_watermark) {
            // A leader's log start is committed; this message is not from a correct one.
            return;
        }
        self.last_contact = step.now;
        if log_start > step.log.log_end {
            step.reset(log_start);
        }
        self.ack(step, false);
    }

    /// Whether the ship's batches continue this log: offsets without gaps from
    /// `prev_offset`, epochs no newer than the leader's and never falling past the log
    /// end, and none straddling the log end. `false` drops the ship (it is sent again).
    /// Lengths and CRCs were checked once, when the ship was received
    /// (`message::open`); these are the checks only the log can make.
    fn continues_log(&self, step: &Step<'_>, ship: &Ship) -> bool {
        let log_end = step.log.log_end;
        let mut expected = Offset(ship.prev_offset);
        let mut last_epoch = step.log.epochs.last_epoch();
        let mut count = 0u32;
        for (_, _, header) in ship.batches.headers() {
            count += 1;
            if header.base_offset != expected || header.leader_epoch > self.epoch {
                return false;
            }
            expected = header.next_offset();
            if header.base_offset >= log_end {
                if header.leader_epoch < last_epoch {
                    return false;
                }
                last_epoch = header.leader_epoch;
            } else if header.next_offset() > log_end {
                return false;
            }
        }
        // Every batch walked: none was cut short (a defence; `open` counted them).
        count == ship.batches.count()
    }

    /// Appends the ship's batches past the log end (checked by `continues_log`), one
    /// append per chunk, each a slice of the buffer the ship arrived in.
    fn append_new(step: &mut Step<'_>, ship: &Ship) {
        let known_end = step.log.log_end;
        for chunk in ship.batches.chunks() {
            let mut start = None;
            for (at, header) in message::headers(chunk) {
                if header.base_offset >= known_end {
                    start.get_or_insert(at);
                    step.log.appended(&header);
                }
            }
            if let Some(at) = start {
                let log_end = step.log.log_end;
                step.actions.push(Action::Append {
                    batches: chunk.slice(at..),
                    log_end,
                });
            }
        }
    }

    pub(crate) fn tick(&mut self, step: &mut Step<'_>) {
        match self.phase {
            Phase::Reconciling { query, sent_at } => {
                if step.now.since(sent_at) >= step.config.retry_ms {
                    self.query(step, query);
                }
            }
            Phase::Following => {
                if step.now.since(self.last_contact) >= step.config.retry_ms {
                    self.ack(step, false);
                }
            }
        }
    }

    pub(crate) fn invariants(&self, id: NodeId) {
        assert!(self.leader != id, "{id} follows itself");
        assert!(
            self.epoch >= LeaderEpoch(0),
            "follower of epoch {}",
            self.epoch
        );
    }
}
