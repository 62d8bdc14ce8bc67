//! The idempotent producer: exactly once per producer session, across failovers.
//!
//! A [`Client`] with `ClientConfig::idempotence` (the default) asks a broker for a
//! producer id (`InitProducerId`, lazily, at its first produce with acks, or when the
//! caller calls [`Client::init_producer`]). Ids come from the controller in blocks, so
//! they are unique in the cluster and never handed out twice, even across restarts. Each
//! batch then gets the partition's next sequence number when it is first sent (in send
//! order per partition: the numbering and the first send happen in the same poll) and is
//! stamped with the id, the epoch and that sequence once (`batch::stamped_header`: a new
//! header with its CRC updated, sent before the caller's records, which are not copied). Every retry resends exactly those bytes. The brokers (every replica,
//! so a new leader too) append a producer's batches in sequence order only, store a
//! sequence once, and answer a retried batch they already hold with its original offsets.
//!
//! `OutOfOrderSequence` means the leader expects another sequence. While a batch of the
//! same partition with a lower sequence is still outstanding, that is the pipelining
//! across a failover (the batches are resent in whatever order their retries find the
//! new leader): the batch waits until every lower batch is resolved or was sent again
//! since, then is resent, without using up a retry. With no lower batch outstanding it is
//! a real gap (a lower batch failed, or an `acks=leader` batch was lost with its leader):
//! an error. Pipelining keeps working: any number of batches may be in flight per
//! partition.
//!
//! The session and its limits:
//!
//! - A batch that fails for good ends the session: the batches after it may have found a
//!   gap, so the next new batch starts a new session (a new producer id, sequences from
//!   0). Batches already stamped keep their session.
//! - A session is one `Client` (a process, for the CLI): a new one is a new producer, and
//!   what an earlier one may have left in flight is not deduplicated against it.
//! - A broker remembers the last 32 batches of each producer per partition (and 4096
//!   producers per partition): a retry of an older batch gets `OutOfOrderSequence`.
//! - `Acks::None` is not idempotent (nothing answers, so nothing is retried), nor is a
//!   batch the caller stamped with a producer id of its own (sent as it is).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use futures::StreamExt;
use futures::channel::oneshot;
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;
use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::record::ProducerFields;

use super::{Client, ClientError, Payload, check, name_silence};
use crate::api::{Acks, Api, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest};
use crate::error_code::ErrorCode;

/// Resends of one batch after `OutOfOrderSequence` with a lower batch outstanding.
const REORDER_RESENDS_MAX: u32 = 1000;

/// Whether a batch already carries a producer id (the caller's own).
pub(super) fn stamped(batch: &[u8]) -> bool {
    BatchHeader::parse(batch).is_ok_and(|h| h.producer_id >= 0)
}

/// Partition -> its sequences, of one topic.
type TopicSequences = HashMap<u32, Rc<RefCell<Sequences>>>;

/// One producer id and its per-partition sequences.
pub(crate) struct Session {
    id: i64,
    epoch: i16,
    /// Topic -> partition -> sequences.
    partitions: RefCell<HashMap<String, TopicSequences>>,
    /// Counts attempts: which batch was sent after which answer.
    clock: Cell<u64>,
    /// Batches waiting for lower ones to move: woken on every attempt and resolution.
    waiting: RefCell<Vec<oneshot::Sender<()>>>,
}

#[derive(Default)]
struct Sequences {
    next: i32,
    /// Base sequence -> clock of its latest attempt, for every batch not resolved yet.
    outstanding: BTreeMap<i32, u64>,
}

impl Session {
    fn new(id: i64, epoch: i16) -> Session {
        Session {
            id,
            epoch,
            partitions: RefCell::new(HashMap::default()),
            clock: Cell::new(0),
            waiting: RefCell::new(Vec::new()),
        }
    }

    fn sequences(&self, topic: &str, partition: u32) -> Rc<RefCell<Sequences>> {
        let mut partitions = self.partitions.borrow_mut();
        if let Some(sequences) = partitions.get_mut(topic) {
            return sequences.entry(partition).or_default().clone();
        }
        let sequences = partitions.entry(topic.to_owned()).or_default();
        sequences.entry(partition).or_default().clone()
    }

    fn tick(&self) -> u64 {
        let now = self.clock.get() + 1;
        self.clock.set(now);
        now
    }

