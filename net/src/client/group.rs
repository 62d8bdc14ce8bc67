//! A member of a consumer group ([`GroupMember`]): the classic Kafka group protocol from
//! the member's side, over the shardlog protocol.
//!
//! [`GroupMember::join`] finds the coordinator, joins (JoinGroup, answered once every
//! member has rejoined), and, if the coordinator made it the leader, assigns the
//! subscribed topics' partitions with the range assignor (`range_assignor.rs`) from fresh
//! metadata; then SyncGroup brings each member its assignment, and a background task
//! heartbeats every `heartbeat_interval`. A heartbeat answered `RebalanceInProgress`,
//! `IllegalGeneration` or `UnknownMember` stops the heartbeats and raises
//! [`GroupMember::rejoin_needed`]: the caller stops reading, commits what it consumed
//! (a commit of the generation that is ending is still accepted while the group prepares
//! its rebalance) and calls `join` again. A member whose session expired (`UnknownMember`)
//! rejoins as a new member. Commits carry the generation, so a member fenced by a newer
//! generation cannot overwrite what its partitions' new owners commit.
//!
//! Owned by one executor, like the [`Client`] it uses; `!Send`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use super::consumer_protocol::{Assignment, PROTOCOL_TYPE, Subscription};
use super::range_assignor::{self, RANGE};
use super::{Client, ClientError};
use crate::api::{
    Api, GroupProtocol, GroupResponse, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, MemberAssignment, OffsetToCommit, SyncGroupRequest, SyncGroupResponse,
    TopicPartitions,
};
use crate::error_code::ErrorCode;

/// Group member settings.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// The name DescribeGroups shows for this member. Default `shardlog`.
    pub client_id: String,
    /// A member silent this long is removed from the group and its partitions reassigned.
    /// Default 10 s (the coordinator enforces its own bounds).
    pub session_timeout: Duration,
    /// How long the coordinator waits for every member to rejoin in a rebalance. Default
    /// 30 s.
    pub rebalance_timeout: Duration,
    /// Time between heartbeats: how soon a member learns of a rebalance. Default 1 s
    /// (well under the session timeout).
    pub heartbeat_interval: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            client_id: "shardlog".to_owned(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// What a join brought: this member's generation and partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The group's generation this member is part of.
    pub generation: i32,
    /// This member's id.
    pub member_id: String,
    /// Whether this member assigned the partitions.
    pub leader: bool,
    /// Its partitions.
    pub assignment: Assignment,
}

/// How many JoinGroup/SyncGroup rounds one `join` tries before giving up (each round that
/// fails met a rebalance that began meanwhile, or a member id to learn).
const JOIN_ROUNDS_MAX: u32 = 20;

/// What the member and its heartbeat task share.
#[derive(Default)]
struct Shared {
    generation: Cell<i32>,
    member_id: RefCell<String>,
    /// Raised when the member must rejoin.
    rejoin: Cell<bool>,
    /// A caller waiting in `rejoin_requested`.
    waiter: Cell<Option<Waker>>,
}

impl Shared {
    fn request_rejoin(&self, why: ErrorCode) {
        tracing::debug!(%why, "the group asks this member to rejoin");
        if why == ErrorCode::UnknownMember {
            // The coordinator forgot this member: it joins as a new one.
            self.member_id.borrow_mut().clear();
        }
        self.rejoin.set(true);
        if let Some(waiter) = self.waiter.take() {
            waiter.wake();
        }
    }
}

/// A member of one group; see the module docs.
pub struct GroupMember {
    client: Client,
    group: String,
    topics: Vec<String>,
    config: GroupConfig,
    shared: Rc<Shared>,
    /// The heartbeat task while the member is in a generation (dropping it cancels it).
    heartbeat: Option<glommio::Task<()>>,
}

impl GroupMember {
    /// A member of `group` that reads `topics`; it joins with [`GroupMember::join`].
    #[must_use]
    pub fn new(client: Client, group: &str, topics: Vec<String>, config: GroupConfig) -> Self {
        GroupMember {
            client,
            group: group.to_owned(),
            topics,
            config,
            shared: Rc::new(Shared::default()),
            heartbeat: None,
        }
    }

