//! The dispatcher: a frame's request header picks the handler by api key, after the
//! version is checked against the supported-versions table (`versions`). An unknown api
//! key, a version not served (ApiVersions excepted: KIP-511) or a header that does not
//! parse closes the connection.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use super::request::{self, Answer, Begun, Request, done};
use super::versions;
use super::{api_versions, configs, fetch, metadata, offsets, produce, producer_ids, topics};
use crate::server::shard::Shard;

/// Begins the request in `frame` (in the connection's request order).
pub(crate) async fn begin(shard: &Rc<Shard>, frame: Bytes) -> Begun {
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
    route(shard, request).await
}

async fn route(shard: &Rc<Shard>, request: Request) -> Begun {
    let small = Begun::small;
    match request.head.api_key {
        ApiKey::ApiVersions => small(done(api_versions::answer(&request))),
        ApiKey::Metadata => small(metadata::begin(shard, request).await),
        ApiKey::Produce => small(produce::begin(shard, request).await),
        ApiKey::Fetch => fetch::begin(shard, request).await,
        ApiKey::ListOffsets => small(offsets::list_offsets(shard, request).await),
        ApiKey::OffsetForLeaderEpoch => small(offsets::for_leader_epoch(shard, request).await),
        ApiKey::InitProducerId => small(producer_ids::begin(shard, request).await),
        ApiKey::CreateTopics => small(topics::create(shard, request).await),
        ApiKey::DeleteTopics => small(topics::delete(shard, request).await),
        ApiKey::DescribeConfigs => small(done(configs::describe(shard, &request))),
        other => {
            // Listed in `versions::SUPPORTED` without a handler here: a bug.
            tracing::error!(api = ?other, "kafka api listed as served has no handler");
            small(done(Answer::Close(format!("{other:?} has no handler"))))
        }
    }
}
