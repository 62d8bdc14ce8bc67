//! Records inside a batch: encode ([`BatchBuilder`], uncompressed) and iterate without
//! allocating ([`RecordIter`]: an uncompressed batch's bytes, or a compressed batch's
//! payload that a tool decompressed).
//!
//! ```text
//! length          varint   bytes of the record after this field
//! attributes      int8     unused, 0
//! timestamp_delta varlong  from the batch's base timestamp
//! offset_delta    varint   from the batch's base offset
//! key_length      varint   -1 for a null key
//! key             bytes
//! value_length    varint   -1 for a null value
//! value           bytes
//! header_count    varint
//!   key_length varint, key bytes, value_length varint (-1: null), value bytes
//! ```
//! Varints are zigzag-encoded, as in Kafka and protobuf's `sint`.
#![deny(clippy::indexing_slicing)]

use crate::batch::{self, BATCH_HEADER_SIZE, BatchHeader};
use crate::ids::{LeaderEpoch, Offset, TimestampMs};

/// Why a record did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A varint ran past the end of the batch or past 10 bytes.
    #[error("bad varint")]
    Varint,
    /// A length is negative (other than -1 for null) or runs past the record.
    #[error("bad length")]
    Length,
    /// Offset deltas do not increase.
    #[error("offset deltas out of order")]
    OffsetDelta,
    /// Bytes left over inside a record, or after the last one.
    #[error("trailing bytes")]
    Trailing,
}

/// One record, borrowing from the batch bytes.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Offset delta from the batch base.
    pub offset_delta: u32,
    /// Timestamp delta from the batch's base timestamp.
    pub timestamp_delta: i64,
    /// The key, or `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value, or `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Number of headers.
    pub header_count: u32,
    headers: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record's offset in its partition.
    #[must_use]
    pub fn offset(&self, header: &BatchHeader) -> Offset {
        header.base_offset.advance(u64::from(self.offset_delta))
    }

    /// The record's timestamp.
    #[must_use]
    pub fn timestamp(&self, header: &BatchHeader) -> TimestampMs {
        TimestampMs(header.base_timestamp.0.saturating_add(self.timestamp_delta))
    }

    /// Iterates `(key, value)` of the headers; the bytes were checked when the record was.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut cursor = Cursor {
            bytes: self.headers,
        };
        (0..self.header_count).map_while(move |_| {
            let key = cursor.bytes_field().ok()??;
            let value = cursor.bytes_field().ok()?;
            Some((key, value))
        })
    }
}

