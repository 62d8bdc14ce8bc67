//! A shard's group coordinators: for each `__consumer_offsets` partition this shard
//! owns and this node leads, its groups (loaded, or loading) and their waiting JoinGroup
//! and SyncGroup answers. `!Send`: one shard's state, touched by its thread only.
//!
//! Leadership is read from the partition's replica (`driver.leading()`, the leader
//! epoch), which the shard's reconcile hands over from the controller's view:
//! - on a request, or on the [`tick_loop`] (every 100 ms), a partition led here in an
//!   epoch not loaded yet starts loading (`loading::load`); requests hear
//!   `CoordinatorLoadInProgress` until it is done;
//! - a partition no longer led here (or led in another epoch) drops its groups; their
//!   waiting requests hear `NotCoordinator`, and later ones are routed as the view says.
//!
//! A commit is checked by its group (generation, member), written as one batch through
//! `ops::produce` with acks=all, and applied (and answered) once committed. Every
//! `snapshot_every_commits` commit records, or `snapshot_every_ms` after a commit, the
//! partition's offsets are written as one snapshot batch, when no write is in flight
//! (so no commit record ordered before the snapshot is missing from it).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::oneshot;
use shardlog_engine::LeaderEpoch;
use shardlog_replicator::Tick;

use crate::server::cluster::Replica;
use crate::server::groups::group::{Answer, Group, GroupState, OffsetEntry, Token};
use crate::server::groups::loading::{self, Replay};
use crate::server::groups::record::{self, OffsetRow};
use crate::server::groups::{GroupConfig, GroupError, METADATA_BYTES_MAX, OFFSETS_TOPIC};
use crate::server::ops::groups::{
    CommitOffset, Committed, FetchedOffset, GroupListing, GroupOp, GroupReply, JoinGroupOp, Joined,
    Left, OffsetCommitOp, OffsetFetchOp, SyncGroupOp, Synced, refusal,
};
use crate::server::ops::observe::{GroupSummary, MemberSummary};
use crate::server::ops::produce::{Acks, ProduceOp, produce};
use crate::server::ops::{OpError, Pending, answered};
use crate::server::shard::{Shard, owner_shard};

/// The most groups one shard coordinates; a join of another group is refused.
pub(crate) const GROUPS_MAX: usize = 100_000;
/// How often timers run and leadership is checked.
const TICK_EVERY: Duration = Duration::from_millis(100);
/// The longest topic name a commit may name (Kafka's limit).
const TOPIC_BYTES_MAX: usize = 249;

/// The groups of one offsets partition led here.
struct Loaded {
    epoch: LeaderEpoch,
    groups: BTreeMap<String, Group>,
    /// The newest snapshot's batch offset (-1: none).
    snapshot_base: i64,
    commits_since_snapshot: u64,
    last_snapshot: Instant,
    /// Commit and snapshot batches produced and not yet answered.
    writes_in_flight: usize,
}

enum PartitionState {
    Loading(LeaderEpoch),
    Loaded(Loaded),
}

impl PartitionState {
    fn epoch(&self) -> LeaderEpoch {
        match self {
            PartitionState::Loading(epoch) => *epoch,
            PartitionState::Loaded(loaded) => loaded.epoch,
        }
    }
}

/// A shard's coordinators (see the module docs).
pub(crate) struct ShardGroups {
    config: GroupConfig,
    partitions: RefCell<BTreeMap<u32, PartitionState>>,
    joins: RefCell<HashMap<Token, oneshot::Sender<Result<Joined, GroupError>>>>,
    syncs: RefCell<HashMap<Token, oneshot::Sender<Result<Synced, GroupError>>>>,
    next_token: Cell<Token>,
    /// Member ids given out here stay unique across loads and nodes.
    id_seed: Cell<u64>,
    creating: Cell<bool>,
}

impl ShardGroups {
    /// No groups yet.
    pub(crate) fn new(config: GroupConfig, node_id: u32, shard_id: usize) -> ShardGroups {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = crc32c::crc32c(format!("{node_id}/{shard_id}/{clock}").as_bytes());
        ShardGroups {
            config,
            partitions: RefCell::new(BTreeMap::new()),
            joins: RefCell::new(HashMap::new()),
            syncs: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            id_seed: Cell::new(u64::from(seed) << 32 | u64::from(node_id)),
            creating: Cell::new(false),
        }
    }

