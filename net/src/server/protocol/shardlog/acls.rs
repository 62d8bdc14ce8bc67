//! CreateAcl, DeleteAcl (from a client or passed on by a peer) and ListAcls: decoded
//! into an ACL change (`ops::acls`) answered with a `TopicResponse` whose message says
//! what was done, or the bindings this node's view shows.

use std::rc::Rc;

use futures::FutureExt;
use futures::future::ready;

use crate::api::{AclRequest, Api, ListAclsRequest, ListAclsResponse};
use crate::error_code::ErrorCode;
use crate::server::ops::acls::{self, AclChange};
use crate::server::shard::Shard;
use crate::wire::Frame;

use super::handlers::Completion;
use super::reply::{error_reply, reply};

/// The ACL request in `frame`.
pub(crate) async fn acl_request(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    if header.api == Api::ListAcls as u16 {
        let reply = match frame.decode::<ListAclsRequest>() {
            Err(e) => error_reply(&header, ErrorCode::InvalidRequest, &e.to_string()),
            Ok(request) => match acls::list(shard, request.principal.as_deref()) {
                Ok(bindings) => {
                    let response = ListAclsResponse {
                        error: ErrorCode::None.as_u16(),
                        bindings,
                    };
                    reply(&header, &response, Vec::new())
                }
                Err(e) => error_reply(&header, e.code(), &e.to_string()),
            },
        };
        return ready(Some(reply)).boxed_local();
    }
    let change = match frame.decode::<AclRequest>() {
        Ok(r) if header.api == Api::CreateAcl as u16 => AclChange::Add(r.binding),
        Ok(r) => AclChange::Remove(r.binding),
        Err(e) => {
            let reply = error_reply(&header, ErrorCode::InvalidRequest, &e.to_string());
            return ready(Some(reply)).boxed_local();
        }
    };
    let pending = acls::change(shard, change).await;
    super::reply::change_answered(header, pending)
}
