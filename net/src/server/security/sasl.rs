//! SASL on a client connection, for both front ends: the mechanisms offered, the
//! exchange's state (kept in the connection's [`Session`]), and the credentials, read from
//! the controller's replicated metadata as this shard's view has it.
//!
//! ```text
//!  Idle --handshake(mechanism)--> Chosen --token--> (SCRAM) Scram --token--> authenticated
//!                                        \--token--> (PLAIN) authenticated
//!  any failure --> Failed: the connection is done (Kafka closes it; so do we)
//! ```
//!
//! Offered: SCRAM-SHA-256 and SCRAM-SHA-512 always, PLAIN only on a TLS connection (the
//! password crosses the wire). The exchange runs in `begin`, in request order, so the
//! request after the last token already sees the principal.

use std::cell::RefCell;

use super::{Principal, Session};
use crate::scram::{ClientFirst, Mechanism, ScramCredential, ScramError, ServerExchange};
use crate::server::shard::Shard;

/// SASL PLAIN's name.
pub(crate) const PLAIN: &str = "PLAIN";

/// What the client is told when an exchange fails, whatever the reason (the reason goes
/// to the server's log): nothing that tells a wrong password from an unknown user.
pub(crate) fn failure_message(mechanism: &str) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL \
         mechanism {mechanism}"
    )
}

/// Where a connection's SASL exchange is.
#[derive(Debug, Default)]
pub(crate) enum SaslState {
    /// No handshake yet.
    #[default]
    Idle,
    /// A mechanism was chosen; its first token is next.
    Chosen(Chosen),
    /// SCRAM: the server-first message was sent; the client-final is next.
    Scram(Box<ServerExchange>),
    /// Authenticated (the session holds the principal).
    Done,
    /// An exchange failed: no other is begun on this connection.
    Failed,
}

/// A mechanism a handshake chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chosen {
    /// SCRAM with this hash.
    Scram(Mechanism),
    /// PLAIN (TLS only).
    Plain,
}

impl Chosen {
    fn name(self) -> &'static str {
        match self {
            Chosen::Scram(m) => m.name(),
            Chosen::Plain => PLAIN,
        }
    }
}

/// Why a handshake was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The mechanism is not offered on this connection.
    #[error("SASL mechanism {0:?} is not enabled (offered: {1})")]
    Unsupported(String, String),
    /// A handshake after authentication or after a failed exchange, or twice.
    #[error("a SASL handshake is not expected now")]
    IllegalState,
}

/// An authenticate step's outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Send this token; the exchange goes on.
    Continue(Vec<u8>),
    /// Send this token (maybe empty); the connection is authenticated as the principal.
    Done(Vec<u8>, Principal),
}

/// Why an authenticate step failed: `log` for the server's log, the client is told
/// [`failure_message`] of `mechanism`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SaslFailure {
    pub(crate) mechanism: &'static str,
    pub(crate) log: String,
    /// False when no exchange was begun (a token without a handshake): Kafka's
    /// ILLEGAL_SASL_STATE rather than an authentication failure.
    pub(crate) began: bool,
}

/// The mechanisms offered on `session`'s connection.
pub(crate) fn mechanisms(session: &Session) -> Vec<String> {
    let mut offered: Vec<String> = Mechanism::ALL.iter().map(|m| m.name().to_owned()).collect();
    if session.is_tls() {
        offered.push(PLAIN.to_owned());
    }
    offered
}

/// Whether `session` may send requests other than the handshake ones: always when the
/// node does not require SASL, else once authenticated (by SASL or a client certificate).
pub(crate) fn may_request(shard: &Shard, session: &Session) -> bool {
    !shard.node.security.sasl_required || session.is_authenticated()
}

/// The credential of `user` for `mechanism` in this shard's view of the metadata.
pub(crate) fn credential(
    shard: &Shard,
    user: &str,
    mechanism: Mechanism,
) -> Option<ScramCredential> {
    let view = shard.cluster.view()?;
    let stored = view.metadata.users().get(user)?.get(mechanism.name())?;
    Some(ScramCredential {
        mechanism,
        salt: stored.salt.clone(),
        iterations: stored.iterations,
        stored_key: stored.stored_key.clone(),
        server_key: stored.server_key.clone(),
    })
}

