//! Producer ids for idempotent producers (`InitProducerId`): any node answers, from the
//! block of ids the controller reserved for it (`cluster::producer_ids`), on shard 0
//! where the block and the controller voter live. A node whose block is used up (or
//! that just started: blocks are not kept across restarts) gets a new one from the
//! controller leader: proposed here if this node leads, else asked of the leader over
//! the peer link (`AllocateProducerIds`), as a topic change is passed on.

use std::rc::Rc;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::oneshot;
use shardlog_replicator::NodeId;

use crate::api::{AllocateProducerIdsRequest, AllocateProducerIdsResponse, Api, ErrorResponse};
use crate::error_code::ErrorCode;
use crate::frame::FLAG_ERROR;
use crate::server::cluster::controller::ControllerService;
use crate::server::cluster::producer_ids::{self, AllocateError, BLOCK};
use crate::server::ops::topics::from_code;
use crate::server::ops::{OpError, Pending, answered};
use crate::server::shard::{Shard, ShardMsg};

/// A new producer id and its epoch (0), from this node's block (on shard 0).
pub(crate) async fn init(shard: &Rc<Shard>) -> Pending<(i64, i16)> {
    if shard.id == 0 {
        let shard = shard.clone();
        return async move { next_here(&shard).await.map(|id| (id, 0)) }.boxed_local();
    }
    let (tx, rx) = oneshot::channel();
    let Some(inbox) = shard.inboxes.first() else {
        return answered(Err(OpError::Unknown("no shard 0".into())));
    };
    if inbox
        .send_async(ShardMsg::InitProducerId { reply: tx })
        .await
        .is_err()
    {
        return answered(Err(OpError::ShuttingDown));
    }
    async move {
        let id = rx.await.unwrap_or(Err(OpError::ShuttingDown))?;
        Ok((id, 0))
    }
    .boxed_local()
}

fn service(shard: &Shard) -> Result<&Rc<ControllerService>, OpError> {
    shard
        .cluster
        .controller
        .as_ref()
        .ok_or_else(|| OpError::Unknown("producer ids off shard 0".into()))
}

/// On shard 0: the next id of this node's block, after fetching a new block if it is
/// used up. Not before the node has caught up with the controller.
pub(crate) async fn next_here(shard: &Rc<Shard>) -> Result<i64, OpError> {
    let service = service(shard)?;
    if shard.cluster.view().is_none() {
        return Err(OpError::NotAvailable(format!(
            "node {} is catching up with the controller",
            shard.node.node_id
        )));
    }
    let _turn = service.producer_ids.turn.lock().await;
    if let Some(id) = service.producer_ids.take() {
        return Ok(id);
    }
    let first = if service.is_leader() {
        producer_ids::allocate(service, service.node(), BLOCK)
            .await
            .map_err(op_error)?
    } else {
        ask_leader(shard, service).await?
    };
    service.producer_ids.refill(first, BLOCK);
    service
        .producer_ids
        .take()
        .ok_or_else(|| OpError::Unknown("an empty producer id block".into()))
}

fn op_error(error: AllocateError) -> OpError {
    match error {
        AllocateError::NotAvailable(why) => OpError::NotAvailable(why),
        AllocateError::Refused(why) => OpError::Unknown(why),
    }
}

/// Asks the controller leader for a block for this node, over the peer link.
async fn ask_leader(shard: &Shard, service: &ControllerService) -> Result<u64, OpError> {
    let leader = service.leader().ok_or_else(|| {
        OpError::NotAvailable("no controller leader (an election is under way)".into())
    })?;
    let request = AllocateProducerIdsRequest {
        node: shard.node.node_id,
        count: BLOCK,
    };
    let unavailable =
        |why: String| OpError::NotAvailable(format!("controller leader {leader}: {why}"));
    let answer = shard
        .cluster
        .peers
        .call(leader.0, Api::AllocateProducerIds, &request, Bytes::new())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let response = if answer.header.flags & FLAG_ERROR != 0 {
        let e = answer
            .decode::<ErrorResponse>()
            .map_err(|e| unavailable(e.to_string()))?;
        return Err(from_code(ErrorCode::from(e.error), e.message));
    } else {
        answer
            .decode::<AllocateProducerIdsResponse>()
            .map_err(|e| unavailable(e.to_string()))?
    };
    match ErrorCode::from(response.error) {
        ErrorCode::None if response.count == BLOCK => Ok(response.first),
        ErrorCode::None => Err(unavailable(format!(
            "a block of {} ids, asked for {BLOCK}",
            response.count
        ))),
        code => Err(from_code(code, response.message)),
    }
}

/// A block for node `node`, asked by that node over the peer link: reserved here if
/// this node leads the controller (on shard 0).
pub(crate) async fn allocate_for(shard: &Rc<Shard>, node: NodeId, count: u32) -> Pending<u64> {
    if shard.id != 0 {
        let (tx, rx) = oneshot::channel();
        let Some(inbox) = shard.inboxes.first() else {
            return answered(Err(OpError::Unknown("no shard 0".into())));
        };
        let message = ShardMsg::AllocateProducerIds {
            node,
            count,
            reply: tx,
        };
        if inbox.send_async(message).await.is_err() {
            return answered(Err(OpError::ShuttingDown));
        }
        return async move { rx.await.unwrap_or(Err(OpError::ShuttingDown)) }.boxed_local();
    }
    let shard = shard.clone();
    async move { allocate_here(&shard, node, count).await }.boxed_local()
}

/// On shard 0: reserves a block for `node` if this node leads the controller.
pub(crate) async fn allocate_here(
    shard: &Rc<Shard>,
    node: NodeId,
    count: u32,
) -> Result<u64, OpError> {
    let service = service(shard)?;
    if !service.is_leader() {
        return Err(OpError::NotAvailable(format!(
            "node {} does not lead the controller",
            shard.node.node_id
        )));
    }
    if count == 0 || count > BLOCK {
        return Err(OpError::InvalidRequest(format!(
            "a block of {count} producer ids: 1 to {BLOCK}"
        )));
    }
    producer_ids::allocate(service, node, count)
        .await
        .map_err(op_error)
}
