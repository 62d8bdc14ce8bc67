//! One Kafka request and its answer: the request header (api key, version, correlation
//! id) parsed from a size-prefixed frame, and the reply bytes (`KafkaReply`) a handler
//! encodes with the `kafka-protocol` codecs.
//!
//! Wire format (Kafka's): `i32` size, then the request header (`api_key: i16`,
//! `api_version: i16`, `correlation_id: i32`, `client_id: nullable string`, tagged fields
//! for flexible versions), then the body. A reply is `i32` size, the response header
//! (`correlation_id`, tagged fields for flexible versions except ApiVersions, whose
//! replies always use header v0) and the body. A reply is a list of pieces written back
//! to back: a fetch's stored batches are pieces of their own, never copied into the
//! encoded head.

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{LocalBoxFuture, ready};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::server::protocol::moving::Owners;

/// What identifies a request: which api, which version, which correlation id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) api_key: ApiKey,
    pub(crate) version: i16,
    pub(crate) correlation_id: i32,
}

/// A request whose header was read; `body` follows the header in the frame.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) head: Head,
    pub(crate) body: Bytes,
}

/// Why a frame is not a request this server can take; the connection closes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("frame of {0} bytes is shorter than a request header")]
    Short(usize),
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("request header: {0}")]
    Header(String),
}

/// Parses the request header of `frame`. An ApiVersions request of a version this
/// server does not know is parsed with the newest header (KIP-511): its answer needs only
/// the correlation id.
pub(crate) fn parse(mut frame: Bytes) -> Result<Request, HeadError> {
    let (Some(key), Some(version)) = (frame.get(0..2), frame.get(2..4)) else {
        return Err(HeadError::Short(frame.len()));
    };
    let key = i16::from_be_bytes([key[0], key[1]]);
    let version = i16::from_be_bytes([version[0], version[1]]);
    let api_key = ApiKey::try_from(key).map_err(|()| HeadError::UnknownApi(key))?;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| HeadError::Header(e.to_string()))?;
    Ok(Request {
        head: Head {
            api_key,
            version,
            correlation_id: header.correlation_id,
        },
        body: frame,
    })
}

/// An encoded reply: its pieces go to the socket back to back, the first starting with
/// the frame's size.
#[derive(Debug, Default)]
pub(crate) struct KafkaReply {
    pub(crate) pieces: Vec<Bytes>,
}

impl KafkaReply {
    /// Bytes on the wire.
    pub(crate) fn size(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }
}

/// How a request is answered.
#[derive(Debug)]
pub(crate) enum Answer {
    /// With these bytes.
    Reply(KafkaReply),
    /// Not at all (a produce with acks=0).
    Nothing,
    /// By closing the connection once the replies before it are written: the request is
    /// malformed, of an unknown api or of a version this server does not serve (the
    /// message says which, for the log).
    Close(String),
}

/// The second phase of a request.
pub(crate) type Completion = LocalBoxFuture<'static, Answer>;

/// A completion already known.
pub(crate) fn done(answer: Answer) -> Completion {
    ready(answer).boxed_local()
}

/// A begun request: its completion and the reply bytes counted for it meanwhile.
pub(crate) struct Begun {
    pub(crate) completion: Completion,
    pub(crate) reply_bytes: usize,
    /// The shards that own the partitions it produces to or fetches from (where the
    /// connection would rather be: `protocol::moving`).
    pub(crate) owners: Owners,
}

/// Reply bytes counted for a request other than a fetch until its reply is made.
pub(crate) const REPLY_BYTES_SMALL: usize = 4 << 10;

impl Begun {
    /// A request with a small reply.
    pub(crate) fn small(completion: Completion) -> Begun {
        Begun {
            completion,
            reply_bytes: REPLY_BYTES_SMALL,
            owners: Owners::None,
        }
    }
}

/// An encoder for a reply frame: size placeholder, response header, then what the
/// handler writes.
pub(crate) struct ReplyWriter {
    head: Head,
    pieces: Vec<Bytes>,
    current: BytesMut,
}

