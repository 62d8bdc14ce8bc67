//! The frame: how every request and response travels. All integers little-endian.
//!
//! ```text
//! offset size field
//!      0    4  frame_len     bytes after this field; at most FRAME_BYTES_MAX - 4
//!      4    2  api           see `Api`
//!      6    2  version       of the api's messages
//!      8    8  correlation   chosen by the client, echoed in the response
//!     16    4  meta_len      bytes of the rkyv archive that follows
//!     20    2  flags         bit 0: this response is an `ErrorResponse`
//!     22    2  reserved      0
//!     24    -  meta          rkyv archive of the api's message, zero-padded to 8 bytes
//!      -    -  data          raw bytes: record batches, exactly as stored (never re-encoded)
//! ```
//! The whole frame, length included, is read into one 16-byte-aligned buffer, so the meta
//! archive sits 8-aligned at offset 24 and is validated in place (rkyv + bytecheck). Bytes
//! from a socket are untrusted: every length is checked against the buffer and the limits
//! before use, and a bad frame is an error value, never a panic.
#![deny(clippy::indexing_slicing)]

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

/// Bytes of the fixed header, length field included.
pub const HEADER_SIZE: usize = 24;
/// The largest frame accepted, header included.
pub const FRAME_BYTES_MAX: usize = 64 << 20;
/// The largest meta archive accepted.
pub const META_BYTES_MAX: usize = 1 << 20;
/// Flag: the meta is an `ErrorResponse` instead of the api's response.
pub const FLAG_ERROR: u16 = 1;

const _: () = assert!(HEADER_SIZE % 8 == 0);

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below the header size or above the limit.
    #[error("frame length {0} out of bounds")]
    BadLength(u64),
    /// `meta_len` runs past the frame or breaks the limit.
    #[error("meta length {0} out of bounds")]
    BadMetaLength(u64),
    /// Fewer bytes than the header says.
    #[error("truncated frame")]
    Truncated,
    /// The meta archive fails validation.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of the whole frame, length field included.
    pub frame_bytes: usize,
    /// The api number (may be unknown to this build).
    pub api: u16,
    /// The api version.
    pub version: u16,
    /// Echoed in the response.
    pub correlation: u64,
    /// Bytes of the meta archive.
    pub meta_len: usize,
    /// Flags (`FLAG_ERROR`).
    pub flags: u16,
}

impl FrameHeader {
    /// Reads the frame length from the first 4 bytes: how many bytes the whole frame has.
    pub fn frame_bytes(prefix: [u8; 4]) -> Result<usize, FrameError> {
        let len = u64::from(u32::from_le_bytes(prefix)) + 4;
        let len = usize::try_from(len).map_err(|_| FrameError::BadLength(len))?;
        if !(HEADER_SIZE..=FRAME_BYTES_MAX).contains(&len) {
            return Err(FrameError::BadLength(len as u64));
        }
        Ok(len)
    }

    /// Decodes the header of a whole frame and checks its lengths.
    pub fn parse(frame: &[u8]) -> Result<FrameHeader, FrameError> {
        let head: &[u8; HEADER_SIZE] = frame
            .get(..HEADER_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or(FrameError::Truncated)?;
        let header = FrameHeader::parse_head(head)?;
        if frame.len() < header.frame_bytes {
            return Err(FrameError::Truncated);
        }
        Ok(header)
    }

    /// Decodes the fixed header alone (the rest of the frame still on the wire) and checks
    /// its lengths against the limits and each other.
    pub fn parse_head(head: &[u8; HEADER_SIZE]) -> Result<FrameHeader, FrameError> {
        let frame_bytes = FrameHeader::frame_bytes(le(&head[0..4]))?;
        let meta_len = u32::from_le_bytes(le(&head[16..20])) as usize;
        if meta_len > META_BYTES_MAX || HEADER_SIZE + meta_len.next_multiple_of(8) > frame_bytes {
            return Err(FrameError::BadMetaLength(meta_len as u64));
        }
        Ok(FrameHeader {
            frame_bytes,
            api: u16::from_le_bytes(le(&head[4..6])),
            version: u16::from_le_bytes(le(&head[6..8])),
            correlation: u64::from_le_bytes(le(&head[8..16])),
            meta_len,
            flags: u16::from_le_bytes(le(&head[20..22])),
        })
    }

    /// The meta archive's bytes in `frame`.
    #[must_use]
    pub fn meta<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(HEADER_SIZE..HEADER_SIZE + self.meta_len)
            .unwrap_or_default()
    }

    /// Where the data region starts in the frame.
    #[must_use]
    pub fn data_start(&self) -> usize {
        HEADER_SIZE + self.meta_len.next_multiple_of(8)
    }

    /// The raw data region in `frame`.
    #[must_use]
    pub fn data<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(self.data_start()..self.frame_bytes)
            .unwrap_or_default()
    }
}

fn le<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(..N) {
        out.copy_from_slice(src);
    }
    out
}

/// Validates the meta archive of a frame in place and returns the archived message.
/// `frame` must be 8-aligned (the receive buffer is an `AlignedVec`).
pub fn access_meta<'a, T>(header: &FrameHeader, frame: &'a [u8]) -> Result<&'a T, FrameError>
where
    T: rkyv::Portable + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>,
{
    let meta = header.meta(frame);
    rkyv::access::<T, rancor::Error>(meta).map_err(|e| FrameError::InvalidMessage(e.to_string()))
}