    /// The partition's next sequence for a batch of `count` records, outstanding until
    /// the returned [`InFlight`] is dropped; `None` when the sequence space (`i32`) is
    /// used up.
    fn assign(&self, topic: &str, partition: u32, count: u32) -> Option<InFlight<'_>> {
        let now = self.tick();
        let sequences = self.sequences(topic, partition);
        let sequence = {
            let mut s = sequences.borrow_mut();
            let next = s.next.checked_add(i32::try_from(count).ok()?)?;
            let sequence = s.next;
            s.next = next;
            s.outstanding.insert(sequence, now);
            sequence
        };
        Some(InFlight {
            session: self,
            sequences,
            sequence,
        })
    }

    fn wake(&self) {
        for waiter in self.waiting.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }
}

/// A batch of a session, from its sequence's assignment until its produce ends (however
/// it ends: dropping it resolves the sequence).
struct InFlight<'a> {
    session: &'a Session,
    sequences: Rc<RefCell<Sequences>>,
    sequence: i32,
}

impl InFlight<'_> {
    /// The batch is being sent (again).
    fn attempt(&self) {
        let now = self.session.tick();
        self.sequences
            .borrow_mut()
            .outstanding
            .insert(self.sequence, now);
        self.session.wake();
    }

    /// Whether a batch below this one is outstanding.
    fn lower_outstanding(&self) -> bool {
        let sequences = self.sequences.borrow();
        sequences
            .outstanding
            .range(..self.sequence)
            .next()
            .is_some()
    }

    /// Whether every batch below this one was resolved or sent again after `since`.
    fn lower_moved(&self, since: u64) -> bool {
        let sequences = self.sequences.borrow();
        let mut lower = sequences.outstanding.range(..self.sequence);
        lower.all(|(_, at)| *at > since)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.sequences
            .borrow_mut()
            .outstanding
            .remove(&self.sequence);
        self.session.wake();
    }
}

impl Client {
    /// This client's producer id and epoch, asked for now if it has none yet (see the
    /// module docs of `idempotence.rs`). Calling it before the first produce saves the
    /// first batches waiting for it.
    pub async fn init_producer(&self) -> Result<(i64, i16), ClientError> {
        let session = self.producer_session().await?;
        Ok((session.id, session.epoch))
    }

    async fn producer_session(&self) -> Result<Rc<Session>, ClientError> {
        if let Some(session) = self.inner.producer.borrow().clone() {
            return Ok(session);
        }
        let _turn = self.inner.producer_init.lock().await;
        if let Some(session) = self.inner.producer.borrow().clone() {
            return Ok(session);
        }
        let (id, epoch) = self.with_retries(|| self.init_producer_id_round()).await?;
        tracing::debug!(producer_id = id, epoch, "idempotent producer session");
        let session = Rc::new(Session::new(id, epoch));
        *self.inner.producer.borrow_mut() = Some(session.clone());
        Ok(session)
    }

    /// Ends `session` for new batches: the next one starts a new session.
    fn end_session(&self, session: &Rc<Session>) {
        let mut current = self.inner.producer.borrow_mut();
        if current.as_ref().is_some_and(|s| Rc::ptr_eq(s, session)) {
            tracing::debug!(producer_id = session.id, "producer session ended");
            *current = None;
        }
    }

