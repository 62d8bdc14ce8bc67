//! Producer ids: the block this node hands out (`ProducerIdBlock`, on shard 0, in
//! memory only) and, on the controller leader, the reservation of a new block for a node
//! (`allocate`): one `AllocateProducerIds` command at a time, at the metadata's next
//! unreserved id (the command is a compare-and-set; a refusal because another block was
//! reserved meanwhile, by an earlier leader's delayed proposal say, is retried).
//!
//! A restarted node starts with no block, so it never hands out an id of a block it may
//! have used before: ids are unique in the cluster and across restarts.

use std::cell::Cell;

use futures::lock::Mutex;
use shardlog_replicator::NodeId;
use shardlog_replicator::controller::{Command, Refusal};

use super::controller::ControllerService;

/// Ids a node asks the controller for at a time.
pub(crate) const BLOCK: u32 = 1000;
/// Compare-and-set attempts of one reservation.
const ATTEMPTS: usize = 4;

/// The ids of this node's current block not handed out yet, `[next, end)`.
#[derive(Default)]
pub(crate) struct ProducerIdBlock {
    next: Cell<u64>,
    end: Cell<u64>,
    /// Held while an id is taken, and while a new block is fetched: one request at a
    /// time asks the controller.
    pub(crate) turn: Mutex<()>,
}

impl ProducerIdBlock {
    /// The next id of the block, if any is left.
    pub(crate) fn take(&self) -> Option<i64> {
        let next = self.next.get();
        if next >= self.end.get() {
            return None;
        }
        self.next.set(next + 1);
        i64::try_from(next).ok()
    }

    /// A new block, `[first, first + count)`.
    pub(crate) fn refill(&self, first: u64, count: u32) {
        self.next.set(first);
        self.end.set(first.saturating_add(u64::from(count)));
    }
}

/// Why a reservation failed.
#[derive(Debug)]
pub(crate) enum AllocateError {
    /// This node does not lead the controller (any more), or the proposal was not
    /// applied in time: the asking node tries again.
    NotAvailable(String),
    /// The controller refused it for good (an unknown node).
    Refused(String),
}

/// On the controller leader: reserves `count` producer ids for `node`; the block's first
/// id.
pub(crate) async fn allocate(
    service: &ControllerService,
    node: NodeId,
    count: u32,
) -> Result<u64, AllocateError> {
    let _one_at_a_time = service.allocating.lock().await;
    for _ in 0..ATTEMPTS {
        if !service.is_leader() {
            return Err(AllocateError::NotAvailable(
                "this node no longer leads the controller".into(),
            ));
        }
        let first = service.next_producer_id();
        let command = Command::AllocateProducerIds {
            node: node.0,
            first,
            count,
        };
        match service.propose(command).await {
            Ok(Ok(())) => {
                tracing::info!(peer = node.0, first, count, "producer ids reserved");
                return Ok(first);
            }
            // Another block was reserved meanwhile; the next attempt reads the new end.
            Ok(Err(Refusal::StaleProducerIdBlock { .. })) => {}
            Ok(Err(refusal)) => return Err(AllocateError::Refused(refusal.to_string())),
            Err(e) => return Err(AllocateError::NotAvailable(e)),
        }
    }
    Err(AllocateError::NotAvailable(
        "producer id blocks were reserved concurrently; try again".into(),
    ))
}
