//! The dispatcher: a frame's request header picks the handler by api key, after the
//! version is checked against the supported-versions table (`versions`). An unknown api
//! key, a version not served (ApiVersions excepted: KIP-511) or a header that does not
//! parse closes the connection. SaslHandshake and SaslAuthenticate run here (`sasl`), in
//! request order; on a node that requires SASL (`--authentication sasl`) any request but
//! those and ApiVersions closes a connection that has not authenticated, as Kafka does.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::messages::ApiKey;

use super::request::{self, Answer, Begun, Request, done};
use super::versions;
use super::{
    api_versions, configs, fetch, groups, metadata, offsets, produce, producer_ids, sasl, topics,
};
use crate::server::metrics::{self, Protocol};
use crate::server::security::Session;
use crate::server::shard::Shard;

/// Begins the request in `frame` (in the connection's request order).
pub(crate) async fn begin(shard: &Rc<Shard>, frame: Bytes, session: &Rc<Session>) -> Begun {
    if session.expects_bare_token() {
        return Begun::small(done(sasl::bare_token(shard, &frame, session)));
    }
    let request = match request::parse(frame) {
        Ok(request) => request,
        Err(e) => return Begun::small(done(Answer::Close(e.to_string()))),
    };
    let head = request.head;
    let Some(served) = versions::supported(head.api_key) else {
        let why = format!("{:?} is not served", head.api_key);
        return Begun::small(done(Answer::Close(why)));
    };
    if !(served.min..=served.max).contains(&head.version) {
        if head.api_key == ApiKey::ApiVersions {
            return Begun::small(done(api_versions::unsupported(head)));
        }
        let why = format!(
            "{:?} v{} is not served (v{} to v{})",
            head.api_key, head.version, served.min, served.max
        );
        return Begun::small(done(Answer::Close(why)));
    }
    match head.api_key {
        // Before any check of the session: these are how it authenticates.
        ApiKey::ApiVersions => {}
        ApiKey::SaslHandshake => return Begun::small(done(sasl::handshake(&request, session))),
        ApiKey::SaslAuthenticate => {
            return Begun::small(done(sasl::authenticate(shard, &request, session)));
        }
        // Kafka closes a connection that sends anything else before it authenticated.
        _ if !crate::server::security::sasl::may_request(shard, session) => {
            let why = format!(
                "{:?} before SASL authentication: this node requires it (--authentication sasl)",
                head.api_key
            );
            return Begun::small(done(Answer::Close(why)));
        }
        _ => {}
    }
    route(shard, request, session).await
}

async fn route(shard: &Rc<Shard>, request: Request, session: &Rc<Session>) -> Begun {
    let api = counted_api(request.head.api_key);
    metrics::request(Protocol::Kafka, api, 0, 0);
    let latency = match api {
        metrics::Api::Produce => metrics::Latency::Produce,
        metrics::Api::Fetch => metrics::Latency::Fetch,
        _ => return answer(shard, request, session).await,
    };
    let started = Instant::now();
    let begun = answer(shard, request, session).await;
    Begun {
        completion: async move {
            let answer = begun.completion.await;
            metrics::latency(latency, started.elapsed());
            answer
        }
        .boxed_local(),
        reply_bytes: begun.reply_bytes,
        owners: begun.owners,
    }
}

/// The api a request counts under in the metrics.
fn counted_api(key: ApiKey) -> metrics::Api {
    match key {
        ApiKey::Produce => metrics::Api::Produce,
        ApiKey::Fetch => metrics::Api::Fetch,
        ApiKey::ListOffsets | ApiKey::OffsetForLeaderEpoch => metrics::Api::ListOffsets,
        ApiKey::Metadata => metrics::Api::Metadata,
        ApiKey::CreateTopics | ApiKey::DeleteTopics | ApiKey::DescribeConfigs => {
            metrics::Api::TopicAdmin
        }
        ApiKey::InitProducerId => metrics::Api::InitProducerId,
        ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups => metrics::Api::Groups,
        _ => metrics::Api::Other,
    }
}

/// Each handler is given the connection's session: authorization (`security::acl`)
/// judges each topic, group or cluster action by its principal.
async fn answer(shard: &Rc<Shard>, request: Request, session: &Rc<Session>) -> Begun {
    let small = Begun::small;
    let s = session;
    match request.head.api_key {
        ApiKey::ApiVersions => small(done(api_versions::answer(&request))),
        ApiKey::Metadata => small(metadata::begin(shard, request, s).await),
        ApiKey::Produce => produce::begin(shard, request, s).await,
        ApiKey::Fetch => fetch::begin(shard, request, s).await,
        ApiKey::ListOffsets => small(offsets::list_offsets(shard, request, s).await),
        ApiKey::OffsetForLeaderEpoch => small(offsets::for_leader_epoch(shard, request, s).await),
        ApiKey::InitProducerId => small(producer_ids::begin(shard, request, s).await),
        ApiKey::CreateTopics => small(topics::create(shard, request, s).await),
        ApiKey::DeleteTopics => small(topics::delete(shard, request, s).await),
        ApiKey::DescribeConfigs => small(done(configs::describe(shard, &request, s))),
        ApiKey::FindCoordinator => small(groups::find_coordinator(shard, request, s).await),
        ApiKey::JoinGroup => small(groups::join(shard, request, s).await),
        ApiKey::SyncGroup => small(groups::sync(shard, request, s).await),
        ApiKey::Heartbeat => small(groups::heartbeat(shard, request, s).await),
        ApiKey::LeaveGroup => small(groups::leave(shard, request, s).await),
        ApiKey::OffsetCommit => small(groups::offset_commit(shard, request, s).await),
        ApiKey::OffsetFetch => small(groups::offset_fetch(shard, request, s).await),
        ApiKey::DescribeGroups => small(groups::describe(shard, request, s).await),
        ApiKey::ListGroups => small(groups::list(shard, request, s).await),
        other => {
            // Listed in `versions::SUPPORTED` without a handler here: a bug.
            tracing::error!(api = ?other, "kafka api listed as served has no handler");
            small(done(Answer::Close(format!("{other:?} has no handler"))))
        }
    }
}
