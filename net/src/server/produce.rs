//! Produce: the batch arrives as the frame's data region and goes to the engine as is;
//! the engine checks it (CRC, every record) and patches its base offset and epoch, which
//! the CRC does not cover. Offsets are given in `begin`, in request order; the reply waits
//! for the flush policy's promise in the completion, so one flush (and one fdatasync)
//! serves every request that arrived meanwhile, from every connection.

use std::rc::Rc;

use futures::FutureExt;

use crate::api::{Acks, ArchivedAcks, ArchivedProduceRequest, ProduceResponse};
use crate::error_code::ErrorCode;
use crate::frame::FrameHeader;
use crate::server::dispatch::{self, Completion, done, forward};
use crate::server::reply::{Reply, reply};
use crate::server::shard::{Route, SINGLE_NODE_EPOCH, Shard};
use crate::wire::Frame;

/// First phase of a produce request.
pub(crate) async fn begin(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    let (route, acks) = match frame.access::<ArchivedProduceRequest>() {
        Ok(request) => (
            shard.route(request.topic.as_str(), request.partition.to_native()),
            match request.acks {
                ArchivedAcks::None => Acks::None,
                ArchivedAcks::Leader => Acks::Leader,
                ArchivedAcks::All => Acks::All,
            },
        ),
        Err(e) => return dispatch::invalid(&header, &e),
    };
    let log = match route {
        Route::Local(log) => log,
        Route::Shard(owner) => return forward(shard, owner, frame).await,
        Route::UnknownTopic => {
            return answer(
                &header,
                acks,
                failed(&header, ErrorCode::UnknownTopic, "unknown topic"),
            );
        }
        Route::UnknownPartition => {
            return answer(
                &header,
                acks,
                failed(&header, ErrorCode::UnknownPartition, "unknown partition"),
            );
        }
    };
    let pending = match log.append_start(frame.data, SINGLE_NODE_EPOCH).await {
        Ok(pending) => pending,
        Err(e) => {
            return answer(
                &header,
                acks,
                failed(&header, ErrorCode::from(&e), &e.to_string()),
            );
        }
    };
    async move {
        let result = log.append_wait(&pending).await;
        if acks == Acks::None {
            return None;
        }
        Some(match result {
            Ok(appended) => reply(
                &header,
                &ProduceResponse {
                    error: ErrorCode::None.as_u16(),
                    base_offset: appended.base_offset.0,
                    leader_hint: None,
                    message: String::new(),
                },
                Vec::new(),
            ),
            Err(e) => failed(&header, ErrorCode::from(&e), &e.to_string()),
        })
    }
    .boxed_local()
}

/// `acks=none` is never answered, not even with an error: the producer is not listening.
fn answer(header: &FrameHeader, acks: Acks, reply: Reply) -> Completion {
    if acks == Acks::None {
        tracing::debug!(correlation = header.correlation, "acks=none produce failed");
        return futures::future::ready(None).boxed_local();
    }
    done(reply)
}

fn failed(header: &FrameHeader, code: ErrorCode, message: &str) -> Reply {
    reply(
        header,
        &ProduceResponse {
            error: code.as_u16(),
            base_offset: 0,
            leader_hint: None,
            message: message.to_owned(),
        },
        Vec::new(),
    )
}
