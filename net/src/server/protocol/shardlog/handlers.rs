//! The shardlog protocol's requests: each frame's meta is validated (rkyv, bytecheck)
//! and decoded into an operation; the operation's result becomes the response frame.
//! `begin` runs in the order a connection's frames arrive (the operations' first phase);
//! the [`Completion`] it returns is awaited concurrently with later requests. `begin` also
//! says how many reply bytes to count against the connection while the request is in
//! flight (its `Begun::reply_bytes`): for a fetch, its capped `max_bytes` (at least
//! `FETCH_RESERVE_MIN`), for the others a small reply; the connection settles the count to
//! the reply's real size once it is made. On a node that requires SASL, a connection that
//! has not authenticated gets `AuthenticationFailed` for anything but the SASL apis
//! (`sasl`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use futures::FutureExt;
use futures::future::{LocalBoxFuture, ready};

use shardlog_replicator::controller::acls::{Operation, Resource};

use crate::api::{
    Acks, Api, ArchivedAcks, ArchivedFetchRequest, ArchivedListOffsetsRequest, ArchivedOffsetSpec,
    ArchivedProduceRequest, BrokerMetadata, CreateTopicRequest, DeleteTopicRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsResponse, ListReassignmentsRequest,
    ListReassignmentsResponse, MetadataRequest, MetadataResponse, PartitionMetadata,
    ProduceResponse, ReassignPartitionRequest, TopicMetadata, TopicResponse, VERSION,
};
use crate::error_code::ErrorCode;
use crate::frame::FrameHeader;
use crate::server::metrics::{self, Protocol};
use crate::server::ops::OpError;
use crate::server::ops::produce::{self, ProduceOp};
use crate::server::ops::producer_ids;
use crate::server::ops::reads::{self, FetchOp, ListOffsetsOp, OffsetSpec};
use crate::server::ops::reassign;
use crate::server::ops::topics::{self, ClusterMetadata, NewTopic, TopicChange};
use crate::server::protocol::moving::Owners;
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;
use crate::wire::Frame;

use super::authorize::{self, Refused};
use super::reply::{Reply, error_reply, reply};

/// The second phase of a request: its reply, or `None` when none is owed.
pub(crate) type Completion = LocalBoxFuture<'static, Option<Reply>>;

fn done(reply: Reply) -> Completion {
    ready(Some(reply)).boxed_local()
}

/// Reply bytes counted for a request other than a fetch until its reply is made.
const REPLY_BYTES_SMALL: usize = 1 << 10;
/// The least a fetch counts: a batch larger than a fetch's `max_bytes` is returned whole
/// (at least one batch), so a tiny `max_bytes` must not let a connection begin thousands
/// of fetches each bringing a big batch. Batches above it (up to `BATCH_SIZE_MAX`) are
/// counted once read.
pub(crate) const FETCH_RESERVE_MIN: usize = 1 << 20;

/// A begun request: its completion and the reply bytes to count for it meanwhile.
pub(crate) struct Begun {
    pub(crate) completion: Completion,
    pub(crate) reply_bytes: usize,
    /// The shard that owns the partition the request names, if it names one (where the
    /// connection would rather be: `protocol::moving`).
    pub(crate) owners: Owners,
}

impl From<Completion> for Begun {
    /// A request that names no partition and owes a small reply.
    fn from(completion: Completion) -> Begun {
        Begun {
            completion,
            reply_bytes: REPLY_BYTES_SMALL,
            owners: Owners::None,
        }
    }
}

/// The shard of this node that owns `partition` of `topic`.
fn owners(shard: &Shard, topic: &str, partition: u32) -> Owners {
    Owners::of([(topic, partition)], shard.node.shards)
}

/// A SASL api past `begin`: only at a version not served, which `begin_other` refuses
/// before it gets here; answered all the same rather than asserted (the frame is the
/// client's).
fn unreachable_sasl(header: &FrameHeader) -> Completion {
    let message = format!("SASL apis are served at version {VERSION} only");
    done(error_reply(header, ErrorCode::UnsupportedVersion, &message))
}

