//! The client library: async (glommio), one [`Client`] per executor, cheap to clone.
//!
//! A client keeps one pipelined connection per broker address, caches metadata (which
//! node leads each partition, which brokers are live), sends each request to the
//! partition's leader, and retries the errors that say retrying helps (`NotLeader`,
//! `NotEnoughReplicas`, `Timeout`, `ShuttingDown`, `UnknownPartition`, a broken
//! connection, a leader that moved) after refreshing metadata, up to
//! `ClientConfig::retries` times.
//!
//! Following a failover. A broker that dies refuses connections, which fails requests at
//! once; a broker that hangs or is paused (SIGSTOP, a VM stall) keeps its socket open and
//! answers nothing, and waiting out the request timeout would stall a producer for as
//! long as the pause. Three mechanisms bound that:
//!
//! - *Leader checks.* While a request to a partition's leader is unanswered past
//!   `leader_check_after` (or a longer fetch's `max_wait`; the checks start within one
//!   `leader_check_every` after that, `check_clock.rs`), the client refreshes the topic's
//!   metadata every `leader_check_every`, asking other brokers first; once the partition
//!   has another leader or a higher leader epoch, the request is given up as
//!   [`ClientError::LeaderMoved`] and retried at once at the new leader. If the old
//!   leader is fenced (not live), its connection is closed too, so every request waiting
//!   on it fails over without waiting for its own check. Requests that are merely slow
//!   (a long poll, an `acks=all` produce under load) are never given up while the
//!   leadership stays where it is.
//! - *Liveness probes* (`probe_after`, `probe_timeout`; see `connection.rs`): a connection
//!   with requests outstanding and no byte moving is probed with a tiny request, and
//!   declared dead if that is not answered either, whatever the metadata says.
//! - *Metadata and admin requests* go to live brokers first (the metadata names them),
//!   starting at a different broker each time, brokers that lately did not answer last;
//!   each attempt waits at most `admin_timeout`. A metadata request unanswered after
//!   `metadata_hedge_after` is also sent to the next broker, and the first answer wins.
//!   CreateTopic and DeleteTopic go to the controller leader first and move to the next
//!   broker on an error or a timeout; like a leader check, an attempt unanswered past
//!   `leader_check_after` is given up once the metadata names a new controller.
//!
//! A resent produce could duplicate: the first attempt may have been appended (and, once
//! the new leader has it, committed) without its answer reaching the client. So produce is
//! idempotent by default (`ClientConfig::idempotence`; `idempotence.rs`): batches get this
//! client's producer id and per-partition sequence numbers, and the brokers store each
//! sequence once. Without it (or with `Acks::None`), batches without a producer id are not
//! deduplicated.
//!
//! Ordering: a request is queued on its connection synchronously when its future is first
//! polled, so produce requests to one partition from one client reach the broker, and are
//! appended, in the order their futures were first polled. Idempotent batches keep that
//! order across a failover too (a broker appends a producer's sequences in order only);
//! without idempotence, a failover resends each waiting request as its own check or error
//! finds it, so batches in flight across it may land in another order.

mod acls;
mod admin;
pub(crate) mod cache;
mod check_clock;
pub(crate) mod connection;
pub mod consumer_protocol;
mod coordinator;
mod group;
mod idempotence;
mod leader;
mod metadata;
pub mod range_assignor;
mod sasl;
pub mod tls;

pub use group::{GroupConfig, GroupMember, Joined};
pub use sasl::{SaslCredentials, mechanism as sasl_mechanism};
pub use tls::{ClientTls, ClientTlsError, ClientTlsFiles};

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use shardlog_engine::batch::{self, BatchHeader};

