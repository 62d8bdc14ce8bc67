//! ACL changes and listing. A change runs on shard 0, where the controller voter lives:
//! the controller leader proposes it (`Command::CreateAcl` / `DeleteAcl`) and answers once
//! it is applied; a node that does not lead the controller passes it to the one that does
//! over the peer link and relays the answer (as placement changes do). Every node then
//! authorizes with the new bindings once its view shows them. A listing is answered from
//! this node's view.

use std::rc::Rc;

use bytes::Bytes;
use shardlog_replicator::controller::acls::AclBinding;
use shardlog_replicator::controller::{Command, Refusal};

use crate::api::{AclRequest, Api};
use crate::server::ops::topics::{controller_leader, leader_answer};
use crate::server::ops::{OpError, Pending, on_shard_zero};
use crate::server::shard::{Shard, ShardMsg};

/// Add or remove one binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AclChange {
    Add(AclBinding),
    Remove(AclBinding),
}

/// Runs `change` on shard 0; the answer is a sentence saying what was done.
pub(crate) async fn change(shard: &Rc<Shard>, change: AclChange) -> Pending<String> {
    let here = |shard: Rc<Shard>, change| async move { change_here(&shard, change).await };
    on_shard_zero(shard, change, here, |change, reply| ShardMsg::Acl {
        change,
        reply,
    })
    .await
}

/// `change` on shard 0: proposed if this node leads the controller, else passed to the
/// node that does.
pub(crate) async fn change_here(shard: &Rc<Shard>, change: AclChange) -> Result<String, OpError> {
    let service = shard
        .cluster
        .controller
        .as_ref()
        .ok_or_else(|| OpError::Unknown("ACL change off shard 0".into()))?;
    let (AclChange::Add(binding) | AclChange::Remove(binding)) = &change;
    // Refused here rather than proposed to be refused at apply (the controller checks
    // again: a proposal from a node of another release is not trusted either).
    binding
        .validate()
        .map_err(|e| OpError::InvalidRequest(format!("invalid ACL: {e}")))?;
    if !service.is_leader() {
        return pass_to_leader(shard, change).await;
    }
    let (command, done, unchanged) = match &change {
        AclChange::Add(binding) => (
            Command::CreateAcl {
                binding: Box::new(binding.clone()),
            },
            format!("added: {binding}"),
            format!("exists already: {binding}"),
        ),
        AclChange::Remove(binding) => (
            Command::DeleteAcl {
                binding: Box::new(binding.clone()),
            },
            format!("removed: {binding}"),
            format!("no such ACL: {binding}"),
        ),
    };
    match service.propose(command).await {
        Ok(Ok(())) => Ok(done),
        // Adding one that exists is done already; removing one that does not is an error
        // (a misspelt removal must not look like it worked).
        Ok(Err(Refusal::NoChange)) => match change {
            AclChange::Add(_) => Ok(unchanged),
            AclChange::Remove(_) => Err(OpError::InvalidRequest(unchanged)),
        },
        Ok(Err(Refusal::Acl(e))) => Err(OpError::InvalidRequest(e.to_string())),
        Ok(Err(refusal)) => Err(OpError::Unknown(refusal.to_string())),
        Err(e) => Err(OpError::Timeout(e)),
    }
}

/// Passes `change` to the controller leader over the peer link and relays its answer.
async fn pass_to_leader(shard: &Shard, change: AclChange) -> Result<String, OpError> {
    let leader = controller_leader(shard)?;
    let (api, binding) = match change {
        AclChange::Add(binding) => (Api::CreateAcl, binding),
        AclChange::Remove(binding) => (Api::DeleteAcl, binding),
    };
    let request = AclRequest { binding };
    let answer = shard
        .cluster
        .peers
        .call(leader.0, api, &request, Bytes::new())
        .await;
    leader_answer(leader, answer)
}

/// The bindings this node's view shows, of `principal` only if given.
pub(crate) fn list(shard: &Shard, principal: Option<&str>) -> Result<Vec<AclBinding>, OpError> {
    let view = shard.cluster.view().ok_or_else(|| {
        OpError::NotAvailable("the node is catching up with the controller".into())
    })?;
    Ok(view
        .metadata
        .acls()
        .iter()
        .filter(|b| principal.is_none_or(|p| b.principal == p))
        .cloned()
        .collect())
}
