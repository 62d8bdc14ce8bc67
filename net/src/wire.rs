//! Frames on a byte stream: reading one frame from a socket (header, then the meta archive
//! into an aligned buffer, then the data region into its own buffer, so record batches
//! never need a second copy), and writing one (head, then the data chunks as they are).
//! Used by the server and the client alike, as is the queue-draining writer.

use std::borrow::Borrow;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::channel::mpsc;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::frame::{FrameError, FrameHeader, HEADER_SIZE, encode_head};

/// One frame read from a stream.
#[derive(Debug)]
pub struct Frame {
    /// The fixed header.
    pub header: FrameHeader,
    /// The meta archive, exactly `header.meta_len` bytes, 16-aligned.
    pub meta: AlignedVec<16>,
    /// The data region.
    pub data: BytesMut,
}

impl Frame {
    /// Validates the meta archive in place (bytecheck) and returns the archived message.
    pub fn access<T>(&self) -> Result<&T, FrameError>
    where
        T: rkyv::Portable + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>,
    {
        rkyv::access::<T, rancor::Error>(&self.meta)
            .map_err(|e| FrameError::InvalidMessage(e.to_string()))
    }

    /// Validates and deserializes the meta archive into an owned message.
    pub fn decode<T>(&self) -> Result<T, FrameError>
    where
        T: rkyv::Archive,
        T::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
            + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        rkyv::from_bytes::<T, rancor::Error>(&self.meta)
            .map_err(|e| FrameError::InvalidMessage(e.to_string()))
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed or ended inside a frame.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The header breaks a limit; the stream cannot be resynchronised.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
}

/// Reads the next frame. `Ok(None)` at a clean end of stream (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, ReadError> {
    let mut head = [0u8; HEADER_SIZE];
    let first = reader.read(&mut head).await?;
    if first == 0 {
        return Ok(None);
    }
    if first < HEADER_SIZE {
        reader.read_exact(&mut head[first..]).await?;
    }
    let header = FrameHeader::parse_head(&head)?;
    let mut meta = AlignedVec::<16>::with_capacity(header.meta_len.min(META_FIRST_BYTES));
    let mut filled = 0;
    while filled < header.meta_len {
        let target = next_step(filled, header.meta_len, META_FIRST_BYTES);
        meta.resize(target, 0);
        reader.read_exact(&mut meta[filled..target]).await?;
        filled = target;
    }
    let padding = header.meta_len.next_multiple_of(8) - header.meta_len;
    if padding > 0 {
        reader.read_exact(&mut [0u8; 8][..padding]).await?;
    }
    let data = read_data(reader, header.frame_bytes - header.data_start()).await?;
    Ok(Some(Frame { header, meta, data }))
}

/// What the meta buffer holds before its first bytes arrive.
const META_FIRST_BYTES: usize = 4 << 10;
/// The data region's buffer is zeroed (and so, for fresh memory, backed) this far before
/// its first bytes arrive.
const DATA_FIRST_BYTES: usize = 64 << 10;
/// A data region up to this long is read into one allocation of its length (most
/// batches); a longer one grows by doubling from here.
const DATA_WHOLE_BYTES: usize = 1 << 20;

/// The next length of a buffer filled up to `filled` on its way to `len`: it doubles,
/// so a header that announces a megabyte has the receiver write memory only as the sender
/// sends the bytes (a stalled sender holds the first step, zeroed, and for a data region
/// up to `DATA_WHOLE_BYTES` an allocation of the rest that nothing writes until its bytes
/// arrive: whether the system backs it before then is the allocator's affair), and a
/// large frame takes a few steps, not one per read.
fn next_step(filled: usize, len: usize, first: usize) -> usize {
    len.min(filled.saturating_mul(2).max(first))
}

/// Reads `len` bytes, zeroing the buffer step by step (`next_step`) as they arrive. Up to
/// `DATA_WHOLE_BYTES` the buffer is allocated once, exactly: growing it from 64 KiB
/// reallocated and copied every batch longer than that (`finish_grow`, 3 to 5% of the
/// servers' samples under RF=3 batched: README, "Issue 15, a thirteenth sitting"). Past
/// it, each step allocates exactly. Either way no spare capacity rides along (the buffer
/// may become a cached batch).
async fn read_data<R: AsyncRead + Unpin>(reader: &mut R, len: usize) -> std::io::Result<BytesMut> {
    let mut data = Vec::with_capacity(len.min(DATA_WHOLE_BYTES));
    while data.len() < len {
        let filled = data.len();
        let target = next_step(filled, len, DATA_FIRST_BYTES);
        data.reserve_exact(target - filled);
        data.resize(target, 0);
        reader.read_exact(&mut data[filled..]).await?;
    }
    debug_assert_eq!(data.capacity(), len, "a frame's data buffer is exact");
    Ok(BytesMut::from(Bytes::from(data)))
}

