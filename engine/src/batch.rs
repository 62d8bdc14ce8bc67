//! The record batch: Kafka's RecordBatch v2 (magic 2), byte for byte, all integers big-endian.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset            patched by the leader on append (not under the CRC)
//!      8     4  batch_length           bytes after this field: batch size = 12 + batch_length
//!     12     4  partition_leader_epoch patched by the leader on append (not under the CRC)
//!     16     1  magic                  always 2
//!     17     4  crc                    CRC32C of bytes 21..end
//!     21     2  attributes             bits 0-2 compression, bit 3 timestamp type,
//!                                      bit 4 transactional, bit 5 control
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id            -1: not idempotent
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  record_count
//!     61     -  records (see `record.rs`)
//! ```
//!
//! A batch is written, indexed, replicated and fetched as the same bytes. Only the base
//! offset and the leader epoch are ever patched; the CRC does not cover them, so it stays
//! valid. Bytes from a disk or a socket are input: every accessor here is reached only
//! through [`BatchHeader::parse`], which checks lengths first, and [`validate`] adds the CRC.
#![deny(clippy::indexing_slicing)]

use crate::ids::{LeaderEpoch, Offset, TimestampMs};
use crate::record::{self, ProducerFields, RecordIter};

/// Size of the fixed batch header.
pub const BATCH_HEADER_SIZE: usize = 61;
/// Bytes before `batch_length` counts: base offset (8) and the length itself (4).
pub const BATCH_LENGTH_PREFIX: usize = 12;
/// The largest batch accepted anywhere: bigger lengths are corruption, not allocations.
pub const BATCH_SIZE_MAX: usize = 16 << 20;
/// The only batch format shardlog reads or writes.
pub const MAGIC_V2: u8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const _: () = assert!(RECORD_COUNT_AT + 4 == BATCH_HEADER_SIZE);
const _: () = assert!(ATTRIBUTES_AT == CRC_AT + 4);
const _: () = assert!(BATCH_HEADER_SIZE > BATCH_LENGTH_PREFIX);

/// What is wrong with bytes that were supposed to be a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Fewer bytes than a header, or than the header's length says.
    #[error("truncated: {available} bytes of {needed}")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes there.
        available: u64,
    },
    /// `batch_length` is below the header size or above [`BATCH_SIZE_MAX`].
    #[error("batch length {0} out of bounds")]
    BadLength(i64),
    /// The magic byte is not 2.
    #[error("magic {0}, expected 2")]
    BadMagic(u8),
    /// The CRC32C over attributes..end does not match.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Negative base offset, record count or last offset delta, or a count that does not fit.
    #[error("bad header field {field}: {value}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// The batch does not start where the log expects it.
    #[error("offset {found}, expected {expected}")]
    OffsetMismatch {
        /// The log's next offset at this point.
        expected: Offset,
        /// The batch's base offset.
        found: Offset,
    },
    /// A record inside the batch does not parse.
    #[error("record {index}: {reason}")]
    BadRecord {
        /// Index of the record in the batch.
        index: u32,
        /// What failed.
        reason: record::RecordError,
    },
}

/// Compression codec from the attributes' low three bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Records are stored as they are.
    None,
    /// gzip, snappy, lz4 or zstd (1..=4; 5..=7 are no codec): stored and served opaque,
    /// never decompressed by the broker.
    Codec(u8),
}

/// The codecs Kafka defines, by their attribute value: gzip 1, snappy 2, lz4 3, zstd 4.
pub const CODEC_NAMES: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];

impl Compression {
    /// The codec's name (`none`, `gzip`, `snappy`, `lz4`, `zstd`), or `None` for a value
    /// that is no codec (5..=7).
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        match self {
            Compression::None => Some("none"),
            Compression::Codec(codec) => {
                CODEC_NAMES.get(usize::from(codec).wrapping_sub(1)).copied()
            }
        }
    }
}

/// The decoded fixed header of a batch whose length fields have been checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Whole batch size in bytes, header included.
    pub size: u32,
    /// Epoch of the leader that appended it.
    pub leader_epoch: LeaderEpoch,
    /// CRC32C stored in the header.
    pub crc: u32,
    /// Raw attributes.
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: u32,
    /// Timestamp of the first record.
    pub base_timestamp: TimestampMs,
    /// Largest record timestamp.
    pub max_timestamp: TimestampMs,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: u32,
}

