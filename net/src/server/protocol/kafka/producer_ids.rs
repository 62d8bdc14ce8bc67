//! InitProducerId: a new producer id (epoch 0) for an idempotent producer, from the ids
//! the controller reserved for this node (`ops::producer_ids`). A producer that asks to
//! bump its epoch (v3+, KIP-360) gets a new id instead, which Kafka clients accept.
//! Transactional producers are refused (no transactions): INVALID_REQUEST.
//!
//! With authorization on, the producer needs write on the cluster or on some topic
//! (Kafka's IdempotentWrite on the cluster, or since KIP-679 write on any topic), else
//! CLUSTER_AUTHORIZATION_FAILED; each produce then needs write on its topic.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use shardlog_replicator::controller::acls::Operation;

use super::errors;
use super::request::{self, Completion, Request, done, respond};
use crate::server::ops::producer_ids;
use crate::server::security::Session;
use crate::server::security::acl::Access;
use crate::server::shard::Shard;

pub(crate) async fn begin(shard: &Rc<Shard>, request: Request, session: &Session) -> Completion {
    let body: InitProducerIdRequest = match request::decode(&request) {
        Ok(body) => body,
        Err(answer) => return done(answer),
    };
    let head = request.head;
    let refused = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if body.transactional_id.is_some() {
        return done(respond(
            head,
            &refused.with_error_code(errors::INVALID_REQUEST),
        ));
    }
    if !Access::new(shard, session).allows_on_cluster_or_any_topic(Operation::Write) {
        return done(respond(
            head,
            &refused.with_error_code(errors::CLUSTER_AUTHORIZATION_FAILED),
        ));
    }
    let pending = producer_ids::init(shard).await;
    async move {
        let response = match pending.await {
            Ok((id, epoch)) => InitProducerIdResponse::default()
                .with_error_code(errors::NONE)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(e) => refused.with_error_code(errors::code(&e)),
        };
        respond(head, &response)
    }
    .boxed_local()
}
