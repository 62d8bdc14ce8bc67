//! The container both index files share: a checksummed header, fixed-size entries, and
//! zero padding to a whole block (the files are written with O_DIRECT).
//!
//! ```text
//! 0   4  magic          "SLIX" (offset index) or "SLTI" (time index)
//! 4   2  version        1
//! 6   2  entry_size     bytes per entry
//! 8   4  entry_count
//! 12  4  crc32c         over bytes 16..16 + 40 + entry_count * entry_size
//! 16 40  meta           five little-endian u64 words, owned by the index kind
//! 56  -  entries
//! ```
//! An index is only ever a hint: a file that fails any check is rebuilt from the log.
#![deny(clippy::indexing_slicing)]

use crate::segment::BLOCK_SIZE;

const HEADER_SIZE: usize = 56;
const META_WORDS: usize = 5;
const VERSION: u16 = 1;

/// Why an index file was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// Wrong magic, version or entry size.
    #[error("not a shardlog index file (magic, version or entry size)")]
    Format,
    /// Fewer bytes than the header says.
    #[error("truncated index file")]
    Truncated,
    /// The checksum does not match.
    #[error("index checksum mismatch")]
    Checksum,
    /// Entries out of order or pointing past the data.
    #[error("index entries inconsistent")]
    Inconsistent,
}

/// Encodes an index file: `entries` holds `entry_count` entries of `entry_size` bytes.
pub(crate) fn encode(
    magic: [u8; 4],
    meta: [u64; META_WORDS],
    entry_size: usize,
    entries: &[u8],
) -> Vec<u8> {
    assert!(
        entries.len() % entry_size == 0,
        "{} % {entry_size}",
        entries.len()
    );
    let entry_count =
        u32::try_from(entries.len() / entry_size).expect("index entry count fits u32");
    let mut out = Vec::with_capacity((HEADER_SIZE + entries.len()).next_multiple_of(BLOCK_SIZE));
    out.extend_from_slice(&magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(
        &u16::try_from(entry_size)
            .expect("entry size fits u16")
            .to_le_bytes(),
    );
    out.extend_from_slice(&entry_count.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for word in meta {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(entries);
    let crc = crc32c::crc32c(out.get(16..).unwrap_or_default());
    if let Some(field) = out.get_mut(12..16) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(BLOCK_SIZE), 0);
    out
}

/// Decodes an index file, returning its meta words and entry bytes.
pub(crate) fn decode(
    magic: [u8; 4],
    entry_size: usize,
    bytes: &[u8],
) -> Result<([u64; META_WORDS], &[u8]), IndexError> {
    let header = bytes.get(..HEADER_SIZE).ok_or(IndexError::Truncated)?;
    let word16 = |at: usize| {
        header
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    };
    let word32 = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    if header.get(..4) != Some(&magic[..])
        || word16(4) != Some(VERSION)
        || word16(6).map(usize::from) != Some(entry_size)
    {
        return Err(IndexError::Format);
    }
    let entry_count = word32(8).ok_or(IndexError::Truncated)? as usize;
    let end = entry_count
        .checked_mul(entry_size)
        .and_then(|n| n.checked_add(HEADER_SIZE))
        .ok_or(IndexError::Format)?;
    let covered = bytes.get(16..end).ok_or(IndexError::Truncated)?;
    if word32(12) != Some(crc32c::crc32c(covered)) {
        return Err(IndexError::Checksum);
    }
    let mut meta = [0u64; META_WORDS];
    for (i, word) in meta.iter_mut().enumerate() {
        let at = 16 + i * 8;
        *word = header
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or(IndexError::Truncated)?;
    }
    Ok((meta, bytes.get(HEADER_SIZE..end).unwrap_or_default()))
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects_damage() {
        let entries: Vec<u8> = (0u8..48).collect();
        let file = encode(*b"SLIX", [1, 2, 3, 4, 5], 8, &entries);
        assert_eq!(file.len() % BLOCK_SIZE, 0);
        let (meta, got) = decode(*b"SLIX", 8, &file).unwrap();
        assert_eq!(meta, [1, 2, 3, 4, 5]);
        assert_eq!(got, &entries[..]);
        assert_eq!(decode(*b"SLTI", 8, &file), Err(IndexError::Format));
        for at in 0..HEADER_SIZE + entries.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x40;
            assert!(decode(*b"SLIX", 8, &bad).is_err(), "flip at {at} accepted");
        }
        assert!(decode(*b"SLIX", 8, &vec![0; BLOCK_SIZE]).is_err());
        assert_eq!(decode(*b"SLIX", 8, &file[..30]), Err(IndexError::Truncated));
    }
}
