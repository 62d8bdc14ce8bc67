//! Group requests and where they go. Every group request but FindCoordinator and
//! ListGroups goes to the group's coordinator, found with FindCoordinator (asked of any
//! broker) and remembered per group. An answer that says the node is not (or not yet) the
//! coordinator (`NotCoordinator`, `CoordinatorLoading`, `CoordinatorNotAvailable`), or a
//! coordinator that does not answer, forgets it: the retry looks it up again (after the
//! client's backoff), so members follow a coordinator that failed over. Errors about the
//! group itself (a rebalance, a stale generation, an unknown member) come back in the
//! answer for the caller (`group.rs`) to act on.
//!
//! Also the group administration `shardlog group` uses: list every node's groups,
//! describe one, read and write its committed offsets.

use std::time::{Duration, Instant};

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;

use super::cache::broker_address;
use super::{Client, ClientError, Payload, check};
use crate::api::{
    Api, CommittedOffset, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupDescription, GroupResponse, JoinGroupResponse, ListGroupsRequest,
    ListGroupsResponse, ListedGroup, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, OffsetToCommit, PartitionError, SyncGroupResponse, TopicPartitions,
};
use crate::error_code::ErrorCode;

/// A group answer: its error code (0: none) and message. For answers with per-group or
/// per-partition codes, the code that says where to send the request matters most: a
/// coordinator error anywhere in it is the answer's.
pub(crate) trait GroupAnswer {
    /// The code that decides the answer.
    fn error(&self) -> u16;
    /// Human context.
    fn message(&self) -> &str;
}

/// Whether `code` says "ask the coordinator, found again".
fn is_coordinator_error(code: u16) -> bool {
    matches!(
        ErrorCode::from(code),
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorLoading
            | ErrorCode::CoordinatorNotAvailable
    )
}

/// The first coordinator error among `codes`, else `top`.
fn deciding(top: u16, codes: impl IntoIterator<Item = u16>) -> u16 {
    if top != 0 {
        return top;
    }
    codes
        .into_iter()
        .find(|c| is_coordinator_error(*c))
        .unwrap_or(0)
}

macro_rules! plain_answer {
    ($($t:ty),*) => {$(
        impl GroupAnswer for $t {
            fn error(&self) -> u16 { self.error }
            fn message(&self) -> &str { &self.message }
        }
    )*};
}

plain_answer!(
    JoinGroupResponse,
    SyncGroupResponse,
    GroupResponse,
    ListGroupsResponse
);

impl GroupAnswer for OffsetCommitResponse {
    fn error(&self) -> u16 {
        deciding(self.error, self.partitions.iter().map(|p| p.error))
    }
    fn message(&self) -> &str {
        &self.message
    }
}

impl GroupAnswer for OffsetFetchResponse {
    fn error(&self) -> u16 {
        deciding(self.error, self.offsets.iter().map(|p| p.error))
    }
    fn message(&self) -> &str {
        &self.message
    }
}

impl GroupAnswer for DescribeGroupsResponse {
    fn error(&self) -> u16 {
        deciding(self.error, self.groups.iter().map(|g| g.error))
    }
    fn message(&self) -> &str {
        &self.message
    }
}

