//! WIP: the group apis, waiting for the coordinator's operations (part G).

use std::rc::Rc;

use crate::api::Api;
use crate::error_code::ErrorCode;
use crate::server::shard::Shard;
use crate::wire::Frame;

use super::handlers::Completion;
use super::reply::error_reply;

pub(super) async fn begin(_shard: &Rc<Shard>, api: Api, frame: Frame) -> Completion {
    let reply = error_reply(
        &frame.header,
        ErrorCode::UnknownApi,
        &format!("{api:?}: WIP"),
    );
    Box::pin(async move { Some(reply) })
}