/// Writes one frame: `scratch` receives the head (reused between calls), then `data`'s
/// chunks follow as they are. The caller flushes.
#[allow(clippy::too_many_arguments)]
pub async fn write_frame<W, T>(
    writer: &mut W,
    scratch: &mut Vec<u8>,
    api: u16,
    correlation: u64,
    flags: u16,
    meta: &T,
    data: &[Bytes],
) -> Result<(), ReadError>
where
    W: AsyncWrite + Unpin,
    T: crate::frame::Meta,
{
    let data_len = data.iter().map(Bytes::len).sum();
    encode_head(
        scratch,
        api,
        crate::api::VERSION,
        correlation,
        flags,
        meta,
        data_len,
    )?;
    writer.write_all(scratch).await?;
    for chunk in data {
        writer.write_all(chunk).await?;
    }
    Ok(())
}

/// A frame ready for the wire: header and meta, then the data chunks as they are.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Header and meta (`encode_head`).
    pub head: Vec<u8>,
    /// The data region, chunk by chunk (batches as stored).
    pub data: Vec<Bytes>,
}

/// Writes below this size are gathered before reaching the socket.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Writes every frame queued, gathering what was queued meanwhile into one flush, until
/// the queue's senders are all gone (`Ok`, the stream closed for writing) or the stream
/// fails (`Err`; the queue is left to the caller).
pub async fn write_queue<W: AsyncWrite + Unpin>(
    writer: W,
    queue: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> std::io::Result<()> {
    let mut writer = write_queue_noting(writer, queue, |_| ()).await?;
    writer.close().await
}

/// [`write_queue`] for items that hold a frame, each handed to `written` once its bytes
/// are in the stream (a server gives back what the reply counted against its connection).
/// The writer comes back open, everything written: a server may hand its connection on.
pub async fn write_queue_noting<W, T>(
    writer: W,
    queue: &mut mpsc::UnboundedReceiver<T>,
    mut written: impl FnMut(T),
) -> std::io::Result<W>
where
    W: AsyncWrite + Unpin,
    T: Borrow<Outgoing>,
{
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    while let Some(first) = queue.next().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let out: &Outgoing = item.borrow();
            writer.write_all(&out.head).await?;
            for chunk in &out.data {
                writer.write_all(chunk).await?;
            }
            written(item);
            next = queue.try_recv().ok();
        }
        writer.flush().await?;
    }
    writer.flush().await?;
    Ok(writer.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn buffers_double_from_their_first_step_to_the_length() {
        let mut steps = Vec::new();
        let mut filled = 0;
        while filled < 300_000 {
            filled = next_step(filled, 300_000, 64 << 10);
            steps.push(filled);
        }
        assert_eq!(steps, [65_536, 131_072, 262_144, 300_000]);
        assert_eq!(next_step(0, 100, 4096), 100);
    }

    /// Reads `len` bytes through `read_data` from a reader that hands out at most 1000
    /// bytes a call, checking the bytes and that the buffer holds no spare capacity.
    fn read_exactly(len: usize) {
        let sent: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let mut reader = Trickle(futures::io::Cursor::new(sent.clone()));
        let data = futures::executor::block_on(read_data(&mut reader, len)).unwrap();
        assert_eq!(&data[..], &sent[..], "len {len}");
        assert_eq!(data.capacity(), len, "len {len}");
    }

    struct Trickle(futures::io::Cursor<Vec<u8>>);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(1000);
            std::pin::Pin::new(&mut self.0).poll_read(cx, &mut buf[..n])
        }
    }

    #[test]
    fn a_data_region_is_read_into_a_buffer_of_exactly_its_length() {
        for len in [
            0,
            1,
            DATA_FIRST_BYTES - 1,
            DATA_FIRST_BYTES,
            DATA_FIRST_BYTES + 1,
            100_000,
            DATA_WHOLE_BYTES,
            DATA_WHOLE_BYTES + 1,
            3 * DATA_WHOLE_BYTES + 7,
        ] {
            read_exactly(len);
        }
    }

    #[test]
    fn a_data_region_cut_short_is_an_error() {
        let mut reader = Trickle(futures::io::Cursor::new(vec![7u8; 70_000]));
        let result = futures::executor::block_on(read_data(&mut reader, 100_000));
        assert_eq!(
            result.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }
}