/// The first phase; see the module docs. `peer` is the client's address, `session` what
/// the connection has proven.
pub(crate) async fn begin(
    shard: &Rc<Shard>,
    frame: Frame,
    peer: &str,
    session: &Rc<Session>,
) -> Begun {
    metrics::request(Protocol::Shardlog, counted_api(frame.header.api), 0, 0);
    let api = frame.header.api;
    if frame.header.version == VERSION
        && (api == Api::SaslHandshake as u16 || api == Api::SaslAuthenticate as u16)
    {
        return super::sasl::exchange(shard, &frame, session, peer).into();
    }
    if !crate::server::security::sasl::may_request(shard, session) {
        return super::sasl::unauthenticated(&frame).into();
    }
    if frame.header.api == Api::Fetch as u16
        && frame.header.version == VERSION
        && !shard.is_stopping()
    {
        return fetch(shard, frame, session).await;
    }
    begin_other(shard, frame, peer, session).await
}

async fn begin_other(shard: &Rc<Shard>, frame: Frame, peer: &str, session: &Session) -> Begun {
    let header = frame.header;
    let api = match served_api(shard, &header) {
        Ok(api) => api,
        Err(refused) => return refused.into(),
    };
    let access = Access::new(shard, session);
    match authorize::check(&access, api, &frame) {
        Ok(()) => {}
        Err(Refused::Invalid(e)) => return invalid(&header, &e).into(),
        Err(Refused::Unauthorized(e)) => {
            return done(error_reply(&header, e.code(), &e.to_string())).into();
        }
    }
    let completion = match api {
        Api::Metadata => done(metadata(shard, &frame, &access)),
        Api::CreateAcl | Api::DeleteAcl | Api::ListAcls => {
            super::acls::acl_request(shard, frame).await
        }
        Api::CreateTopic | Api::DeleteTopic | Api::ReassignPartition => {
            topic_change(shard, frame).await
        }
        Api::ListReassignments => done(list_reassignments(shard, &frame)),
        Api::DrainNode | Api::RebalanceReplicas => {
            super::placement::placement_change(shard, frame).await
        }
        // Taken in `begin` at the served version; any other version was refused above.
        Api::SaslHandshake | Api::SaslAuthenticate => unreachable_sasl(&header),
        Api::UpsertUser | Api::DeleteUser => super::sasl::user_change(shard, frame).await,
        Api::ListUsers => super::sasl::list_users(shard, &frame),
        Api::Produce => return produce(shard, frame, &access).await,
        Api::Fetch => return fetch(shard, frame, session).await,
        Api::ListOffsets => return list_offsets(shard, frame).await,
        Api::InitProducerId => init_producer_id(shard, frame).await,
        Api::FindCoordinator
        | Api::JoinGroup
        | Api::SyncGroup
        | Api::Heartbeat
        | Api::LeaveGroup
        | Api::OffsetCommit
        | Api::OffsetFetch
        | Api::DescribeGroups
        | Api::ListGroups => super::groups::begin(shard, api, frame, peer).await,
        Api::Replicate | Api::Controller | Api::AllocateProducerIds | Api::BindShard => {
            done(node_to_node(&header, api))
        }
    };
    completion.into()
}

/// The api `header` asks for, if this connection serves it now; else the refusal.
fn served_api(shard: &Shard, header: &FrameHeader) -> Result<Api, Completion> {
    if shard.is_stopping() {
        return Err(done(error_reply(
            header,
            ErrorCode::ShuttingDown,
            "the server is stopping",
        )));
    }
    let Some(api) = Api::from_u16(header.api) else {
        let message = format!("unknown api {}", header.api);
        return Err(done(error_reply(header, ErrorCode::UnknownApi, &message)));
    };
    // Whatever its version (`Replicate` has its own): the client port never serves it.
    if matches!(
        api,
        Api::Replicate | Api::Controller | Api::AllocateProducerIds | Api::BindShard
    ) {
        return Err(done(node_to_node(header, api)));
    }
    if header.version != VERSION {
        let message = format!("{api:?} version {} (supported: {VERSION})", header.version);
        return Err(done(error_reply(
            header,
            ErrorCode::UnsupportedVersion,
            &message,
        )));
    }
    Ok(api)
}

/// The refusal of a node-to-node api on the client port.
fn node_to_node(header: &FrameHeader, api: Api) -> Reply {
    let message = format!(
        "{api:?} is a node-to-node api: nodes send it to each other's peer listener, \
         after a handshake that proves which node is speaking"
    );
    error_reply(header, ErrorCode::InvalidRequest, &message)
}