impl BatchHeader {
    /// Decodes the header at the start of `bytes`, checking magic and length bounds but
    /// not the CRC; `bytes` may hold less than the whole batch.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, Corruption> {
        let header: &[u8; BATCH_HEADER_SIZE] = bytes
            .get(..BATCH_HEADER_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or(Corruption::Truncated {
                needed: BATCH_HEADER_SIZE as u64,
                available: bytes.len() as u64,
            })?;
        let batch_length = i64::from(be_i32(header, BATCH_LENGTH_AT));
        let size = batch_length + BATCH_LENGTH_PREFIX as i64;
        if size < BATCH_HEADER_SIZE as i64 || size > BATCH_SIZE_MAX as i64 {
            return Err(Corruption::BadLength(batch_length));
        }
        let magic = header[MAGIC_AT];
        if magic != MAGIC_V2 {
            return Err(Corruption::BadMagic(magic));
        }
        let base_offset = non_negative("base_offset", be_i64(header, BASE_OFFSET_AT))?;
        let last_offset_delta = non_negative(
            "last_offset_delta",
            i64::from(be_i32(header, LAST_OFFSET_DELTA_AT)),
        )?;
        let record_count =
            non_negative("record_count", i64::from(be_i32(header, RECORD_COUNT_AT)))?;
        Ok(BatchHeader {
            base_offset: Offset(base_offset),
            size: u32::try_from(size).map_err(|_| Corruption::BadLength(batch_length))?,
            leader_epoch: LeaderEpoch(be_i32(header, LEADER_EPOCH_AT)),
            crc: be_u32(header, CRC_AT),
            attributes: be_i16(header, ATTRIBUTES_AT),
            last_offset_delta: u32::try_from(last_offset_delta)
                .map_err(|_| bad("last_offset_delta", i64::MAX))?,
            base_timestamp: TimestampMs(be_i64(header, BASE_TIMESTAMP_AT)),
            max_timestamp: TimestampMs(be_i64(header, MAX_TIMESTAMP_AT)),
            producer_id: be_i64(header, PRODUCER_ID_AT),
            producer_epoch: be_i16(header, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(header, BASE_SEQUENCE_AT),
            record_count: u32::try_from(record_count).map_err(|_| bad("record_count", i64::MAX))?,
        })
    }

    /// Offset of the last record in the batch.
    #[must_use]
    pub fn last_offset(&self) -> Offset {
        self.base_offset.advance(u64::from(self.last_offset_delta))
    }

    /// The offset after the batch: where the next batch must start.
    #[must_use]
    pub fn next_offset(&self) -> Offset {
        self.last_offset().advance(1)
    }

    /// The compression codec.
    #[must_use]
    pub fn compression(&self) -> Compression {
        // The low three bits are the codec; the truncation is the point.
        #[allow(clippy::cast_possible_truncation)]
        match (self.attributes & 0x7) as u8 {
            0 => Compression::None,
            codec => Compression::Codec(codec),
        }
    }

    /// Whether this is a control batch (transaction markers); carried, never produced here.
    #[must_use]
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the batch belongs to a transaction; shardlog has none.
    #[must_use]
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// Whether the broker sets the timestamps (LogAppendTime) rather than the producer.
    #[must_use]
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }
}