    /// Joins (or rejoins) the group and returns this member's partitions; heartbeats run
    /// until the next rebalance (see the module docs).
    pub async fn join(&mut self) -> Result<Joined, ClientError> {
        self.heartbeat = None;
        self.shared.rejoin.set(false);
        let mut last = None;
        for _ in 0..JOIN_ROUNDS_MAX {
            let joined = self.join_group().await?;
            if joined.error != 0 {
                let code = ErrorCode::from(joined.error);
                match code {
                    ErrorCode::UnknownMember => self.shared.member_id.borrow_mut().clear(),
                    ErrorCode::MemberIdRequired => {
                        *self.shared.member_id.borrow_mut() = joined.member_id.clone();
                    }
                    ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => {}
                    _ => return Err(ClientError::server(joined.error, &joined.message)),
                }
                last = Some(ClientError::server(joined.error, &joined.message));
                continue;
            }
            *self.shared.member_id.borrow_mut() = joined.member_id.clone();
            self.shared.generation.set(joined.generation);
            let leader = joined.leader == joined.member_id;
            let assignments = if leader {
                self.assign(&joined).await?
            } else {
                Vec::new()
            };
            let synced = self.sync_group(&joined, assignments).await?;
            match ErrorCode::from(synced.error) {
                ErrorCode::None => {}
                code @ (ErrorCode::UnknownMember
                | ErrorCode::RebalanceInProgress
                | ErrorCode::IllegalGeneration) => {
                    if code == ErrorCode::UnknownMember {
                        self.shared.member_id.borrow_mut().clear();
                    }
                    last = Some(ClientError::server(synced.error, &synced.message));
                    continue;
                }
                _ => return Err(ClientError::server(synced.error, &synced.message)),
            }
            let assignment = Assignment::decode(&synced.assignment)
                .map_err(|e| ClientError::Protocol(format!("group {}: {e}", self.group)))?;
            self.heartbeat = Some(glommio::spawn_local(heartbeats(
                self.client.clone(),
                self.group.clone(),
                self.shared.clone(),
                self.config.heartbeat_interval,
            )));
            return Ok(Joined {
                generation: joined.generation,
                member_id: joined.member_id,
                leader,
                assignment,
            });
        }
        Err(last.unwrap_or_else(|| ClientError::Protocol("no join round ran".into())))
    }

    async fn join_group(&self) -> Result<JoinGroupResponse, ClientError> {
        let subscription = Subscription {
            topics: self.topics.clone(),
        };
        let request = JoinGroupRequest {
            group: self.group.clone(),
            member_id: self.shared.member_id.borrow().clone(),
            client_id: self.config.client_id.clone(),
            session_timeout_ms: super::millis(self.config.session_timeout),
            rebalance_timeout_ms: super::millis(self.config.rebalance_timeout),
            protocol_type: PROTOCOL_TYPE.to_owned(),
            protocols: vec![GroupProtocol {
                name: RANGE.to_owned(),
                metadata: subscription.encode(),
            }],
        };
        // The coordinator answers once every member rejoined, or the rebalance timeout.
        let timeout = self.config.rebalance_timeout + self.client.admin_attempt_timeout();
        self.client
            .call_coordinator(&self.group, Api::JoinGroup, &request, timeout)
            .await
    }

    /// The leader's decision: every member's partitions, from their subscriptions and
    /// the subscribed topics' partition counts (fresh metadata).
    async fn assign(
        &self,
        joined: &JoinGroupResponse,
    ) -> Result<Vec<MemberAssignment>, ClientError> {
        if joined.protocol != RANGE {
            return Err(ClientError::Protocol(format!(
                "group {}: the coordinator chose protocol {:?}, this member only knows {RANGE}",
                self.group, joined.protocol
            )));
        }
        let mut members = BTreeMap::new();
        for member in &joined.members {
            // A member whose subscription does not decode reads nothing rather than
            // stopping the whole group.
            let subscription = Subscription::decode(&member.metadata).unwrap_or_else(|e| {
                tracing::warn!(member = member.member_id, error = %e, "bad subscription");
                Subscription::default()
            });
            members.insert(member.member_id.clone(), subscription);
        }
        let mut topics: Vec<String> = members
            .values()
            .flat_map(|s| s.topics.iter().cloned())
            .collect();
        topics.sort();
        topics.dedup();
        let metadata = self.client.metadata(&topics).await?;
        let counts: BTreeMap<String, u32> = metadata
            .topics
            .iter()
            .filter(|t| t.error == ErrorCode::None.as_u16() && topics.contains(&t.name))
            .filter_map(|t| Some((t.name.clone(), u32::try_from(t.partitions.len()).ok()?)))
            .collect();
        let assignments = range_assignor::assign(&members, &counts);
        Ok(assignments
            .into_iter()
            .map(|(member_id, assignment)| MemberAssignment {
                member_id,
                assignment: assignment.encode(),
            })
            .collect())
    }