use crate::api::{
    Acks, Api, ErrorResponse, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetSpec, ProduceRequest, ProduceResponse, TopicMetadata, VERSION,
};
use crate::error_code::ErrorCode;
use crate::frame::{FLAG_ERROR, encode_head};
use crate::wire::Frame;
use cache::MetadataCache;
use connection::{Connection, Probe};
use leader::TopicRefresh;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long one attempt of a produce, fetch or list-offsets request may take (the
    /// server gets the same budget). Default 30 s.
    pub request_timeout: Duration,
    /// How long one attempt of a Metadata, CreateTopic or DeleteTopic request, or of
    /// connecting, may take (at most `request_timeout`). Default 5 s.
    pub admin_timeout: Duration,
    /// A Metadata request unanswered this long is also sent to the next broker. Default
    /// 300 ms.
    pub metadata_hedge_after: Duration,
    /// A request to a partition's leader unanswered this long (or a fetch's `max_wait`, if
    /// longer) starts the leader checks, within one `leader_check_every` more. Default 1 s.
    pub leader_check_after: Duration,
    /// How often a request waiting on a leader checks whether the leadership moved (one
    /// metadata refresh per topic per period, shared by its requests). Default 250 ms.
    pub leader_check_every: Duration,
    /// Silence on a connection with requests outstanding before it is probed. Default 2 s.
    pub probe_after: Duration,
    /// How long a probe may go unanswered before its connection is declared dead.
    /// Default 3 s.
    pub probe_timeout: Duration,
    /// Further attempts after a retriable error. Default 8.
    pub retries: u32,
    /// Pause before the first retry; doubled each time, up to `retry_backoff_max`.
    /// Default 100 ms. (A request given up because its leader moved is resent at once.)
    pub retry_backoff: Duration,
    /// Longest pause between retries. Default 1 s.
    pub retry_backoff_max: Duration,
    /// Idempotent produce (default on): batches get this client's producer id (from the
    /// brokers, `InitProducerId`) and per-partition sequence numbers, so a retry after a
    /// failover is never stored twice. Off: batches go as the caller built them.
    pub idempotence: bool,
    /// SASL credentials: every connection authenticates with them before its first
    /// request. Default none (for a server without `--authentication sasl`).
    pub sasl: Option<SaslCredentials>,
    /// TLS to every broker ([`ClientTls::load`]); `None` (the default): plain TCP.
    pub tls: Option<ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            admin_timeout: Duration::from_secs(5),
            metadata_hedge_after: Duration::from_millis(300),
            leader_check_after: Duration::from_secs(1),
            leader_check_every: Duration::from_millis(250),
            probe_after: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(3),
            retries: 8,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            idempotence: true,
            sasl: None,
            tls: None,
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
    /// The TLS handshake failed: a certificate not trusted or not for the name dialled,
    /// a client certificate the broker refused, or a broker that does not speak TLS.
    #[error("TLS with {addr}: {reason}")]
    Tls {
        /// The broker dialled.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// A broker that metadata named as the leader does not know the topic; retried with
    /// fresh metadata.
    #[error("stale metadata: {0}")]
    StaleMetadata(String),
    /// The partition's leader did not answer, and meanwhile the metadata named another
    /// leader (or a higher leader epoch); retried at the new leader.
    #[error("node {node} did not answer for {topic}/{partition}, which it no longer leads")]
    LeaderMoved {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The node the request was sent to.
        node: u32,
    },
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

    /// Whether the error says retrying may help (a moved leader, a lost connection, a
    /// timeout...): those the client retries, and what a caller may count and go on after.
    #[must_use]
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => code.is_retriable(),
            ClientError::Io(_)
            | ClientError::Timeout
            | ClientError::NoBroker(_)
            | ClientError::StaleMetadata(_)
            | ClientError::LeaderMoved { .. } => true,
            ClientError::Protocol(_)
            | ClientError::Tls { .. }
            | ClientError::NoSuchPartition { .. } => false,
        }
    }

    /// Whether the broker said nothing: no connection, a broken one, or no reply in time.
    fn is_silence(&self) -> bool {
        matches!(
            self,
            ClientError::Io(_) | ClientError::Timeout | ClientError::NoBroker(_)
        )
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
    cache: RefCell<MetadataCache>,
    correlation: Cell<u64>,
    /// Topic -> its latest refresh for leader checks.
    refreshes: RefCell<HashMap<String, TopicRefresh>>,
    /// When the leader checks of the requests in flight start.
    checks: Rc<check_clock::CheckClock>,
    /// The idempotent producer session, once initialised (see `idempotence.rs`).
    producer: RefCell<Option<Rc<idempotence::Session>>>,
    /// Held while a producer id is asked for.
    producer_init: futures::lock::Mutex<()>,
    /// Group id -> the address of its coordinator, as last found (see `coordinator.rs`).
    coordinators: RefCell<HashMap<String, String>>,
}