impl ReplyWriter {
    /// A reply to `head`, its response header written.
    pub(crate) fn new(head: Head) -> Result<ReplyWriter, String> {
        let mut current = BytesMut::with_capacity(256);
        current.put_i32(0);
        let header_version = head.api_key.response_header_version(head.version);
        ResponseHeader::default()
            .with_correlation_id(head.correlation_id)
            .encode(&mut current, header_version)
            .map_err(|e| format!("encoding a response header: {e}"))?;
        Ok(ReplyWriter {
            head,
            pieces: Vec::new(),
            current,
        })
    }

    /// The buffer encoded fields go to.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    /// Appends `chunks` as they are (stored batches), after what is encoded so far.
    pub(crate) fn chunks(&mut self, chunks: Vec<Bytes>) {
        if !self.current.is_empty() {
            self.pieces.push(self.current.split().freeze());
        }
        self.pieces.extend(chunks);
    }

    /// The finished reply, its size written in front; an error if it exceeds what a
    /// Kafka frame can say.
    pub(crate) fn finish(mut self) -> Result<KafkaReply, String> {
        let rest = std::mem::take(&mut self.current);
        if !rest.is_empty() {
            self.pieces.push(rest.freeze());
        }
        let size: usize = self.pieces.iter().map(Bytes::len).sum();
        let body = i32::try_from(size - 4)
            .map_err(|_| format!("a reply of {size} bytes to {:?}", self.head.api_key))?;
        let Some(first) = self.pieces.first_mut() else {
            return Err("an empty reply".to_owned());
        };
        // The first piece began with the size placeholder (`new`). Alone, it is the only
        // handle on its buffer and is patched in place; otherwise its few bytes (a head
        // before the first chunk) are copied.
        let mut patched = BytesMut::from(std::mem::take(first));
        patched[..4].copy_from_slice(&body.to_be_bytes());
        *first = patched.freeze();
        Ok(KafkaReply {
            pieces: self.pieces,
        })
    }
}

/// Encodes `response` as the reply to `head`.
pub(crate) fn respond<R: Encodable>(head: Head, response: &R) -> Answer {
    let encoded = ReplyWriter::new(head).and_then(|mut writer| {
        response
            .encode(writer.buffer(), head.version)
            .map_err(|e| format!("encoding {:?} v{}: {e}", head.api_key, head.version))?;
        writer.finish()
    });
    match encoded {
        Ok(reply) => Answer::Reply(reply),
        // A response this server built does not encode: a bug, logged; the client sees
        // the connection close rather than wait forever for the answer.
        Err(e) => {
            tracing::error!(error = %e, "kafka reply does not encode");
            Answer::Close(e)
        }
    }
}

/// Decodes a request body of `head`'s version; a body that does not decode closes the
/// connection (Kafka's brokers do the same).
pub(crate) fn decode<T: Decodable>(request: &Request) -> Result<T, Answer> {
    let mut body = request.body.clone();
    T::decode(&mut body, request.head.version).map_err(|e| {
        Answer::Close(format!(
            "{:?} v{} request does not decode: {e}",
            request.head.api_key, request.head.version
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_unknown_frames_are_refused() {
        assert!(matches!(
            parse(Bytes::from_static(&[0, 18, 0])),
            Err(HeadError::Short(3))
        ));
        let unknown = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(parse(unknown), Err(HeadError::UnknownApi(0x7f00))));
        let truncated = Bytes::from_static(&[0, 18, 0, 0, 0, 0]);
        assert!(matches!(parse(truncated), Err(HeadError::Header(_))));
    }

    #[test]
    fn a_reply_carries_its_size_and_chunks_in_order() {
        let head = Head {
            api_key: ApiKey::Fetch,
            version: 4,
            correlation_id: 7,
        };
        let mut writer = ReplyWriter::new(head).unwrap();
        writer.buffer().put_u8(1);
        writer.chunks(vec![Bytes::from_static(b"abc")]);
        writer.buffer().put_u8(2);
        let reply = writer.finish().unwrap();
        let bytes: Vec<u8> = reply.pieces.iter().flat_map(|p| p.to_vec()).collect();
        assert_eq!(bytes, [0, 0, 0, 9, 0, 0, 0, 7, 1, b'a', b'b', b'c', 2]);
    }
}
