//! The JSON-lines format of `export` and `import`: one record per line, with the fields of
//! its batch needed to rebuild that batch byte for byte.
//!
//! ```text
//! {"offset":5,"timestamp":1700000000000,"key":"k","value":"v","headers":[{"key":"h","value":"x"}],
//!  "batch_base_offset":3,"leader_epoch":1,"producer_id":-1,"producer_epoch":-1,"base_sequence":-1}
//! ```
//! Bytes are UTF-8 strings where valid; otherwise the field is written as `<name>_b64`
//! (standard base64) instead (`key_b64`, `value_b64`, and in a header `key_b64`,
//! `value_b64`). A null key or value is `null`. Records of one batch are consecutive
//! lines with the same `batch_base_offset`, and their offsets are the batch base plus
//! 0, 1, 2, ... (export refuses batches it could not rebuild this way). In the export of
//! a whole topic each record also names its `"partition"` (see `exported_topic.rs`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::record::{BatchBuilder, ProducerFields, Record};
use shardlog_engine::{LeaderEpoch, Offset, TimestampMs};

/// One record line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedRecord {
    /// The record's partition, in a whole-topic export (`exported_topic.rs`); absent in
    /// the export of one partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The record's offset.
    pub offset: u64,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// The key as text (`null`: null key, unless `key_b64` is set).
    #[serde(default)]
    pub key: Option<String>,
    /// The key as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    /// The value as text (`null`: null value, unless `value_b64` is set).
    #[serde(default)]
    pub value: Option<String>,
    /// The value as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
    /// Record headers, in order.
    #[serde(default)]
    pub headers: Vec<ExportedHeader>,
    /// Base offset of the batch holding the record.
    pub batch_base_offset: u64,
    /// The batch's partition leader epoch.
    pub leader_epoch: i32,
    /// The batch's producer id (-1: none).
    pub producer_id: i64,
    /// The batch's producer epoch (-1: none).
    pub producer_epoch: i16,
    /// The batch's base sequence (-1: none).
    pub base_sequence: i32,
}

/// One record header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedHeader {
    /// The header key as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The header key as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    /// The header value as text (`null`: null value, unless `value_b64` is set).
    #[serde(default)]
    pub value: Option<String>,
    /// The header value as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
}

/// A byte field as (text, base64): text when valid UTF-8, base64 otherwise, both `None`
/// for a null field.
#[must_use]
pub fn encode_bytes(bytes: Option<&[u8]>) -> (Option<String>, Option<String>) {
    match bytes.map(std::str::from_utf8) {
        None => (None, None),
        Some(Ok(text)) => (Some(text.to_owned()), None),
        Some(Err(_)) => (None, bytes.map(|b| STANDARD.encode(b))),
    }
}

/// The bytes of a field written by [`encode_bytes`]; `Err` names what is wrong.
pub fn decode_bytes(
    text: Option<&str>,
    b64: Option<&str>,
    field: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(format!("both {field} and {field}_b64")),
        (Some(text), None) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(b64)) => STANDARD
            .decode(b64)
            .map(Some)
            .map_err(|e| format!("{field}_b64: {e}")),
        (None, None) => Ok(None),
    }
}

impl ExportedRecord {
    /// The line for `record` of the batch described by `header`.
    #[must_use]
    pub fn new(header: &BatchHeader, record: &Record<'_>) -> ExportedRecord {
        let (key, key_b64) = encode_bytes(record.key);
        let (value, value_b64) = encode_bytes(record.value);
        let headers = exported_headers(record);
        ExportedRecord {
            partition: None,
            offset: record.offset(header).0,
            timestamp: record.timestamp(header).0,
            key,
            key_b64,
            value,
            value_b64,
            headers,
            batch_base_offset: header.base_offset.0,
            leader_epoch: header.leader_epoch.0,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
        }
    }

    fn same_batch_fields(&self, other: &ExportedRecord) -> bool {
        (
            self.partition,
            self.batch_base_offset,
            self.leader_epoch,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
        ) == (
            other.partition,
            other.batch_base_offset,
            other.leader_epoch,
            other.producer_id,
            other.producer_epoch,
            other.base_sequence,
        )
    }
}

/// A record's headers as lines show them (text, or base64 where not UTF-8).
#[must_use]
pub fn exported_headers(record: &Record<'_>) -> Vec<ExportedHeader> {
    record
        .headers()
        .map(|(k, v)| {
            let (key, key_b64) = encode_bytes(Some(k));
            let (value, value_b64) = encode_bytes(v);
            ExportedHeader {
                key,
                key_b64,
                value,
                value_b64,
            }
        })
        .collect()
}

/// A record's headers decoded to bytes.
type OwnedHeaders = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Rebuilds the batch holding `records` (one batch's lines, in order): the batch fields
/// come from the lines, the offsets must be the base offset plus 0, 1, 2, ...
pub fn build_batch(records: &[ExportedRecord]) -> Result<Vec<u8>, String> {
    let first = records.first().ok_or("empty batch")?;
    let mut builder = BatchBuilder::new();
    builder.set_producer(ProducerFields {
        producer_id: first.producer_id,
        producer_epoch: first.producer_epoch,
        base_sequence: first.base_sequence,
    });
    for (delta, record) in (0u64..).zip(records) {
        if !record.same_batch_fields(first) {
            return Err(format!(
                "record {} differs from its batch in batch fields",
                record.offset
            ));
        }
        let expected = first
            .batch_base_offset
            .checked_add(delta)
            .ok_or("offset overflow")?;
        if record.offset != expected {
            return Err(format!(
                "offset {} in the batch at {}: expected {expected} (records of a batch are consecutive)",
                record.offset, first.batch_base_offset
            ));
        }
        let key = decode_bytes(record.key.as_deref(), record.key_b64.as_deref(), "key")?;
        let value = decode_bytes(
            record.value.as_deref(),
            record.value_b64.as_deref(),
            "value",
        )?;
        let owned = record
            .headers
            .iter()
            .map(|h| {
                let key = decode_bytes(h.key.as_deref(), h.key_b64.as_deref(), "header key")?
                    .ok_or("a header without a key")?;
                let value =
                    decode_bytes(h.value.as_deref(), h.value_b64.as_deref(), "header value")?;
                Ok((key, value))
            })
            .collect::<Result<OwnedHeaders, String>>()?;
        let headers: Vec<(&[u8], Option<&[u8]>)> = owned
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        builder.push(
            TimestampMs(record.timestamp),
            key.as_deref(),
            value.as_deref(),
            &headers,
        );
    }
    let mut bytes = builder.finish();
    batch::patch_base(
        &mut bytes,
        Offset(first.batch_base_offset),
        LeaderEpoch(first.leader_epoch),
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_roundtrip_as_text_or_base64() {
        for field in [
            None,
            Some(&b"text"[..]),
            Some(&b"\xff\x00bin"[..]),
            Some(&b""[..]),
        ] {
            let (text, b64) = encode_bytes(field);
            assert_eq!(
                decode_bytes(text.as_deref(), b64.as_deref(), "value")
                    .unwrap()
                    .as_deref(),
                field
            );
        }
        assert!(encode_bytes(Some(b"\xff")).1.is_some());
        assert!(decode_bytes(Some("a"), Some("YQ=="), "key").is_err());
    }
}
