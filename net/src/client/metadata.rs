//! Metadata requests: asked of live brokers first, hedged (the next broker is asked too
//! once one is slow), each attempt bounded (see the module docs of [`super`]).

use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;

use super::{Client, ClientError, Payload, silence_reason};
use crate::api::{Api, MetadataRequest, MetadataResponse};

impl Client {
    /// Fresh metadata for `topics` (empty: all), from the first broker that answers (see
    /// the module docs for the order); refreshes the cache.
    pub async fn metadata(&self, topics: &[String]) -> Result<MetadataResponse, ClientError> {
        self.metadata_avoiding(topics, None).await
    }

    /// [`Client::metadata`], asking `avoid` (a leader that stopped answering) last.
    pub(super) async fn metadata_avoiding(
        &self,
        topics: &[String],
        avoid: Option<&str>,
    ) -> Result<MetadataResponse, ClientError> {
        /// What the wait for answers brought.
        enum Event {
            Answer(Option<(String, Result<MetadataResponse, ClientError>)>),
            Hedge,
        }
        let request = MetadataRequest {
            topics: topics.to_vec(),
        };
        let timeout = self.admin_attempt_timeout();
        let candidates = self.inner.cache.borrow_mut().candidates(
            &self.inner.bootstrap,
            false,
            avoid,
            Instant::now(),
        );
        let mut queue = candidates.into_iter();
        let mut asking = FuturesUnordered::new();
        let mut started: Vec<(String, Instant)> = Vec::new();
        let mut failures: Vec<(String, ClientError)> = Vec::new();
        loop {
            if asking.is_empty() {
                let Some(addr) = queue.next() else {
                    return Err(round_failed(failures, timeout));
                };
                started.push((addr.clone(), Instant::now()));
                asking.push(self.ask_metadata(addr, &request, timeout));
            }
            let event = if queue.len() > 0 {
                let hedge = glommio::timer::sleep(self.inner.config.metadata_hedge_after);
                match select(asking.next(), pin!(hedge)).await {
                    Either::Left((answer, _)) => Event::Answer(answer),
                    Either::Right(((), _)) => Event::Hedge,
                }
            } else {
                Event::Answer(asking.next().await)
            };
            let answer = match event {
                Event::Hedge => None,
                Event::Answer(None) => continue,
                Event::Answer(Some(answer)) => Some(answer),
            };
            match answer {
                Some((addr, Ok(response))) => {
                    self.learn(&response, topics.is_empty());
                    // Brokers asked long enough ago that have not answered yet are asked
                    // last for a while (they may be paused).
                    let hedge = self.inner.config.metadata_hedge_after;
                    let now = Instant::now();
                    let mut cache = self.inner.cache.borrow_mut();
                    for (slow, at) in &started {
                        let answered = *slow == addr || failures.iter().any(|(a, _)| a == slow);
                        if !answered && now.saturating_duration_since(*at) >= hedge {
                            cache.suspect(slow, now);
                        }
                    }
                    return Ok(response);
                }
                Some((addr, Err(e))) => {
                    tracing::debug!(%addr, error = %e, "metadata request failed");
                    failures.push((addr, e));
                }
                None => {}
            }
            // A failure or the hedge: the next broker too.
            if let Some(addr) = queue.next() {
                started.push((addr.clone(), Instant::now()));
                asking.push(self.ask_metadata(addr, &request, timeout));
            }
        }
    }

    pub(super) async fn ask_metadata(
        &self,
        addr: String,
        request: &MetadataRequest,
        timeout: Duration,
    ) -> (String, Result<MetadataResponse, ClientError>) {
        let result = self
            .call::<_, MetadataResponse>(&addr, Api::Metadata, request, Payload::default(), timeout)
            .await
            .map(|(response, _)| response);
        (addr, result)
    }

    pub(super) fn learn(&self, response: &MetadataResponse, all: bool) {
        self.inner.cache.borrow_mut().learn(response, all);
    }
}

/// The error of a metadata round in which no broker answered usefully: the last answer
/// if one came (it says why, e.g. an election), else every broker with what happened.
fn round_failed(failures: Vec<(String, ClientError)>, timeout: Duration) -> ClientError {
    if failures.is_empty() {
        return ClientError::NoBroker("no broker to ask".into());
    }
    if failures.iter().all(|(_, e)| e.is_silence()) {
        let why: Vec<String> = failures
            .iter()
            .map(|(addr, e)| silence_reason(addr, e, timeout))
            .collect();
        return ClientError::NoBroker(why.join("; "));
    }
    let last_answer = failures
        .into_iter()
        .rev()
        .find(|(_, e)| !e.is_silence())
        .map(|(_, e)| e);
    last_answer.unwrap_or_else(|| ClientError::NoBroker("no broker answered".into()))
}
