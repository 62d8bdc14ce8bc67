//! The client library: async (glommio), one [`Client`] per executor, cheap to clone.
//!
//! A client keeps one pipelined connection per broker address, caches metadata (which
//! node leads each partition), sends each request to the partition's leader, and retries
//! the errors that say retrying helps (`NotLeader`, `NotEnoughReplicas`, `Timeout`,
//! `ShuttingDown`, `UnknownPartition`, a broken connection) after refreshing metadata,
//! up to `ClientConfig::retries` times.
//!
//! Ordering: a request is queued on its connection synchronously when its future is first
//! polled, so produce requests to one partition from one client reach the broker, and are
//! appended, in the order their futures were first polled, unless a retry intervenes.

pub(crate) mod connection;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use shardlog_engine::batch::{self, BatchHeader};

use crate::api::{
    Acks, Api, CreateTopicRequest, DeleteTopicRequest, ErrorResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetSpec,
    ProduceRequest, ProduceResponse, TopicConfig, TopicMetadata, TopicResponse, VERSION,
};
use crate::error_code::ErrorCode;
use crate::frame::{FLAG_ERROR, encode_head};
use crate::wire::Frame;
use connection::{Connection, ReplyReceiver};

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long one attempt of a request may take (the server gets the same budget).
    pub request_timeout: Duration,
    /// Further attempts after a retriable error.
    pub retries: u32,
    /// Pause before the first retry; doubled each time, up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// Longest pause between retries.
    pub retry_backoff_max: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            retries: 8,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
        }
    }
}

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error (after retries, for retriable ones).
    #[error("{code:?}: {message}")]
    Server {
        /// The code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The broker sent something this client cannot decode.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No reply within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// No broker could be reached.
    #[error("no broker reachable: {0}")]
    NoBroker(String),
    /// A broker that metadata named as the leader does not know the topic; retried with
    /// fresh metadata.
    #[error("stale metadata: {0}")]
    StaleMetadata(String),
    /// Fresh metadata says the topic has no such partition (not retried).
    #[error("{topic} has {partitions} partitions; there is no partition {partition}")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
}

impl ClientError {
    /// The server's error code, if the broker answered with one.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::NoSuchPartition { .. } => Some(ErrorCode::UnknownPartition),
            _ => None,
        }
    }

    fn is_retriable(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => code.is_retriable(),
            ClientError::Io(_)
            | ClientError::Timeout
            | ClientError::NoBroker(_)
            | ClientError::StaleMetadata(_) => true,
            ClientError::Protocol(_) | ClientError::NoSuchPartition { .. } => false,
        }
    }

    fn server(code: u16, message: &str) -> ClientError {
        ClientError::Server {
            code: ErrorCode::from(code),
            message: message.to_owned(),
        }
    }
}

/// Fetch settings.
#[derive(Clone, Copy, Debug)]
pub struct FetchOptions {
    /// Byte budget of the reply (at least one batch is returned regardless).
    pub max_bytes: u32,
    /// Longest wait at the tail for `min_bytes` to arrive.
    pub max_wait: Duration,
    /// Bytes to wait for before the broker answers.
    pub min_bytes: u32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes: 1 << 20,
            max_wait: Duration::ZERO,
            min_bytes: 0,
        }
    }
}

/// Batches returned by a fetch, as stored.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// Offsets below it are committed.
    pub high_watermark: u64,
    /// The partition's first offset.
    pub log_start: u64,
    /// Where to fetch next.
    pub next_offset: u64,
    /// Whole batches.
    pub data: Bytes,
}

impl Fetched {
    /// Each batch, checked (length and CRC32C) before use.
    pub fn batches(&self) -> impl Iterator<Item = Result<(BatchHeader, &[u8]), ClientError>> {
        let mut rest: &[u8] = &self.data;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let checked = BatchHeader::parse(rest)
                .and_then(|h| batch::validate(rest.get(..h.size as usize).unwrap_or(rest)))
                .map_err(|e| ClientError::Protocol(format!("fetched batch: {e}")));
            let header = match checked {
                Ok(header) => header,
                Err(e) => {
                    rest = &[];
                    return Some(Err(e));
                }
            };
            let (bytes, tail) = rest.split_at(header.size as usize);
            rest = tail;
            Some(Ok((header, bytes)))
        })
    }
}

