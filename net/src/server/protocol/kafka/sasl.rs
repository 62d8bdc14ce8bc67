//! SaslHandshake (v1) and SaslAuthenticate (v0-2): Kafka's SASL exchange, run in
//! `dispatch::begin` (in request order: the request after the last token sees the
//! principal). Mechanisms: SCRAM-SHA-256, SCRAM-SHA-512, and PLAIN on TLS connections
//! only (`security::sasl`).
//!
//! After a SaslHandshake v0 the client sends the tokens bare (a size, then the token),
//! not as SaslAuthenticate requests, and gets the server's tokens so ([`bare_token`]); a
//! failure then closes the connection. (librdkafka lists SaslHandshake v0 as a feature
//! test, then uses v1 with SaslAuthenticate.) A failed SaslAuthenticate is answered with
//! SASL_AUTHENTICATION_FAILED; the connection takes no other request after it (it is
//! closed at the next one, as Kafka closes it), so a password is tried once per
//! connection.

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::request::{self, Answer, KafkaReply, Request, respond};
use crate::scram::new_nonce;
use crate::server::security::Session;
use crate::server::security::sasl::{self, HandshakeError, Progress, failure_message};
use crate::server::shard::Shard;

/// Kafka's UNSUPPORTED_SASL_MECHANISM.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Kafka's ILLEGAL_SASL_STATE.
const ILLEGAL_SASL_STATE: i16 = 34;
/// Kafka's SASL_AUTHENTICATION_FAILED.
pub(crate) const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// A SaslHandshake: the mechanism chosen, or the ones offered.
pub(crate) fn handshake(request: &Request, session: &Session) -> Answer {
    let body = match request::decode::<SaslHandshakeRequest>(request) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let error = match session.sasl_handshake(body.mechanism.as_str()) {
        Ok(()) if request.head.version == 0 => {
            session.sasl_bare_tokens();
            super::errors::NONE
        }
        Ok(()) => super::errors::NONE,
        Err(HandshakeError::Unsupported(..)) => UNSUPPORTED_SASL_MECHANISM,
        Err(HandshakeError::IllegalState) => ILLEGAL_SASL_STATE,
    };
    let mechanisms = sasl::mechanisms(session)
        .into_iter()
        .map(StrBytes::from_string)
        .collect();
    let response = SaslHandshakeResponse::default()
        .with_error_code(error)
        .with_mechanisms(mechanisms);
    respond(request.head, &response)
}

/// A bare token of a v0 exchange (the whole frame): answered bare, or by closing the
/// connection on a failure.
pub(crate) fn bare_token(shard: &Shard, frame: &[u8], session: &Session) -> Answer {
    let lookup = |user: &str, mechanism| sasl::credential(shard, user, mechanism);
    match session.sasl_authenticate(frame, new_nonce, lookup) {
        Ok(Progress::Continue(token) | Progress::Done(token, _)) => {
            let Ok(size) = i32::try_from(token.len()) else {
                return Answer::Close("a SASL token too large".into());
            };
            let mut bytes = Vec::with_capacity(4 + token.len());
            bytes.extend_from_slice(&size.to_be_bytes());
            bytes.extend_from_slice(&token);
            Answer::Reply(KafkaReply {
                pieces: vec![Bytes::from(bytes)],
            })
        }
        Err(failure) => Answer::Close(format!(
            "SASL authentication failed ({}): {}",
            failure.mechanism, failure.log
        )),
    }
}

/// A SaslAuthenticate: one token of the exchange.
pub(crate) fn authenticate(shard: &Shard, request: &Request, session: &Session) -> Answer {
    let body = match request::decode::<SaslAuthenticateRequest>(request) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let lookup = |user: &str, mechanism| sasl::credential(shard, user, mechanism);
    let response = match session.sasl_authenticate(&body.auth_bytes, new_nonce, lookup) {
        Ok(Progress::Continue(token)) => {
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token))
        }
        Ok(Progress::Done(token, principal)) => {
            tracing::debug!(%principal, "kafka client authenticated");
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token))
        }
        Err(failure) => {
            tracing::warn!(
                mechanism = failure.mechanism,
                reason = failure.log,
                "SASL authentication failed (kafka)"
            );
            let (code, message) = if failure.began {
                (
                    SASL_AUTHENTICATION_FAILED,
                    failure_message(failure.mechanism),
                )
            } else {
                (ILLEGAL_SASL_STATE, failure.log)
            };
            SaslAuthenticateResponse::default()
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message)))
        }
    };
    respond(request.head, &response)
}