    /// The coordinator's settings.
    pub(crate) fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Claims the creation of the offsets topic; `false` if one is under way.
    pub(crate) fn begin_creating(&self) -> bool {
        !self.creating.replace(true)
    }

    /// The creation is answered.
    pub(crate) fn end_creating(&self) {
        self.creating.set(false);
    }

    fn token(&self) -> Token {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        token
    }

    fn seed(&self) -> u64 {
        let seed = self.id_seed.get().wrapping_add(1 << 20);
        self.id_seed.set(seed);
        seed
    }

    /// Sends the answers a group produced to their waiting requests.
    fn deliver(&self, answers: Vec<Answer>) {
        for answer in answers {
            match answer {
                Answer::Join(token, result) => {
                    if let Some(tx) = self.joins.borrow_mut().remove(&token) {
                        let _ = tx.send(result);
                    }
                }
                Answer::Sync(token, result) => {
                    if let Some(tx) = self.syncs.borrow_mut().remove(&token) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }

    /// The groups this shard coordinates (ListGroups).
    pub(crate) fn list(&self) -> Vec<GroupListing> {
        self.over_groups(|groups| {
            groups
                .filter(|(_, group)| group.state() != GroupState::Dead)
                .map(|(id, group)| GroupListing {
                    group_id: id.clone(),
                    protocol_type: group.protocol_type().to_owned(),
                    state: group.state().name().to_owned(),
                })
                .collect()
        })
    }

    /// The groups this shard coordinates with their members (for the console).
    pub(crate) fn summaries(&self) -> Vec<GroupSummary> {
        self.over_groups(|groups| {
            groups
                .filter(|(_, group)| group.state() != GroupState::Dead)
                .map(|(id, group)| {
                    let description = group.describe();
                    GroupSummary {
                        group_id: id.clone(),
                        state: description.state,
                        protocol_type: description.protocol_type,
                        members: description
                            .members
                            .into_iter()
                            .map(|m| MemberSummary {
                                member_id: m.member_id,
                                client_id: m.client_id,
                                client_host: m.client_host,
                            })
                            .collect(),
                    }
                })
                .collect()
        })
    }

    /// The committed offsets of the groups this shard coordinates (for the group lag
    /// metrics).
    pub(crate) fn committed_offsets(&self) -> Vec<crate::server::ops::observe::GroupOffset> {
        self.over_groups(|groups| {
            groups
                .flat_map(|(id, group)| {
                    group.offsets().map(move |((topic, partition), entry)| {
                        crate::server::ops::observe::GroupOffset {
                            group: id.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            offset: entry.offset,
                        }
                    })
                })
                .collect()
        })
    }

    /// `f` over every group of the partitions loaded here (dead ones included).
    fn over_groups<T>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = (&String, &Group)>) -> T,
    ) -> T {
        let partitions = self.partitions.borrow();
        let mut groups = partitions
            .values()
            .filter_map(|state| match state {
                PartitionState::Loaded(loaded) => Some(loaded),
                PartitionState::Loading(_) => None,
            })
            .flat_map(|loaded| loaded.groups.iter());
        f(&mut groups)
    }

    /// Runs `f` on the loaded groups of `partition` in `epoch`, then delivers what the
    /// groups answered; `None` if they are not loaded in that epoch.
    fn with_loaded<T>(
        &self,
        partition: u32,
        epoch: LeaderEpoch,
        f: impl FnOnce(&mut Loaded) -> T,
    ) -> Option<T> {
        let (result, answers) = {
            let mut partitions = self.partitions.borrow_mut();
            let Some(PartitionState::Loaded(loaded)) = partitions.get_mut(&partition) else {
                return None;
            };
            if loaded.epoch != epoch {
                return None;
            }
            let result = f(loaded);
            let answers: Vec<Answer> = loaded
                .groups
                .values_mut()
                .flat_map(Group::drain_answers)
                .collect();
            (result, answers)
        };
        self.deliver(answers);
        Some(result)
    }

    /// Drops a partition's groups: waiting requests hear `NotCoordinator`.
    fn unload(&self, partition: u32) {
        let removed = self.partitions.borrow_mut().remove(&partition);
        if let Some(PartitionState::Loaded(mut loaded)) = removed {
            let mut answers = Vec::new();
            for group in loaded.groups.values_mut() {
                group.unload();
                answers.extend(group.drain_answers());
            }
            tracing::info!(
                partition,
                groups = loaded.groups.len(),
                "no longer the coordinator of an offsets partition"
            );
            self.deliver(answers);
        }
    }
}

/// Runs a group operation on this shard, which owns the group's offsets partition.
pub(crate) async fn run_here(
    shard: &Rc<Shard>,
    replica: Rc<Replica>,
    partition: u32,
    op: GroupOp,
) -> Pending<GroupReply> {
    let Some(epoch) = replica.driver.leading() else {
        let coordinator = shard.cluster.leader_of(OFFSETS_TOPIC, partition);
        let coordinator = coordinator.filter(|c| *c != shard.cluster.id.0);
        return answered(Ok(refusal(&op, GroupError::NotCoordinator { coordinator })));
    };
    let groups = &shard.groups;
    let state = groups
        .partitions
        .borrow()
        .get(&partition)
        .map(|s| (s.epoch(), matches!(s, PartitionState::Loaded(_))));
    match state {
        Some((loaded_epoch, true)) if loaded_epoch == epoch => {}
        Some((loaded_epoch, false)) if loaded_epoch == epoch => {
            return answered(Ok(refusal(&op, GroupError::CoordinatorLoadInProgress)));
        }
        _ => {
            start_loading(shard, replica, partition, epoch);
            return answered(Ok(refusal(&op, GroupError::CoordinatorLoadInProgress)));
        }
    }
    let now = shard.cluster.now();
    match op {
        GroupOp::Commit(op) => commit(shard, partition, epoch, op).await,
        GroupOp::Join(op) => join_here(groups, partition, epoch, now, op),
        GroupOp::Sync(op) => sync_here(groups, partition, epoch, now, op),
        op => answered(Ok(answer_now(groups, partition, epoch, now, op))),
    }
}

/// JoinGroup on the loaded groups: answered when the group answers the token.
fn join_here(
    groups: &ShardGroups,
    partition: u32,
    epoch: LeaderEpoch,
    now: Tick,
    op: JoinGroupOp,
) -> Pending<GroupReply> {
    let config = groups.config.clone();
    let token = groups.token();
    let (tx, rx) = oneshot::channel();
    groups.joins.borrow_mut().insert(token, tx);
    let seed = groups.seed();
    let joined = groups.with_loaded(partition, epoch, |loaded| {
        let at_limit = loaded.groups.len() >= GROUPS_MAX;
        match loaded.groups.get_mut(&op.group_id) {
            Some(group) => group.join(now, token, op, &config),
            None if at_limit => return false,
            None => {
                let group = Group::new(&op.group_id, seed);
                let group = loaded.groups.entry(op.group_id.clone()).or_insert(group);
                group.join(now, token, op, &config);
            }
        }
        true
    });
    let refused = match joined {
        None => Some(GroupError::CoordinatorLoadInProgress),
        Some(false) => Some(GroupError::Unknown(format!(
            "this coordinator holds {GROUPS_MAX} groups already"
        ))),
        Some(true) => None,
    };
    let kept = if refused.is_some() {
        groups.joins.borrow_mut().remove(&token)
    } else {
        None
    };
    wait_for(rx, kept, refused)
        .map(|r| Ok(GroupReply::Joined(r)))
        .boxed_local()
}

/// SyncGroup on the loaded groups: answered when the group answers the token.
fn sync_here(
    groups: &ShardGroups,
    partition: u32,
    epoch: LeaderEpoch,
    now: Tick,
    op: SyncGroupOp,
) -> Pending<GroupReply> {
    let token = groups.token();
    let (tx, rx) = oneshot::channel();
    groups.syncs.borrow_mut().insert(token, tx);
    let synced = groups.with_loaded(partition, epoch, |loaded| {
        match loaded.groups.get_mut(&op.group_id) {
            Some(group) => {
                group.sync(now, token, op);
                true
            }
            None => false,
        }
    });
    let refused = match synced {
        None => Some(GroupError::CoordinatorLoadInProgress),
        Some(false) => Some(GroupError::UnknownMemberId),
        Some(true) => None,
    };
    let kept = if refused.is_some() {
        groups.syncs.borrow_mut().remove(&token)
    } else {
        None
    };
    wait_for(rx, kept, refused)
        .map(|r| Ok(GroupReply::Synced(r)))
        .boxed_local()
}

/// The pending answer of a join or sync: `refused` at once (its sender `kept` is
/// dropped), or what the group answers; a group let go answers `NotCoordinator`.
fn wait_for<T: 'static>(
    rx: oneshot::Receiver<Result<T, GroupError>>,
    kept: Option<oneshot::Sender<Result<T, GroupError>>>,
    refused: Option<GroupError>,
) -> futures::future::LocalBoxFuture<'static, Result<T, GroupError>> {
    drop(kept);
    if let Some(error) = refused {
        return futures::future::ready(Err(error)).boxed_local();
    }
    async move {
        rx.await
            .unwrap_or(Err(GroupError::NotCoordinator { coordinator: None }))
    }
    .boxed_local()
}

