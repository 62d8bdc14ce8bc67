//! SASL users: created, changed and deleted through the controller (`UpsertUserCredential`,
//! `DeleteUser`), listed from this shard's view of its metadata. Like a placement change,
//! a change runs on shard 0, where the controller voter lives: the controller leader
//! proposes it, a node that does not lead passes it to the one that does over the peer
//! link and relays the answer. The bootstrap superuser (`--superuser-file`, or
//! `SHARDLOG_SUPERUSER` and `SHARDLOG_SUPERUSER_PASSWORD`) is created the same way once
//! the node serves, if the metadata has no such user.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_replicator::controller::{Command, Refusal, UserCredential, valid_user_name};

use crate::api::{Api, DeleteUserRequest, ListedUser, UpsertUserRequest};
use crate::scram::{ITERATIONS_DEFAULT, Mechanism, ScramCredential};
use crate::server::config::BootstrapUser;
use crate::server::ops::topics::{controller_leader, leader_answer};
use crate::server::ops::{OpError, Pending, on_shard_zero};
use crate::server::shard::{Shard, ShardMsg};

/// How often the bootstrap superuser's creation is tried until it is done.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(500);

/// A change to the users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UserChange {
    /// Set `user`'s credential for the credential's mechanism.
    Upsert {
        user: String,
        credential: UserCredential,
    },
    /// Delete `user`.
    Delete { user: String },
}

impl UserChange {
    /// The change an `UpsertUser` request asks for.
    pub(crate) fn upsert(request: UpsertUserRequest) -> UserChange {
        UserChange::Upsert {
            user: request.user,
            credential: UserCredential {
                mechanism: request.mechanism,
                salt: request.salt,
                iterations: request.iterations,
                stored_key: request.stored_key,
                server_key: request.server_key,
            },
        }
    }
}

/// Runs `change` on shard 0; the answer is a sentence saying what was done.
pub(crate) async fn change(shard: &Rc<Shard>, change: UserChange) -> Pending<String> {
    let here = |shard: Rc<Shard>, change| async move { change_here(&shard, change).await };
    on_shard_zero(shard, change, here, |change, reply| ShardMsg::UserChange {
        change,
        reply,
    })
    .await
}

/// `change` on shard 0: proposed if this node leads the controller, else passed to the
/// node that does.
pub(crate) async fn change_here(shard: &Rc<Shard>, change: UserChange) -> Result<String, OpError> {
    let user = match &change {
        UserChange::Upsert { user, .. } | UserChange::Delete { user } => user.clone(),
    };
    if !valid_user_name(&user) {
        return Err(OpError::InvalidRequest(format!(
            "user name {user:?}: 1 to 128 of A-Z a-z 0-9 . _ @ -"
        )));
    }
    let service = shard
        .cluster
        .controller
        .as_ref()
        .ok_or_else(|| OpError::Unknown("user change off shard 0".into()))?;
    if !service.is_leader() {
        return pass_to_leader(shard, change).await;
    }
    let (command, done) = match change {
        UserChange::Upsert { user, credential } => {
            let done = format!("user {user}: {} credential set", credential.mechanism);
            let command = Command::UpsertUserCredential {
                user,
                credential: Box::new(credential),
            };
            (command, done)
        }
        UserChange::Delete { user } => {
            let done = format!("user {user} deleted");
            (Command::DeleteUser { user }, done)
        }
    };
    match service.propose(command).await {
        Ok(Ok(())) | Ok(Err(Refusal::NoChange)) => Ok(done),
        Ok(Err(Refusal::UnknownUser)) => Err(OpError::InvalidRequest(format!("no user {user}"))),
        Ok(Err(refusal @ Refusal::InvalidCredential(_))) => {
            Err(OpError::InvalidRequest(refusal.to_string()))
        }
        Ok(Err(refusal)) => Err(OpError::Unknown(refusal.to_string())),
        Err(e) => Err(OpError::Timeout(e)),
    }
}

/// Passes `change` to the controller leader over the peer link and relays its answer.
async fn pass_to_leader(shard: &Shard, change: UserChange) -> Result<String, OpError> {
    let leader = controller_leader(shard)?;
    let peers = &shard.cluster.peers;
    let answer = match change {
        UserChange::Upsert { user, credential } => {
            let request = UpsertUserRequest {
                user,
                mechanism: credential.mechanism,
                salt: credential.salt,
                iterations: credential.iterations,
                stored_key: credential.stored_key,
                server_key: credential.server_key,
            };
            peers
                .call(leader.0, Api::UpsertUser, &request, Bytes::new())
                .await
        }
        UserChange::Delete { user } => {
            let request = DeleteUserRequest { user };
            peers
                .call(leader.0, Api::DeleteUser, &request, Bytes::new())
                .await
        }
    };
    leader_answer(leader, answer)
}

/// The users in this shard's view: names and mechanisms, never keys.
pub(crate) fn list(shard: &Shard) -> Result<Vec<ListedUser>, OpError> {
    let view = shard.cluster.view().ok_or_else(|| {
        OpError::NotAvailable("the node is catching up with the controller".into())
    })?;
    Ok(view
        .metadata
        .users()
        .iter()
        .map(|(name, credentials)| ListedUser {
            name: name.clone(),
            mechanisms: credentials.keys().cloned().collect(),
        })
        .collect())
}

/// Creates the bootstrap superuser (a credential for each SCRAM mechanism) unless the
/// metadata has the user already; tried until done or the shard stops. On shard 0.
pub(crate) async fn bootstrap(shard: Rc<Shard>, user: BootstrapUser) {
    let mut credentials = Vec::new();
    for mechanism in Mechanism::ALL {
        match ScramCredential::generate(mechanism, &user.password, ITERATIONS_DEFAULT) {
            Ok(c) => credentials.push(c),
            Err(e) => {
                tracing::error!(user = user.name, error = %e, "bootstrap superuser not created");
                return;
            }
        }
    }
    drop(user.password);
    while !shard.is_stopping() {
        let Some(view) = shard.cluster.view() else {
            // Catching up with the controller: the user may exist in what is to come.
            glommio::timer::sleep(BOOTSTRAP_RETRY).await;
            continue;
        };
        if view.metadata.users().contains_key(&user.name) {
            tracing::debug!(user = user.name, "bootstrap superuser exists");
            return;
        }
        let mut failed = None;
        for credential in &credentials {
            let change = UserChange::Upsert {
                user: user.name.clone(),
                credential: stored(credential),
            };
            if let Err(e) = change_here(&shard, change).await {
                failed = Some(e);
                break;
            }
        }
        match failed {
            None => {
                tracing::info!(user = user.name, "bootstrap superuser created");
                return;
            }
            Some(e) => {
                tracing::debug!(user = user.name, error = %e, "bootstrap superuser: retrying")
            }
        }
        glommio::timer::sleep(BOOTSTRAP_RETRY).await;
    }
}

/// A credential as the metadata stores it.
pub(crate) fn stored(credential: &ScramCredential) -> UserCredential {
    UserCredential {
        mechanism: credential.mechanism.name().to_owned(),
        salt: credential.salt.clone(),
        iterations: credential.iterations,
        stored_key: credential.stored_key.clone(),
        server_key: credential.server_key.clone(),
    }
}
