//! One connection of the bench to a Kafka listener, pipelined the way Kafka clients do it:
//! requests are written whole and in order, each with the next correlation id, without
//! waiting for earlier answers; a reader task reads response frames as they arrive and
//! queues them (bounded by the requests a caller keeps outstanding). As the native
//! client does, requests sent back to back are gathered into one socket write (flushed
//! when the caller waits for an answer) and reads are buffered, so a comparison of the
//! two protocols measures the servers' front ends, not two clients' syscall counts. A Kafka broker answers
//! a connection's requests in the order they came (acks=0 produce requests excepted: they
//! get no answer), so the caller takes responses in its requests' order and the correlation
//! id checks the match.
//!
//! Wire format (Kafka's): `i32 length | header | body`; the request header is api key,
//! api version, correlation id and client id (plus tagged fields in flexible versions);
//! the response header is the correlation id (plus tagged fields). Codecs are the
//! `kafka-protocol` crate's client side. Lives on one glommio executor (`!Send`).

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use futures::{SinkExt, StreamExt};
use glommio::net::{Preallocated, TcpStream};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// The largest response frame accepted: bigger lengths are a broken stream.
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// The client id sent in every request header.
const CLIENT_ID: &str = "shardlog-bench";
/// The read buffer, and the most request bytes gathered before a socket write.
const BUFFER_BYTES: usize = 64 << 10;

type Stream = TcpStream<Preallocated>;

/// A pipelined Kafka connection; see the module docs.
pub struct KafkaConnection {
    writer: BufWriter<WriteHalf<Stream>>,
    responses: mpsc::Receiver<anyhow::Result<Bytes>>,
    reader: Option<glommio::task::JoinHandle<()>>,
    next_correlation: i32,
    /// The frame being encoded, reused.
    frame: BytesMut,
}

impl Drop for KafkaConnection {
    fn drop(&mut self) {
        // The reader waits on the socket: stop it with the connection.
        if let Some(reader) = self.reader.take() {
            reader.cancel();
        }
    }
}

impl KafkaConnection {
    /// Connects to `addr` (HOST:PORT). `pipelined` is how many responses may wait unread.
    pub async fn connect(addr: &str, pipelined: usize) -> anyhow::Result<KafkaConnection> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the Kafka listener {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| anyhow::anyhow!("TCP_NODELAY: {e}"))?;
        let (read, writer) = stream
            .buffered_with(Preallocated::new(BUFFER_BYTES))
            .split();
        let writer = BufWriter::with_capacity(BUFFER_BYTES, writer);
        let (sender, responses) = mpsc::channel(pipelined.max(1));
        let reader = glommio::spawn_local(read_responses(read, sender)).detach();
        Ok(KafkaConnection {
            writer,
            responses,
            reader: Some(reader),
            next_correlation: 0,
            frame: BytesMut::new(),
        })
    }

    /// Queues `request` as version `version` (written once the buffer fills, or by
    /// `flush` / `next_frame`) and returns its correlation id. `patch` sees
    /// the encoded frame (length prefix included) before it is written: a producer stamps
    /// a batch's header in place there rather than copy the batch into a new buffer.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        patch: impl FnOnce(&mut [u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<i32> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        self.frame.clear();
        self.frame.put_i32(0);
        header
            .encode(&mut self.frame, R::header_version(version))
            .context("encoding a request header")?;
        request
            .encode(&mut self.frame, version)
            .with_context(|| format!("encoding api {} v{version}", R::KEY))?;
        let length = i32::try_from(self.frame.len() - 4).context("request too large")?;
        self.frame[..4].copy_from_slice(&length.to_be_bytes());
        patch(&mut self.frame)?;
        self.writer
            .write_all(&self.frame)
            .await
            .context("writing to the Kafka listener")?;
        Ok(correlation)
    }

    /// Writes the requests gathered so far.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.writer
            .flush()
            .await
            .context("writing to the Kafka listener")
    }

    /// The next response frame (after its length prefix), in request order; writes the
    /// gathered requests first. Cancel-safe: a frame not yet taken stays queued, and a
    /// flush cut short resumes on the next call.
    pub async fn next_frame(&mut self) -> anyhow::Result<Bytes> {
        self.flush().await?;
        match self.responses.next().await {
            Some(frame) => frame,
            None => bail!("the Kafka listener's connection ended"),
        }
    }

    /// Decodes `frame`, which must answer request `correlation` (sent as version
    /// `version` of `R`).
    pub fn decode<R: Request>(
        mut frame: Bytes,
        correlation: i32,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .context("decoding a response header")?;
        if header.correlation_id != correlation {
            bail!(
                "response to correlation id {} where {correlation} was next",
                header.correlation_id
            );
        }
        R::Response::decode(&mut frame, version)
            .with_context(|| format!("decoding the response to api {} v{version}", R::KEY))
    }

    /// Sends `request` and waits for its response (nothing else outstanding).
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let correlation = self.send(request, version, |_| Ok(())).await?;
        let frame = self.next_frame().await?;
        Self::decode::<R>(frame, correlation, version)
    }
}

/// Reads response frames until the connection ends or fails, queueing each (the failure
/// too, last).
async fn read_responses(
    mut read: ReadHalf<Stream>,
    mut sender: mpsc::Sender<anyhow::Result<Bytes>>,
) {
    loop {
        let frame = read_frame(&mut read).await;
        let failed = frame.is_err();
        if sender.send(frame).await.is_err() || failed {
            return;
        }
    }
}

async fn read_frame(read: &mut ReadHalf<Stream>) -> anyhow::Result<Bytes> {
    let mut length = [0u8; 4];
    read.read_exact(&mut length)
        .await
        .context("reading from the Kafka listener")?;
    let length = i32::from_be_bytes(length);
    let length = usize::try_from(length)
        .ok()
        .filter(|&l| l <= RESPONSE_BYTES_MAX)
        .with_context(|| format!("a response frame of {length} bytes"))?;
    let mut body = vec![0u8; length];
    read.read_exact(&mut body)
        .await
        .context("reading a response from the Kafka listener")?;
    Ok(Bytes::from(body))
}