/// A client; see the module docs.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

impl Client {
    /// Connects to the first of `brokers` (`HOST:PORT[,HOST:PORT...]`) that answers and
    /// loads the metadata of every topic.
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
                checks: check_clock::CheckClock::new(config.leader_check_every),
                config,
                bootstrap,
                connections: RefCell::new(HashMap::default()),
                cache: RefCell::new(MetadataCache::default()),
                correlation: Cell::new(1),
                refreshes: RefCell::new(HashMap::default()),
                producer: RefCell::new(None),
                producer_init: futures::lock::Mutex::new(()),
                coordinators: RefCell::new(HashMap::default()),
            }),
        };
        // A cluster that just started may still be electing its controller: retried.
        client.with_retries(|| client.metadata(&[])).await?;
        Ok(client)
    }

    /// The partition count of `topic`, from the cache (refreshed when unknown).
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let meta = self.topic(topic).await?;
        u32::try_from(meta.partitions.len())
            .map_err(|_| ClientError::Protocol("too many partitions".into()))
    }

    /// Cached metadata of `topic`, loaded when missing or stale.
    pub async fn topic(&self, topic: &str) -> Result<Rc<TopicMetadata>, ClientError> {
        if let Some(meta) = self.inner.cache.borrow().fresh_topic(topic) {
            return Ok(meta);
        }
        let response = self.metadata(&[topic.to_owned()]).await?;
        if let Some(meta) = self.inner.cache.borrow().topic(topic) {
            return Ok(meta);
        }
        match response.topics.into_iter().find(|t| t.name == topic) {
            Some(t) if t.error != ErrorCode::None.as_u16() => {
                Err(ClientError::server(t.error, &format!("topic {topic:?}")))
            }
            _ => Err(ClientError::Server {
                code: ErrorCode::UnknownTopic,
                message: format!("topic {topic:?}"),
            }),
        }
    }

    /// Appends one batch (Kafka v2 bytes) to a partition. Returns the offset the broker
    /// gave its first record (`None` with `Acks::None`, which awaits no reply).
    ///
    /// With `ClientConfig::idempotence` (the default) and acks, a batch without a
    /// producer id is stamped with this client's producer id and the partition's next
    /// sequence before it is first sent, and every retry resends those same bytes: the
    /// brokers store it once, and answer a retry of a batch they hold with its original
    /// offsets (see `idempotence.rs`). A batch that already carries a producer id is sent
    /// as it is.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batch: Bytes,
    ) -> Result<Option<u64>, ClientError> {
        if acks != Acks::None && self.inner.config.idempotence && !idempotence::stamped(&batch) {
            return self.produce_idempotent(topic, partition, acks, batch).await;
        }
        let request = self.produce_request(topic, partition, acks);
        self.with_retries(|| self.produce_once(&request, batch.clone().into()))
            .await
    }

    fn produce_request(&self, topic: &str, partition: u32, acks: Acks) -> ProduceRequest {
        ProduceRequest {
            topic: topic.to_owned(),
            partition,
            acks,
            timeout_ms: millis(self.inner.config.request_timeout),
        }
    }

    /// One attempt of a produce request.
    async fn produce_once(
        &self,
        request: &ProduceRequest,
        batch: Payload,
    ) -> Result<Option<u64>, ClientError> {
        let (topic, partition) = (request.topic.as_str(), request.partition);
        if request.acks == Acks::None {
            let route = self.leader(topic, partition).await?;
            self.send_only(&route.addr, Api::Produce, request, batch)
                .await?;
            return Ok(None);
        }
        let (response, _) = self
            .call_leader::<_, ProduceResponse>(
                topic,
                partition,
                Duration::ZERO,
                Api::Produce,
                request,
                batch,
            )
            .await?;
        let hint = response.leader_hint;
        self.check_partition(topic, partition, response.error, hint, &response.message)?;
        Ok(Some(response.base_offset))
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
            let (response, data) = self
                .call_leader::<_, FetchResponse>(
                    topic,
                    partition,
                    options.max_wait,
                    Api::Fetch,
                    &request,
                    Payload::default(),
                )
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
            let (response, _) = self
                .call_leader::<_, ListOffsetsResponse>(
                    topic,
                    partition,
                    Duration::ZERO,
                    Api::ListOffsets,
                    &request,
                    Payload::default(),
                )
                .await?;
            let hint = response.leader_hint;
            self.check_partition(topic, partition, response.error, hint, &response.message)?;
            Ok(response.offset)
        })
        .await
    }

    /// An error reply that says the cached metadata is stale. `NotLeader` with a hint of a
    /// live broker moves the partition's cached leader there (the retry goes straight to
    /// it); a broker denying what the cache says (`NotLeader` without a usable hint, no
    /// such topic or partition) drops the topic from the cache; any other retriable error
    /// marks it for a refresh before the retry.
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
            let mut cache = self.inner.cache.borrow_mut();
            match e {
                ClientError::Server {
                    code: ErrorCode::NotLeader,
                    ..
                } => {
                    let hinted =
                        leader_hint.is_some_and(|node| cache.follow_hint(topic, partition, node));
                    if hinted {
                        tracing::debug!(topic, partition, ?leader_hint, "following a hint");
                    } else {
                        cache.forget(topic);
                    }
                }
                ClientError::StaleMetadata(_)
                | ClientError::Server {
                    code: ErrorCode::UnknownPartition,
                    ..
                } => cache.forget(topic),
                _ => cache.mark_stale(topic),
            }
        }
        result
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
                    // A leader check that gave a request up has just learned the new
                    // leader: resend at once.
                    if !matches!(e, ClientError::LeaderMoved { .. }) {
                        glommio::timer::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.inner.config.retry_backoff_max);
                    }
                }
                result => return result,
            }
        }
    }

    fn admin_attempt_timeout(&self) -> Duration {
        self.inner
            .config
            .admin_timeout
            .min(self.inner.config.request_timeout)
    }

    async fn connection(&self, addr: &str) -> Result<Connection, ClientError> {
        if let Some(conn) = self.inner.connections.borrow().get(addr)
            && !conn.is_dead()
        {
            return Ok(conn.clone());
        }
        let config = &self.inner.config;
        let options = connection::Options {
            request_timeout: config.request_timeout,
            connect_timeout: self.admin_attempt_timeout(),
            probe: Some(Probe {
                after: config.probe_after,
                timeout: config.probe_timeout,
            }),
        };
        let conn = Connection::open_with(addr, options, config.tls.as_ref()).await?;
        if let Some(credentials) = &config.sasl {
            let correlation = || self.next_correlation();
            let timeout = self.admin_attempt_timeout();
            if let Err(e) = sasl::authenticate(&conn, correlation, credentials, timeout).await {
                conn.close("SASL authentication failed");
                return Err(e);
            }
        }
        let mut connections = self.inner.connections.borrow_mut();
        if let Some(other) = connections.get(addr)
            && !other.is_dead()
        {
            // Another request opened one meanwhile: use it, close ours (unused).
            conn.close("a duplicate");
            return Ok(other.clone());
        }
        connections.insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    fn next_correlation(&self) -> u64 {
        let c = self.inner.correlation.get();
        self.inner.correlation.set(c.wrapping_add(1));
        c
    }

    /// Sends a request that gets no reply (`acks=none`).
    async fn send_only<Req>(
        &self,
        addr: &str,
        api: Api,
        request: &Req,
        data: Payload,
    ) -> Result<(), ClientError>
    where
        Req: crate::frame::Meta,
    {
        let conn = self.connection(addr).await?;
        let correlation = self.next_correlation();
        let head = head(api, correlation, request, &data)?;
        conn.send(correlation, head, data.body, false).map(drop)
    }

    /// One attempt: sends the request to `addr` and decodes the reply's meta and data,
    /// waiting at most `timeout`. Notes in the cache whether the broker answered.
    async fn call<Req, Resp>(
        &self,
        addr: &str,
        api: Api,
        request: &Req,
        data: Payload,
        timeout: Duration,
    ) -> Result<(Resp, Bytes), ClientError>
    where
        Req: crate::frame::Meta,
        Resp: rkyv::Archive,
        Resp::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
            + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        let result = self.call_once(addr, api, request, data, timeout).await;
        let mut cache = self.inner.cache.borrow_mut();
        match &result {
            Err(e) if e.is_silence() => cache.suspect(addr, Instant::now()),
            _ => cache.answered(addr),
        }
        result
    }

    async fn call_once<Req, Resp>(
        &self,
        addr: &str,
        api: Api,
        request: &Req,
        data: Payload,
        timeout: Duration,
    ) -> Result<(Resp, Bytes), ClientError>
    where
        Req: crate::frame::Meta,
        Resp: rkyv::Archive,
        Resp::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
            + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        let conn = self.connection(addr).await?;
        let correlation = self.next_correlation();
        let head = head(api, correlation, request, &data)?;
        let Some(reply) = conn.send_within(correlation, head, data.body, true, timeout)? else {
            return Err(ClientError::Protocol("no reply channel".into()));
        };
        // A call given up (dropped) stops waiting for its reply.
        let _forget = ForgetOnDrop {
            connection: &conn,
            correlation,
        };
        let frame = reply
            .await
            .map_err(|_| ClientError::Protocol("reply channel dropped".into()))??;
        decode_reply(api, frame)
    }
}

