//! `Reply`: an encoded response frame (head + data chunks), ready for a connection's
//! writer, and the helpers that build one. `Reply` is `Send`: forwarded requests come
//! back from their owner shard as one.

use bytes::Bytes;

use crate::api::{ErrorResponse, VERSION};
use crate::error_code::ErrorCode;
use crate::frame::{FLAG_ERROR, FrameHeader, encode_head};
use crate::wire::Outgoing;

/// A response frame, ready for a connection's writer.
pub(crate) type Reply = Outgoing;

/// Encodes `meta` (and `data`) as the response to the request with `header`.
pub(crate) fn reply<T>(header: &FrameHeader, meta: &T, data: Vec<Bytes>) -> Reply
where
    T: crate::frame::Meta,
{
    let data_len = data.iter().map(Bytes::len).sum();
    let mut head = Vec::new();
    match encode_head(
        &mut head,
        header.api,
        VERSION,
        header.correlation,
        0,
        meta,
        data_len,
    ) {
        Ok(()) => Reply { head, data },
        // Only a reply over the frame limit gets here; the fetch path caps its bytes well
        // below it, so this is a bug, answered rather than dropped.
        Err(e) => error_reply(header, ErrorCode::Unknown, &format!("encoding reply: {e}")),
    }
}

/// The longest message an `ErrorResponse` carries: well inside the meta limit, so the
/// frame always encodes.
const ERROR_MESSAGE_MAX: usize = 1024;

/// An `ErrorResponse` frame (`FLAG_ERROR`): the request could not be served at all.
pub(crate) fn error_reply(header: &FrameHeader, code: ErrorCode, message: &str) -> Reply {
    let mut cut = message.len().min(ERROR_MESSAGE_MAX);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let meta = ErrorResponse {
        error: code.as_u16(),
        message: message[..cut].to_owned(),
    };
    let mut head = Vec::new();
    encode_head(
        &mut head,
        header.api,
        VERSION,
        header.correlation,
        FLAG_ERROR,
        &meta,
        0,
    )
    .expect("a short ErrorResponse always encodes");
    Reply {
        head,
        data: Vec::new(),
    }
}

/// The reply to a controller change (a topic, placement, ACL or user change) once it is
/// done: its sentence, or its error, as a `TopicResponse`.
pub(crate) fn change_answered(
    header: FrameHeader,
    pending: crate::server::ops::Pending<String>,
) -> futures::future::LocalBoxFuture<'static, Option<Reply>> {
    use futures::FutureExt;
    async move {
        let response = match pending.await {
            Ok(message) => crate::api::TopicResponse {
                error: ErrorCode::None.as_u16(),
                message,
            },
            Err(e) => crate::api::TopicResponse {
                error: e.code().as_u16(),
                message: e.to_string(),
            },
        };
        Some(reply(&header, &response, Vec::new()))
    }
    .boxed_local()
}