/// Heartbeat, leave, offset fetch and describe: answered from the loaded groups.
fn answer_now(
    groups: &ShardGroups,
    partition: u32,
    epoch: LeaderEpoch,
    now: Tick,
    op: GroupOp,
) -> GroupReply {
    let config = groups.config.clone();
    let reply = groups.with_loaded(partition, epoch, |loaded| {
        let group = loaded.groups.get_mut(op.group_id());
        match (&op, group) {
            (GroupOp::Heartbeat(hb), Some(group)) => {
                GroupReply::Heartbeat(group.heartbeat(now, hb))
            }
            (GroupOp::Heartbeat(_), None) => {
                GroupReply::Heartbeat(Err(GroupError::UnknownMemberId))
            }
            (GroupOp::Leave(leave), group) => {
                GroupReply::Left(Ok(leave_members(now, leave, group, &config)))
            }
            (GroupOp::Fetch(fetch), group) => {
                GroupReply::Fetched(Ok(fetched(fetch, group.map(|g| &*g))))
            }
            (GroupOp::Describe(id), Some(group)) => {
                let mut described = group.describe();
                described.group_id.clone_from(id);
                GroupReply::Described(Ok(described))
            }
            (GroupOp::Describe(id), None) => GroupReply::Described(Ok(dead_group(id))),
            (op, _) => refusal(op, GroupError::Unknown("not answered at once".into())),
        }
    });
    reply.unwrap_or_else(|| refusal(&op, GroupError::CoordinatorLoadInProgress))
}

