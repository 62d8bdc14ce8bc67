//! The records of a compressed batch, for the tools that print them (`dump`, `consume`).
//! The broker stores and serves a client's compressed batch as it came and never
//! decompresses it; only these tools look inside.
//!
//! A compressed batch is the usual 61-byte header followed by one compressed payload that
//! decompresses to the records, laid out as in an uncompressed batch (`record.rs`). The
//! codecs, by the attributes' low three bits, as Kafka's clients write them:
//!
//! ```text
//! 1 gzip    RFC 1952 members (several are read one after the other)
//! 2 snappy  xerial framing (magic 82 'SNAPPY' 00, version i32, compatible i32, then
//!           blocks of [i32 BE length][raw snappy block]: the Java client) or one raw
//!           snappy block (librdkafka)
//! 3 lz4     LZ4 frame format (magic 04 22 4d 18), frames one after the other
//! 4 zstd    zstd frames one after the other
//! ```
//!
//! The payload is input (a client chose it; the CRC only proves it is what the client
//! sent): a payload that does not decompress is [`DecompressError::Corrupt`], and no payload
//! makes more than [`DECOMPRESSED_BYTES_MAX`] bytes, so a tiny "zip bomb" cannot take the
//! tool's memory. Decoders are pure Rust (flate2 on miniz_oxide, snap, lz4_flex, ruzstd).

use std::io::{self, Read};

use shardlog_engine::batch::{BATCH_HEADER_SIZE, BatchHeader, Compression};
use shardlog_engine::record::RecordIter;

/// The most bytes one batch's payload may decompress to. A batch is at most 16 MiB
/// compressed (`BATCH_SIZE_MAX`); real payloads compress a few times, rarely more than
/// tenfold, so 256 MiB leaves room for any honest batch and still bounds the memory a
/// hostile one can take.
pub const DECOMPRESSED_BYTES_MAX: usize = 256 << 20;

/// The magic of snappy-java's (xerial) framing.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Xerial header: magic, then version and minimum compatible version (i32 each).
const XERIAL_HEADER_BYTES: usize = 16;

/// Why a compressed batch's records cannot be shown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecompressError {
    /// The codec bits name no codec (5..=7).
    #[error("compression codec {0} is not one of gzip (1), snappy (2), lz4 (3), zstd (4)")]
    UnknownCodec(u8),
    /// The payload is not valid data of its codec.
    #[error("the {codec} payload does not decompress: {reason}")]
    Corrupt {
        /// The codec's name.
        codec: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The payload decompresses to more than the limit.
    #[error("the {codec} payload decompresses to more than {limit} bytes")]
    TooLarge {
        /// The codec's name.
        codec: &'static str,
        /// The limit, bytes.
        limit: usize,
    },
}

/// The records of `batch` (one whole batch, described by `header`): its own bytes when it
/// is uncompressed, else its payload decompressed into `scratch` (cleared first; reuse it
/// across batches to allocate once).
pub fn records<'a>(
    header: &BatchHeader,
    batch: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<RecordIter<'a>, DecompressError> {
    records_within(header, batch, scratch, DECOMPRESSED_BYTES_MAX)
}

/// [`records`] with a decompressed-size limit of `limit` bytes.
pub fn records_within<'a>(
    header: &BatchHeader,
    batch: &'a [u8],
    scratch: &'a mut Vec<u8>,
    limit: usize,
) -> Result<RecordIter<'a>, DecompressError> {
    let Compression::Codec(codec) = header.compression() else {
        return Ok(RecordIter::new(header, batch));
    };
    let end = (header.size as usize).min(batch.len());
    let payload = batch.get(BATCH_HEADER_SIZE..end).unwrap_or_default();
    decompress(codec, payload, scratch, limit)?;
    Ok(RecordIter::decompressed(header, scratch))
}

/// Decompresses `payload` of codec `codec` (1..=4) into `out` (cleared first), at most
/// `limit` bytes.
pub fn decompress(
    codec: u8,
    payload: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), DecompressError> {
    out.clear();
    let name = Compression::Codec(codec)
        .name()
        .ok_or(DecompressError::UnknownCodec(codec))?;
    // Every codec's stream has a header, so an empty payload is no payload; some decoders
    // would read it as zero frames.
    let result = if payload.is_empty() {
        Err(Failure::Corrupt("empty payload".into()))
    } else {
        match codec {
            1 => read_bounded(flate2::read::MultiGzDecoder::new(payload), out, limit),
            2 => snappy(payload, out, limit),
            3 => read_bounded(lz4_flex::frame::FrameDecoder::new(payload), out, limit),
            _ => zstd(payload, out, limit),
        }
    };
    // A batch has at least one record: a payload that decodes to nothing is no payload
    // (lz4_flex, for one, reads a few bytes short of a frame header as no frame).
    let result = result.and_then(|()| {
        if out.is_empty() {
            Err(Failure::Corrupt("decompresses to nothing".into()))
        } else {
            Ok(())
        }
    });
    result.map_err(|failure| match failure {
        Failure::TooLarge => DecompressError::TooLarge { codec: name, limit },
        Failure::Corrupt(reason) => DecompressError::Corrupt {
            codec: name,
            reason,
        },
    })
}

