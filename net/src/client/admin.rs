//! Topic administration: CreateTopic and DeleteTopic, sent to the controller leader first
//! and moved to the next broker on an error, a timeout, or a new controller (see the
//! module docs of [`super`]), and the ambiguity of an attempt whose answer was lost.

use std::collections::VecDeque;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::future::{Either, select};

use super::{Client, ClientError, Payload, check, name_silence};
use crate::api::{
    Api, CreateTopicRequest, DeleteTopicRequest, DrainNodeRequest, ListReassignmentsRequest,
    ListReassignmentsResponse, MetadataRequest, MetadataResponse, PartitionMove,
    ReassignPartitionRequest, RebalanceReplicasRequest, TopicConfig, TopicResponse,
};
use crate::api::{
    DeleteUserRequest, ListUsersRequest, ListUsersResponse, ListedUser, UpsertUserRequest,
};
use crate::error_code::ErrorCode;

/// How an admin request ended, and whether an attempt before the last may have taken
/// effect without its answer arriving (a timeout, a lost connection, a failed hand-over
/// to the controller).
struct AdminOutcome {
    result: Result<(), ClientError>,
    maybe_applied: bool,
}

impl Client {
    /// Creates a topic. A topic that exists is `Server { code: TopicExists }`, unless an
    /// earlier attempt of this call may have created it (its answer was lost) and the
    /// topic is what was asked for (partitions, and the replication factor if one was
    /// given): then that attempt is taken to have created it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        config: TopicConfig,
    ) -> Result<(), ClientError> {
        let request = CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            replication_factor,
            config,
        };
        let outcome = self.admin(Api::CreateTopic, name, &request).await;
        match outcome.result {
            Err(e) if outcome.maybe_applied && e.code() == Some(ErrorCode::TopicExists) => {
                let response = self.metadata(&[name.to_owned()]).await?;
                let asked = response.topics.iter().any(|t| {
                    t.name == name
                        && t.error == ErrorCode::None.as_u16()
                        && t.partitions.len() == partitions as usize
                        && (replication_factor == 0
                            || t.partitions
                                .iter()
                                .all(|p| p.replicas.len() == usize::from(replication_factor)))
                });
                if !asked {
                    return Err(e);
                }
                tracing::debug!(topic = name, "created by an attempt whose answer was lost");
            }
            other => other?,
        }
        // In a cluster the other nodes learn of the topic a moment later (when the
        // controller's commit reaches them): wait until every live node names it, so the
        // caller (or the next command, asking any node) can use it at once. A node that
        // does not answer is not waited for.
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let request = MetadataRequest {
            topics: vec![name.to_owned()],
        };
        let names = |response: &MetadataResponse| {
            response
                .topics
                .iter()
                .any(|t| t.name == name && t.error == ErrorCode::None.as_u16())
        };
        let response = self.metadata(&[name.to_owned()]).await?;
        let live: Vec<String> = response
            .brokers
            .iter()
            .filter(|b| b.live)
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect();
        for addr in live {
            let mut pause = Duration::from_millis(5);
            loop {
                let timeout = self.admin_attempt_timeout();
                match self.ask_metadata(addr.clone(), &request, timeout).await {
                    (_, Ok(answer)) if !names(&answer) && Instant::now() < deadline => {
                        glommio::timer::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Deletes a topic and every record in it. A topic that does not exist is
    /// `Server { code: UnknownTopic }`, unless an earlier attempt of this call may have
    /// deleted it (its answer was lost).
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = DeleteTopicRequest {
            name: name.to_owned(),
        };
        let outcome = self.admin(Api::DeleteTopic, name, &request).await;
        match outcome.result {
            Err(e) if outcome.maybe_applied && e.code() == Some(ErrorCode::UnknownTopic) => {
                tracing::debug!(topic = name, "deleted by an attempt whose answer was lost");
            }
            other => other?,
        }
        self.inner.cache.borrow_mut().forget(name);
        Ok(())
    }

    /// Starts moving `partition` of `topic` to `replicas` (node ids, preferred leader
    /// first): answered once the controller applied the move's start; the move runs on
    /// (the added replicas catch up, join the ISR, then the removed ones leave) and is
    /// over when [`Client::reassignments`] no longer lists it. `throttle_bytes`: bytes per
    /// second the leader ships to the catching-up replicas (`None`: the leader node's
    /// `move_throttle_bytes`; 0: unthrottled). A target the partition already has is
    /// done at once; a new target replaces a move in progress, and the replicas before
    /// the move as target cancel it.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u32],
        throttle_bytes: Option<u64>,
    ) -> Result<(), ClientError> {
        let request = ReassignPartitionRequest {
            topic: topic.to_owned(),
            partition,
            replicas: replicas.to_vec(),
            throttle_bytes,
        };
        self.admin(Api::ReassignPartition, topic, &request)
            .await
            .result
    }

    /// The replica moves in progress of `topics` (all when empty), as the first broker
    /// that answers knows them (the controller leader first).
    pub async fn reassignments(
        &self,
        topics: &[String],
    ) -> Result<Vec<PartitionMove>, ClientError> {
        let request = ListReassignmentsRequest {
            topics: topics.to_vec(),
        };
        let timeout = self.admin_attempt_timeout();
        let candidates = self.inner.cache.borrow_mut().candidates(
            &self.inner.bootstrap,
            true,
            None,
            Instant::now(),
        );
        let mut last = ClientError::NoBroker("no broker known".into());
        for addr in candidates {
            let call = self.call::<_, ListReassignmentsResponse>(
                &addr,
                Api::ListReassignments,
                &request,
                Payload::default(),
                timeout,
            );
            match call.await {
                Ok((response, _)) => {
                    check(response.error, &response.message)?;
                    return Ok(response.moves);
                }
                Err(e) => last = name_silence(e, &addr, timeout),
            }
        }
        Err(last)
    }

    /// Decommissions node `node` (`draining`: its replicas move to the other nodes, it
    /// receives no new ones), or takes it back; the server's answer says what it did.
    pub async fn drain_node(&self, node: u32, draining: bool) -> Result<String, ClientError> {
        let request = DrainNodeRequest { node, draining };
        self.admin_said(Api::DrainNode, &request).await
    }

    /// Starts the replica moves that even out replica counts over the nodes (with
    /// `dry_run`, only counts them); the server's answer says how many.
    pub async fn rebalance_replicas(&self, dry_run: bool) -> Result<String, ClientError> {
        let request = RebalanceReplicasRequest { dry_run };
        self.admin_said(Api::RebalanceReplicas, &request).await
    }

    /// Creates `user`, or sets its password, for `mechanism`: the credential (a random
    /// salt, `iterations`, StoredKey, ServerKey) is derived here; the password is never
    /// sent. Goes to the controller leader like a topic change.
    pub async fn upsert_user(
        &self,
        user: &str,
        password: &str,
        mechanism: crate::scram::Mechanism,
        iterations: u32,
    ) -> Result<String, ClientError> {
        let credential = crate::scram::ScramCredential::generate(mechanism, password, iterations)
            .map_err(|e| ClientError::Server {
            code: ErrorCode::InvalidRequest,
            message: e.to_string(),
        })?;
        let request = UpsertUserRequest {
            user: user.to_owned(),
            mechanism: mechanism.name().to_owned(),
            salt: credential.salt.clone(),
            iterations: credential.iterations,
            stored_key: credential.stored_key.clone(),
            server_key: credential.server_key.clone(),
        };
        self.admin_said(Api::UpsertUser, &request).await
    }

    /// Deletes `user` (every credential it has).
    pub async fn delete_user(&self, user: &str) -> Result<String, ClientError> {
        let request = DeleteUserRequest {
            user: user.to_owned(),
        };
        self.admin_said(Api::DeleteUser, &request).await
    }

    /// The users and their mechanisms, as the first broker that answers knows them (the
    /// controller leader first).
    pub async fn users(&self) -> Result<Vec<ListedUser>, ClientError> {
        let timeout = self.admin_attempt_timeout();
        let candidates = self.inner.cache.borrow_mut().candidates(
            &self.inner.bootstrap,
            true,
            None,
            Instant::now(),
        );
        let mut last = ClientError::NoBroker("no broker known".into());
        for addr in candidates {
            let call = self.call::<_, ListUsersResponse>(
                &addr,
                Api::ListUsers,
                &ListUsersRequest {},
                Payload::default(),
                timeout,
            );
            match call.await {
                Ok((response, _)) => {
                    check(response.error, &response.message)?;
                    return Ok(response.users);
                }
                Err(e) => last = name_silence(e, &addr, timeout),
            }
        }
        Err(last)
    }

    /// An admin request about no topic, sent as [`Client::admin`] sends one; the answer's
    /// message. Repeating one whose answer was lost does no harm: a drain repeated is no
    /// change, a rebalance repeated plans from the moves already started.
    pub(super) async fn admin_said<T>(&self, api: Api, request: &T) -> Result<String, ClientError>
    where
        T: crate::frame::Meta,
    {
        let said = std::cell::RefCell::new(String::new());
        let outcome = self.admin_answered(api, "", request, &said).await;
        outcome.result.map(|()| said.into_inner())
    }

    /// Sends a CreateTopic or DeleteTopic request about `topic`: each attempt to the next
    /// broker (the controller leader first, then the other live ones; any node passes
    /// the request on to the controller), waiting at most `admin_timeout`. A broker that
    /// does not answer is left at once for the next; an answer that asks for patience (an
    /// election under way) is retried after the backoff. An attempt unanswered past
    /// `leader_check_after` checks the metadata every `leader_check_every`, and is given
    /// up for the new controller once another one is elected (a paused controller holds
    /// requests sent to it, and those passed on to it).
    async fn admin<T>(&self, api: Api, topic: &str, request: &T) -> AdminOutcome
    where
        T: crate::frame::Meta,
    {
        let said = std::cell::RefCell::new(String::new());
        self.admin_answered(api, topic, request, &said).await
    }

    /// [`Client::admin`], keeping the successful answer's message in `said`.
    async fn admin_answered<T>(
        &self,
        api: Api,
        topic: &str,
        request: &T,
        said: &std::cell::RefCell<String>,
    ) -> AdminOutcome
    where
        T: crate::frame::Meta,
    {
        let timeout = self.admin_attempt_timeout();
        let mut backoff = self.inner.config.retry_backoff;
        let mut attempts_left = self.inner.config.retries.saturating_add(1);
        let mut maybe_applied = false;
        let mut candidates: VecDeque<String> = VecDeque::new();
        loop {
            if candidates.is_empty() {
                // A new round, in a fresh order: brokers that just failed are suspects.
                candidates = self
                    .inner
                    .cache
                    .borrow_mut()
                    .candidates(&self.inner.bootstrap, true, None, Instant::now())
                    .into();
            }
            let Some(addr) = candidates.pop_front() else {
                let result = Err(ClientError::NoBroker("no broker known".into()));
                return AdminOutcome {
                    result,
                    maybe_applied,
                };
            };
            attempts_left -= 1;
            let controller = self.inner.cache.borrow().controller();
            let call = pin!(self.call::<_, TopicResponse>(
                &addr,
                api,
                request,
                Payload::default(),
                timeout
            ));
            let watch = pin!(self.watch_controller(topic, controller, &addr));
            let result = match select(call, watch).await {
                Either::Left((result, _)) => result.and_then(|(response, _)| {
                    check(response.error, &response.message)
                        .map(|()| *said.borrow_mut() = response.message)
                }),
                Either::Right((elected, _)) => {
                    tracing::debug!(?api, %addr, ?controller, elected, "controller moved");
                    maybe_applied = true;
                    if attempts_left == 0 {
                        let why = format!("{addr}: no answer while the controller moved");
                        return AdminOutcome {
                            result: Err(ClientError::NoBroker(why)),
                            maybe_applied,
                        };
                    }
                    // Straight to the new controller.
                    candidates.clear();
                    continue;
                }
            };
            let e = match result {
                Err(e) if admin_retriable(&e) && attempts_left > 0 => e,
                result => {
                    return AdminOutcome {
                        result: result.map_err(|e| name_silence(e, &addr, timeout)),
                        maybe_applied,
                    };
                }
            };
            tracing::debug!(?api, %addr, error = %e, "admin request failed; next broker");
            // A refused connection proves the request went nowhere; anything else may
            // have reached the controller.
            if !matches!(e, ClientError::NoBroker(_)) {
                maybe_applied = true;
            }
            if !e.is_silence() {
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(self.inner.config.retry_backoff_max);
            }
        }
    }

    /// Resolves with the new controller once the metadata (asked of brokers other than
    /// `addr`, about `topic`) names one other than `sent` (the controller when the
    /// request was sent); never while it stays.
    async fn watch_controller(&self, topic: &str, sent: Option<u32>, addr: &str) -> u32 {
        glommio::timer::sleep(self.inner.config.leader_check_after).await;
        loop {
            if let Err(e) = self
                .metadata_avoiding(&[topic.to_owned()], Some(addr))
                .await
            {
                tracing::debug!(error = %e, "controller check: no metadata");
            }
            if let Some(now) = self.inner.cache.borrow().controller()
                && Some(now) != sent
            {
                return now;
            }
            glommio::timer::sleep(self.inner.config.leader_check_every).await;
        }
    }
}

/// Whether an admin request may go to the next broker. A storage error answers one on
/// purpose (a create whose partitions could not open was undone): final, unlike a
/// produce's.
fn admin_retriable(e: &ClientError) -> bool {
    e.is_retriable() && e.code() != Some(ErrorCode::StorageError)
}