/// The api a request counts under in the metrics.
fn counted_api(api: u16) -> metrics::Api {
    match Api::from_u16(api) {
        Some(Api::Produce) => metrics::Api::Produce,
        Some(Api::Fetch) => metrics::Api::Fetch,
        Some(Api::ListOffsets) => metrics::Api::ListOffsets,
        Some(Api::Metadata) => metrics::Api::Metadata,
        Some(Api::CreateTopic | Api::DeleteTopic) => metrics::Api::TopicAdmin,
        Some(Api::InitProducerId) => metrics::Api::InitProducerId,
        Some(
            Api::FindCoordinator
            | Api::JoinGroup
            | Api::SyncGroup
            | Api::Heartbeat
            | Api::LeaveGroup
            | Api::OffsetCommit
            | Api::OffsetFetch
            | Api::DescribeGroups
            | Api::ListGroups,
        ) => metrics::Api::Groups,
        _ => metrics::Api::Other,
    }
}

fn invalid(header: &FrameHeader, error: &crate::frame::FrameError) -> Completion {
    done(error_reply(
        header,
        ErrorCode::InvalidRequest,
        &error.to_string(),
    ))
}

/// Metadata; with authorization on, a request for every topic lists only those the
/// connection may describe, and a named one it may not describe is `AuthorizationFailed`.
fn metadata(shard: &Shard, frame: &Frame, access: &Access<'_>) -> Reply {
    let request: MetadataRequest = match frame.decode() {
        Ok(r) => r,
        Err(e) => return error_reply(&frame.header, ErrorCode::InvalidRequest, &e.to_string()),
    };
    match topics::metadata(shard, &request.topics) {
        Ok(mut meta) => {
            if access.is_enforced() {
                let listing = request.topics.is_empty();
                meta.topics.retain(|t| {
                    !listing || access.allows(Operation::Describe, Resource::Topic(&t.name))
                });
                for t in &mut meta.topics {
                    if let Err(e) = access.check(Operation::Describe, Resource::Topic(&t.name)) {
                        t.partitions = Err(e);
                    }
                }
            }
            reply(&frame.header, &metadata_response(meta), Vec::new())
        }
        Err(e) => error_reply(&frame.header, e.code(), &e.to_string()),
    }
}

fn metadata_response(meta: ClusterMetadata) -> MetadataResponse {
    MetadataResponse {
        node_id: meta.node_id,
        controller: meta.controller,
        brokers: meta
            .brokers
            .into_iter()
            .map(|b| BrokerMetadata {
                node_id: b.id,
                host: b.host,
                port: b.port,
                live: b.live,
                draining: b.draining,
            })
            .collect(),
        topics: meta
            .topics
            .into_iter()
            .map(|t| match t.partitions {
                Ok(partitions) => TopicMetadata {
                    name: t.name,
                    error: ErrorCode::None.as_u16(),
                    partitions: partitions
                        .into_iter()
                        .map(|p| PartitionMetadata {
                            partition: p.partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas,
                            isr: p.isr,
                        })
                        .collect(),
                },
                Err(e) => TopicMetadata {
                    name: t.name,
                    error: e.code().as_u16(),
                    partitions: Vec::new(),
                },
            })
            .collect(),
    }
}

/// The moves in progress (ListReassignments), from this node's view.
fn list_reassignments(shard: &Shard, frame: &Frame) -> Reply {
    let request: ListReassignmentsRequest = match frame.decode() {
        Ok(r) => r,
        Err(e) => return error_reply(&frame.header, ErrorCode::InvalidRequest, &e.to_string()),
    };
    let response = match reassign::in_progress(shard, &request.topics) {
        Ok(moves) => ListReassignmentsResponse {
            error: ErrorCode::None.as_u16(),
            message: String::new(),
            moves,
        },
        Err(e) => ListReassignmentsResponse {
            error: e.code().as_u16(),
            message: e.to_string(),
            moves: Vec::new(),
        },
    };
    reply(&frame.header, &response, Vec::new())
}