/// Validates and deserializes the meta archive into an owned message.
pub fn decode_meta<T>(header: &FrameHeader, frame: &[u8]) -> Result<T, FrameError>
where
    T: rkyv::Archive,
    T::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let meta = header.meta(frame);
    let mut aligned = AlignedVec::<16>::with_capacity(meta.len());
    aligned.extend_from_slice(meta);
    rkyv::from_bytes::<T, rancor::Error>(&aligned)
        .map_err(|e| FrameError::InvalidMessage(e.to_string()))
}

/// What can be a frame's meta: a message rkyv serializes (every request and response
/// type). One name for the long serializer bound.
pub trait Meta:
    for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> Meta for T where
    T: ?Sized + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// Encodes a frame's header and meta into `out` (cleared first); the data region, `data_len`
/// bytes, is written after it by the caller (vectored), so batches are never copied into
/// the frame.
pub fn encode_head<T>(
    out: &mut Vec<u8>,
    api: u16,
    version: u16,
    correlation: u64,
    flags: u16,
    meta: &T,
    data_len: usize,
) -> Result<(), FrameError>
where
    T: Meta,
{
    ARCHIVE.with(|scratch| {
        let mut archive = scratch.take();
        archive.clear();
        let result = rkyv::api::high::to_bytes_in::<_, rancor::Error>(meta, archive);
        let archive = result.map_err(|e| FrameError::InvalidMessage(e.to_string()))?;
        let framed = frame_head(out, (api, version, correlation, flags), &archive, data_len);
        if archive.capacity() <= ARCHIVE_KEPT_BYTES_MAX {
            scratch.replace(archive);
        }
        framed
    })
}

thread_local! {
    /// The archive of the last meta encoded on this thread, kept for the next: every
    /// reply encodes one, and a fresh buffer would be allocated and grown each time.
    static ARCHIVE: std::cell::RefCell<AlignedVec> = std::cell::RefCell::new(AlignedVec::new());
}

/// The largest archive buffer kept between encodes; a larger one is freed.
const ARCHIVE_KEPT_BYTES_MAX: usize = 64 << 10;

/// Writes the fixed header and `archive` (the meta), padded, into `out`.
fn frame_head(
    out: &mut Vec<u8>,
    (api, version, correlation, flags): (u16, u16, u64, u16),
    archive: &[u8],
    data_len: usize,
) -> Result<(), FrameError> {
    let meta_len = archive.len();
    if meta_len > META_BYTES_MAX {
        return Err(FrameError::BadMetaLength(meta_len as u64));
    }
    let frame_bytes = HEADER_SIZE + meta_len.next_multiple_of(8) + data_len;
    if frame_bytes > FRAME_BYTES_MAX {
        return Err(FrameError::BadLength(frame_bytes as u64));
    }
    let len_field =
        u32::try_from(frame_bytes - 4).map_err(|_| FrameError::BadLength(frame_bytes as u64))?;
    let meta_field =
        u32::try_from(meta_len).map_err(|_| FrameError::BadMetaLength(meta_len as u64))?;
    out.clear();
    // One allocation for the head, rather than one per doubling as the fields go in.
    out.reserve_exact(HEADER_SIZE + meta_len.next_multiple_of(8));
    out.extend_from_slice(&len_field.to_le_bytes());
    out.extend_from_slice(&api.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&correlation.to_le_bytes());
    out.extend_from_slice(&meta_field.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(archive);
    out.resize(HEADER_SIZE + meta_len.next_multiple_of(8), 0);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::api::{Acks, Api, ProduceRequest};
    use proptest::prelude::*;

    fn aligned(bytes: &[u8]) -> AlignedVec<16> {
        let mut v = AlignedVec::<16>::new();
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn roundtrip_with_data() {
        let request = ProduceRequest {
            topic: "orders".into(),
            partition: 3,
            acks: Acks::Leader,
            timeout_ms: 500,
        };
        let mut head = Vec::new();
        encode_head(&mut head, Api::Produce as u16, 1, 77, 0, &request, 5).unwrap();
        head.extend_from_slice(b"batch");
        let frame = aligned(&head);
        let header = FrameHeader::parse(&frame).unwrap();
        assert_eq!(
            (header.api, header.version, header.correlation),
            (Api::Produce as u16, 1, 77)
        );
        assert_eq!(header.data(&frame), b"batch");
        let decoded: ProduceRequest = decode_meta(&header, &frame).unwrap();
        assert_eq!(decoded, request);
        let archived = access_meta::<crate::api::ArchivedProduceRequest>(&header, &frame).unwrap();
        assert_eq!(archived.topic.as_str(), "orders");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let frame = aligned(&bytes);
            if let Ok(header) = FrameHeader::parse(&frame) {
                let _ = decode_meta::<ProduceRequest>(&header, &frame);
                let _ = access_meta::<crate::api::ArchivedFetchRequest>(&header, &frame);
            }
        }
    }

    #[test]
    fn lengths_are_bounded() {
        assert!(FrameHeader::frame_bytes((FRAME_BYTES_MAX as u32).to_le_bytes()).is_err());
        assert!(FrameHeader::frame_bytes(3u32.to_le_bytes()).is_err());
        let mut frame = vec![0u8; 64];
        frame[..4].copy_from_slice(&60u32.to_le_bytes());
        frame[16..20].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            FrameHeader::parse(&aligned(&frame)),
            Err(FrameError::BadMetaLength(1000))
        );
    }
}