/// Removes a request's waiter from its connection when the request is given up.
struct ForgetOnDrop<'a> {
    connection: &'a Connection,
    correlation: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.connection.forget(self.correlation);
    }
}

/// A silent broker's failure as `NoBroker` naming it; other errors unchanged.
fn name_silence(error: ClientError, addr: &str, timeout: Duration) -> ClientError {
    if error.is_silence() {
        ClientError::NoBroker(silence_reason(addr, &error, timeout))
    } else {
        error
    }
}

/// "ADDR: what happened" for a broker that did not answer.
fn silence_reason(addr: &str, error: &ClientError, timeout: Duration) -> String {
    match error {
        ClientError::Timeout => format!("{addr}: no reply within {timeout:?}"),
        ClientError::NoBroker(why) if why.contains(addr) => why.clone(),
        ClientError::Io(e) if e.to_string().contains(addr) => e.to_string(),
        other => format!("{addr}: {other}"),
    }
}

/// A frame's head (header and meta) for a request whose data region is `data`, with the
/// data's prefix (a stamped batch header) appended: it goes out with the head, the body
/// after it.
fn head<Req>(
    api: Api,
    correlation: u64,
    request: &Req,
    data: &Payload,
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
        data.len(),
    )
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    head.extend_from_slice(&data.prefix);
    Ok(head)
}

/// A request's data region: `prefix` (a batch header the client stamped, or nothing)
/// followed by `body` (the caller's bytes, not copied).
#[derive(Clone, Debug, Default)]
pub(crate) struct Payload {
    prefix: Bytes,
    body: Bytes,
}

impl Payload {
    /// `prefix`, then `body`.
    pub(crate) fn split(prefix: Bytes, body: Bytes) -> Payload {
        Payload { prefix, body }
    }

    fn len(&self) -> usize {
        self.prefix.len() + self.body.len()
    }
}

impl From<Bytes> for Payload {
    fn from(body: Bytes) -> Payload {
        Payload {
            prefix: Bytes::new(),
            body,
        }
    }
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
