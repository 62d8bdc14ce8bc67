//! The Kafka apis this server serves and their versions: the one table ApiVersions
//! answers from and the dispatcher checks every request against (a request of an api or
//! version not listed closes the connection, but for ApiVersions itself: KIP-511).
//!
//! Why these ranges: topic ids are not supported, so Metadata stops at 12 (13 changes
//! nothing we need), Fetch at 12 (13 addresses topics by id), Produce at 10 (10 adds the
//! new leader to NOT_LEADER_OR_FOLLOWER answers; 13 uses topic ids), DeleteTopics at 5;
//! ListOffsets stops at 6 (7 adds the max-timestamp lookup). librdkafka 2.0 (Debian's
//! kcat) turns its features on by exact versions: Produce 3 and 7, Fetch 4 and 10,
//! InitProducerId 0, ListOffsets 1 are all inside.

use kafka_protocol::messages::ApiKey;

/// An api and the versions served, `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Supported {
    pub(crate) api_key: ApiKey,
    pub(crate) min: i16,
    pub(crate) max: i16,
}

const fn api(api_key: ApiKey, min: i16, max: i16) -> Supported {
    Supported { api_key, min, max }
}

/// Every api served, with its versions.
pub(crate) const SUPPORTED: &[Supported] = &[
    api(ApiKey::Produce, 3, 10),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 6),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 5),
    api(ApiKey::InitProducerId, 0, 4),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::DescribeConfigs, 1, 4),
    // The group apis (`groups`): from v0 where the codecs have it (librdkafka 2.0 turns
    // groups on only then); OffsetCommit and OffsetFetch stop before KIP-848's versions.
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 2, 8),
    api(ApiKey::OffsetFetch, 1, 7),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 5),
    // SASL (`sasl`): after a v0 handshake the tokens come bare (no SaslAuthenticate).
    api(ApiKey::SaslHandshake, 0, 1),
    api(ApiKey::SaslAuthenticate, 0, 2),
];

/// The versions of `api_key` served, if it is.
pub(crate) fn supported(api_key: ApiKey) -> Option<Supported> {
    SUPPORTED.iter().copied().find(|s| s.api_key == api_key)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::Message;

    use super::*;

    /// Every version advertised is one the codecs know, and each api is listed once.
    #[test]
    fn the_table_is_inside_the_codecs_ranges() {
        for s in SUPPORTED {
            let codec = s.api_key.valid_versions();
            assert!(
                codec.min <= s.min && s.max <= codec.max,
                "{s:?} vs {codec:?}"
            );
            assert!(s.min <= s.max, "{s:?}");
            let listed = SUPPORTED.iter().filter(|o| o.api_key == s.api_key).count();
            assert_eq!(listed, 1, "{s:?}");
        }
        let fetch = kafka_protocol::messages::FetchRequest::VERSIONS;
        assert!(fetch.max >= 12);
    }
}