fn leave_members(
    now: Tick,
    op: &crate::server::ops::groups::LeaveGroupOp,
    mut group: Option<&mut Group>,
    config: &GroupConfig,
) -> Vec<Left> {
    op.members
        .iter()
        .map(|(member_id, instance_id)| {
            let result = if instance_id.is_some() {
                Err(GroupError::StaticMembershipUnsupported)
            } else {
                match group.as_deref_mut() {
                    Some(group) => group.leave(now, member_id, config),
                    None => Err(GroupError::UnknownMemberId),
                }
            };
            Left {
                member_id: member_id.clone(),
                group_instance_id: instance_id.clone(),
                result,
            }
        })
        .collect()
}

fn fetched(op: &OffsetFetchOp, group: Option<&Group>) -> Vec<FetchedOffset> {
    let row = |topic: &str, partition: u32, entry: Option<&OffsetEntry>| FetchedOffset {
        topic: topic.to_owned(),
        partition,
        offset: entry.map_or(-1, |e| e.offset),
        leader_epoch: entry.map_or(-1, |e| e.leader_epoch),
        metadata: entry.and_then(|e| e.metadata.clone()),
    };
    match &op.partitions {
        Some(topics) => topics
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |p| row(topic, *p, group.and_then(|g| g.offset(topic, *p))))
            })
            .collect(),
        None => group
            .map(|g| {
                g.offsets()
                    .map(|((topic, p), entry)| row(topic, *p, Some(entry)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn dead_group(id: &str) -> crate::server::ops::groups::GroupDescription {
    crate::server::ops::groups::GroupDescription {
        group_id: id.to_owned(),
        state: GroupState::Dead.name().to_owned(),
        protocol_type: String::new(),
        protocol_name: String::new(),
        members: Vec::new(),
    }
}

/// OffsetCommit: checked by the group, written with acks=all, applied and answered
/// once committed.
async fn commit(
    shard: &Rc<Shard>,
    partition: u32,
    epoch: LeaderEpoch,
    op: OffsetCommitOp,
) -> Pending<GroupReply> {
    let groups = &shard.groups;
    let now = shard.cluster.now();
    let seed = groups.seed();
    let checked = groups.with_loaded(partition, epoch, |loaded| {
        let at_limit = loaded.groups.len() >= GROUPS_MAX;
        if !loaded.groups.contains_key(&op.group_id) && !at_limit {
            let group = Group::new(&op.group_id, seed);
            loaded.groups.insert(op.group_id.clone(), group);
        }
        let Some(group) = loaded.groups.get_mut(&op.group_id) else {
            return Err(GroupError::Unknown(
                "too many groups on this coordinator".into(),
            ));
        };
        group.check_commit(
            now,
            op.generation,
            &op.member_id,
            op.group_instance_id.as_deref(),
        )?;
        Ok(loaded.snapshot_base)
    });
    let snapshot_base = match checked {
        None => {
            return answered(Ok(GroupReply::Committed(Err(
                GroupError::CoordinatorLoadInProgress,
            ))));
        }
        Some(Err(e)) => return answered(Ok(GroupReply::Committed(Err(e)))),
        Some(Ok(base)) => base,
    };
    let (mut outcomes, entries) = checked_offsets(op.offsets);
    if entries.is_empty() {
        return answered(Ok(GroupReply::Committed(Ok(outcomes))));
    }
    let rows: Vec<OffsetRow<'_>> = entries
        .iter()
        .map(|(topic, p, entry)| (op.group_id.as_str(), topic.as_str(), *p, entry))
        .collect();
    let Some(batch) = record::commit_batch(&rows, snapshot_base) else {
        let error = GroupError::InvalidRequest("the commit is larger than a batch".into());
        return answered(Ok(GroupReply::Committed(Err(error))));
    };
    let written = write(shard, partition, epoch, batch).await;
    let shard = shard.clone();
    let group_id = op.group_id;
    async move {
        match written.await {
            Ok(base) => apply_committed(&shard, partition, epoch, &group_id, base, entries),
            Err(e) => {
                for outcome in outcomes.iter_mut().filter(|o| o.result.is_ok()) {
                    outcome.result = Err(e.clone());
                }
            }
        }
        Ok(GroupReply::Committed(Ok(outcomes)))
    }
    .boxed_local()
}

/// A committed offset to write: (topic, partition, entry).
type Entry = (String, u32, OffsetEntry);

/// Each offset's outcome so far (refused: its metadata is too large, its topic name
/// invalid), and the entries to write.
fn checked_offsets(offsets: Vec<CommitOffset>) -> (Vec<Committed>, Vec<Entry>) {
    let commit_timestamp = shardlog_engine::TimestampMs::now().0;
    let mut outcomes: Vec<Committed> = Vec::with_capacity(offsets.len());
    let mut entries: Vec<Entry> = Vec::with_capacity(offsets.len());
    for offset in offsets {
        let too_large = offset
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > METADATA_BYTES_MAX);
        let bad_name = offset.topic.is_empty() || offset.topic.len() > TOPIC_BYTES_MAX;
        let result = if too_large {
            Err(GroupError::OffsetMetadataTooLarge)
        } else if bad_name {
            Err(GroupError::InvalidRequest("invalid topic name".into()))
        } else {
            entries.push((
                offset.topic.clone(),
                offset.partition,
                OffsetEntry {
                    offset: offset.offset,
                    leader_epoch: offset.leader_epoch,
                    metadata: offset.metadata,
                    commit_timestamp,
                    record_offset: 0,
                },
            ));
            Ok(())
        };
        outcomes.push(Committed {
            topic: offset.topic,
            partition: offset.partition,
            result,
        });
    }
    (outcomes, entries)
}

/// A commit's batch is committed at `base`: its offsets are the group's (record `i` at
/// `base + i`), if the partition is still loaded in the epoch it was written in.
fn apply_committed(
    shard: &Shard,
    partition: u32,
    epoch: LeaderEpoch,
    group_id: &str,
    base: u64,
    entries: Vec<Entry>,
) {
    let count = entries.len() as u64;
    let seed = shard.groups.seed();
    shard.groups.with_loaded(partition, epoch, |loaded| {
        loaded.commits_since_snapshot += count;
        // The group may have been let go meanwhile (an empty group with no offsets yet,
        // by the timer): its committed offsets make it again.
        let group = loaded
            .groups
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(group_id, seed));
        for (at, (topic, p, mut entry)) in (base..).zip(entries) {
            entry.record_offset = at;
            group.apply_offset(&topic, p, entry);
        }
    });
}

/// Writes a batch to the offsets partition with acks=all, counted in flight; the answer
/// is its base offset once committed.
async fn write(
    shard: &Rc<Shard>,
    partition: u32,
    epoch: LeaderEpoch,
    batch: Vec<u8>,
) -> futures::future::LocalBoxFuture<'static, Result<u64, GroupError>> {
    let groups = &shard.groups;
    groups.with_loaded(partition, epoch, |loaded| loaded.writes_in_flight += 1);
    let op = ProduceOp {
        topic: OFFSETS_TOPIC.into(),
        partition,
        acks: Acks::All,
        batch: bytes::BytesMut::from(batch.as_slice()),
    };
    let pending = produce(shard, op).await;
    let shard = shard.clone();
    async move {
        let result = pending.await;
        shard.groups.with_loaded(partition, epoch, |loaded| {
            loaded.writes_in_flight = loaded.writes_in_flight.saturating_sub(1);
        });
        match result {
            Ok(produced) => Ok(produced.base_offset),
            Err(OpError::NotLeader { leader }) => Err(GroupError::NotCoordinator {
                coordinator: leader,
            }),
            Err(e) => Err(GroupError::CommitFailed(e.to_string())),
        }
    }
    .boxed_local()
}

/// Starts loading `partition` for leader epoch `epoch` (once per epoch).
fn start_loading(shard: &Rc<Shard>, replica: Rc<Replica>, partition: u32, epoch: LeaderEpoch) {
    {
        let mut partitions = shard.groups.partitions.borrow_mut();
        if partitions
            .get(&partition)
            .is_some_and(|s| s.epoch() == epoch)
        {
            return;
        }
        partitions.insert(partition, PartitionState::Loading(epoch));
    }
    tracing::info!(partition, epoch = epoch.0, "loading an offsets partition");
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let started = Instant::now();
        let loaded = loading::load(&replica).await;
        let still = replica.driver.leading() == Some(epoch)
            && shard
                .groups
                .partitions
                .borrow()
                .get(&partition)
                .is_some_and(|s| matches!(s, PartitionState::Loading(e) if *e == epoch));
        match loaded {
            Ok(replay) if still => finish_loading(&shard, partition, epoch, replay, started),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(partition, error = %e, "loading an offsets partition failed");
                let mut partitions = shard.groups.partitions.borrow_mut();
                if partitions
                    .get(&partition)
                    .is_some_and(|s| s.epoch() == epoch)
                {
                    partitions.remove(&partition);
                }
            }
        }
    })
    .detach();
}