/// Iterates the records of an uncompressed batch. Yields an error and stops at the first
/// record that does not parse; checks bounds on every length, never panics.
pub struct RecordIter<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    /// Records of `batch` (the whole batch bytes) as described by `header`.
    #[must_use]
    pub fn new(header: &BatchHeader, batch: &'a [u8]) -> RecordIter<'a> {
        let end = (header.size as usize).min(batch.len());
        RecordIter {
            cursor: Cursor {
                bytes: batch.get(BATCH_HEADER_SIZE..end).unwrap_or_default(),
            },
            remaining: header.record_count,
            failed: false,
        }
    }

    /// Records of a compressed batch described by `header`, from `records`: its payload
    /// once decompressed (the offline tools decompress; the broker never does).
    #[must_use]
    pub fn decompressed(header: &BatchHeader, records: &'a [u8]) -> RecordIter<'a> {
        RecordIter {
            cursor: Cursor { bytes: records },
            remaining: header.record_count,
            failed: false,
        }
    }

    fn next_record(&mut self) -> Result<Record<'a>, RecordError> {
        let length = usize::try_from(self.cursor.varint()?).map_err(|_| RecordError::Length)?;
        let body = self.cursor.take(length)?;
        let mut cursor = Cursor { bytes: body };
        let _attributes = cursor.take(1)?;
        let timestamp_delta = cursor.varint()?;
        let offset_delta = u32::try_from(cursor.varint()?).map_err(|_| RecordError::Length)?;
        let key = cursor.bytes_field()?;
        let value = cursor.bytes_field()?;
        let header_count = u32::try_from(cursor.varint()?).map_err(|_| RecordError::Length)?;
        let headers = cursor.bytes;
        let mut check = Cursor { bytes: headers };
        for _ in 0..header_count {
            check.bytes_field()?.ok_or(RecordError::Length)?;
            check.bytes_field()?;
        }
        if !check.bytes.is_empty() {
            return Err(RecordError::Trailing);
        }
        Ok(Record {
            offset_delta,
            timestamp_delta,
            key,
            value,
            header_count,
            headers,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if self.cursor.bytes.is_empty() {
                return None;
            }
            self.failed = true;
            return Some(Err(RecordError::Trailing));
        }
        self.remaining -= 1;
        let item = self.next_record();
        self.failed = item.is_err();
        Some(item)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordError> {
        if len > self.bytes.len() {
            return Err(RecordError::Length);
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn varint(&mut self) -> Result<i64, RecordError> {
        let mut raw: u64 = 0;
        for (i, byte) in self.bytes.iter().enumerate().take(10) {
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = self.bytes.get(i + 1..).unwrap_or_default();
                return Ok(zigzag_decode(raw));
            }
        }
        Err(RecordError::Varint)
    }

    /// A length-prefixed byte string, `None` for length -1.
    fn bytes_field(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        match self.varint()? {
            -1 => Ok(None),
            len => Ok(Some(
                self.take(usize::try_from(len).map_err(|_| RecordError::Length)?)?,
            )),
        }
    }
}

fn zigzag_decode(raw: u64) -> i64 {
    // The casts reinterpret bits, which is what zigzag decoding is.
    #[allow(clippy::cast_possible_wrap)]
    let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
    value
}

fn zigzag_encode(value: i64) -> u64 {
    #[allow(clippy::cast_sign_loss)]
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    raw
}

fn varint_len(value: i64) -> usize {
    let raw = zigzag_encode(value);
    let bits = 64 - raw.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = zigzag_encode(value);
    loop {
        // Taking the low seven bits is the encoding.
        #[allow(clippy::cast_possible_truncation)]
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn field_len(field: Option<&[u8]>) -> usize {
    match field {
        None => varint_len(-1),
        Some(bytes) => varint_len(len_i64(bytes)) + bytes.len(),
    }
}

fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, len_i64(bytes));
            out.extend_from_slice(bytes);
        }
    }
}

fn len_i64(bytes: &[u8]) -> i64 {
    i64::try_from(bytes.len()).expect("slice length fits i64")
}

/// Idempotent-producer fields of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerFields {
    /// Producer id, -1 for none.
    pub producer_id: i64,
    /// Producer epoch, -1 for none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 for none.
    pub base_sequence: i32,
}

impl ProducerFields {
    /// A producer that is not idempotent.
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// A record's headers: `(key, value)` pairs.
pub type Headers<'h> = &'h [(&'h [u8], Option<&'h [u8]>)];

/// Encodes records into one uncompressed batch. Reuse one builder with [`BatchBuilder::clear`]
/// to encode many batches without allocating.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    record_count: u32,
    base_timestamp: Option<TimestampMs>,
    max_timestamp: TimestampMs,
    producer: ProducerFields,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    /// An empty builder.
    #[must_use]
    pub fn new() -> BatchBuilder {
        BatchBuilder {
            buf: vec![0; BATCH_HEADER_SIZE],
            record_count: 0,
            base_timestamp: None,
            max_timestamp: TimestampMs(i64::MIN),
            producer: ProducerFields::NONE,
        }
    }

