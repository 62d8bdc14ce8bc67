//! SaslHandshake (v1) and SaslAuthenticate (v0-2): Kafka's SASL exchange, run in
//! `dispatch::begin` (in request order: the request after the last token sees the
//! principal). Mechanisms: SCRAM-SHA-256, SCRAM-SHA-512, and PLAIN on TLS connections
//! only (`security::sasl`).
//!
//! SaslHandshake v0 is not served: after a v0 handshake a Kafka client sends bare SASL
//! tokens, not SaslAuthenticate requests (clients since Kafka 1.0 and librdkafka use v1
//! once the broker lists SaslAuthenticate). A failed exchange is answered with
//! SASL_AUTHENTICATION_FAILED; the connection takes no other request after it (it is
//! closed at the next one, as Kafka closes it), so a password is tried once per
//! connection.

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::request::{self, Answer, Request, respond};
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