fn finish_loading(
    shard: &Shard,
    partition: u32,
    epoch: LeaderEpoch,
    replay: Replay,
    started: Instant,
) {
    let groups = &shard.groups;
    let mut loaded = Loaded {
        epoch,
        groups: BTreeMap::new(),
        snapshot_base: replay.snapshot_base,
        // A long replay is compacted by a snapshot soon.
        commits_since_snapshot: replay.records_since_snapshot,
        last_snapshot: Instant::now(),
        writes_in_flight: 0,
    };
    for (id, offsets) in replay.groups {
        let mut group = Group::new(&id, groups.seed());
        for ((topic, p), entry) in offsets {
            group.apply_offset(&topic, p, entry);
        }
        loaded.groups.insert(id, group);
    }
    tracing::info!(
        partition,
        epoch = epoch.0,
        groups = loaded.groups.len(),
        replayed = replay.records_since_snapshot,
        skipped = replay.skipped,
        ms = started.elapsed().as_millis(),
        "offsets partition loaded"
    );
    groups
        .partitions
        .borrow_mut()
        .insert(partition, PartitionState::Loaded(loaded));
}

/// Every [`TICK_EVERY`]: group timers, leadership changes (load what is led here, drop
/// what is not), and snapshots, until the shard stops.
pub(crate) async fn tick_loop(shard: Rc<Shard>) {
    while !shard.is_stopping() {
        glommio::timer::sleep(TICK_EVERY).await;
        follow_leadership(&shard);
        let now = shard.cluster.now();
        let config = shard.groups.config.clone();
        let held: Vec<(u32, LeaderEpoch)> = shard
            .groups
            .partitions
            .borrow()
            .iter()
            .map(|(p, s)| (*p, s.epoch()))
            .collect();
        for (partition, epoch) in held {
            shard.groups.with_loaded(partition, epoch, |loaded| {
                for group in loaded.groups.values_mut() {
                    group.tick(now, &config);
                }
                loaded
                    .groups
                    .retain(|_, g| !(g.is_idle() && g.state() == GroupState::Empty));
            });
            maybe_snapshot(&shard, partition, epoch).await;
        }
    }
}

