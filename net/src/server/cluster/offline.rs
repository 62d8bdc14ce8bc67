//! Replicas whose log stopped (a failed write, sync, roll or retention pass: ENOSPC,
//! EIO, EMFILE), or that could not be opened: offline until a reopen succeeds.
//!
//! ```text
//!  log stopped ----> offline: logged once (then once a minute, with a count)
//!      |               |  reported to the controller (ReplicaOffline) while the view
//!      |               |  shows it leading its old epoch or in a shared ISR: the
//!      |               |  leadership moves at once, the replica leaves the ISR
//!      |               v
//!      |            every 1 s, doubling to 30 s: probe the disk (a write of its own),
//!      |            then close the stopped log and open it again (recovery reads the
//!      |            truth from disk) -> a follower of the new leader, or the leader of
//!      |            a new epoch; it rejoins the ISR by the normal rules
//!      v
//!  until then: reads are served from the stopped log up to its high watermark;
//!  produce is refused with `StorageError`, saying why ("the disk is full")
//! ```
//!
//! A replica of a partition with no other replica (RF 1) is not reported: nobody else can
//! lead it, and the report would only write the controller log on what may be a full
//! disk. It leads the same epoch when it reopens, which no follower can contradict.
//! With other replicas, the reopened replica never leads the epoch its log stopped in
//! (its log may have lost writes a follower holds): it waits for the controller to give
//! the partition a new epoch.
//!
//! Owned by one shard (`!Send`), like its replicas.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shardlog_engine::space_probe::probe_dir;
use shardlog_engine::{DmaStorage, LeaderEpoch};
use shardlog_replicator::controller::PartitionState;

use crate::api::ControllerRequest;
use crate::server::cluster::controller::{ControllerLane, ControllerMsg};
use crate::server::cluster::replicas::{close_replica, replica_dir};
use crate::server::cluster::{ClusterNode, Placement, Replica};
use crate::server::shard::owner_shard;

/// The first reopen is tried this long after the stop; each failure doubles the wait.
const REOPEN_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between reopen attempts.
const REOPEN_MAX: Duration = Duration::from_secs(30);
/// How often a still-offline replica is reported again (a report may be lost).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often an offline replica logs its state after the first error.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How often the offline loop looks at the replicas.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Bytes the disk probe reserves before a reopen: a segment's worth, up to this much
/// (a roll right after the reopen needs that much).
const PROBE_BYTES_MAX: u64 = 64 << 20;

/// One offline replica (see the module docs).
pub(crate) struct Offline {
    /// Why: the log's stop cause, or the last failed reopen.
    cause: String,
    /// The cause was the disk being full (freeing space cures it).
    disk_full: bool,
    since: Instant,
    attempts: u32,
    retry_at: Instant,
    backoff: Duration,
    /// The leader epoch the replica was in when its log stopped.
    stopped_in: Option<LeaderEpoch>,
    /// The partition epoch last reported on, and when.
    reported: Option<(u64, Instant)>,
    /// When the state was last logged, and the events not logged since.
    logged: Instant,
    unlogged: u64,
    reopening: bool,
}

impl Offline {
    fn new(cause: String, disk_full: bool, stopped_in: Option<LeaderEpoch>) -> Offline {
        let now = Instant::now();
        Offline {
            cause,
            disk_full,
            since: now,
            attempts: 0,
            retry_at: now + REOPEN_FIRST,
            backoff: REOPEN_FIRST,
            stopped_in,
            reported: None,
            logged: now,
            unlogged: 0,
            reopening: false,
        }
    }

    /// A failed reopen: the next one waits twice as long (up to `REOPEN_MAX`). The cause
    /// stays the first failure's (what the operator must fix), unless that was not the
    /// disk being full and this is. Whether to log it now (once a minute), and how many
    /// were not logged before it.
    fn failed_again(&mut self, cause: &str, disk_full: bool) -> Option<u64> {
        if disk_full && !self.disk_full {
            self.cause = cause.to_owned();
            self.disk_full = true;
        }
        self.attempts += 1;
        self.backoff = (self.backoff * 2).min(REOPEN_MAX);
        self.retry_at = Instant::now() + self.backoff;
        self.reopening = false;
        if self.logged.elapsed() < LOG_EVERY {
            self.unlogged += 1;
            return None;
        }
        self.logged = Instant::now();
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Why it is offline.
    pub(crate) fn cause(&self) -> &str {
        &self.cause
    }

    /// What a refused produce says.
    pub(crate) fn refusal(&self, topic: &str, partition: u32) -> String {
        if self.disk_full {
            format!(
                "partition {topic}/{partition} is offline on this node: the disk is full \
                 ({}); writes are refused until space is freed, then it is reopened by \
                 itself; reads go on",
                self.cause
            )
        } else {
            format!(
                "partition {topic}/{partition} is offline on this node: its storage failed \
                 ({}); writes are refused until it is reopened (retried with backoff); \
                 reads go on",
                self.cause
            )
        }
    }
}

impl ClusterNode {
    /// Why a partition's replica here is offline, as a produce refusal; `None` if it is
    /// not.
    pub(crate) fn offline_refusal(&self, topic: &str, partition: u32) -> Option<String> {
        self.offline
            .borrow()
            .get(&(topic.to_owned(), partition))
            .map(|o| o.refusal(topic, partition))
    }

