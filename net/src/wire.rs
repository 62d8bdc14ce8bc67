//! Frames on a byte stream: reading one frame from a socket (header, then the meta archive
//! into an aligned buffer, then the data region into its own buffer, so record batches
//! never need a second copy), and writing one (head, then the data chunks as they are).
//! Used by the server and the client alike, as is the queue-draining writer.

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
    let mut meta = AlignedVec::<16>::with_capacity(header.meta_len);
    meta.resize(header.meta_len, 0);
    reader.read_exact(&mut meta).await?;
    let padding = header.meta_len.next_multiple_of(8) - header.meta_len;
    if padding > 0 {
        reader.read_exact(&mut [0u8; 8][..padding]).await?;
    }
    let data = read_data(reader, header.frame_bytes - header.data_start()).await?;
    Ok(Some(Frame { header, meta, data }))
}

/// Reads `len` bytes, growing the buffer as they arrive: a header that announces 64 MiB
/// costs the sender 64 MiB of traffic before it costs the receiver 64 MiB of memory.
async fn read_data<R: AsyncRead + Unpin>(reader: &mut R, len: usize) -> std::io::Result<BytesMut> {
    const STEP: usize = 1 << 20;
    let mut data = BytesMut::zeroed(len.min(STEP));
    reader.read_exact(&mut data).await?;
    while data.len() < len {
        let filled = data.len();
        data.resize(len.min(filled + STEP.max(filled)), 0);
        reader.read_exact(&mut data[filled..]).await?;
    }
    Ok(data)
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
/// the queue's senders are all gone (`Ok`) or the stream fails (`Err`; the queue is left
/// to the caller).
pub async fn write_queue<W: AsyncWrite + Unpin>(
    writer: W,
    queue: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    while let Some(first) = queue.next().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            writer.write_all(&out.head).await?;
            for chunk in &out.data {
                writer.write_all(chunk).await?;
            }
            next = queue.try_recv().ok();
        }
        writer.flush().await?;
    }
    writer.close().await
}