/// The SASL state of a connection, kept in its [`Session`].
#[derive(Debug, Default)]
pub(crate) struct Sasl {
    state: RefCell<SaslState>,
    /// Kafka's SaslHandshake v0: the tokens that follow come as bare size-prefixed
    /// frames, not SaslAuthenticate requests.
    bare_tokens: std::cell::Cell<bool>,
}

impl Session {
    /// After a SaslHandshake v0: the exchange's tokens come bare.
    pub(crate) fn sasl_bare_tokens(&self) {
        self.sasl.bare_tokens.set(true);
    }

    /// Whether the next frame is a bare SASL token (a v0 exchange under way).
    pub(crate) fn expects_bare_token(&self) -> bool {
        self.sasl.bare_tokens.get()
            && matches!(
                *self.sasl.state.borrow(),
                SaslState::Chosen(_) | SaslState::Scram(_)
            )
    }

    /// Whether no SASL exchange is under way and none failed: the principal is then all
    /// the connection has proven, and all that must go with it to another shard.
    pub(crate) fn between_exchanges(&self) -> bool {
        matches!(*self.sasl.state.borrow(), SaslState::Idle | SaslState::Done)
    }

    /// A SaslHandshake: chooses `mechanism` for the exchange that follows.
    pub(crate) fn sasl_handshake(&self, mechanism: &str) -> Result<(), HandshakeError> {
        let mut state = self.sasl.state.borrow_mut();
        if !matches!(*state, SaslState::Idle) || self.is_authenticated() {
            return Err(HandshakeError::IllegalState);
        }
        let chosen = match Mechanism::from_name(mechanism) {
            Some(m) => Chosen::Scram(m),
            None if mechanism == PLAIN && self.is_tls() => Chosen::Plain,
            None => {
                return Err(HandshakeError::Unsupported(
                    mechanism.chars().take(64).collect(),
                    mechanisms(self).join(", "),
                ));
            }
        };
        *state = SaslState::Chosen(chosen);
        Ok(())
    }

    /// A SaslAuthenticate token: the next step of the exchange the handshake chose.
    /// `lookup` finds a user's credential for a mechanism. On success the session holds
    /// the principal; on failure no further exchange is taken on this connection.
    pub(crate) fn sasl_authenticate(
        &self,
        token: &[u8],
        nonce: impl FnOnce() -> Result<String, ScramError>,
        lookup: impl Fn(&str, Mechanism) -> Option<ScramCredential>,
    ) -> Result<Progress, SaslFailure> {
        let state = std::mem::replace(&mut *self.sasl.state.borrow_mut(), SaslState::Failed);
        let (mechanism, outcome) = match state {
            SaslState::Chosen(Chosen::Scram(mechanism)) => {
                let outcome = ClientFirst::parse(token).and_then(|first| {
                    let credential = lookup(&first.user, mechanism);
                    ServerExchange::start(mechanism, first, credential, &nonce()?)
                });
                let outcome = outcome.map(|(exchange, reply)| {
                    *self.sasl.state.borrow_mut() = SaslState::Scram(Box::new(exchange));
                    Progress::Continue(reply)
                });
                (mechanism.name(), outcome)
            }
            SaslState::Scram(exchange) => {
                let mechanism = exchange_mechanism(&exchange);
                let user = exchange.user().to_owned();
                let outcome = exchange
                    .finish(token)
                    .map(|(user, reply)| Progress::Done(reply, Principal(user)))
                    .map_err(|e| match e {
                        ScramError::Proof => ScramError::Server(format!(
                            "user {user:?}: wrong password or no such user"
                        )),
                        other => other,
                    });
                (mechanism, outcome)
            }
            SaslState::Chosen(Chosen::Plain) => {
                let outcome = crate::scram::parse_plain(token).and_then(|(user, password)| {
                    let verified = Mechanism::ALL
                        .iter()
                        .find_map(|m| lookup(&user, *m))
                        .is_some_and(|c| c.verifies_password(&password));
                    if verified {
                        Ok(Progress::Done(Vec::new(), Principal(user)))
                    } else {
                        Err(ScramError::Server(format!(
                            "user {user:?}: wrong password or no such user"
                        )))
                    }
                });
                (Chosen::Plain.name(), outcome)
            }
            SaslState::Idle | SaslState::Done | SaslState::Failed => {
                return Err(SaslFailure {
                    mechanism: "(none)",
                    log: "a SASL token without a handshake before it".to_owned(),
                    began: false,
                });
            }
        };
        match outcome {
            Ok(Progress::Done(reply, principal)) => {
                *self.sasl.state.borrow_mut() = SaslState::Done;
                self.authenticated(principal.clone());
                Ok(Progress::Done(reply, principal))
            }
            Ok(progress) => Ok(progress),
            Err(e) => Err(SaslFailure {
                mechanism,
                log: e.to_string(),
                began: true,
            }),
        }
    }
}