    /// Whether a replica is offline here (reconcile leaves those to this module).
    pub(crate) fn is_offline(&self, key: &(String, u32)) -> bool {
        self.offline.borrow().contains_key(key)
    }

    /// A replica that could not be opened: retried with backoff from now on.
    pub(crate) fn open_failed(&self, key: (String, u32), error: &anyhow::Error) {
        let disk_full = disk_full_in(error);
        tracing::error!(
            topic = key.0,
            partition = key.1,
            error = format!("{error:#}"),
            "opening replica failed; retrying in 1 s, then with backoff up to 30 s"
        );
        self.offline
            .borrow_mut()
            .insert(key, Offline::new(format!("{error:#}"), disk_full, None));
    }

    /// Finds replicas whose log stopped, reports offline ones to the controller, and
    /// reopens those whose time came, until the shard stops.
    pub(crate) async fn offline_loop(
        self: Rc<Self>,
        place: Rc<Placement>,
        controller_lane: ControllerLane,
        stopped: impl Fn() -> bool,
    ) {
        while !stopped() {
            glommio::timer::sleep(CHECK_EVERY).await;
            if stopped() {
                return;
            }
            self.find_stopped();
            self.report(&controller_lane);
            let due: Vec<(String, u32)> = self
                .offline
                .borrow_mut()
                .iter_mut()
                .filter(|(_, o)| !o.reopening && Instant::now() >= o.retry_at)
                .map(|(key, o)| {
                    o.reopening = true;
                    key.clone()
                })
                .collect();
            for key in due {
                glommio::spawn_local(self.clone().reopen(place.clone(), key)).detach();
            }
        }
    }

    /// Replicas whose log stopped since the last look: offline from now on (logged once).
    fn find_stopped(&self) {
        let replicas: Vec<((String, u32), Rc<Replica>)> = self
            .replicas
            .borrow()
            .iter()
            .map(|(key, replica)| (key.clone(), replica.clone()))
            .collect();
        for (key, replica) in replicas {
            if self.is_offline(&key) {
                continue;
            }
            let Some(cause) = replica.log().stop_cause() else {
                continue;
            };
            // Ends the worker: nothing more is written to this log.
            replica.driver.stop();
            let stopped_in = replica.applied.get().map(|(epoch, _)| epoch);
            tracing::error!(topic = key.0, partition = key.1, cause = %cause, "partition stopped: its log failed; leadership moves to another in-sync replica if there is one, writes are refused here, reads go on; reopening in 1 s, then with backoff up to 30 s");
            let offline = Offline::new(cause.message.clone(), cause.disk_full, stopped_in);
            self.offline.borrow_mut().insert(key, offline);
        }
    }

    /// Reports each offline replica the view still shows leading the epoch it stopped
    /// in, or in an ISR it shares (once per partition epoch, again every second).
    fn report(&self, controller_lane: &ControllerLane) {
        let Some(view) = self.view() else {
            return;
        };
        for ((topic, partition), offline) in self.offline.borrow_mut().iter_mut() {
            let Some(state) = view.metadata.partition(topic, *partition) else {
                continue;
            };
            let Some(stopped_in) = offline.stopped_in else {
                continue;
            };
            if !self.report_due(state, stopped_in) {
                continue;
            }
            let fresh = offline.reported.is_none_or(|(epoch, at)| {
                epoch != state.partition_epoch || at.elapsed() >= REPORT_EVERY
            });
            if !fresh {
                continue;
            }
            offline.reported = Some((state.partition_epoch, Instant::now()));
            let request = ControllerRequest::ReplicaOffline {
                topic: topic.clone(),
                partition: *partition,
                leader_epoch: stopped_in.0,
                partition_epoch: state.partition_epoch,
            };
            // A full lane drops it: it is sent again in a second.
            let _ = controller_lane.try_send(ControllerMsg {
                from: None,
                request,
                data: bytes::Bytes::new(),
            });
        }
    }

    /// Whether the controller has something to do about this node's stopped replica:
    /// it leads the epoch it stopped in, or it is in an ISR with others.
    fn report_due(&self, state: &PartitionState, stopped_in: LeaderEpoch) -> bool {
        if state.replicas.len() < 2 {
            return false;
        }
        let leads_stopped = state.leader == Some(self.id) && state.leader_epoch == stopped_in;
        let shares_isr =
            state.leader != Some(self.id) && state.isr.contains(&self.id) && state.isr.len() > 1;
        leads_stopped || shares_isr
    }