impl Client {
    /// The coordinator of `group`: its node id and address, asked of the brokers in turn
    /// (live ones first) until one answers. `CoordinatorNotAvailable` (no leader for the
    /// group's offsets partition yet) is an error the caller may retry.
    pub async fn find_coordinator(&self, group: &str) -> Result<(u32, String), ClientError> {
        let request = FindCoordinatorRequest {
            group: group.to_owned(),
        };
        let timeout = self.admin_attempt_timeout();
        let candidates = self.inner.cache.borrow_mut().candidates(
            &self.inner.bootstrap,
            false,
            None,
            Instant::now(),
        );
        let mut silent = Vec::new();
        for addr in candidates {
            let answer = self
                .call::<_, FindCoordinatorResponse>(
                    &addr,
                    Api::FindCoordinator,
                    &request,
                    Payload::default(),
                    timeout,
                )
                .await;
            match answer {
                Ok((response, _)) => {
                    check(response.error, &response.message)?;
                    let addr = broker_address(&response.host, response.port);
                    return Ok((response.node_id, addr));
                }
                Err(e) if e.is_silence() => silent.push(format!("{addr}: {e}")),
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::NoBroker(silent.join("; ")))
    }

    /// The cached coordinator of `group`, found when unknown.
    async fn coordinator(&self, group: &str) -> Result<String, ClientError> {
        if let Some(addr) = self.inner.coordinators.borrow().get(group) {
            return Ok(addr.clone());
        }
        let (node, addr) = self.find_coordinator(group).await?;
        tracing::debug!(group, node, %addr, "found the group's coordinator");
        self.inner
            .coordinators
            .borrow_mut()
            .insert(group.to_owned(), addr.clone());
        Ok(addr)
    }

    /// Sends a group request to the coordinator of `group`, waiting at most `timeout` per
    /// attempt, and follows the coordinator (see the module docs) up to
    /// `ClientConfig::retries` times. The answer comes back with any error about the group
    /// itself in it.
    pub(crate) async fn call_coordinator<Req, Resp>(
        &self,
        group: &str,
        api: Api,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError>
    where
        Req: crate::frame::Meta,
        Resp: GroupAnswer + rkyv::Archive,
        Resp::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
            + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        self.with_retries(|| async {
            let addr = self.coordinator(group).await?;
            let answer = self
                .call::<_, Resp>(&addr, api, request, Payload::default(), timeout)
                .await
                .map(|(response, _)| response);
            let moved = match &answer {
                Ok(response) => is_coordinator_error(response.error()),
                Err(e) => e.is_silence() || e.code().is_some_and(|c| c.is_retriable()),
            };
            if moved {
                self.inner.coordinators.borrow_mut().remove(group);
            }
            match answer {
                Ok(response) if is_coordinator_error(response.error()) => {
                    Err(ClientError::server(response.error(), response.message()))
                }
                other => other,
            }
        })
        .await
    }

    /// Every group the cluster's nodes coordinate, sorted by id: each broker the metadata
    /// names is asked (a group lives on its coordinator only). Fails if a live broker does
    /// not answer, rather than print a partial list.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>, ClientError> {
        let metadata = self.metadata(&[]).await?;
        let timeout = self.admin_attempt_timeout();
        let mut groups: Vec<ListedGroup> = Vec::new();
        for broker in metadata.brokers.iter().filter(|b| b.live) {
            let addr = broker_address(&broker.host, broker.port);
            let answer = self
                .call::<_, ListGroupsResponse>(
                    &addr,
                    Api::ListGroups,
                    &ListGroupsRequest {},
                    Payload::default(),
                    timeout,
                )
                .await;
            let (response, _) = answer.map_err(|e| super::name_silence(e, &addr, timeout))?;
            check(response.error, &response.message)?;
            groups.extend(response.groups);
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        groups.dedup_by(|a, b| a.group == b.group);
        Ok(groups)
    }

    /// The state and members of `group` (`Dead` with no members for a group unknown to its
    /// coordinator).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = DescribeGroupsRequest {
            groups: vec![group.to_owned()],
        };
        let timeout = self.admin_attempt_timeout();
        let response: DescribeGroupsResponse = self
            .call_coordinator(group, Api::DescribeGroups, &request, timeout)
            .await?;
        check(response.error, &response.message)?;
        let description = response
            .groups
            .into_iter()
            .find(|g| g.group == group)
            .ok_or_else(|| ClientError::Protocol(format!("no description of group {group}")))?;
        check(description.error, &format!("group {group}"))?;
        Ok(description)
    }

    /// The offsets `group` committed for `partitions` (`None`: every partition it
    /// committed); a partition without a committed offset has `offset: None`.
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartitions>>,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let request = OffsetFetchRequest {
            group: group.to_owned(),
            partitions,
        };
        let timeout = self.admin_attempt_timeout();
        let response: OffsetFetchResponse = self
            .call_coordinator(group, Api::OffsetFetch, &request, timeout)
            .await?;
        check(response.error, &response.message)?;
        if let Some(failed) = response.offsets.iter().find(|p| p.error != 0) {
            let what = format!("{} partition {}", failed.topic, failed.partition);
            return Err(ClientError::server(failed.error, &what));
        }
        Ok(response.offsets)
    }

    /// Commits `offsets` for `group` as member `member_id` of `generation` (a tool:
    /// generation -1 and no member, accepted only while the group has no members).
    /// Answered once the commit is durable; a partition the coordinator refused fails the
    /// call with its code.
    pub async fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(), ClientError> {
        let request = OffsetCommitRequest {
            group: group.to_owned(),
            generation,
            member_id: member_id.to_owned(),
            offsets,
        };
        let timeout = self.inner.config.request_timeout;
        let response: OffsetCommitResponse = self
            .call_coordinator(group, Api::OffsetCommit, &request, timeout)
            .await?;
        check(response.error, &response.message)?;
        match response.partitions.iter().find(|p| p.error != 0) {
            Some(PartitionError {
                topic,
                partition,
                error,
            }) => Err(ClientError::server(
                *error,
                &format!("commit {topic} partition {partition}"),
            )),
            None => Ok(()),
        }
    }
}
