//! Requests to a partition's leader: where it is (from the metadata cache), and the
//! leader checks that give a request up once the controller has moved the leadership
//! away from a leader that stopped answering (see the module docs of [`super`]).

use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{Either, select};
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;

use super::cache::{Leadership, Moved};
use super::{Client, ClientError, Payload};
use crate::api::Api;
use crate::error_code::ErrorCode;

/// A topic's metadata refresh that leader checks share (see [`Client::refresh_for_check`]).
pub(super) struct TopicRefresh {
    started: Instant,
    in_flight: bool,
    /// Checks waiting for the refresh in flight.
    waiting: Vec<oneshot::Sender<()>>,
}

/// Where a request to a partition's leader goes.
pub(super) struct Route {
    pub(super) addr: String,
    leadership: Leadership,
}

/// Ends a shared leader-check refresh, also when the check running it is dropped: the
/// checks waiting for it are woken (and start their own next time if it was cut short).
struct RefreshDone<'a> {
    client: &'a Client,
    topic: &'a str,
}

impl Drop for RefreshDone<'_> {
    fn drop(&mut self) {
        let waiting = match self.client.inner.refreshes.borrow_mut().get_mut(self.topic) {
            Some(refresh) => {
                refresh.in_flight = false;
                std::mem::take(&mut refresh.waiting)
            }
            None => Vec::new(),
        };
        for waiter in waiting {
            let _ = waiter.send(());
        }
    }
}

impl Client {
    /// Where the partition's leader is, and its epoch. A partition missing from cached
    /// metadata is looked up once more in fresh metadata.
    pub(super) async fn leader(&self, topic: &str, partition: u32) -> Result<Route, ClientError> {
        let mut meta = self.topic(topic).await?;
        if !meta.partitions.iter().any(|p| p.partition == partition) {
            self.inner.cache.borrow_mut().mark_stale(topic);
            meta = self.topic(topic).await?;
        }
        let Some(p) = meta.partitions.iter().find(|p| p.partition == partition) else {
            return Err(ClientError::NoSuchPartition {
                topic: topic.to_owned(),
                partition,
                partitions: u32::try_from(meta.partitions.len()).unwrap_or(u32::MAX),
            });
        };
        let Some(leader) = p.leader else {
            // An election is under way: ask again after the backoff.
            self.inner.cache.borrow_mut().mark_stale(topic);
            return Err(ClientError::Server {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("{topic}/{partition} has no leader"),
            });
        };
        let addr = self
            .inner
            .cache
            .borrow()
            .broker_addr(leader)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::NoBroker(format!("leader {leader} of {topic}")))?;
        Ok(Route {
            addr,
            leadership: Leadership {
                node: leader,
                epoch: p.leader_epoch,
            },
        })
    }

    /// One attempt of a request to the partition's leader, raced against the leader
    /// checks (module docs); `patience` is how long the broker may legitimately hold it
    /// (a fetch's `max_wait`). When the leader cannot be reached, the topic is marked for
    /// a metadata refresh, so the retry asks where the leader is now.
    pub(super) async fn call_leader<Req, Resp>(
        &self,
        topic: &str,
        partition: u32,
        patience: Duration,
        api: Api,
        request: &Req,
        data: Payload,
    ) -> Result<(Resp, Bytes), ClientError>
    where
        Req: crate::frame::Meta,
        Resp: rkyv::Archive,
        Resp::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
            + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        let route = self.leader(topic, partition).await?;
        let timeout = self.inner.config.request_timeout;
        // `select` polls the call first: the request is queued before anything waits.
        let call = pin!(self.call::<Req, Resp>(&route.addr, api, request, data, timeout));
        // A long poll is not checked before its wait is over: idle consumers with long
        // waits would otherwise ask for metadata twice a second each (a paused leader
        // under one is caught by the connection's liveness probe).
        let check_after = self.inner.config.leader_check_after.max(patience);
        let watch = pin!(self.watch_leader(topic, partition, &route, check_after));
        let result = match select(call, watch).await {
            Either::Left((result, _)) => result,
            Either::Right((moved, _)) => {
                let node = route.leadership.node;
                tracing::debug!(topic, partition, node, ?moved, "leader moved; resending");
                if !moved.old_leader_live {
                    // Fenced: it leads nothing now. Everything waiting on it fails over.
                    let connection = self.inner.connections.borrow().get(&route.addr).cloned();
                    if let Some(connection) = connection {
                        connection.close(&format!("node {node} was fenced by the controller"));
                    }
                }
                return Err(ClientError::LeaderMoved {
                    topic: topic.to_owned(),
                    partition,
                    node,
                });
            }
        };
        if let Err(e) = &result
            && e.is_silence()
        {
            self.inner.cache.borrow_mut().mark_stale(topic);
        }
        result
    }

    /// Resolves once the partition's leadership moved away from `route` (see the module
    /// docs); never while it stays.
    async fn watch_leader(
        &self,
        topic: &str,
        partition: u32,
        route: &Route,
        after: Duration,
    ) -> Moved {
        self.inner.checks.wait(after).await;
        loop {
            self.refresh_for_check(topic, &route.addr).await;
            let moved = self
                .inner
                .cache
                .borrow()
                .moved(topic, partition, route.leadership);
            if let Some(moved) = moved {
                return moved;
            }
            glommio::timer::sleep(self.inner.config.leader_check_every).await;
        }
    }

    /// Refreshes `topic`'s metadata for a leader check, asking `avoid` (the silent leader)
    /// last. The checks of one topic share one refresh per `leader_check_every`: a check
    /// that finds one in flight waits for it, one that finds a recent one reads the cache.
    async fn refresh_for_check(&self, topic: &str, avoid: &str) {
        enum Role {
            Run,
            Wait(oneshot::Receiver<()>),
            Skip,
        }
        let role = {
            let now = Instant::now();
            let mut refreshes = self.inner.refreshes.borrow_mut();
            match refreshes.get_mut(topic) {
                Some(refresh) if refresh.in_flight => {
                    let (tx, rx) = oneshot::channel();
                    refresh.waiting.push(tx);
                    Role::Wait(rx)
                }
                Some(refresh)
                    if now.saturating_duration_since(refresh.started)
                        < self.inner.config.leader_check_every =>
                {
                    Role::Skip
                }
                _ => {
                    let refresh = TopicRefresh {
                        started: now,
                        in_flight: true,
                        waiting: Vec::new(),
                    };
                    refreshes.insert(topic.to_owned(), refresh);
                    Role::Run
                }
            }
        };
        match role {
            Role::Skip => {}
            // Woken when the refresh ends, or is dropped with the check that ran it.
            Role::Wait(done) => drop(done.await),
            Role::Run => {
                let _done = RefreshDone {
                    client: self,
                    topic,
                };
                if let Err(e) = self
                    .metadata_avoiding(&[topic.to_owned()], Some(avoid))
                    .await
                {
                    tracing::debug!(topic, error = %e, "leader check: no metadata");
                }
            }
        }
    }
}
