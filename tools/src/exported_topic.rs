//! The export of a whole topic (`shardlog export DATA/<topic>`), which `shardlog import
//! DATA2` restores as a topic `shardlogd` serves: its settings, then every partition's
//! records and end, as JSON lines.
//!
//! ```text
//! {"topic":{"name":"orders","partitions":2,"segment_bytes":null,"retention_bytes":null,"retention_ms":86400000}}
//! {"partition":0,"offset":0,"timestamp":1700000000000,"key":null,"value":"a",...}
//! {"partition":0,"offset":1,...}
//! {"partition_end":{"partition":0,"log_end":2,"records":2}}
//! {"partition_end":{"partition":1,"log_end":40,"records":0}}
//! ```
//! The first line holds the topic's settings as `topic.json` does (absent settings take
//! the server's defaults). Partitions follow in order 0, 1, ..., each once: its records
//! (`exported_record.rs`, each naming its `partition`) in offset order, then its end line.
//! Every partition has an end line, an empty one only that: it restores an empty
//! partition at its next offset (retention may have deleted every record, and offsets
//! must never run backwards), and it tells a whole export from one cut short.

use serde::{Deserialize, Serialize};
use shardlog_net::server::topic_file::TopicFile;

use crate::exported_record::ExportedRecord;

/// The first line of a whole-topic export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicLine {
    /// The topic's settings.
    pub topic: ExportedTopic,
}

/// A topic's name, partition count and settings (those of its `topic.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedTopic {
    /// Topic name.
    pub name: String,
    /// Partitions `0..partitions`.
    pub partitions: u32,
    /// `segment.bytes`, if set for the topic.
    pub segment_bytes: Option<u64>,
    /// `retention.bytes` per partition, if set.
    pub retention_bytes: Option<u64>,
    /// `retention.ms`, if set.
    pub retention_ms: Option<u64>,
}

impl From<&TopicFile> for ExportedTopic {
    fn from(spec: &TopicFile) -> ExportedTopic {
        ExportedTopic {
            name: spec.name.clone(),
            partitions: spec.partitions,
            segment_bytes: spec.segment_bytes,
            retention_bytes: spec.retention_bytes,
            retention_ms: spec.retention_ms,
        }
    }
}

impl From<&ExportedTopic> for TopicFile {
    fn from(topic: &ExportedTopic) -> TopicFile {
        TopicFile {
            name: topic.name.clone(),
            partitions: topic.partitions,
            segment_bytes: topic.segment_bytes,
            retention_bytes: topic.retention_bytes,
            retention_ms: topic.retention_ms,
        }
    }
}

/// The line after a partition's records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEndLine {
    /// The end.
    pub partition_end: PartitionEnd,
}

/// Where a partition ended when it was exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEnd {
    /// The partition.
    pub partition: u32,
    /// Its `log_end`: the offset its next record gets.
    pub log_end: u64,
    /// Records exported for it.
    pub records: u64,
}

/// One line of an export, of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportLine {
    /// A topic's settings (the first line of a whole-topic export).
    Topic(ExportedTopic),
    /// The end of a partition's records.
    PartitionEnd(PartitionEnd),
    /// A record.
    Record(Box<ExportedRecord>),
}

/// Parses one line. Records, nearly every line, are tried first; `Err` is the error of
/// the kind the line's keys say it is.
pub fn parse_line(text: &str) -> Result<ExportLine, String> {
    let record_error = match serde_json::from_str::<ExportedRecord>(text) {
        Ok(record) => return Ok(ExportLine::Record(Box::new(record))),
        Err(e) => e.to_string(),
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let has = |key: &str| value.as_object().is_some_and(|o| o.contains_key(key));
    if has("topic") {
        return serde_json::from_value::<TopicLine>(value)
            .map(|line| ExportLine::Topic(line.topic))
            .map_err(|e| format!("topic line: {e}"));
    }
    if has("partition_end") {
        return serde_json::from_value::<PartitionEndLine>(value)
            .map(|line| ExportLine::PartitionEnd(line.partition_end))
            .map_err(|e| format!("partition end line: {e}"));
    }
    Err(record_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_line_parses_and_errors_name_their_kind() {
        let topic = ExportedTopic {
            name: "orders".into(),
            partitions: 2,
            segment_bytes: None,
            retention_bytes: Some(1 << 30),
            retention_ms: None,
        };
        let text = serde_json::to_string(&TopicLine {
            topic: topic.clone(),
        })
        .unwrap();
        assert_eq!(parse_line(&text).unwrap(), ExportLine::Topic(topic));
        let end = PartitionEnd {
            partition: 1,
            log_end: 40,
            records: 0,
        };
        let text = serde_json::to_string(&PartitionEndLine { partition_end: end }).unwrap();
        assert_eq!(parse_line(&text).unwrap(), ExportLine::PartitionEnd(end));
        let record = r#"{"partition":0,"offset":5,"timestamp":1,"key":null,"value":"v","headers":[],"batch_base_offset":5,"leader_epoch":0,"producer_id":-1,"producer_epoch":-1,"base_sequence":-1}"#;
        assert!(matches!(parse_line(record), Ok(ExportLine::Record(r)) if r.partition == Some(0)));

        let bad_topic = r#"{"topic":{"name":"t"}}"#;
        assert!(parse_line(bad_topic).unwrap_err().starts_with("topic line"));
        let bad_end = r#"{"partition_end":{"partition":0}}"#;
        assert!(
            parse_line(bad_end)
                .unwrap_err()
                .starts_with("partition end")
        );
        assert!(parse_line(r#"{"offset":"x"}"#).is_err());
        assert!(parse_line("not json").is_err());
    }
}
