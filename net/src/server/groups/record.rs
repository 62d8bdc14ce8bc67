//! The records of `__consumer_offsets`: our own versioned format, in each record's key
//! and value bytes (big-endian; strings are a u16 length then UTF-8).
//!
//! ```text
//! key   = version u16 (1) | kind u8 | fields of the kind
//!   kind 1, offset commit:  group str | topic str | partition u32
//!   kind 2, snapshot start: (none)
//! value = version u16 (1) | fields of the kind
//!   kind 1: offset i64 | leader_epoch i32 | commit_timestamp_ms i64
//!           | snapshot_base i64 | metadata: length i32 (-1: null) then UTF-8
//!   kind 2: entries u32 | written_at_ms i64
//! ```
//!
//! A commit is one batch of kind-1 records (one per partition committed). A snapshot
//! is one batch: a kind-2 record first, then a kind-1 record for every offset the
//! partition's groups hold; a loader that meets it forgets what it read before, since
//! a batch is all or nothing. Every kind-1 record written after a snapshot names that
//! snapshot's batch offset in `snapshot_base` (-1: none yet), so a loader reads the
//! newest record first and starts at the newest snapshot (see `loading`).
//!
//! These bytes come from a disk (and, as the topic is a topic, possibly from a client
//! that wrote to it): decoding checks every length and refuses, never panics. A record
//! of a newer version or an unknown kind is skipped by the loader, so a later format can
//! add kinds.

#![deny(clippy::indexing_slicing)]

use shardlog_engine::TimestampMs;
use shardlog_engine::batch::BATCH_SIZE_MAX;
use shardlog_engine::record::BatchBuilder;

use crate::server::groups::group::OffsetEntry;

/// The format version written.
pub(crate) const VERSION: u16 = 1;
const KIND_OFFSET: u8 = 1;
const KIND_SNAPSHOT: u8 = 2;

/// A record of the offsets topic, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OffsetsRecord {
    /// A committed offset.
    Offset {
        group: String,
        topic: String,
        partition: u32,
        offset: i64,
        leader_epoch: i32,
        commit_timestamp: i64,
        metadata: Option<String>,
        /// The newest snapshot's batch offset when it was written (-1: none).
        snapshot_base: i64,
    },
    /// The first record of a snapshot batch.
    SnapshotStart { entries: u32, written_at: i64 },
    /// A version or kind this build does not know: skipped.
    Unknown,
}

/// Why a record did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordFormatError {
    #[error("a key or value ends early")]
    Truncated,
    #[error("a string is not UTF-8")]
    Utf8,
    #[error("bytes after the last field")]
    Trailing,
    #[error("a null key or value")]
    Null,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordFormatError> {
        if self.bytes.len() < n {
            return Err(RecordFormatError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordFormatError> {
        self.take(N)?
            .try_into()
            .map_err(|_| RecordFormatError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, RecordFormatError> {
        Ok(u8::from_be_bytes(self.array()?))
    }
    fn u16(&mut self) -> Result<u16, RecordFormatError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordFormatError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, RecordFormatError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, RecordFormatError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<String, RecordFormatError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordFormatError::Utf8)
    }

    fn nullable_str(&mut self) -> Result<Option<String>, RecordFormatError> {
        let len = self.i32()?;
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| RecordFormatError::Utf8)
    }

    fn end(&self) -> Result<(), RecordFormatError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(RecordFormatError::Trailing)
        }
    }
}

/// Decodes one record's key and value.
pub(crate) fn decode(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<OffsetsRecord, RecordFormatError> {
    let (Some(key), Some(value)) = (key, value) else {
        return Err(RecordFormatError::Null);
    };
    let mut key = Reader { bytes: key };
    let mut value = Reader { bytes: value };
    if key.u16()? != VERSION || value.u16()? != VERSION {
        return Ok(OffsetsRecord::Unknown);
    }
    let record = match key.u8()? {
        KIND_OFFSET => OffsetsRecord::Offset {
            group: key.str()?,
            topic: key.str()?,
            partition: key.u32()?,
            offset: value.i64()?,
            leader_epoch: value.i32()?,
            commit_timestamp: value.i64()?,
            snapshot_base: value.i64()?,
            metadata: value.nullable_str()?,
        },
        KIND_SNAPSHOT => OffsetsRecord::SnapshotStart {
            entries: value.u32()?,
            written_at: value.i64()?,
        },
        _ => return Ok(OffsetsRecord::Unknown),
    };
    key.end()?;
    value.end()?;
    Ok(record)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // Group ids, topic names and metadata are bounded far below u16::MAX at the edge.
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes().get(..usize::from(len)).unwrap_or_default());
}