/// How a decoder failed, before the codec's name is attached.
enum Failure {
    TooLarge,
    Corrupt(String),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Failure {
        Failure::Corrupt(error.to_string())
    }
}

/// Reads `reader` to its end into `out`, failing past `limit` bytes in all (one byte past
/// is read to tell "exactly the limit" from "more").
fn read_bounded(reader: impl Read, out: &mut Vec<u8>, limit: usize) -> Result<(), Failure> {
    let room = limit.saturating_sub(out.len());
    let read = reader.take(room as u64 + 1).read_to_end(out)?;
    if read > room {
        return Err(Failure::TooLarge);
    }
    Ok(())
}

/// Snappy, framed by snappy-java (xerial) or raw.
fn snappy(payload: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Failure> {
    let Some(mut blocks) = payload
        .strip_prefix(XERIAL_MAGIC)
        .and_then(|_| payload.get(XERIAL_HEADER_BYTES..))
    else {
        return snappy_block(payload, out, limit);
    };
    if blocks.is_empty() {
        return Err(Failure::Corrupt("xerial framing without blocks".into()));
    }
    while !blocks.is_empty() {
        let (length, rest) = blocks
            .split_first_chunk::<4>()
            .ok_or_else(|| Failure::Corrupt("truncated xerial block length".into()))?;
        let length = usize::try_from(u32::from_be_bytes(*length))
            .map_err(|_| Failure::Corrupt("xerial block length".into()))?;
        let block = rest.get(..length).ok_or_else(|| {
            Failure::Corrupt(format!(
                "xerial block of {length} bytes, {} left",
                rest.len()
            ))
        })?;
        snappy_block(block, out, limit)?;
        blocks = rest.get(length..).unwrap_or_default();
    }
    Ok(())
}

/// One raw snappy block, appended to `out`. Its header states its decompressed length,
/// checked against the room left before anything is allocated.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Failure> {
    let length = snap::raw::decompress_len(block).map_err(|e| Failure::Corrupt(e.to_string()))?;
    if length > limit.saturating_sub(out.len()) {
        return Err(Failure::TooLarge);
    }
    let start = out.len();
    out.resize(start + length, 0);
    let target = out.get_mut(start..).unwrap_or_default();
    let written = snap::raw::Decoder::new()
        .decompress(block, target)
        .map_err(|e| Failure::Corrupt(e.to_string()))?;
    out.truncate(start + written);
    Ok(())
}

/// zstd frames one after the other (skippable frames included, as the format allows).
fn zstd(payload: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Failure> {
    let mut rest = payload;
    while !rest.is_empty() {
        let decoder = ruzstd::decoding::StreamingDecoder::new(&mut rest)
            .map_err(|e| Failure::Corrupt(e.to_string()))?;
        read_bounded(decoder, out, limit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        let mut state = 0x9e37_79b9_u32;
        for len in [0usize, 1, 4, 16, 17, 100, 1000] {
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state.to_le_bytes()[0]
                })
                .collect();
            for codec in 1..=4 {
                let mut out = Vec::new();
                let result = decompress(codec, &garbage, &mut out, 1 << 20);
                // Snappy's raw block states its length first: garbage may claim too much.
                assert!(
                    matches!(
                        result,
                        Err(DecompressError::Corrupt { .. } | DecompressError::TooLarge { .. })
                    ),
                    "codec {codec}, {len} bytes: {result:?}"
                );
            }
        }
        assert_eq!(
            decompress(5, b"x", &mut Vec::new(), 10),
            Err(DecompressError::UnknownCodec(5))
        );
    }

    /// 4 MiB of zeros in each codec: a few KiB compressed. Decoded in full under a limit
    /// of exactly that size; refused, having held at most the limit, under a smaller one.
    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        use std::io::Write;
        let zeros = vec![0u8; 4 << 20];
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&zeros).unwrap();
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&zeros).unwrap();
        let payloads = [
            (1, gzip.finish().unwrap()),
            (2, snap::raw::Encoder::new().compress_vec(&zeros).unwrap()),
            (3, lz4.finish().unwrap()),
            (
                4,
                ruzstd::encoding::compress_to_vec(
                    &zeros[..],
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
            ),
        ];
        for (codec, payload) in payloads {
            assert!(
                payload.len() < 256 << 10,
                "codec {codec}: {}",
                payload.len()
            );
            let mut out = Vec::new();
            decompress(codec, &payload, &mut out, zeros.len()).unwrap();
            assert_eq!(out, zeros, "codec {codec}");
            let result = decompress(codec, &payload, &mut out, 1 << 20);
            assert!(
                matches!(result, Err(DecompressError::TooLarge { limit, .. }) if limit == 1 << 20),
                "codec {codec}: {result:?}"
            );
            assert!(out.len() <= (1 << 20) + 1, "codec {codec}: {}", out.len());
        }
    }

    #[test]
    fn a_snappy_block_claiming_too_much_is_refused_before_allocating() {
        // A raw snappy block starts with its decompressed length as a varint: claim 1 GiB.
        let block = [0x80, 0x80, 0x80, 0x80, 0x04, 0x00];
        let mut out = Vec::new();
        let result = decompress(2, &block, &mut out, 1 << 20);
        assert!(
            matches!(result, Err(DecompressError::TooLarge { .. })),
            "{result:?}"
        );
        assert!(out.capacity() < 1 << 20);
    }
}