/// Checks that `bytes` is exactly one whole batch with a matching CRC.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, Corruption> {
    let header = BatchHeader::parse(bytes)?;
    if bytes.len() != header.size as usize {
        return Err(Corruption::Truncated {
            needed: u64::from(header.size),
            available: bytes.len() as u64,
        });
    }
    let covered = bytes.get(ATTRIBUTES_AT..).unwrap_or_default();
    let computed = crc32c::crc32c(covered);
    if computed != header.crc {
        return Err(Corruption::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Like [`validate`], and also walks every record of an uncompressed batch, checking that
/// the record count, the offset deltas and every length agree with the bytes. This is what
/// a produce request goes through: a client can send a batch whose CRC is right and whose
/// records are not. A compressed batch is checked as [`check_compressed`] says: its
/// records are not looked into.
pub fn validate_with_records(bytes: &[u8]) -> Result<BatchHeader, Corruption> {
    let header = validate(bytes)?;
    if header.compression() != Compression::None {
        check_compressed(&header)?;
        return Ok(header);
    }
    walk_records(&header, bytes)?;
    Ok(header)
}

/// What a leader checks of a batch a producer sent, once, before it gets offsets:
/// [`validate_with_records`] (length, CRC, every record of an uncompressed batch), no
/// control or transactional bits (shardlog has no transactions), offsets without gaps
/// (`record_count == last_offset_delta + 1`, as Kafka requires of a produced v2 batch),
/// and timestamps that agree with the records: with CreateTime, the header's max
/// timestamp is the largest record timestamp (the time index trusts it).
///
/// A compressed batch (a client's gzip, snappy, lz4 or zstd) is stored and served as it
/// came: the broker checks the outer batch ([`check_compressed`]: a known codec, a
/// non-empty payload, the record count against the last offset delta; the CRC covers the
/// payload) and never decompresses it, so its max timestamp is the client's word.
pub fn validate_produced(bytes: &[u8]) -> Result<BatchHeader, Corruption> {
    let header = validate(bytes)?;
    if header.is_control() || header.is_transactional() {
        return Err(bad("attributes", i64::from(header.attributes)));
    }
    if header.compression() != Compression::None {
        check_compressed(&header)?;
        return Ok(header);
    }
    let max = walk_records(&header, bytes)?;
    check_contiguous(&header)?;
    if !header.is_log_append_time() && max != header.max_timestamp.0 {
        return Err(bad("max_timestamp", header.max_timestamp.0));
    }
    Ok(header)
}

/// The checks of a compressed batch's outer batch, all the broker can see without
/// decompressing: a codec Kafka defines (1..=4), at least one record, a record count that
/// matches the offsets the batch takes (`last_offset_delta + 1`), and a payload to
/// decompress. The CRC ([`validate`]) already covers the payload's bytes.
pub fn check_compressed(header: &BatchHeader) -> Result<(), Corruption> {
    let Compression::Codec(codec) = header.compression() else {
        return Ok(());
    };
    if header.compression().name().is_none() {
        return Err(bad("compression", i64::from(codec)));
    }
    if header.record_count == 0 {
        return Err(bad("record_count", 0));
    }
    if header.size as usize <= BATCH_HEADER_SIZE {
        return Err(bad("compressed payload bytes", 0));
    }
    check_contiguous(header)
}

/// A produced batch takes one offset per record: `record_count == last_offset_delta + 1`.
/// Offsets are assigned from the header, so a batch that claimed more offsets than it has
/// records would leave holes, and one that claimed fewer would give two records one offset.
fn check_contiguous(header: &BatchHeader) -> Result<(), Corruption> {
    if u64::from(header.record_count) != u64::from(header.last_offset_delta) + 1 {
        return Err(bad(
            "last_offset_delta",
            i64::from(header.last_offset_delta),
        ));
    }
    Ok(())
}

/// Walks the records of an uncompressed batch: count, offset deltas and lengths must
/// agree with the header. Returns the largest record timestamp.
fn walk_records(header: &BatchHeader, bytes: &[u8]) -> Result<i64, Corruption> {
    if header.record_count == 0 {
        return Err(bad("record_count", 0));
    }
    let mut last_delta = None;
    let mut count = 0u32;
    let mut max_timestamp = i64::MIN;
    for (index, item) in RecordIter::new(header, bytes).enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let record = item.map_err(|reason| Corruption::BadRecord { index, reason })?;
        if last_delta.is_some_and(|last| record.offset_delta <= last) {
            return Err(Corruption::BadRecord {
                index,
                reason: record::RecordError::OffsetDelta,
            });
        }
        last_delta = Some(record.offset_delta);
        count += 1;
        let timestamp = header
            .base_timestamp
            .0
            .checked_add(record.timestamp_delta)
            .ok_or(bad("timestamp_delta", record.timestamp_delta))?;
        max_timestamp = max_timestamp.max(timestamp);
    }
    if count != header.record_count {
        return Err(bad("record_count", i64::from(header.record_count)));
    }
    if last_delta != Some(header.last_offset_delta) {
        return Err(bad(
            "last_offset_delta",
            i64::from(header.last_offset_delta),
        ));
    }
    Ok(max_timestamp)
}

/// Sets the base offset and leader epoch of a batch in place. The CRC does not cover
/// either field, so the batch stays valid: this is how the leader assigns offsets
/// without re-encoding.
pub fn patch_base(bytes: &mut [u8], base_offset: Offset, epoch: LeaderEpoch) {
    assert!(
        bytes.len() >= BATCH_HEADER_SIZE,
        "patching {} bytes",
        bytes.len()
    );
    let base = i64::try_from(base_offset.0).expect("offset fits i64");
    if let Some(field) = bytes.get_mut(BASE_OFFSET_AT..BASE_OFFSET_AT + 8) {
        field.copy_from_slice(&base.to_be_bytes());
    }
    if let Some(field) = bytes.get_mut(LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4) {
        field.copy_from_slice(&epoch.0.to_be_bytes());
    }
}

/// Sets the idempotent-producer fields (producer id, epoch, base sequence) of a whole
/// batch in place and updates its CRC, which covers them; see [`stamped_header`].
pub fn stamp_producer(bytes: &mut [u8], producer: ProducerFields) -> Result<(), Corruption> {
    let header = stamped_header(bytes, producer)?;
    if let Some(head) = bytes.get_mut(..BATCH_HEADER_SIZE) {
        head.copy_from_slice(&header);
    }
    Ok(())
}

/// Records after which [`stamped_header`] updates the CRC arithmetically instead of
/// reading the records again.
const CRC_UPDATE_FROM: usize = 16 << 10;

/// The header of a whole batch with its idempotent-producer fields (producer id, epoch,
/// base sequence) set and its CRC updated for them: the batch stamped is this header
/// followed by the batch's records, untouched (a client sends the two without copying
/// the records). Only the lengths are checked. Past `CRC_UPDATE_FROM` bytes of records
/// the CRC is not recomputed but updated: CRC32C is linear, so the change of the covered
/// header bytes, shifted over the records' length (`shift`, logarithmic in it), is xored
/// into the old CRC; a batch whose CRC was wrong stays wrong, and the leader refuses it as
/// it would have.
pub fn stamped_header(
    batch: &[u8],
    producer: ProducerFields,
) -> Result<[u8; BATCH_HEADER_SIZE], Corruption> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() != header.size as usize {
        return Err(Corruption::Truncated {
            needed: u64::from(header.size),
            available: batch.len() as u64,
        });
    }
    let mut head = [0u8; BATCH_HEADER_SIZE];
    if let Some(original) = batch.get(..BATCH_HEADER_SIZE) {
        head.copy_from_slice(original);
    }
    let covered =
        |h: &[u8; BATCH_HEADER_SIZE]| crc32c::crc32c(h.get(ATTRIBUTES_AT..).unwrap_or_default());
    let old_covered = covered(&head);
    let fields: [(usize, &[u8]); 3] = [
        (PRODUCER_ID_AT, &producer.producer_id.to_be_bytes()),
        (PRODUCER_EPOCH_AT, &producer.producer_epoch.to_be_bytes()),
        (BASE_SEQUENCE_AT, &producer.base_sequence.to_be_bytes()),
    ];
    for (at, value) in fields {
        if let Some(field) = head.get_mut(at..at + value.len()) {
            field.copy_from_slice(value);
        }
    }
    let records = batch.get(BATCH_HEADER_SIZE..).unwrap_or_default();
    let crc = if records.len() < CRC_UPDATE_FROM {
        crc32c::crc32c_append(covered(&head), records)
    } else {
        header.crc ^ crc_shift(old_covered ^ covered(&head), records.len())
    };
    if let Some(field) = head.get_mut(CRC_AT..CRC_AT + 4) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(head)
}

