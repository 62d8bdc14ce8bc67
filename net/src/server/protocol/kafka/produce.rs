//! Produce (v3+): each partition's records go to `ops::produce` as they arrived, as
//! regions of the request's own buffer (no copy: the decoded request is dropped first, so
//! the frame's buffer has one owner and splits into the regions; the leader patches each
//! batch's base offset and leader epoch in place). A partition's records may hold several
//! batches, each produced in order; the partition's answer is its first batch's base
//! offset, or the first error.
//!
//! acks: 0, no response at all (the produce still runs); 1, once the leader wrote it
//! (`Acks::Leader`, the flush policy's promise); -1, once the in-sync replicas hold it.
//! Other values get INVALID_REQUIRED_ACKS. Transactional produces are refused (no
//! transactions). Unknown topics are created first when auto-creation is on.
//!
//! With authorization on, each topic needs write (else TOPIC_AUTHORIZATION_FAILED on each
//! of its partitions, and it is not auto-created), checked once per topic.

use std::rc::Rc;

use bytes::{Buf, BytesMut};
use futures::FutureExt;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardlog_engine::batch::BatchHeader;

use shardlog_replicator::controller::acls::{Operation, Resource};

use super::errors;
use super::metadata::current_leader;
use super::request::{self, Answer, Begun, Head, Request, done, respond};
use super::topics::auto_create;
use crate::server::metrics::{self, Protocol};
use crate::server::ops::produce::{self, Acks, ProduceOp, Produced};
use crate::server::ops::{OpError, Pending};
use crate::server::protocol::moving::Owners;
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;

/// The first version whose partition answers carry the new leader (KIP-951).
const CURRENT_LEADER_VERSION: i16 = 10;
/// The first version whose partition answers carry an error message.
const ERROR_MESSAGE_VERSION: i16 = 8;

/// One partition of the request: its index, its records' place in the body, and once
/// handed over, its outcome.
struct PartitionRecords {
    index: i32,
    /// `(start, len)` in the body; `None` for null records.
    range: Option<(usize, usize)>,
    outcome: Option<Outcome>,
}

/// The request as produced: acks, transactional or not, topics (their names copied out of
/// the body) with their partitions. Handing over fills each partition's outcome in place,
/// so a request costs no bookkeeping allocations beyond these vectors.
struct Shape {
    acks: i16,
    transactional: bool,
    topics: Vec<(String, Vec<PartitionRecords>)>,
}

/// First phase: every batch handed to its partition in request order.
pub(crate) async fn begin(shard: &Rc<Shard>, request: Request, session: &Session) -> Begun {
    let head = request.head;
    let mut shape = match shape_of(&request) {
        Ok(shape) => shape,
        Err(answer) => return Begun::small(done(answer)),
    };
    // The only handle on the frame's buffer now: the regions split off it without a copy.
    let body = match request.body.try_into_mut() {
        Ok(body) => body,
        Err(shared) => {
            // A local invariant broken (a handle on the frame kept): copy, and say so.
            tracing::warn!("kafka produce buffer still shared; copying it");
            BytesMut::from(&shared[..])
        }
    };
    let access = Access::new(shard, session);
    let names = (shape.topics.iter())
        .map(|(name, _)| name.as_str())
        .filter(|name| access.allows(Operation::Write, Resource::Topic(name)));
    if let Some(creating) = auto_create(shard, names, &access).await {
        creating.await;
    }
    let acks = match shape.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    hand_over(shard, &mut shape, acks, body, &access).await;
    let owners = Owners::of(
        (shape.topics.iter())
            .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic, p.index)))
            .filter_map(|(topic, index)| Some((topic.as_str(), u32::try_from(index).ok()?))),
        shard.node.shards,
    );
    let shard = shard.clone();
    let completion = async move {
        let mut responses = Vec::with_capacity(shape.topics.len());
        for (topic, partitions) in shape.topics {
            let mut answers = Vec::with_capacity(partitions.len());
            for p in partitions {
                let result = match p.outcome {
                    Some(outcome) => outcome.settle().await,
                    None => Err(OpError::CorruptBatch("records not handed over".into())),
                };
                let mut response = partition_response(&shard, head, &topic, p.index, result);
                if acks.is_none() && !shape.transactional {
                    response.error_code = errors::INVALID_REQUIRED_ACKS;
                }
                answers.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partition_responses(answers),
            );
        }
        if shape.acks == 0 {
            return Answer::Nothing;
        }
        let mut response = ProduceResponse::default().with_responses(responses);
        if head.version >= CURRENT_LEADER_VERSION {
            response.node_endpoints = endpoints(&shard, &response);
        }
        respond(head, &response)
    }
    .boxed_local();
    Begun {
        owners,
        ..Begun::small(completion)
    }
}

/// Hands each partition's records, split off `body` without a copy, to the partition in
/// request order (or refuses them), filling in each partition's outcome.
async fn hand_over(
    shard: &Rc<Shard>,
    shape: &mut Shape,
    acks: Option<Acks>,
    mut body: BytesMut,
    access: &Access<'_>,
) {
    let refusal = if shape.transactional {
        Some(OpError::InvalidRequest(
            "transactions are not supported".into(),
        ))
    } else if acks.is_none() {
        Some(OpError::InvalidRequest(format!("acks {}", shape.acks)))
    } else {
        None
    };
    let mut consumed = 0;
    for (topic, partitions) in &mut shape.topics {
        let denied = access.check(Operation::Write, Resource::Topic(topic)).err();
        for p in partitions {
            let records = p.range.map(|(start, len)| {
                body.advance(start - consumed);
                consumed = start + len;
                body.split_to(len)
            });
            let outcome = match (refusal.as_ref().or(denied.as_ref()), acks, records) {
                (Some(refusal), _, _) => refused(refusal.clone(), shape.acks),
                (None, Some(acks), Some(records)) => {
                    partition(shard, topic, p.index, acks, records).await
                }
                _ => Outcome::known(Err(OpError::CorruptBatch("null records".into()))),
            };
            p.outcome = Some(outcome);
        }
    }
}