    /// One round of InitProducerId: asked of the brokers in metadata's order (any node
    /// answers), hedged like metadata (the next broker is asked too once one is slow, and
    /// the first answer wins: an id left unused costs nothing).
    async fn init_producer_id_round(&self) -> Result<(i64, i16), ClientError> {
        let timeout = self.admin_attempt_timeout();
        let candidates = self.inner.cache.borrow_mut().candidates(
            &self.inner.bootstrap,
            false,
            None,
            Instant::now(),
        );
        let mut queue = candidates.into_iter();
        let mut asking = FuturesUnordered::new();
        let mut last_error = None;
        loop {
            if asking.is_empty() {
                let Some(addr) = queue.next() else {
                    return Err(last_error
                        .unwrap_or_else(|| ClientError::NoBroker("no broker to ask".into())));
                };
                asking.push(self.ask_producer_id(addr, timeout));
            }
            let answer = if queue.len() > 0 {
                let hedge = glommio::timer::sleep(self.inner.config.metadata_hedge_after);
                match select(asking.next(), std::pin::pin!(hedge)).await {
                    Either::Left((answer, _)) => answer,
                    Either::Right(((), _)) => None,
                }
            } else {
                asking.next().await
            };
            match answer {
                Some(Ok(ids)) => return Ok(ids),
                Some(Err(e)) if !e.is_retriable() => return Err(e),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "InitProducerId failed; next broker");
                    last_error = Some(e);
                }
                None => {}
            }
            if let Some(addr) = queue.next() {
                asking.push(self.ask_producer_id(addr, timeout));
            }
        }
    }

    /// One InitProducerId request to `addr`.
    async fn ask_producer_id(
        &self,
        addr: String,
        timeout: Duration,
    ) -> Result<(i64, i16), ClientError> {
        let request = InitProducerIdRequest {};
        let call = self.call::<_, InitProducerIdResponse>(
            &addr,
            Api::InitProducerId,
            &request,
            Payload::default(),
            timeout,
        );
        let (response, _) = call.await.map_err(|e| name_silence(e, &addr, timeout))?;
        check(response.error, &response.message)?;
        if response.producer_id < 0 {
            return Err(ClientError::Protocol(format!(
                "InitProducerId answered producer id {}",
                response.producer_id
            )));
        }
        Ok((response.producer_id, response.producer_epoch))
    }

    /// `produce` of a batch without a producer id, idempotently (module docs).
    pub(super) async fn produce_idempotent(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batch: Bytes,
    ) -> Result<Option<u64>, ClientError> {
        let request = self.produce_request(topic, partition, acks);
        let count = match BatchHeader::parse(&batch) {
            Ok(header) if header.size as usize == batch.len() => header.record_count,
            // Not a batch: the leader refuses it; nothing to number.
            _ => {
                return self
                    .with_retries(|| self.produce_once(&request, batch.clone().into()))
                    .await;
            }
        };
        for _ in 0..2 {
            let session = self.producer_session().await?;
            let Some(in_flight) = session.assign(topic, partition, count) else {
                // The sequence space is used up: a new session.
                self.end_session(&session);
                continue;
            };
            let fields = ProducerFields {
                producer_id: session.id,
                producer_epoch: session.epoch,
                base_sequence: in_flight.sequence,
            };
            let bytes = stamp(batch, fields);
            let result = self.send_sequenced(&in_flight, &request, bytes).await;
            let sequence = in_flight.sequence;
            drop(in_flight);
            if let Err(e) = &result {
                tracing::debug!(topic, partition, sequence, error = %e, "idempotent produce failed");
                self.end_session(&session);
            }
            return result;
        }
        Err(ClientError::Protocol(format!("a batch of {count} records")))
    }

    /// Sends a stamped batch until it is answered: retriable errors as `with_retries`
    /// does, and `OutOfOrderSequence` while a lower batch is outstanding by waiting for
    /// the lower batches to move, then resending.
    async fn send_sequenced(
        &self,
        in_flight: &InFlight<'_>,
        request: &ProduceRequest,
        bytes: Payload,
    ) -> Result<Option<u64>, ClientError> {
        let mut backoff = self.inner.config.retry_backoff;
        let mut retries_left = self.inner.config.retries;
        let mut reorders_left = REORDER_RESENDS_MAX;
        loop {
            in_flight.attempt();
            let result = self.produce_once(request, bytes.clone()).await;
            let answered_at = in_flight.session.clock.get();
            match result {
                Err(e)
                    if e.code() == Some(ErrorCode::OutOfOrderSequence)
                        && reorders_left > 0
                        && in_flight.lower_outstanding() =>
                {
                    reorders_left -= 1;
                    let sequence = in_flight.sequence;
                    tracing::debug!(sequence, "out of order; waiting for lower sequences");
                    self.wait_for_lower(in_flight, answered_at).await;
                }
                Err(e) if e.is_retriable() && retries_left > 0 => {
                    retries_left -= 1;
                    tracing::debug!(error = %e, sequence = in_flight.sequence, "retrying");
                    if !matches!(e, ClientError::LeaderMoved { .. }) {
                        glommio::timer::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.inner.config.retry_backoff_max);
                    }
                }
                result => return result,
            }
        }
    }

    /// Waits until every batch below `in_flight` was resolved or sent again after
    /// `since`, or the request timeout passed.
    async fn wait_for_lower(&self, in_flight: &InFlight<'_>, since: u64) {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        while !in_flight.lower_moved(since) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            let (tx, rx) = oneshot::channel();
            in_flight.session.waiting.borrow_mut().push(tx);
            let timer = std::pin::pin!(glommio::timer::sleep(left));
            if let Either::Right(_) = select(rx, timer).await {
                return;
            }
        }
    }
}

/// The batch with the producer fields set: a stamped copy of its header, then its
/// records as they are (not copied; see `batch::stamped_header`).
fn stamp(batch: Bytes, fields: ProducerFields) -> Payload {
    match batch::stamped_header(&batch, fields) {
        Ok(header) => Payload::split(
            Bytes::copy_from_slice(&header),
            batch.slice(batch::BATCH_HEADER_SIZE..),
        ),
        Err(e) => {
            // Checked before: cannot happen. The leader refuses what it cannot read.
            tracing::warn!(error = %e, "stamping a batch failed");
            batch.into()
        }
    }
}