/// CRC32C's polynomial, reflected.
const CRC32C_POLY: u32 = 0x82f6_3b78;

/// `a * b` modulo the CRC polynomial (bit-reflected: bit 31 is `x^0`), as zlib's
/// `multmodp`.
fn crc_mult(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut m = 1u32 << 31;
    while m != 0 {
        if a & m != 0 {
            product ^= b;
        }
        m >>= 1;
        b = if b & 1 == 1 {
            (b >> 1) ^ CRC32C_POLY
        } else {
            b >> 1
        };
    }
    product
}

/// `x^(2^k)` modulo the polynomial, for k in 0..64 (zlib's `x2n_table`, extended).
#[allow(clippy::indexing_slicing)] // constant bounds, evaluated at compile time
const X2N: [u32; 64] = {
    let mut table = [0u32; 64];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 64 {
        table[k] = p;
        // p = p * p modulo the polynomial (`crc_mult`, written out: this is a const).
        let (mut b, mut square, mut m) = (p, 0u32, 1u32 << 31);
        while m != 0 {
            if p & m != 0 {
                square ^= b;
            }
            m >>= 1;
            b = if b & 1 == 1 {
                (b >> 1) ^ CRC32C_POLY
            } else {
                b >> 1
            };
        }
        p = square;
        k += 1;
    }
    table
};