struct Inner {
    config: ClientConfig,
    bootstrap: Vec<String>,
    connections: RefCell<HashMap<String, Connection>>,
    /// Node id -> "host:port".
    brokers: RefCell<HashMap<u32, String>>,
    topics: RefCell<HashMap<String, Rc<TopicMetadata>>>,
    correlation: Cell<u64>,
    /// Metadata refreshes so far: where the next one starts among the brokers.
    metadata_turn: Cell<usize>,
}

/// A client; see the module docs.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

impl Client {
    /// Connects to the first reachable of `brokers` (`HOST:PORT[,HOST:PORT...]`) and loads
    /// the metadata of every topic.
    pub async fn connect(brokers: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let bootstrap: Vec<String> = brokers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if bootstrap.is_empty() {
            return Err(ClientError::NoBroker("empty broker list".into()));
        }
        let client = Client {
            inner: Rc::new(Inner {
                config,
                bootstrap,
                connections: RefCell::new(HashMap::new()),
                brokers: RefCell::new(HashMap::new()),
                topics: RefCell::new(HashMap::new()),
                correlation: Cell::new(1),
                metadata_turn: Cell::new(0),
            }),
        };
        // A cluster that just started may still be electing its controller: retried.
        client.with_retries(|| client.metadata(&[])).await?;
        Ok(client)
    }

