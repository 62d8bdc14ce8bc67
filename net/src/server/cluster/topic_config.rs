//! A topic's settings: how they travel in the controller's metadata (Kafka-style
//! key-value pairs, opaque to the controller) and the engine configuration of its
//! partitions.

use shardlog_engine::EngineConfig;
use shardlog_replicator::controller::TopicInfo;

use crate::api::TopicConfig;

/// The settings a topic may override; `None` takes the server's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TopicSettings {
    /// `segment.bytes`.
    pub(crate) segment_bytes: Option<u64>,
    /// `retention.bytes`, per partition.
    pub(crate) retention_bytes: Option<u64>,
    /// `retention.ms`.
    pub(crate) retention_ms: Option<u64>,
}

const SEGMENT_BYTES: &str = "segment.bytes";
const RETENTION_BYTES: &str = "retention.bytes";
const RETENTION_MS: &str = "retention.ms";

impl TopicSettings {
    /// The settings a topic carries in the metadata (unknown keys are ignored).
    pub(crate) fn of(info: &TopicInfo) -> TopicSettings {
        let get = |key: &str| {
            info.config
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        TopicSettings {
            segment_bytes: get(SEGMENT_BYTES),
            retention_bytes: get(RETENTION_BYTES),
            retention_ms: get(RETENTION_MS),
        }
    }

    /// As key-value pairs for the controller's metadata.
    pub(crate) fn to_pairs(&self) -> Vec<(String, String)> {
        [
            (SEGMENT_BYTES, self.segment_bytes),
            (RETENTION_BYTES, self.retention_bytes),
            (RETENTION_MS, self.retention_ms),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key.to_owned(), v.to_string())))
        .collect()
    }

    /// As the shardlog protocol's topic config (without `min_insync`).
    pub(crate) fn to_wire(&self) -> TopicConfig {
        TopicConfig {
            segment_bytes: self.segment_bytes,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            min_insync: None,
        }
    }

    /// The engine configuration of the topic's partitions: the server's defaults with
    /// these settings on top.
    pub(crate) fn engine_config(&self, defaults: &EngineConfig) -> EngineConfig {
        crate::server::topic_file::settings_over(
            defaults,
            self.segment_bytes,
            self.retention_bytes,
            self.retention_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_override_defaults() {
        let settings = TopicSettings {
            segment_bytes: Some(1 << 20),
            retention_bytes: None,
            retention_ms: Some(60_000),
        };
        let info = TopicInfo {
            id: 1,
            replication_factor: 1,
            min_insync: 1,
            config: settings.to_pairs(),
            partitions: Vec::new(),
        };
        assert_eq!(TopicSettings::of(&info), settings);
        let config = settings.engine_config(&EngineConfig::default());
        assert_eq!(config.segment_bytes, 1 << 20);
        assert_eq!(
            config.retention_age,
            Some(std::time::Duration::from_millis(60_000))
        );
        assert_eq!(
            config.retention_bytes,
            EngineConfig::default().retention_bytes
        );
    }
}