/// The CRC register `crc` carried over `len` zero bytes: `crc * x^(8 len)`. With it,
/// `crc(A + B) = crc_shift(crc(A), len(B)) ^ crc(B)` for the full CRC32C, which is what
/// lets a change of a batch's first bytes be folded into its CRC.
fn crc_shift(crc: u32, len: usize) -> u32 {
    // x^(8 len) = product of x^(2^(k + 3)) over the bits k of len.
    let mut factor = 1u32 << 31; // x^0
    let mut n = len as u64;
    for power in X2N.iter().skip(3) {
        if n == 0 {
            break;
        }
        if n & 1 == 1 {
            factor = crc_mult(*power, factor);
        }
        n >>= 1;
    }
    crc_mult(factor, crc)
}

/// Writes the header fields of a batch into `out[..BATCH_HEADER_SIZE]` and its CRC over
/// `out[21..]`. `out` already holds the records after the header.
pub(crate) fn write_header(out: &mut [u8], header: &BatchHeader) {
    assert!(
        out.len() == header.size as usize,
        "{} != {}",
        out.len(),
        header.size
    );
    let batch_length = i32::try_from(out.len() - BATCH_LENGTH_PREFIX).expect("batch size bound");
    let fields: [(usize, &[u8]); 12] = [
        (
            BASE_OFFSET_AT,
            &i64::try_from(header.base_offset.0)
                .unwrap_or(i64::MAX)
                .to_be_bytes(),
        ),
        (BATCH_LENGTH_AT, &batch_length.to_be_bytes()),
        (LEADER_EPOCH_AT, &header.leader_epoch.0.to_be_bytes()),
        (MAGIC_AT, &[MAGIC_V2]),
        (ATTRIBUTES_AT, &header.attributes.to_be_bytes()),
        (
            LAST_OFFSET_DELTA_AT,
            &i32::try_from(header.last_offset_delta)
                .unwrap_or(-1)
                .to_be_bytes(),
        ),
        (BASE_TIMESTAMP_AT, &header.base_timestamp.0.to_be_bytes()),
        (MAX_TIMESTAMP_AT, &header.max_timestamp.0.to_be_bytes()),
        (PRODUCER_ID_AT, &header.producer_id.to_be_bytes()),
        (PRODUCER_EPOCH_AT, &header.producer_epoch.to_be_bytes()),
        (BASE_SEQUENCE_AT, &header.base_sequence.to_be_bytes()),
        (
            RECORD_COUNT_AT,
            &i32::try_from(header.record_count)
                .unwrap_or(-1)
                .to_be_bytes(),
        ),
    ];
    for (at, value) in fields {
        if let Some(field) = out.get_mut(at..at + value.len()) {
            field.copy_from_slice(value);
        }
    }
    let crc = crc32c::crc32c(out.get(ATTRIBUTES_AT..).unwrap_or_default());
    if let Some(field) = out.get_mut(CRC_AT..CRC_AT + 4) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
}

fn non_negative(field: &'static str, value: i64) -> Result<u64, Corruption> {
    u64::try_from(value).map_err(|_| bad(field, value))
}

fn bad(field: &'static str, value: i64) -> Corruption {
    Corruption::BadField { field, value }
}

fn be_i16(h: &[u8; BATCH_HEADER_SIZE], at: usize) -> i16 {
    i16::from_be_bytes(array(h, at))
}
fn be_i32(h: &[u8; BATCH_HEADER_SIZE], at: usize) -> i32 {
    i32::from_be_bytes(array(h, at))
}
fn be_u32(h: &[u8; BATCH_HEADER_SIZE], at: usize) -> u32 {
    u32::from_be_bytes(array(h, at))
}
fn be_i64(h: &[u8; BATCH_HEADER_SIZE], at: usize) -> i64 {
    i64::from_be_bytes(array(h, at))
}

/// `N` bytes of the header at `at`; every call site uses a constant inside the header.
fn array<const N: usize>(h: &[u8; BATCH_HEADER_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = h.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}