fn offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + group.len() + topic.len());
    key.extend_from_slice(&VERSION.to_be_bytes());
    key.push(KIND_OFFSET);
    put_str(&mut key, group);
    put_str(&mut key, topic);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn offset_value(entry: &OffsetEntry, snapshot_base: i64) -> Vec<u8> {
    let metadata = entry.metadata.as_deref();
    let mut value = Vec::with_capacity(34 + metadata.map_or(0, str::len));
    value.extend_from_slice(&VERSION.to_be_bytes());
    value.extend_from_slice(&entry.offset.to_be_bytes());
    value.extend_from_slice(&entry.leader_epoch.to_be_bytes());
    value.extend_from_slice(&entry.commit_timestamp.to_be_bytes());
    value.extend_from_slice(&snapshot_base.to_be_bytes());
    match metadata {
        Some(text) => {
            let len = i32::try_from(text.len()).unwrap_or(i32::MAX);
            value.extend_from_slice(&len.to_be_bytes());
            value.extend_from_slice(text.as_bytes());
        }
        None => value.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    value
}

/// One offset to write: `(group, topic, partition, entry)`.
pub(crate) type OffsetRow<'a> = (&'a str, &'a str, u32, &'a OffsetEntry);

/// A batch of kind-1 records, one per row.
pub(crate) fn commit_batch(rows: &[OffsetRow<'_>], snapshot_base: i64) -> Option<Vec<u8>> {
    let mut builder = BatchBuilder::new();
    let now = TimestampMs::now();
    for (group, topic, partition, entry) in rows {
        let key = offset_key(group, topic, *partition);
        let value = offset_value(entry, snapshot_base);
        builder.push(now, Some(&key), Some(&value), &[]);
    }
    (builder.record_count() > 0 && builder.size() <= BATCH_SIZE_MAX).then(|| builder.finish())
}

/// A snapshot batch of every row (`None` if it would pass the batch size limit).
pub(crate) fn snapshot_batch(rows: &[OffsetRow<'_>]) -> Option<Vec<u8>> {
    let mut builder = BatchBuilder::new();
    let now = TimestampMs::now();
    let mut key = Vec::with_capacity(3);
    key.extend_from_slice(&VERSION.to_be_bytes());
    key.push(KIND_SNAPSHOT);
    let mut value = Vec::with_capacity(14);
    value.extend_from_slice(&VERSION.to_be_bytes());
    value.extend_from_slice(&u32::try_from(rows.len()).ok()?.to_be_bytes());
    value.extend_from_slice(&now.0.to_be_bytes());
    builder.push(now, Some(&key), Some(&value), &[]);
    for (group, topic, partition, entry) in rows {
        let key = offset_key(group, topic, *partition);
        // Entries of a snapshot point at no snapshot: the batch is the snapshot.
        let value = offset_value(entry, -1);
        if builder.size_with(now, Some(&key), Some(&value), &[]) > BATCH_SIZE_MAX {
            return None;
        }
        builder.push(now, Some(&key), Some(&value), &[]);
    }
    Some(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_engine::batch::validate_with_records;
    use shardlog_engine::record::RecordIter;

    fn entry() -> OffsetEntry {
        OffsetEntry {
            offset: 42,
            leader_epoch: 3,
            metadata: Some("m".into()),
            commit_timestamp: 7,
            record_offset: 0,
        }
    }

    fn records(batch: &[u8]) -> Vec<OffsetsRecord> {
        let header = validate_with_records(batch).expect("valid batch");
        RecordIter::new(&header, batch)
            .map(|r| {
                let r = r.expect("record");
                decode(r.key, r.value).expect("decodes")
            })
            .collect()
    }

    #[test]
    fn commit_and_snapshot_batches_round_trip() {
        let e = entry();
        let batch = commit_batch(&[("g", "t", 5, &e)], 99).expect("a batch");
        assert_eq!(
            records(&batch),
            vec![OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 5,
                offset: 42,
                leader_epoch: 3,
                commit_timestamp: 7,
                metadata: Some("m".into()),
                snapshot_base: 99,
            }]
        );
        let snapshot = snapshot_batch(&[("g", "t", 5, &e), ("h", "u", 0, &e)]).expect("fits");
        let decoded = records(&snapshot);
        assert_eq!(decoded.len(), 3);
        assert!(matches!(
            decoded.first(),
            Some(OffsetsRecord::SnapshotStart { entries: 2, .. })
        ));
    }

    #[test]
    fn damaged_records_are_refused_not_panicking() {
        let e = entry();
        let key = offset_key("group", "topic", 1);
        let value = offset_value(&e, -1);
        for cut in 0..key.len() {
            let got = decode(key.get(..cut), Some(&value));
            assert!(
                got.is_err() || got == Ok(OffsetsRecord::Unknown),
                "{cut}: {got:?}"
            );
        }
        for cut in 0..value.len() {
            assert!(decode(Some(&key), value.get(..cut)).is_err(), "{cut}");
        }
        let mut long = value.clone();
        long.push(0);
        assert_eq!(
            decode(Some(&key), Some(&long)),
            Err(RecordFormatError::Trailing)
        );
        let mut newer = key.clone();
        if let Some(version) = newer.get_mut(1) {
            *version = 9;
        }
        assert_eq!(
            decode(Some(&newer), Some(&value)),
            Ok(OffsetsRecord::Unknown)
        );
        assert_eq!(decode(None, Some(&value)), Err(RecordFormatError::Null));
    }
}