/// CreateTopic, DeleteTopic or ReassignPartition, from a client or passed on by a peer.
pub(crate) async fn topic_change(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    let change = if header.api == Api::ReassignPartition as u16 {
        match frame.decode::<ReassignPartitionRequest>() {
            Ok(r) => TopicChange::Reassign(r.into()),
            Err(e) => return invalid(&header, &e),
        }
    } else if header.api == Api::CreateTopic as u16 {
        match frame.decode::<CreateTopicRequest>() {
            Ok(r) => TopicChange::Create(NewTopic {
                name: r.name,
                partitions: r.partitions,
                replication_factor: (r.replication_factor != 0).then_some(r.replication_factor),
                min_insync: r.config.min_insync,
                settings: topics::settings_of(&r.config),
            }),
            Err(e) => return invalid(&header, &e),
        }
    } else {
        match frame.decode::<DeleteTopicRequest>() {
            Ok(r) => TopicChange::Delete(r.name),
            Err(e) => return invalid(&header, &e),
        }
    };
    let pending = topics::change(shard, change).await;
    async move {
        let response = match pending.await {
            Ok(()) => TopicResponse {
                error: ErrorCode::None.as_u16(),
                message: String::new(),
            },
            Err(e) => TopicResponse {
                error: e.code().as_u16(),
                message: e.to_string(),
            },
        };
        Some(reply(&header, &response, Vec::new()))
    }
    .boxed_local()
}

/// A new producer id, from this node's block (see `ops::producer_ids`).
async fn init_producer_id(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    if let Err(e) = frame.decode::<InitProducerIdRequest>() {
        return invalid(&header, &e);
    }
    let pending = producer_ids::init(shard).await;
    async move {
        let response = match pending.await {
            Ok((producer_id, producer_epoch)) => InitProducerIdResponse {
                error: ErrorCode::None.as_u16(),
                producer_id,
                producer_epoch,
                message: String::new(),
            },
            Err(e) => InitProducerIdResponse {
                error: e.code().as_u16(),
                producer_id: -1,
                producer_epoch: -1,
                message: e.to_string(),
            },
        };
        Some(reply(&header, &response, Vec::new()))
    }
    .boxed_local()
}

async fn produce(shard: &Rc<Shard>, frame: Frame, access: &Access<'_>) -> Begun {
    let Frame { header, meta, data } = frame;
    let request = rkyv::access::<ArchivedProduceRequest, rkyv::rancor::Error>(&meta)
        .map_err(|e| crate::frame::FrameError::InvalidMessage(e.to_string()));
    let (topic, partition, acks) = match request {
        Ok(r) => (
            r.topic.as_str(),
            r.partition.to_native(),
            match r.acks {
                ArchivedAcks::None => Acks::None,
                ArchivedAcks::Leader => Acks::Leader,
                ArchivedAcks::All => Acks::All,
            },
        ),
        Err(e) => return invalid(&header, &e).into(),
    };
    if let Err(e) = access.check(Operation::Write, Resource::Topic(topic)) {
        if acks == Acks::None {
            tracing::debug!(correlation = header.correlation, error = %e, "acks=none produce refused");
            return ready(None).boxed_local().into();
        }
        let response = ProduceResponse {
            error: e.code().as_u16(),
            base_offset: 0,
            leader_hint: None,
            message: e.to_string(),
        };
        return done(reply(&header, &response, Vec::new())).into();
    }
    let owners = owners(shard, topic, partition);
    let op = ProduceOp {
        topic: topic.into(),
        partition,
        acks: match acks {
            Acks::None => produce::Acks::None,
            Acks::Leader => produce::Acks::Leader,
            Acks::All => produce::Acks::All,
        },
        // The reader allocated the data region alone: the batch is that buffer.
        batch: data,
    };
    let (records, bytes) = (metrics::batch_records(&op.batch), op.batch.len() as u64);
    let started = Instant::now();
    let pending = produce::produce(shard, op).await;
    let completion = async move {
        let result = pending.await;
        metrics::latency(metrics::Latency::Produce, started.elapsed());
        if result.is_ok() {
            metrics::records(Protocol::Shardlog, metrics::Api::Produce, records, bytes);
        }
        if acks == Acks::None {
            if let Err(e) = result {
                tracing::debug!(correlation = header.correlation, error = %e, "acks=none produce failed");
            }
            return None;
        }
        Some(reply(&header, &produce_response(result), Vec::new()))
    }
    .boxed_local();
    Begun {
        completion,
        reply_bytes: REPLY_BYTES_SMALL,
        owners,
    }
}

