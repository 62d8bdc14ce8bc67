//! ApiVersions: the apis and versions served, from `versions::SUPPORTED`. A version
//! above the newest served gets a v0 answer with UNSUPPORTED_VERSION and ApiVersions'
//! own range (KIP-511), so the client retries with a version both sides know.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::errors;
use super::request::{self, Answer, Head, Request, respond};
use super::versions::{self, SUPPORTED};

/// The answer to a served version.
pub(crate) fn answer(request: &Request) -> Answer {
    if let Err(answer) = request::decode::<ApiVersionsRequest>(request) {
        return answer;
    }
    let api_keys = SUPPORTED
        .iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.api_key as i16)
                .with_min_version(s.min)
                .with_max_version(s.max)
        })
        .collect();
    let response = ApiVersionsResponse::default()
        .with_error_code(errors::NONE)
        .with_api_keys(api_keys);
    respond(request.head, &response)
}

/// The answer to a version this server does not serve (KIP-511): v0, UNSUPPORTED_VERSION,
/// ApiVersions' range.
pub(crate) fn unsupported(head: Head) -> Answer {
    let own = versions::supported(ApiKey::ApiVersions).map_or((0, 0), |s| (s.min, s.max));
    let response = ApiVersionsResponse::default()
        .with_error_code(errors::UNSUPPORTED_VERSION)
        .with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::ApiVersions as i16)
                .with_min_version(own.0)
                .with_max_version(own.1),
        ]);
    respond(Head { version: 0, ..head }, &response)
}