    /// Forgets the records, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(BATCH_HEADER_SIZE);
        self.record_count = 0;
        self.base_timestamp = None;
        self.max_timestamp = TimestampMs(i64::MIN);
        self.producer = ProducerFields::NONE;
    }

    /// Sets the idempotent-producer fields.
    pub fn set_producer(&mut self, producer: ProducerFields) {
        self.producer = producer;
    }

    /// Records so far.
    #[must_use]
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Size of the batch [`BatchBuilder::finish`] would produce.
    #[must_use]
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The size [`BatchBuilder::finish`] would produce after `push` of this record: a
    /// caller keeps batches under [`crate::batch::BATCH_SIZE_MAX`] by asking first.
    #[must_use]
    pub fn size_with(
        &self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Headers<'_>,
    ) -> usize {
        let body = self.record_body_len(timestamp, key, value, headers);
        let length = i64::try_from(body).map_or(10, varint_len);
        self.buf.len() + length + body
    }

    /// Bytes of a record after its length varint.
    fn record_body_len(
        &self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Headers<'_>,
    ) -> usize {
        let base = self.base_timestamp.unwrap_or(timestamp);
        let timestamp_delta = timestamp.0.saturating_sub(base.0);
        let offset_delta = i64::from(self.record_count);
        let header_bytes: usize = headers
            .iter()
            .map(|(k, v)| field_len(Some(k)) + field_len(*v))
            .sum();
        let header_count = i64::try_from(headers.len()).unwrap_or(i64::MAX);
        1 + varint_len(timestamp_delta)
            + varint_len(offset_delta)
            + field_len(key)
            + field_len(value)
            + varint_len(header_count)
            + header_bytes
    }

    /// Appends a record with the next offset delta.
    pub fn push(
        &mut self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Headers<'_>,
    ) {
        let body = self.record_body_len(timestamp, key, value, headers);
        let base = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp.0.saturating_sub(base.0);
        let offset_delta = i64::from(self.record_count);
        let header_count = i64::try_from(headers.len()).expect("header count fits i64");
        self.buf.reserve(body + 5);
        put_varint(
            &mut self.buf,
            i64::try_from(body).expect("record size fits i64"),
        );
        self.buf.push(0);
        put_varint(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_field(&mut self.buf, key);
        put_field(&mut self.buf, value);
        put_varint(&mut self.buf, header_count);
        for (key, value) in headers {
            put_field(&mut self.buf, Some(key));
            put_field(&mut self.buf, *value);
        }
        self.record_count += 1;
    }

    /// The encoded batch (base offset 0, no leader epoch, CRC set), leaving the builder
    /// empty. Panics on an empty builder: an empty batch is never valid.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        assert!(self.record_count > 0, "empty batch");
        let base_timestamp = self.base_timestamp.unwrap_or_default();
        let header = BatchHeader {
            base_offset: Offset(0),
            size: u32::try_from(self.buf.len()).expect("batch size fits u32"),
            leader_epoch: LeaderEpoch::NONE,
            crc: 0,
            attributes: 0,
            last_offset_delta: self.record_count - 1,
            base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer.producer_id,
            producer_epoch: self.producer.producer_epoch,
            base_sequence: self.producer.base_sequence,
            record_count: self.record_count,
        };
        batch::write_header(&mut self.buf, &header);
        out.clear();
        out.extend_from_slice(&self.buf);
        self.clear();
    }

    /// Like [`BatchBuilder::finish_into`], into a new vector.
    #[must_use]
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len());
        self.finish_into(&mut out);
        out
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;
    use crate::batch::{validate, validate_with_records};
    use proptest::prelude::*;

    #[test]
    fn size_with_is_the_size_after_push() {
        let mut builder = BatchBuilder::new();
        let big = vec![7u8; 300_000];
        /// Timestamp, key, value, headers.
        type Case<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>, Headers<'a>);
        let cases: [Case<'_>; 4] = [
            (1_000, Some(b"k"), Some(b"v"), &[]),
            (
                1_000 + 70_000,
                None,
                Some(&big),
                &[(b"h", Some(b"x")), (b"n", None)],
            ),
            (999, Some(&big), None, &[]),
            (5_000_000_000, Some(b""), Some(b""), &[(b"", Some(b""))]),
        ];
        for (timestamp, key, value, headers) in cases {
            let expected = builder.size_with(TimestampMs(timestamp), key, value, headers);
            builder.push(TimestampMs(timestamp), key, value, headers);
            assert_eq!(builder.size(), expected);
        }
        let size = builder.size();
        assert_eq!(builder.finish().len(), size);
    }

    /// Stamping producer fields updates the CRC to what building with them gives.
    #[test]
    fn stamp_producer_equals_building_with_the_fields() {
        for (records, value_len) in [(1usize, 0usize), (1, 1000), (100, 1024), (3, 70_000)] {
            let value = vec![0x5a; value_len];
            let fields = ProducerFields {
                producer_id: 0x0102_0304_0506,
                producer_epoch: 3,
                base_sequence: 77,
            };
            let build = |producer: ProducerFields| {
                let mut builder = BatchBuilder::new();
                builder.set_producer(producer);
                for i in 0..records {
                    builder.push(TimestampMs(1_000 + i as i64), None, Some(&value), &[]);
                }
                builder.finish()
            };
            let mut stamped = build(ProducerFields::NONE);
            crate::batch::stamp_producer(&mut stamped, fields).unwrap();
            assert_eq!(stamped, build(fields), "{records} x {value_len}");
            let header = validate(&stamped).unwrap();
            assert_eq!(header.producer_id, fields.producer_id);
            assert_eq!(header.base_sequence, 77);
            // Stamped again (a new session): still valid.
            crate::batch::stamp_producer(&mut stamped, ProducerFields::NONE).unwrap();
            assert_eq!(stamped, build(ProducerFields::NONE));
        }
        assert!(crate::batch::stamp_producer(&mut [0u8; 10], ProducerFields::NONE).is_err());
    }

    #[test]
    fn varint_roundtrip_edges() {
        for value in [
            0i64,
            -1,
            1,
            63,
            -64,
            64,
            300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            let mut cursor = Cursor { bytes: &out };
            assert_eq!(cursor.varint(), Ok(value));
            assert!(cursor.bytes.is_empty());
        }
    }

    proptest! {
        #[test]
        fn batch_roundtrip(
            records in proptest::collection::vec(
                (0i64..1_000_000, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
                 proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..8),
                     proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..3)),
                1..20),
        ) {
            let mut builder = BatchBuilder::new();
            for (ts, key, value, headers) in &records {
                let headers: Vec<(&[u8], Option<&[u8]>)> =
                    headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
                builder.push(TimestampMs(*ts), key.as_deref(), value.as_deref(), &headers);
            }
            let bytes = builder.finish();
            let header = validate_with_records(&bytes).unwrap();
            prop_assert_eq!(header.record_count as usize, records.len());
            let decoded: Vec<_> = RecordIter::new(&header, &bytes).collect::<Result<_, _>>().unwrap();
            for (i, (record, (ts, key, value, headers))) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(record.offset_delta as usize, i);
                prop_assert_eq!(record.timestamp(&header), TimestampMs(*ts));
                prop_assert_eq!(record.key, key.as_deref());
                prop_assert_eq!(record.value, value.as_deref());
                let got: Vec<_> = record.headers().collect();
                let want: Vec<_> = headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = validate_with_records(&bytes);
            if let Ok(header) = BatchHeader::parse(&bytes) {
                for _ in RecordIter::new(&header, &bytes) {}
            }
        }
    }

    #[test]
    fn crc_catches_a_flip_and_patch_keeps_it() {
        let mut builder = BatchBuilder::new();
        builder.push(TimestampMs(5), Some(b"k"), Some(b"value"), &[]);
        let mut bytes = builder.finish();
        batch::patch_base(&mut bytes, Offset(42), LeaderEpoch(7));
        let header = validate(&bytes).unwrap();
        assert_eq!(header.base_offset, Offset(42));
        assert_eq!(header.leader_epoch, LeaderEpoch(7));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            validate(&bytes),
            Err(batch::Corruption::CrcMismatch { .. })
        ));
    }
}