    /// Fresh metadata for `topics` (empty: all); refreshes the cache.
    pub async fn metadata(&self, topics: &[String]) -> Result<MetadataResponse, ClientError> {
        let request = MetadataRequest {
            topics: topics.to_vec(),
        };
        let mut last = ClientError::NoBroker("no broker tried".into());
        let mut known: Vec<(u32, String)> = self
            .inner
            .brokers
            .borrow()
            .iter()
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        // Each refresh starts at the next broker. A broker cut off from the controller
        // still answers, with its stale view (naming itself the leader of what it led);
        // asking the same broker first every time (a `HashMap` keeps its order) could pin
        // this client to it for as long as the partition lasts.
        known.sort_unstable();
        let turn = self.inner.metadata_turn.get();
        self.inner.metadata_turn.set(turn.wrapping_add(1));
        if !known.is_empty() {
            let start = turn % known.len();
            known.rotate_left(start);
        }
        let mut candidates: Vec<String> = known.into_iter().map(|(_, addr)| addr).collect();
        candidates.extend(self.inner.bootstrap.iter().cloned());
        for addr in candidates {
            match self
                .call::<_, MetadataResponse>(&addr, Api::Metadata, &request, Bytes::new())
                .await
            {
                Ok((response, _)) => {
                    self.learn(&response, topics.is_empty());
                    return Ok(response);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn learn(&self, response: &MetadataResponse, all: bool) {
        let mut brokers = self.inner.brokers.borrow_mut();
        brokers.clear();
        for b in &response.brokers {
            brokers.insert(b.node_id, format!("{}:{}", b.host, b.port));
        }
        let mut topics = self.inner.topics.borrow_mut();
        if all {
            topics.clear();
        }
        for t in &response.topics {
            if t.error == ErrorCode::None as u16 {
                topics.insert(t.name.clone(), Rc::new(t.clone()));
            } else {
                topics.remove(&t.name);
            }
        }
    }

    /// Creates a topic. A topic that exists is `Server { code: TopicExists }`.
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
        self.admin(Api::CreateTopic, &request).await?;
        // In a cluster the other nodes learn of the topic a moment later: wait until the
        // metadata names it, so the caller can use it at once.
        let deadline = std::time::Instant::now() + self.inner.config.request_timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let response = self.metadata(&[name.to_owned()]).await?;
            let known = response
                .topics
                .iter()
                .any(|t| t.name == name && t.error == ErrorCode::None as u16);
            if known || std::time::Instant::now() >= deadline {
                return Ok(());
            }
            glommio::timer::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Deletes a topic and every record in it.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.admin(Api::DeleteTopic, &request).await?;
        self.inner.topics.borrow_mut().remove(name);
        Ok(())
    }

    async fn admin<T>(&self, api: Api, request: &T) -> Result<(), ClientError>
    where
        T: crate::frame::Meta,
    {
        self.with_retries(|| async {
            let addr = self.any_broker();
            let (response, _) = self
                .call::<_, TopicResponse>(&addr, api, request, Bytes::new())
                .await?;
            check(response.error, &response.message)
        })
        .await
    }

    /// The partition count of `topic`, from the cache (refreshed when unknown).
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let meta = self.topic(topic).await?;
        u32::try_from(meta.partitions.len())
            .map_err(|_| ClientError::Protocol("too many partitions".into()))
    }

    /// Cached metadata of `topic`, loaded when missing.
    pub async fn topic(&self, topic: &str) -> Result<Rc<TopicMetadata>, ClientError> {
        if let Some(meta) = self.inner.topics.borrow().get(topic) {
            return Ok(meta.clone());
        }
        let response = self.metadata(&[topic.to_owned()]).await?;
        match response.topics.into_iter().find(|t| t.name == topic) {
            Some(t) if t.error == ErrorCode::None as u16 => Ok(Rc::new(t)),
            Some(t) => Err(ClientError::server(t.error, &format!("topic {topic:?}"))),
            None => Err(ClientError::Server {
                code: ErrorCode::UnknownTopic,
                message: format!("topic {topic:?}"),
            }),
        }
    }

    /// Appends one batch (Kafka v2 bytes) to a partition. Returns the offset the broker
    /// gave its first record (`None` with `Acks::None`, which awaits no reply).
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batch: Bytes,
    ) -> Result<Option<u64>, ClientError> {
        let request = ProduceRequest {
            topic: topic.to_owned(),
            partition,
            acks,
            timeout_ms: millis(self.inner.config.request_timeout),
        };
        self.with_retries(|| async {
            let addr = self.leader(topic, partition).await?;
            if acks == Acks::None {
                self.send_only(&addr, Api::Produce, &request, batch.clone())
                    .await?;
                return Ok(None);
            }
            let (response, _) = self
                .call_leader::<_, ProduceResponse>(
                    topic,
                    &addr,
                    Api::Produce,
                    &request,
                    batch.clone(),
                )
                .await?;
            let hint = response.leader_hint;
            self.check_partition(topic, partition, response.error, hint, &response.message)?;
            Ok(Some(response.base_offset))
        })
        .await
    }

    /// Reads whole batches from `offset`.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        options: FetchOptions,
    ) -> Result<Fetched, ClientError> {
        let request = FetchRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes: options.max_bytes,
            max_wait_ms: millis(options.max_wait),
            min_bytes: options.min_bytes,
        };
        self.with_retries(|| async {
            let addr = self.leader(topic, partition).await?;
            let (response, data) = self
                .call_leader::<_, FetchResponse>(topic, &addr, Api::Fetch, &request, Bytes::new())
                .await?;
            let hint = response.leader_hint;
            self.check_partition(topic, partition, response.error, hint, &response.message)?;
            Ok(Fetched {
                high_watermark: response.high_watermark,
                log_start: response.log_start,
                next_offset: response.next_offset,
                data,
            })
        })
        .await
    }

    /// The earliest offset, the latest (the high watermark), or the first offset at or
    /// after a timestamp (`None`: no record that late).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<Option<u64>, ClientError> {
        let request = ListOffsetsRequest {
            topic: topic.to_owned(),
            partition,
            spec,
        };
        self.with_retries(|| async {
            let addr = self.leader(topic, partition).await?;
            let (response, _) = self
                .call_leader::<_, ListOffsetsResponse>(
                    topic,
                    &addr,
                    Api::ListOffsets,
                    &request,
                    Bytes::new(),
                )
                .await?;
            let hint = response.leader_hint;
            self.check_partition(topic, partition, response.error, hint, &response.message)?;
            Ok(response.offset)
        })
        .await
    }

    /// An error reply that says the cached metadata is stale: `NotLeader` with a hint of a
    /// known broker moves the partition's cached leader there (the retry goes straight to
    /// it); any other retriable error drops the topic from the cache, so the retry asks
    /// for fresh metadata.
    fn check_partition(
        &self,
        topic: &str,
        partition: u32,
        error: u16,
        leader_hint: Option<u32>,
        message: &str,
    ) -> Result<(), ClientError> {
        let mut result = check(error, message);
        if let Err(e) = &result
            && e.code() == Some(ErrorCode::UnknownTopic)
        {
            // Metadata named this broker, which does not know the topic (yet, or any more):
            // the cache is stale. The retry's metadata lookup tells which.
            result = Err(ClientError::StaleMetadata(format!("{topic}: {message}")));
        }
        if let Err(e) = &result
            && e.is_retriable()
        {
            let hinted = e.code() == Some(ErrorCode::NotLeader)
                && leader_hint.is_some_and(|node| self.follow_hint(topic, partition, node));
            if !hinted {
                self.inner.topics.borrow_mut().remove(topic);
            }
        }
        result
    }

    /// Makes `node` the cached leader of the partition, if the broker is known.
    fn follow_hint(&self, topic: &str, partition: u32, node: u32) -> bool {
        if !self.inner.brokers.borrow().contains_key(&node) {
            return false;
        }
        let mut topics = self.inner.topics.borrow_mut();
        let Some(meta) = topics.get_mut(topic) else {
            return false;
        };
        let mut updated = TopicMetadata::clone(meta);
        let Some(p) = updated
            .partitions
            .iter_mut()
            .find(|p| p.partition == partition)
        else {
            return false;
        };
        tracing::debug!(
            topic,
            partition,
            from = ?p.leader,
            to = node,
            "following a NotLeader hint"
        );
        p.leader = Some(node);
        *meta = Rc::new(updated);
        true
    }

    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = self.inner.config.retry_backoff;
        let mut left = self.inner.config.retries;
        loop {
            match attempt().await {
                Err(e) if e.is_retriable() && left > 0 => {
                    left -= 1;
                    tracing::debug!(error = %e, "retrying");
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.inner.config.retry_backoff_max);
                }
                result => return result,
            }
        }
    }

    /// The address of the partition's leader.
    /// A partition missing from cached metadata is looked up once more in fresh metadata.
    async fn leader(&self, topic: &str, partition: u32) -> Result<String, ClientError> {
        let mut meta = self.topic(topic).await?;
        if !meta.partitions.iter().any(|p| p.partition == partition) {
            self.inner.topics.borrow_mut().remove(topic);
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
            self.inner.topics.borrow_mut().remove(topic);
            return Err(ClientError::Server {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("{topic}/{partition} has no leader"),
            });
        };
        self.inner
            .brokers
            .borrow()
            .get(&leader)
            .cloned()
            .ok_or_else(|| ClientError::NoBroker(format!("leader {leader} of {topic}")))
    }

    fn any_broker(&self) -> String {
        let brokers = self.inner.brokers.borrow();
        brokers
            .values()
            .next()
            .cloned()
            .unwrap_or_else(|| self.inner.bootstrap.first().cloned().unwrap_or_default())
    }

    async fn connection(&self, addr: &str) -> Result<Connection, ClientError> {
        if let Some(conn) = self.inner.connections.borrow().get(addr)
            && !conn.is_dead()
        {
            return Ok(conn.clone());
        }
        let conn = Connection::open(addr, self.inner.config.request_timeout).await?;
        self.inner
            .connections
            .borrow_mut()
            .insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    fn next_correlation(&self) -> u64 {
        let c = self.inner.correlation.get();
        self.inner.correlation.set(c.wrapping_add(1));
        c
    }

    /// Queues the request on the connection to `addr`; the receiver of its reply when
    /// `expect_reply`.
    async fn enqueue<Req>(
        &self,
        addr: &str,
        api: Api,
        request: &Req,
        data: Bytes,
        expect_reply: bool,
    ) -> Result<Option<ReplyReceiver>, ClientError>
    where
        Req: crate::frame::Meta,
    {
        let conn = self.connection(addr).await?;
        let correlation = self.next_correlation();
        let head = head(api, correlation, request, data.len())?;
        conn.send(correlation, head, data, expect_reply)
    }

    /// Sends a request that gets no reply (`acks=none`).
    async fn send_only<Req>(
        &self,
        addr: &str,
        api: Api,
        request: &Req,
        data: Bytes,
    ) -> Result<(), ClientError>
    where
        Req: crate::frame::Meta,
    {
        self.enqueue(addr, api, request, data, false)
            .await
            .map(drop)
    }

    /// One attempt: sends the request to `addr` and decodes the reply's meta and data.
    /// `call` to a partition's leader: when the leader cannot be reached, the topic's
    /// cached metadata is dropped, so the retry asks where the leader is now (it may have
    /// failed over).
    async fn call_leader<Req, Resp>(
        &self,
        topic: &str,
        addr: &str,
        api: Api,
        request: &Req,
        data: Bytes,
    ) -> Result<(Resp, Bytes), ClientError>
    where
        Req: crate::frame::Meta,
        Resp: rkyv::Archive,
        Resp::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
            + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        let result = self.call(addr, api, request, data).await;
        if let Err(ClientError::Io(_) | ClientError::NoBroker(_) | ClientError::Timeout) = &result {
            self.inner.topics.borrow_mut().remove(topic);
        }
        result
    }

    async fn call<Req, Resp>(
        &self,
        addr: &str,
        api: Api,
        request: &Req,
        data: Bytes,
    ) -> Result<(Resp, Bytes), ClientError>
    where
        Req: crate::frame::Meta,
        Resp: rkyv::Archive,
        Resp::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
            + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        let Some(reply) = self.enqueue(addr, api, request, data, true).await? else {
            return Err(ClientError::Protocol("no reply channel".into()));
        };
        let frame = reply
            .await
            .map_err(|_| ClientError::Protocol("reply channel dropped".into()))??;
        decode_reply(api, frame)
    }
}