/// Loads the offsets partitions this shard owns and this node leads; drops the ones
/// it no longer leads.
fn follow_leadership(shard: &Rc<Shard>) {
    let Some(partitions) = crate::server::groups::offsets_topic::partitions(shard) else {
        let held: Vec<u32> = shard.groups.partitions.borrow().keys().copied().collect();
        for p in held {
            shard.groups.unload(p);
        }
        return;
    };
    for partition in 0..partitions {
        if owner_shard(OFFSETS_TOPIC, partition, shard.node.shards) != shard.id {
            continue;
        }
        let replica = shard.cluster.replica(OFFSETS_TOPIC, partition);
        let leading = replica.as_ref().and_then(|r| r.driver.leading());
        let held = shard
            .groups
            .partitions
            .borrow()
            .get(&partition)
            .map(PartitionState::epoch);
        match (replica, leading, held) {
            (Some(replica), Some(epoch), held) if held != Some(epoch) => {
                if held.is_some() {
                    shard.groups.unload(partition);
                }
                start_loading(shard, replica, partition, epoch);
            }
            (_, None, Some(_)) => shard.groups.unload(partition),
            _ => {}
        }
    }
    let beyond: Vec<u32> = shard
        .groups
        .partitions
        .borrow()
        .keys()
        .copied()
        .filter(|p| *p >= partitions)
        .collect();
    for p in beyond {
        shard.groups.unload(p);
    }
}

