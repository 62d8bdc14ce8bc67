//! Snapshot files: `<offset>.snapshot` beside the segments, each holding an owner's state
//! as of a log offset (the replicator's producer table and epoch history, as Kafka's
//! producer snapshots), so that opening a partition replays only the batches after it.
//! The engine frames, names, writes and deletes them; what is inside is the owner's.
//!
//! A snapshot at offset `X` describes the batches below `X`. It is valid while the log
//! holds exactly those batches up to `X`: a truncation below `X` deletes it first, an
//! open deletes snapshots outside `[log_start, log_end]` (a crash can lose the log's
//! unsynced tail, not a synced snapshot), and retention deletes those below the new
//! log start. Written atomically: `<offset>.snapshot.tmp`, fdatasync, rename, directory
//! sync (a leftover `.tmp` is removed on open like every other).
//!
//! ```text
//! 0  4  magic "SLSN"        4  4  version 1          8  8  offset (== the file name's)
//! 16 4  payload length      20 4  crc32c of payload  24 4  crc32c of bytes 0..24
//! 28 4  zero                32 -  payload, then zeros to a block
//! ```
//! All little-endian. Anything that fails a check is not a snapshot: the reader falls
//! back to an older one, or to replaying the whole log.
#![deny(clippy::indexing_slicing)]

use crate::ids::Offset;
use crate::segment::BLOCK_SIZE;

/// Extension of snapshot files.
pub const SNAPSHOT_SUFFIX: &str = "snapshot";
/// A payload larger than this is damage (the replicator's largest is a few MiB).
pub const SNAPSHOT_PAYLOAD_MAX: usize = 64 << 20;
/// Snapshots kept per partition: the newest ones (older ones only serve when all newer
/// ones are damaged, or after a truncation below them).
pub const SNAPSHOTS_KEPT: usize = 3;

const MAGIC: &[u8; 4] = b"SLSN";
const VERSION: u32 = 1;
/// Bytes before the payload.
pub const SNAPSHOT_HEADER_SIZE: usize = 32;

/// Why a snapshot file was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDamage {
    /// Shorter than its header or its payload.
    #[error("truncated")]
    Truncated,
    /// Not a snapshot file, or a version this build does not read.
    #[error("bad magic or version")]
    Format,
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The offset inside is not the file name's.
    #[error("offset {found} inside, {named} in the name")]
    OffsetMismatch {
        /// From the name.
        named: Offset,
        /// From the header.
        found: Offset,
    },
    /// The payload length is beyond [`SNAPSHOT_PAYLOAD_MAX`].
    #[error("payload of {0} bytes")]
    TooLarge(u64),
    /// The payload's checksum does not match.
    #[error("payload checksum mismatch")]
    PayloadChecksum,
}

/// The file name of the snapshot at `offset`: 20 zero-padded digits, as segments.
#[must_use]
pub fn snapshot_file_name(offset: Offset) -> String {
    crate::segment::segment_file_name(offset, SNAPSHOT_SUFFIX)
}

/// The offset named by a `.snapshot` file name, if it is one.
#[must_use]
pub fn parse_snapshot_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".snapshot")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok().map(Offset))
        .flatten()
}

/// The file bytes of a snapshot at `offset` holding `payload`, padded to a block.
#[must_use]
pub fn encode(offset: Offset, payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() <= SNAPSHOT_PAYLOAD_MAX,
        "snapshot payload of {} bytes",
        payload.len()
    );
    let mut out =
        Vec::with_capacity((SNAPSHOT_HEADER_SIZE + payload.len()).next_multiple_of(BLOCK_SIZE));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&offset.0.to_le_bytes());
    let len = u32::try_from(payload.len()).expect("bounded by SNAPSHOT_PAYLOAD_MAX");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(BLOCK_SIZE), 0);
    out
}

/// The payload of snapshot file bytes named `offset`, after every check.
pub fn decode(bytes: &[u8], offset: Offset) -> Result<&[u8], SnapshotDamage> {
    let field = |at: usize, n: usize| bytes.get(at..at + n).ok_or(SnapshotDamage::Truncated);
    let u32_at = |at| -> Result<u32, SnapshotDamage> {
        let mut le = [0u8; 4];
        le.copy_from_slice(field(at, 4)?);
        Ok(u32::from_le_bytes(le))
    };
    if field(0, 4)? != MAGIC || u32_at(4)? != VERSION {
        return Err(SnapshotDamage::Format);
    }
    if u32_at(24)? != crc32c::crc32c(field(0, 24)?) {
        return Err(SnapshotDamage::HeaderChecksum);
    }
    let mut le = [0u8; 8];
    le.copy_from_slice(field(8, 8)?);
    let found = Offset(u64::from_le_bytes(le));
    if found != offset {
        return Err(SnapshotDamage::OffsetMismatch {
            named: offset,
            found,
        });
    }
    let len = u32_at(16)?;
    let len_usize = usize::try_from(len).map_err(|_| SnapshotDamage::TooLarge(len.into()))?;
    if len_usize > SNAPSHOT_PAYLOAD_MAX {
        return Err(SnapshotDamage::TooLarge(len.into()));
    }
    let payload = field(SNAPSHOT_HEADER_SIZE, len_usize)?;
    if u32_at(20)? != crc32c::crc32c(payload) {
        return Err(SnapshotDamage::PayloadChecksum);
    }
    Ok(payload)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_every_damage_is_refused() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7).to_le_bytes()[0]).collect();
        let bytes = encode(Offset(1234), &payload);
        assert_eq!(bytes.len() % BLOCK_SIZE, 0);
        assert_eq!(decode(&bytes, Offset(1234)), Ok(&payload[..]));
        assert!(matches!(
            decode(&bytes, Offset(1235)),
            Err(SnapshotDamage::OffsetMismatch { .. })
        ));
        // Every bit of the header and payload matters; the padding does not.
        for at in 0..SNAPSHOT_HEADER_SIZE - 4 + payload.len() {
            let at = if at >= 28 { at + 4 } else { at };
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad, Offset(1234)).is_err(), "flip at {at}");
        }
        for cut in [
            0,
            3,
            20,
            31,
            32,
            100,
            SNAPSHOT_HEADER_SIZE + payload.len() - 1,
        ] {
            assert!(decode(&bytes[..cut], Offset(1234)).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(&encode(Offset(0), &[]), Offset(0)), Ok(&[][..]));
    }

    #[test]
    fn names() {
        assert_eq!(
            snapshot_file_name(Offset(52811)),
            "00000000000000052811.snapshot"
        );
        assert_eq!(
            parse_snapshot_name("00000000000000052811.snapshot"),
            Some(Offset(52811))
        );
        assert_eq!(
            parse_snapshot_name("00000000000000052811.snapshot.tmp"),
            None
        );
        assert_eq!(parse_snapshot_name("00000000000000052811.log"), None);
        assert_eq!(parse_snapshot_name("52811.snapshot"), None);
    }
}