fn head<Req>(
    api: Api,
    correlation: u64,
    request: &Req,
    data_len: usize,
) -> Result<Vec<u8>, ClientError>
where
    Req: crate::frame::Meta,
{
    let mut head = Vec::new();
    encode_head(
        &mut head,
        api as u16,
        VERSION,
        correlation,
        0,
        request,
        data_len,
    )
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(head)
}

fn decode_reply<Resp>(api: Api, frame: Frame) -> Result<(Resp, Bytes), ClientError>
where
    Resp: rkyv::Archive,
    Resp::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
        + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let bad = |e: crate::frame::FrameError| ClientError::Protocol(format!("{api:?} reply: {e}"));
    if frame.header.flags & FLAG_ERROR != 0 {
        let error: ErrorResponse = frame.decode().map_err(bad)?;
        return Err(ClientError::server(error.error, &error.message));
    }
    if frame.header.api != api as u16 {
        return Err(ClientError::Protocol(format!(
            "reply for api {} to a {api:?} request",
            frame.header.api
        )));
    }
    let response: Resp = frame.decode().map_err(bad)?;
    Ok((response, frame.data.freeze()))
}

fn check(error: u16, message: &str) -> Result<(), ClientError> {
    if error == ErrorCode::None as u16 {
        Ok(())
    } else {
        Err(ClientError::server(error, message))
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
