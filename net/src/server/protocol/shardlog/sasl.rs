//! The shardlog protocol's SASL apis (SaslHandshake, SaslAuthenticate: the exchange runs
//! here, in `begin`, so the next request of the connection sees its outcome) and user
//! admin (UpsertUser, DeleteUser: through the controller leader; ListUsers: from this
//! shard's view).

use std::rc::Rc;

use futures::FutureExt;
use futures::future::ready;

use crate::api::{
    Api, DeleteUserRequest, ListUsersRequest, ListUsersResponse, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, UpsertUserRequest,
};
use crate::error_code::ErrorCode;
use crate::scram::new_nonce;
use crate::server::security::sasl::{self, HandshakeError, Progress, failure_message};
use crate::server::security::users::{self, UserChange};
use crate::server::security::{Principal, Session};
use crate::server::shard::Shard;
use crate::wire::Frame;

use super::handlers::Completion;
use super::reply::{Reply, error_reply, reply};

fn done(reply: Reply) -> Completion {
    ready(Some(reply)).boxed_local()
}

/// A SaslHandshake or SaslAuthenticate request.
pub(crate) fn exchange(shard: &Shard, frame: &Frame, session: &Session, peer: &str) -> Completion {
    if frame.header.api == Api::SaslHandshake as u16 {
        handshake(frame, session)
    } else {
        authenticate(shard, frame, session, peer)
    }
}

fn handshake(frame: &Frame, session: &Session) -> Completion {
    let header = frame.header;
    let request = match frame.decode::<SaslHandshakeRequest>() {
        Ok(r) => r,
        Err(e) => {
            return done(error_reply(
                &header,
                ErrorCode::InvalidRequest,
                &e.to_string(),
            ));
        }
    };
    let (error, message) = match session.sasl_handshake(&request.mechanism) {
        Ok(()) => (ErrorCode::None, String::new()),
        Err(e @ HandshakeError::Unsupported(..)) => {
            (ErrorCode::UnsupportedSaslMechanism, e.to_string())
        }
        Err(e @ HandshakeError::IllegalState) => (ErrorCode::IllegalSaslState, e.to_string()),
    };
    let response = SaslHandshakeResponse {
        error: error.as_u16(),
        message,
        mechanisms: sasl::mechanisms(session),
    };
    done(reply(&header, &response, Vec::new()))
}

fn authenticate(shard: &Shard, frame: &Frame, session: &Session, peer: &str) -> Completion {
    let header = frame.header;
    let request = match frame.decode::<SaslAuthenticateRequest>() {
        Ok(r) => r,
        Err(e) => {
            return done(error_reply(
                &header,
                ErrorCode::InvalidRequest,
                &e.to_string(),
            ));
        }
    };
    let lookup = |user: &str, mechanism| sasl::credential(shard, user, mechanism);
    let response = match session.sasl_authenticate(&request.token, new_nonce, lookup) {
        Ok(Progress::Continue(token)) => SaslAuthenticateResponse {
            error: ErrorCode::None.as_u16(),
            message: String::new(),
            token,
            done: false,
        },
        Ok(Progress::Done(token, Principal(user))) => {
            tracing::debug!(peer, user, "client authenticated (shardlog protocol)");
            SaslAuthenticateResponse {
                error: ErrorCode::None.as_u16(),
                message: String::new(),
                token,
                done: true,
            }
        }
        Err(failure) => {
            tracing::warn!(
                peer,
                mechanism = failure.mechanism,
                reason = failure.log,
                "SASL authentication failed"
            );
            let (error, message) = if failure.began {
                (
                    ErrorCode::AuthenticationFailed,
                    failure_message(failure.mechanism),
                )
            } else {
                (ErrorCode::IllegalSaslState, failure.log)
            };
            SaslAuthenticateResponse {
                error: error.as_u16(),
                message,
                token: Vec::new(),
                done: false,
            }
        }
    };
    done(reply(&header, &response, Vec::new()))
}

/// The answer to a request sent before authentication on a node that requires it.
pub(crate) fn unauthenticated(frame: &Frame) -> Completion {
    done(error_reply(
        &frame.header,
        ErrorCode::AuthenticationFailed,
        "this node requires SASL authentication (--authentication sasl): authenticate \
         first (SaslHandshake, SaslAuthenticate; the CLI's --user)",
    ))
}

/// UpsertUser or DeleteUser, from a client or passed on by a peer.
pub(crate) async fn user_change(shard: &Rc<Shard>, frame: Frame) -> Completion {
    let header = frame.header;
    let change = if header.api == Api::UpsertUser as u16 {
        frame.decode::<UpsertUserRequest>().map(UserChange::upsert)
    } else {
        frame
            .decode::<DeleteUserRequest>()
            .map(|r| UserChange::Delete { user: r.user })
    };
    let change = match change {
        Ok(change) => change,
        Err(e) => {
            return done(error_reply(
                &header,
                ErrorCode::InvalidRequest,
                &e.to_string(),
            ));
        }
    };
    let pending = users::change(shard, change).await;
    super::reply::change_answered(header, pending)
}

/// ListUsers.
pub(crate) fn list_users(shard: &Shard, frame: &Frame) -> Completion {
    if let Err(e) = frame.decode::<ListUsersRequest>() {
        return done(error_reply(
            &frame.header,
            ErrorCode::InvalidRequest,
            &e.to_string(),
        ));
    }
    let response = match users::list(shard) {
        Ok(users) => ListUsersResponse {
            error: ErrorCode::None.as_u16(),
            message: String::new(),
            users,
        },
        Err(e) => ListUsersResponse {
            error: e.code().as_u16(),
            message: e.to_string(),
            users: Vec::new(),
        },
    };
    done(reply(&frame.header, &response, Vec::new()))
}