/// Writes a snapshot of `partition` if enough was committed since the last one and no
/// write is in flight.
async fn maybe_snapshot(shard: &Rc<Shard>, partition: u32, epoch: LeaderEpoch) {
    let config = &shard.groups.config;
    let every = Duration::from_millis(config.snapshot_every_ms);
    let batch = shard.groups.with_loaded(partition, epoch, |loaded| {
        let due = loaded.commits_since_snapshot >= config.snapshot_every_commits
            || (loaded.commits_since_snapshot > 0 && loaded.last_snapshot.elapsed() >= every);
        if !due || loaded.writes_in_flight > 0 {
            return None;
        }
        let rows: Vec<OffsetRow<'_>> = loaded
            .groups
            .iter()
            .flat_map(|(id, g)| {
                g.offsets()
                    .map(move |((topic, p), entry)| (id.as_str(), topic.as_str(), *p, entry))
            })
            .collect();
        loaded.last_snapshot = Instant::now();
        let batch = record::snapshot_batch(&rows);
        if batch.is_none() {
            tracing::warn!(
                partition,
                "the offsets do not fit one snapshot batch; none written"
            );
        }
        batch.map(|b| (b, loaded.commits_since_snapshot))
    });
    let Some(Some((batch, taken))) = batch else {
        return;
    };
    let written = write(shard, partition, epoch, batch).await;
    let shard = shard.clone();
    glommio::spawn_local(async move {
        match written.await {
            Ok(base) => {
                shard.groups.with_loaded(partition, epoch, |loaded| {
                    loaded.snapshot_base = i64::try_from(base).unwrap_or(-1);
                    loaded.commits_since_snapshot =
                        loaded.commits_since_snapshot.saturating_sub(taken);
                });
                tracing::info!(partition, base, "offsets snapshot written");
            }
            Err(e) => tracing::warn!(partition, error = %e, "writing an offsets snapshot failed"),
        }
    })
    .detach();
}