    async fn sync_group(
        &self,
        joined: &JoinGroupResponse,
        assignments: Vec<MemberAssignment>,
    ) -> Result<SyncGroupResponse, ClientError> {
        let request = SyncGroupRequest {
            group: self.group.clone(),
            generation: joined.generation,
            member_id: joined.member_id.clone(),
            assignments,
        };
        // The followers wait for the leader's SyncGroup.
        let timeout = self.config.rebalance_timeout + self.client.admin_attempt_timeout();
        self.client
            .call_coordinator(&self.group, Api::SyncGroup, &request, timeout)
            .await
    }

    /// Whether the group asked this member to rejoin (a rebalance began, or it was
    /// fenced): stop reading, commit, and call [`GroupMember::join`].
    #[must_use]
    pub fn rejoin_needed(&self) -> bool {
        self.shared.rejoin.get()
    }

    /// Resolves once [`GroupMember::rejoin_needed`] is true.
    pub async fn rejoin_requested(&self) {
        poll_fn(|cx| {
            if self.shared.rejoin.get() {
                Poll::Ready(())
            } else {
                self.shared.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }

    /// Commits `offsets` (topic, partition, next offset to read) in this member's
    /// generation; answered once durable. A commit refused because the generation ended
    /// (`RebalanceInProgress`, `IllegalGeneration`, `UnknownMember`) also raises
    /// [`GroupMember::rejoin_needed`].
    pub async fn commit(&self, offsets: &[(String, u32, u64)]) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let offsets = offsets
            .iter()
            .map(|(topic, partition, offset)| OffsetToCommit {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                metadata: String::new(),
            })
            .collect();
        let member_id = self.shared.member_id.borrow().clone();
        let generation = self.shared.generation.get();
        let committed = self
            .client
            .commit_offsets(&self.group, generation, &member_id, offsets)
            .await;
        if let Some(
            code @ (ErrorCode::RebalanceInProgress
            | ErrorCode::IllegalGeneration
            | ErrorCode::UnknownMember),
        ) = committed.as_ref().err().and_then(ClientError::code)
        {
            self.shared.request_rejoin(code);
        }
        committed
    }

    /// The group's committed offsets of `partitions` of `topic` (`None` where it has none).
    pub async fn committed(
        &self,
        topic: &str,
        partitions: &[u32],
    ) -> Result<BTreeMap<u32, Option<u64>>, ClientError> {
        let asked = vec![TopicPartitions {
            topic: topic.to_owned(),
            partitions: partitions.to_vec(),
        }];
        let offsets = self
            .client
            .committed_offsets(&self.group, Some(asked))
            .await?;
        let mut out: BTreeMap<u32, Option<u64>> = partitions.iter().map(|p| (*p, None)).collect();
        for committed in offsets.into_iter().filter(|c| c.topic == topic) {
            if let Some(slot) = out.get_mut(&committed.partition) {
                *slot = committed.offset;
            }
        }
        Ok(out)
    }

    /// Leaves the group (its partitions go to the other members at once, without waiting
    /// for the session timeout). Commit first.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        self.heartbeat = None;
        let member_id = self.shared.member_id.borrow().clone();
        if member_id.is_empty() {
            return Ok(());
        }
        let request = LeaveGroupRequest {
            group: self.group.clone(),
            member_id,
        };
        let timeout = self.client.admin_attempt_timeout();
        let response: GroupResponse = self
            .client
            .call_coordinator(&self.group, Api::LeaveGroup, &request, timeout)
            .await?;
        match ErrorCode::from(response.error) {
            // Already gone (its session expired): nothing to leave.
            ErrorCode::None | ErrorCode::UnknownMember => Ok(()),
            _ => Err(ClientError::server(response.error, &response.message)),
        }
    }
}

/// Heartbeats until the group asks the member to rejoin (then raises the flag and ends).
/// A coordinator that does not answer, or moved, is followed by `call_coordinator`; while
/// none answers the heartbeats go on failing, and the session may expire: the next
/// answer is then `UnknownMember`, and the member rejoins.
async fn heartbeats(client: Client, group: String, shared: Rc<Shared>, interval: Duration) {
    loop {
        glommio::timer::sleep(interval).await;
        let request = HeartbeatRequest {
            group: group.clone(),
            generation: shared.generation.get(),
            member_id: shared.member_id.borrow().clone(),
        };
        let timeout = client.admin_attempt_timeout();
        let answer: Result<GroupResponse, ClientError> = client
            .call_coordinator(&group, Api::Heartbeat, &request, timeout)
            .await;
        match answer {
            Ok(response) if response.error == ErrorCode::None.as_u16() => {}
            Ok(response) => {
                shared.request_rejoin(ErrorCode::from(response.error));
                return;
            }
            Err(e) => tracing::debug!(group, error = %e, "heartbeat failed"),
        }
    }
}