/// A produce's answer as its response.
fn produce_response(result: Result<produce::Produced, OpError>) -> ProduceResponse {
    match result {
        Ok(produced) => ProduceResponse {
            error: ErrorCode::None.as_u16(),
            base_offset: produced.base_offset,
            leader_hint: None,
            message: String::new(),
        },
        Err(e) => ProduceResponse {
            error: e.code().as_u16(),
            base_offset: 0,
            leader_hint: e.leader_hint(),
            message: e.to_string(),
        },
    }
}

async fn fetch(shard: &Rc<Shard>, frame: Frame, session: &Session) -> Begun {
    let header = frame.header;
    let op = match frame.access::<ArchivedFetchRequest>() {
        Ok(r) => FetchOp {
            topic: r.topic.as_str().to_owned(),
            partition: r.partition.to_native(),
            offset: r.offset.to_native(),
            max_bytes: r.max_bytes.to_native() as usize,
            max_wait: Duration::from_millis(u64::from(r.max_wait_ms.to_native())),
            min_bytes: r.min_bytes.to_native() as usize,
        }
        .capped(),
        Err(e) => {
            return invalid(&header, &e).into();
        }
    };
    let access = Access::new(shard, session);
    if let Err(e) = access.check(Operation::Read, Resource::Topic(&op.topic)) {
        return done(reply(&header, &fetch_error(&e), Vec::new())).into();
    }
    let reply_bytes = op.max_bytes.max(FETCH_RESERVE_MIN) + REPLY_BYTES_SMALL;
    let owners = owners(shard, &op.topic, op.partition);
    let (from, started) = (op.offset, Instant::now());
    let pending = reads::fetch(shard, op).await;
    let completion = async move {
        let fetched = pending.await;
        metrics::latency(metrics::Latency::Fetch, started.elapsed());
        if let Ok(fetched) = &fetched {
            let bytes: usize = fetched.chunks.iter().map(Bytes::len).sum();
            let records = fetched.next_offset.saturating_sub(from);
            metrics::records(
                Protocol::Shardlog,
                metrics::Api::Fetch,
                records,
                bytes as u64,
            );
        }
        let (meta, data) = match fetched {
            Ok(fetched) => (
                FetchResponse {
                    error: ErrorCode::None.as_u16(),
                    high_watermark: fetched.high_watermark,
                    log_start: fetched.log_start,
                    next_offset: fetched.next_offset,
                    leader_hint: None,
                    message: String::new(),
                },
                fetched.chunks,
            ),
            Err(e) => (fetch_error(&e), Vec::new()),
        };
        Some(reply(&header, &meta, data))
    }
    .boxed_local();
    Begun {
        completion,
        reply_bytes,
        owners,
    }
}

fn fetch_error(e: &OpError) -> FetchResponse {
    FetchResponse {
        error: e.code().as_u16(),
        high_watermark: 0,
        log_start: 0,
        next_offset: 0,
        leader_hint: e.leader_hint(),
        message: e.to_string(),
    }
}

async fn list_offsets(shard: &Rc<Shard>, frame: Frame) -> Begun {
    let header = frame.header;
    let op = match frame.access::<ArchivedListOffsetsRequest>() {
        Ok(r) => ListOffsetsOp {
            topic: r.topic.as_str().to_owned(),
            partition: r.partition.to_native(),
            spec: match r.spec {
                ArchivedOffsetSpec::Earliest => OffsetSpec::Earliest,
                ArchivedOffsetSpec::Latest => OffsetSpec::Latest,
                ArchivedOffsetSpec::Timestamp(t) => OffsetSpec::Timestamp(t.to_native()),
            },
        },
        Err(e) => return invalid(&header, &e).into(),
    };
    let owners = owners(shard, &op.topic, op.partition);
    let pending = reads::list_offsets(shard, op).await;
    let completion = async move {
        let meta = match pending.await {
            Ok(offset) => ListOffsetsResponse {
                error: ErrorCode::None.as_u16(),
                offset: offset.map(|o| o.0),
                leader_hint: None,
                message: String::new(),
            },
            Err(e) => ListOffsetsResponse {
                error: e.code().as_u16(),
                offset: None,
                leader_hint: e.leader_hint(),
                message: e.to_string(),
            },
        };
        Some(reply(&header, &meta, Vec::new()))
    }
    .boxed_local();
    Begun {
        completion,
        reply_bytes: REPLY_BYTES_SMALL,
        owners,
    }
}
