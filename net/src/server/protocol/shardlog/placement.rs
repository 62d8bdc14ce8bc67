//! DrainNode and RebalanceReplicas, from a client or passed on by a peer: decoded into a
//! placement change (`ops::placement`), answered with a `TopicResponse` whose message
//! says what was done.

use std::rc::Rc;

use futures::FutureExt;
use futures::future::ready;

use crate::api::{Api, DrainNodeRequest, RebalanceReplicasRequest};
use crate::error_code::ErrorCode;
use crate::server::ops::placement::{self, PlacementChange};
use crate::server::shard::Shard;
use crate::wire::Frame;

use super::handlers::Completion;
use super::reply::error_reply;

/// The placement request in `frame` (DrainNode or RebalanceReplicas).
pub(crate) async fn placement_change(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    let change = if header.api == Api::DrainNode as u16 {
        frame
            .decode::<DrainNodeRequest>()
            .map(|r| PlacementChange::Drain {
                node: r.node,
                draining: r.draining,
            })
    } else {
        frame
            .decode::<RebalanceReplicasRequest>()
            .map(|r| PlacementChange::Rebalance { dry_run: r.dry_run })
    };
    let change = match change {
        Ok(change) => change,
        Err(e) => {
            let reply = error_reply(&header, ErrorCode::InvalidRequest, &e.to_string());
            return ready(Some(reply)).boxed_local();
        }
    };
    let pending = placement::change(shard, change).await;
    super::reply::change_answered(header, pending)
}
