//! SASL for the client: every connection the client opens authenticates (SaslHandshake,
//! then SaslAuthenticate with each SCRAM token) before any other request goes on it, when
//! the client has [`SaslCredentials`]. The server's final SCRAM message is checked too: a
//! server that does not hold the user's credential cannot fake it.

use std::time::Duration;

use bytes::Bytes;

use super::connection::Connection;
use super::{ClientError, Payload, check, decode_reply, head};
use crate::api::{
    Api, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use crate::error_code::ErrorCode;
use crate::scram::{ClientExchange, Mechanism, new_nonce};

/// Who a client authenticates as.
#[derive(Clone)]
pub struct SaslCredentials {
    /// The user name.
    pub user: String,
    /// The password (printable ASCII).
    pub password: String,
    /// The SCRAM mechanism.
    pub mechanism: Mechanism,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

/// Sends one request on `conn` and decodes its reply.
async fn round_trip<Req, Resp>(
    conn: &Connection,
    correlation: u64,
    api: Api,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, ClientError>
where
    Req: crate::frame::Meta,
    Resp: rkyv::Archive,
    Resp::Archived: for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, rkyv::rancor::Error>>
        + rkyv::Deserialize<Resp, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let head = head(api, correlation, request, &Payload::default())?;
    let Some(reply) = conn.send_within(correlation, head, Bytes::new(), true, timeout)? else {
        return Err(ClientError::Protocol("no reply channel".into()));
    };
    let frame = reply
        .await
        .map_err(|_| ClientError::Protocol("reply channel dropped".into()))??;
    decode_reply::<Resp>(api, frame).map(|(resp, _)| resp)
}

/// Authenticates `conn` as `credentials`; `correlation` hands out correlation ids.
pub(crate) async fn authenticate(
    conn: &Connection,
    mut correlation: impl FnMut() -> u64,
    credentials: &SaslCredentials,
    timeout: Duration,
) -> Result<(), ClientError> {
    let failed = |e: crate::scram::ScramError| ClientError::Server {
        code: ErrorCode::AuthenticationFailed,
        message: e.to_string(),
    };
    let mechanism = credentials.mechanism;
    let request = SaslHandshakeRequest {
        mechanism: mechanism.name().to_owned(),
    };
    let response: SaslHandshakeResponse =
        round_trip(conn, correlation(), Api::SaslHandshake, &request, timeout).await?;
    if response.error != ErrorCode::None.as_u16() {
        let offered = response.mechanisms.join(", ");
        return check(
            response.error,
            &format!("{} (the server offers: {offered})", response.message),
        );
    }
    let nonce = new_nonce().map_err(failed)?;
    let (exchange, first) =
        ClientExchange::start(mechanism, &credentials.user, &credentials.password, &nonce)
            .map_err(failed)?;
    let server_first = token(conn, correlation(), first, timeout).await?;
    let (exchange, last) = exchange.answer(&server_first).map_err(failed)?;
    let server_final = token(conn, correlation(), last, timeout).await?;
    exchange.verify(&server_final).map_err(failed)
}

/// Sends one SASL token; the server's token back.
async fn token(
    conn: &Connection,
    correlation: u64,
    token: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let request = SaslAuthenticateRequest { token };
    let response: SaslAuthenticateResponse =
        round_trip(conn, correlation, Api::SaslAuthenticate, &request, timeout).await?;
    check(response.error, &response.message)?;
    Ok(response.token)
}

/// The mechanism named `name` (for flags): `SCRAM-SHA-256` or `SCRAM-SHA-512`.
pub fn mechanism(name: &str) -> Result<Mechanism, String> {
    Mechanism::from_name(name)
        .ok_or_else(|| format!("SASL mechanism {name:?}: SCRAM-SHA-256 or SCRAM-SHA-512"))
}