    /// One reopen attempt: probe the disk, close the stopped log, open it again.
    async fn reopen(self: Rc<Self>, place: Rc<Placement>, key: (String, u32)) {
        let outcome = self.try_reopen(&place, &key).await;
        let mut offline = self.offline.borrow_mut();
        match outcome {
            Ok(Reopen::Done) => {
                if let Some(o) = offline.remove(&key) {
                    let down_ms = o.since.elapsed().as_millis();
                    tracing::info!(
                        topic = key.0,
                        partition = key.1,
                        down_ms,
                        attempts = o.attempts + 1,
                        "partition reopened after a storage failure"
                    );
                }
            }
            Ok(Reopen::Gone) => {
                offline.remove(&key);
            }
            Ok(Reopen::Later(why)) => {
                if let Some(o) = offline.get_mut(&key) {
                    // Not a failure: the controller has not moved the epoch yet.
                    o.retry_at = Instant::now() + REOPEN_FIRST;
                    o.reopening = false;
                    tracing::debug!(topic = key.0, partition = key.1, why, "reopen waits");
                }
            }
            Err((cause, disk_full)) => {
                if let Some(o) = offline.get_mut(&key) {
                    let next_s = (o.backoff * 2).min(REOPEN_MAX).as_secs();
                    if let Some(unlogged) = o.failed_again(&cause, disk_full) {
                        tracing::error!(
                            topic = key.0,
                            partition = key.1,
                            error = cause,
                            disk_full = o.disk_full,
                            attempts = o.attempts,
                            failures_not_logged = unlogged,
                            next_s,
                            "partition still offline: reopening failed"
                        );
                    }
                }
            }
        }
    }

    async fn try_reopen(
        &self,
        place: &Placement,
        key: &(String, u32),
    ) -> Result<Reopen, (String, bool)> {
        let Some(view) = self.view() else {
            return Ok(Reopen::Later("no view"));
        };
        let (topic, partition) = (key.0.as_str(), key.1);
        let info = view.metadata.topics().get(topic);
        let state = view.metadata.partition(topic, partition);
        let (Some(info), Some(state)) = (info, state) else {
            return Ok(Reopen::Gone);
        };
        if !state.replicas.contains(&self.id)
            || owner_shard(topic, partition, place.shards) != place.shard
        {
            return Ok(Reopen::Gone);
        }
        let stopped_in = self.offline.borrow().get(key).and_then(|o| o.stopped_in);
        if stopped_in.is_some_and(|epoch| self.report_due(state, epoch)) {
            return Ok(Reopen::Later(
                "the controller has not moved the partition yet",
            ));
        }
        let dir = replica_dir(&place.data_dir, topic, info.id, partition);
        let old = self.replicas.borrow().get(key).cloned();
        if old.is_some() {
            // The stopped log still serves reads: keep it until the disk takes writes.
            let engine =
                crate::server::cluster::TopicSettings::of(info).engine_config(&place.defaults);
            let bytes = engine.segment_bytes.min(PROBE_BYTES_MAX);
            probe_dir(&DmaStorage, &dir, bytes).await.map_err(|e| {
                let e = anyhow::Error::from(e);
                (format!("disk probe: {e:#}"), disk_full_in(&e))
            })?;
            let old = self.replicas.borrow_mut().remove(key);
            if let Some(old) = old {
                if let Err(e) = close_replica(old).await {
                    // Expected: a stopped log refuses to write its checkpoint.
                    tracing::debug!(topic, partition, error = %e, "closing the stopped log");
                }
            }
        }
        match self.open_or_mark(place, topic, info, partition).await {
            Ok(replica) => {
                self.replicas
                    .borrow_mut()
                    .insert(key.clone(), replica.clone());
                if let Some(view) = self.view()
                    && let Some(state) = view.metadata.partition(topic, partition)
                {
                    self.apply_leadership(&replica, state, &view);
                }
                Ok(Reopen::Done)
            }
            Err(e) => Err((format!("{e:#}"), disk_full_in(&e))),
        }
    }
}

/// Whether the disk being full (ENOSPC, EDQUOT) is among an error's causes.
fn disk_full_in(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(shardlog_engine::is_disk_full)
    })
}

/// How a reopen attempt ended, short of failing.
enum Reopen {
    Done,
    /// The partition is not this shard's any more (deleted, moved).
    Gone,
    /// Not yet: the reason.
    Later(&'static str),
}

/// The offline replicas of one shard.
pub(crate) type OfflineMap = RefCell<HashMap<(String, u32), Offline>>;
