//! SASL authentication (SaslHandshake, SaslAuthenticate) and user admin (UpsertUser,
//! DeleteUser, ListUsers) on the shardlog protocol. The exchange is Kafka's: a handshake
//! names the mechanism, then each SaslAuthenticate carries one SASL token each way
//! (SCRAM: client-first then client-final; PLAIN: one token). Until it completes, a node
//! that requires SASL (`--authentication sasl`) answers any other api with
//! `ErrorCode::AuthenticationFailed`. UpsertUser and DeleteUser go to the controller
//! leader (a node passes them on); UpsertUser carries a credential the client derived
//! from the password (salt, iterations, StoredKey, ServerKey), never the password.

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SaslHandshakeRequest {
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512`, or `PLAIN` (TLS connections only).
    pub mechanism: String,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SaslHandshakeResponse {
    /// `ErrorCode` number: `UnsupportedSaslMechanism`, `IllegalSaslState` or none.
    pub error: u16,
    /// Human context for an error.
    pub message: String,
    /// The mechanisms this connection is offered.
    pub mechanisms: Vec<String>,
}

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SaslAuthenticateRequest {
    /// The client's SASL token.
    pub token: Vec<u8>,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SaslAuthenticateResponse {
    /// `ErrorCode` number: `AuthenticationFailed` (the server closes the connection after
    /// it), `IllegalSaslState`, or none.
    pub error: u16,
    /// Human context for an error.
    pub message: String,
    /// The server's SASL token.
    pub token: Vec<u8>,
    /// Whether the connection is authenticated now.
    pub done: bool,
}

/// Request meta; no data. Answered with a `TopicResponse`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct UpsertUserRequest {
    /// The user name (1..=128 of `[A-Za-z0-9._@-]`).
    pub user: String,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// The salt.
    pub salt: Vec<u8>,
    /// Hi's iteration count (4096 at least).
    pub iterations: u32,
    /// StoredKey.
    pub stored_key: Vec<u8>,
    /// ServerKey.
    pub server_key: Vec<u8>,
}

/// Request meta; no data. Answered with a `TopicResponse`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DeleteUserRequest {
    /// The user name.
    pub user: String,
}

/// Request meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListUsersRequest {}

/// One user: its name and the mechanisms it has a credential for.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListedUser {
    /// The user name.
    pub name: String,
    /// Mechanism names.
    pub mechanisms: Vec<String>,
}

/// Response meta; no data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ListUsersResponse {
    /// `ErrorCode` number.
    pub error: u16,
    /// Human context for an error.
    pub message: String,
    /// Users, by name.
    pub users: Vec<ListedUser>,
}