/// The request's shape, read from a decoded copy that is dropped before returning (so
/// the body has no other handle).
fn shape_of(request: &Request) -> Result<Shape, Answer> {
    let body: ProduceRequest = request::decode(request)?;
    let base = request.body.as_ptr() as usize;
    let end = base + request.body.len();
    let mut last = 0;
    let mut topics = Vec::with_capacity(body.topic_data.len());
    for topic in body.topic_data {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let range = match p.records {
                Some(records) => {
                    let start = records.as_ptr() as usize;
                    // The codec slices the body (`Bytes`), in order: anything else is a
                    // bug, refused rather than trusted.
                    if start < base + last || start + records.len() > end {
                        return Err(Answer::Close("produce records outside the body".into()));
                    }
                    last = start - base + records.len();
                    Some((start - base, records.len()))
                }
                None => None,
            };
            partitions.push(PartitionRecords {
                index: p.index,
                range,
                outcome: None,
            });
        }
        // A name of its own: a slice of the body would keep the body shared.
        topics.push((topic.name.0.as_str().to_owned(), partitions));
    }
    Ok(Shape {
        acks: body.acks,
        transactional: body.transactional_id.is_some(),
        topics,
    })
}

/// A partition's answer: known now, or pending on its batches' produces (in order). Most
/// partitions carry one batch: it needs no vector.
struct Outcome {
    first: Pending<Produced>,
    more: Vec<Pending<Produced>>,
}

impl Outcome {
    fn known(result: Result<Produced, OpError>) -> Outcome {
        Outcome {
            first: crate::server::ops::answered(result),
            more: Vec::new(),
        }
    }

    /// The first batch's base offset, or the first error.
    async fn settle(self) -> Result<Produced, OpError> {
        let first = self.first.await;
        let mut failed = first.as_ref().err().cloned();
        for more in self.more {
            if let (Err(e), None) = (more.await, &failed) {
                failed = Some(e);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => first,
        }
    }
}

fn refused(error: OpError, acks: i16) -> Outcome {
    if acks == 0 {
        tracing::debug!(error = %error, "acks=0 produce refused");
    }
    Outcome::known(Err(error))
}

/// Hands each batch of `records` to the partition, in order.
async fn partition(
    shard: &Rc<Shard>,
    topic: &str,
    index: i32,
    acks: Acks,
    mut records: BytesMut,
) -> Outcome {
    let Ok(partition) = u32::try_from(index) else {
        return Outcome::known(Err(OpError::UnknownPartition));
    };
    let mut outcome: Option<Outcome> = None;
    let mut add = |pending: Pending<Produced>| match &mut outcome {
        None => {
            outcome = Some(Outcome {
                first: pending,
                more: Vec::new(),
            });
        }
        Some(outcome) => outcome.more.push(pending),
    };
    while !records.is_empty() {
        let size = match BatchHeader::parse(&records) {
            Ok(header) => header.size as usize,
            Err(e) => {
                add(crate::server::ops::answered(Err(OpError::CorruptBatch(
                    e.to_string(),
                ))));
                break;
            }
        };
        if size > records.len() {
            let message = format!("a batch of {size} bytes in {} bytes", records.len());
            add(crate::server::ops::answered(Err(OpError::CorruptBatch(
                message,
            ))));
            break;
        }
        let op = ProduceOp {
            topic: topic.into(),
            partition,
            acks,
            batch: records.split_to(size),
        };
        let counted = (metrics::batch_records(&op.batch), size as u64);
        metrics::records(Protocol::Kafka, metrics::Api::Produce, counted.0, counted.1);
        add(produce::produce(shard, op).await);
    }
    outcome.unwrap_or_else(|| {
        Outcome::known(Err(OpError::CorruptBatch("no batch in the records".into())))
    })
}

fn partition_response(
    shard: &Shard,
    head: Head,
    topic: &str,
    index: i32,
    result: Result<Produced, OpError>,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    match result {
        Ok(produced) => response
            .with_error_code(errors::NONE)
            .with_base_offset(i64::try_from(produced.base_offset).unwrap_or(i64::MAX)),
        Err(e) => {
            let mut response = response
                .with_error_code(errors::code(&e))
                .with_base_offset(-1);
            if head.version >= ERROR_MESSAGE_VERSION {
                response.error_message = Some(StrBytes::from_string(e.to_string()));
            }
            if head.version >= CURRENT_LEADER_VERSION
                && matches!(e, OpError::NotLeader { .. })
                && let Some(leader) = u32::try_from(index)
                    .ok()
                    .and_then(|p| current_leader(shard, topic, p))
            {
                response.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader.id))
                    .with_leader_epoch(leader.epoch);
            }
            response
        }
    }
}

/// The endpoints of the leaders named in `current_leader` answers (KIP-951).
fn endpoints(shard: &Shard, response: &ProduceResponse) -> Vec<NodeEndpoint> {
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    for topic in &response.responses {
        for p in &topic.partition_responses {
            let id = p.current_leader.leader_id.0;
            if id < 0 || endpoints.iter().any(|e| e.node_id.0 == id) {
                continue;
            }
            let Some(leader) = u32::try_from(p.index)
                .ok()
                .and_then(|index| current_leader(shard, topic.name.0.as_str(), index))
            else {
                continue;
            };
            if let Some((host, port)) = leader.endpoint {
                endpoints.push(
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(leader.id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(i32::from(port)),
                );
            }
        }
    }
    endpoints
}