fn exchange_mechanism(exchange: &ServerExchange) -> &'static str {
    exchange.mechanism().name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::{ClientExchange, new_nonce};

    fn lookup_of(
        credential: ScramCredential,
    ) -> impl Fn(&str, Mechanism) -> Option<ScramCredential> {
        move |user, mechanism| {
            (user == "alice" && mechanism == credential.mechanism).then(|| credential.clone())
        }
    }

    #[test]
    fn a_scram_exchange_authenticates_the_session() {
        let session = Session::new(false, None);
        let credential = ScramCredential::generate(Mechanism::Sha512, "pw", 4096).unwrap();
        session.sasl_handshake("SCRAM-SHA-512").unwrap();
        let (client, first) =
            ClientExchange::start(Mechanism::Sha512, "alice", "pw", &new_nonce().unwrap()).unwrap();
        let lookup = lookup_of(credential);
        let Ok(Progress::Continue(server_first)) =
            session.sasl_authenticate(&first, new_nonce, &lookup)
        else {
            panic!("no server-first");
        };
        let (client, last) = client.answer(&server_first).unwrap();
        let Ok(Progress::Done(server_final, principal)) =
            session.sasl_authenticate(&last, new_nonce, &lookup)
        else {
            panic!("not authenticated");
        };
        client.verify(&server_final).unwrap();
        assert_eq!(principal.to_string(), "User:alice");
        assert_eq!(session.principal(), Some(principal));
        assert_eq!(
            session.sasl_handshake("SCRAM-SHA-512"),
            Err(HandshakeError::IllegalState)
        );
    }

    #[test]
    fn a_failed_exchange_ends_sasl_on_the_connection() {
        let session = Session::new(false, None);
        let credential = ScramCredential::generate(Mechanism::Sha256, "pw", 4096).unwrap();
        let lookup = lookup_of(credential);
        session.sasl_handshake("SCRAM-SHA-256").unwrap();
        let (client, first) =
            ClientExchange::start(Mechanism::Sha256, "alice", "wrong", &new_nonce().unwrap())
                .unwrap();
        let Ok(Progress::Continue(server_first)) =
            session.sasl_authenticate(&first, new_nonce, &lookup)
        else {
            panic!("no server-first");
        };
        let (_, last) = client.answer(&server_first).unwrap();
        let failure = session
            .sasl_authenticate(&last, new_nonce, &lookup)
            .unwrap_err();
        assert!(failure.began);
        assert_eq!(session.principal(), None);
        assert_eq!(
            session.sasl_handshake("SCRAM-SHA-256"),
            Err(HandshakeError::IllegalState)
        );
        // Garbage as a first token fails too, without a panic.
        let session = Session::new(false, None);
        session.sasl_handshake("SCRAM-SHA-256").unwrap();
        assert!(
            session
                .sasl_authenticate(b"\xff\x00", new_nonce, &lookup)
                .is_err()
        );
        // A token without a handshake.
        let session = Session::new(false, None);
        assert!(
            !session
                .sasl_authenticate(b"n,,", new_nonce, &lookup)
                .unwrap_err()
                .began
        );
    }

    #[test]
    fn plain_is_offered_over_tls_only() {
        let clear = Session::new(false, None);
        assert!(matches!(
            clear.sasl_handshake(PLAIN),
            Err(HandshakeError::Unsupported(..))
        ));
        assert!(!mechanisms(&clear).contains(&PLAIN.to_owned()));
        let tls = Session::new(true, None);
        let credential = ScramCredential::generate(Mechanism::Sha256, "pw", 4096).unwrap();
        tls.sasl_handshake(PLAIN).unwrap();
        let progress = tls
            .sasl_authenticate(b"\0alice\0pw", new_nonce, lookup_of(credential))
            .unwrap();
        assert!(matches!(progress, Progress::Done(..)));
        assert_eq!(tls.principal(), Some(Principal("alice".into())));
    }
}
