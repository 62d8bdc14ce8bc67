//! SCRAM (RFC 5802) with SHA-256 and SHA-512 (RFC 7677), sans I/O: the four messages of
//! the exchange parsed and built, for the server (`shardlogd`'s SASL on both listeners)
//! and the client (the shardlog client library, CLI and bench).
//!
//! ```text
//!  client-first  n,,n=<user>,r=<client nonce>
//!  server-first  r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
//!  client-final  c=<base64 gs2 header>,r=<nonce>,p=<base64 proof>
//!  server-final  v=<base64 server signature>     (or e=<error>)
//! ```
//!
//! The server keeps no password, only a [`ScramCredential`]: the salt, the iteration
//! count and `StoredKey = H(HMAC(SaltedPassword, "Client Key"))`, `ServerKey =
//! HMAC(SaltedPassword, "Server Key")`, where `SaltedPassword = Hi(password, salt, i)`
//! (PBKDF2-HMAC with one block, written out here). The client's proof is checked by
//! hashing `proof XOR ClientSignature` and comparing it with `StoredKey` in constant time.
//!
//! SASLprep (RFC 4013) is done for the ASCII subset only: a password or user name of
//! printable ASCII is its own SASLprep output, anything else (non-ASCII, control
//! characters) is refused with [`ScramError::NotAscii`] rather than normalised wrongly.
//! Channel binding is not offered (`n` or `y` flags; `p=` is refused). Every message comes
//! from a socket: parsing never panics and bounds what it keeps.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The fewest iterations a credential may have (RFC 7677's minimum; Kafka's too).
pub const ITERATIONS_MIN: u32 = 4096;
/// The most iterations a credential may have, and that a client computes for a server:
/// a bound on the work a server's first message can ask of a client.
pub const ITERATIONS_MAX: u32 = 1 << 20;
/// Iterations of a new credential unless asked otherwise.
pub const ITERATIONS_DEFAULT: u32 = ITERATIONS_MIN;
/// Salt bytes of a new credential.
pub const SALT_BYTES: usize = 24;
/// The longest salt accepted (from metadata or a server).
pub const SALT_BYTES_MAX: usize = 256;
/// The longest SCRAM message accepted (user names and nonces are short).
pub const MESSAGE_BYTES_MAX: usize = 4096;
/// Random bytes in a nonce (base64 makes them printable and comma-free).
const NONCE_BYTES: usize = 24;

/// A SCRAM mechanism: its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl Mechanism {
    /// Both mechanisms, in the order they are offered.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism named `name` (case-sensitive, as SASL names are).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Bytes of the hash, and of every key.
    #[must_use]
    pub fn key_len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                // Any key length is valid for HMAC.
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                    return Vec::new();
                };
                for part in parts {
                    mac.update(part);
                }
                mac.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(key) else {
                    return Vec::new();
                };
                for part in parts {
                    mac.update(part);
                }
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with this HMAC, one block of output.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = self.hmac(password, &[salt, &1u32.to_be_bytes()]);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &[&u]);
            for (o, b) in out.iter_mut().zip(&u) {
                *o ^= b;
            }
        }
        out
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the server keeps of a user's password, for one mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// The mechanism (the hash).
    pub mechanism: Mechanism,
    /// The salt.
    pub salt: Vec<u8>,
    /// Hi's iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential of `password` with `salt` and `iterations`.
    pub fn new(
        mechanism: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramCredential, ScramError> {
        let password = saslprep(password)?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        if salt.is_empty() || salt.len() > SALT_BYTES_MAX {
            return Err(ScramError::Malformed("salt length"));
        }
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
        let keys = Keys::of(mechanism, &salted);
        Ok(ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: keys.stored,
            server_key: keys.server,
        })
    }

    /// The credential of `password` with a fresh random salt.
    pub fn generate(
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> Result<ScramCredential, ScramError> {
        let mut salt = [0u8; SALT_BYTES];
        getrandom::fill(&mut salt).map_err(|e| ScramError::Random(e.to_string()))?;
        ScramCredential::new(mechanism, password, &salt, iterations)
    }

    /// Whether the fields are what a credential of its mechanism has (lengths, bounds):
    /// credentials come from replicated metadata written by other nodes.
    #[must_use]
    pub fn is_well_formed(&self) -> bool {
        let len = self.mechanism.key_len();
        self.stored_key.len() == len
            && self.server_key.len() == len
            && !self.salt.is_empty()
            && self.salt.len() <= SALT_BYTES_MAX
            && (ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations)
    }

    /// Whether `password` is the one this credential was made of (SASL PLAIN): its
    /// `StoredKey` recomputed and compared in constant time.
    #[must_use]
    pub fn verifies_password(&self, password: &str) -> bool {
        let Ok(password) = saslprep(password) else {
            return false;
        };
        let salted =
            self.mechanism
                .salted_password(password.as_bytes(), &self.salt, self.iterations);
        let keys = Keys::of(self.mechanism, &salted);
        constant_time_eq(&keys.stored, &self.stored_key)
    }

    /// A credential no password matches, for a user that does not exist: the exchange
    /// goes on as for a real user and fails at the proof, so an unknown user cannot be
    /// told from a wrong password. Its salt is the same for every attempt on one name (a
    /// keyed hash of it, with a key random per process), as a real user's is.
    fn decoy(mechanism: Mechanism, user: &str) -> ScramCredential {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut key = [0u8; 32];
            // Without randomness the decoy still fails every proof (its keys are not a
            // password's); only its salt becomes predictable.
            let _ = getrandom::fill(&mut key);
            key
        });
        let salt = Mechanism::Sha256.hmac(key, &[b"decoy salt", user.as_bytes()]);
        let stored = mechanism.hmac(key, &[b"decoy key", user.as_bytes()]);
        ScramCredential {
            mechanism,
            salt: salt[..SALT_BYTES].to_vec(),
            iterations: ITERATIONS_DEFAULT,
            server_key: stored.clone(),
            stored_key: stored,
        }
    }
}

/// ClientKey, StoredKey and ServerKey of a salted password.
struct Keys {
    client: Vec<u8>,
    stored: Vec<u8>,
    server: Vec<u8>,
}

impl Keys {
    fn of(mechanism: Mechanism, salted: &[u8]) -> Keys {
        let client = mechanism.hmac(salted, &[b"Client Key"]);
        Keys {
            stored: mechanism.hash(&client),
            server: mechanism.hmac(salted, &[b"Server Key"]),
            client,
        }
    }
}

/// Why an exchange failed. The server tells its client only "authentication failed"
/// (the detail goes to its log), so a client learns nothing about users from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message does not follow the grammar; the text names the part.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A message over [`MESSAGE_BYTES_MAX`].
    #[error("SCRAM message of {0} bytes is too long")]
    TooLong(usize),
    /// A password or user name outside printable ASCII (SASLprep is done for ASCII only).
    #[error(
        "{0} must be printable ASCII (SASLprep is implemented for ASCII only; other \
         characters are refused)"
    )]
    NotAscii(&'static str),
    /// Channel binding asked for (`p=`), or an extension this side does not know.
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// An authorization identity other than the user.
    #[error("authorization identity differs from the user name")]
    Authzid,
    /// The nonce of the final message is not the one of this exchange (a replay or a
    /// message of another exchange), or the server's does not extend the client's.
    #[error("nonce mismatch")]
    Nonce,
    /// The client's proof is wrong: wrong password or unknown user.
    #[error("authentication failed: invalid credentials")]
    Proof,
    /// The server's signature is wrong: it does not hold this user's credential.
    #[error("server signature does not verify: the server does not know this password")]
    ServerSignature,
    /// The server answered with `e=`.
    #[error("server refused: {0}")]
    Server(String),
    /// An iteration count out of bounds.
    #[error("iteration count {0} outside {ITERATIONS_MIN}..={ITERATIONS_MAX}")]
    Iterations(u32),
    /// The random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// SASLprep of printable ASCII is the identity; anything else is refused.
fn saslprep(s: &str) -> Result<&str, ScramError> {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(s)
    } else {
        Err(ScramError::NotAscii("the password"))
    }
}

/// `a == b` in time that depends on the lengths only.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A fresh nonce: random bytes, base64 (printable, no comma).
pub fn new_nonce() -> Result<String, ScramError> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| ScramError::Random(e.to_string()))?;
    Ok(BASE64.encode(bytes))
}

/// A message as text: bounded, UTF-8.
fn text(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(ScramError::TooLong(message.len()));
    }
    std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// The value of attribute `name` (`n=value`) in `part`.
fn attribute(part: Option<&str>, name: char) -> Result<&str, ScramError> {
    let part = part.ok_or(ScramError::Malformed("a part is missing"))?;
    let mut chars = part.chars();
    if chars.next() != Some(name) || chars.next() != Some('=') {
        return Err(ScramError::Malformed("an attribute is not where expected"));
    }
    Ok(&part[2..])
}

/// A nonce value: printable ASCII without a comma, not empty.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b',')
}

/// A `saslname` decoded: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in a user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn decode_base64(value: &str, what: &'static str) -> Result<Vec<u8>, ScramError> {
    BASE64
        .decode(value)
        .map_err(|_| ScramError::Malformed(what))
}

/// The parsed client-first message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name (decoded).
    pub user: String,
    /// The client's nonce.
    pub nonce: String,
    /// `gs2-header` as sent (echoed, base64, in the final message's `c=`).
    gs2_header: String,
    /// `client-first-message-bare`, part of the AuthMessage.
    bare: String,
}

impl ClientFirst {
    /// Parses a client-first message.
    pub fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        let message = text(message)?;
        // gs2-header: cbind flag, authzid, then the bare message.
        let (flag, rest) = message
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::Unsupported("channel binding")),
            _ => return Err(ScramError::Malformed("gs2 channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no authzid field"))?;
        let gs2_header = &message[..flag.len() + authzid.len() + 2];
        let mut parts = bare.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::Unsupported("mandatory extension"));
        }
        let user = decode_saslname(attribute(first, 'n')?)?;
        let nonce = attribute(parts.next(), 'r')?;
        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("nonce"));
        }
        // Optional extensions follow (Kafka's `tokenauth=true` is one): delegation tokens
        // are not supported, other extensions are ignored as RFC 5802 allows.
        for extension in parts {
            if extension.starts_with("tokenauth=") {
                return Err(ScramError::Unsupported("delegation tokens"));
            }
        }
        if !authzid.is_empty() {
            let named = decode_saslname(attribute(Some(authzid), 'a')?)?;
            if named != user {
                return Err(ScramError::Authzid);
            }
        }
        Ok(ClientFirst {
            user,
            nonce: nonce.to_owned(),
            gs2_header: gs2_header.to_owned(),
            bare: bare.to_owned(),
        })
    }
}

/// The server between its first message and the client's final one.
#[derive(Debug)]
pub struct ServerExchange {
    first: ClientFirst,
    server_first: String,
    nonce: String,
    credential: ScramCredential,
}

impl ServerExchange {
    /// Answers `client_first` (parsed) with the server-first message: `credential` is the
    /// user's for this mechanism (`None`: no such user; the exchange fails at the proof,
    /// as for a wrong password), `server_nonce` this side's fresh nonce ([`new_nonce`]).
    pub fn start(
        mechanism: Mechanism,
        first: ClientFirst,
        credential: Option<ScramCredential>,
        server_nonce: &str,
    ) -> Result<(ServerExchange, Vec<u8>), ScramError> {
        if !valid_nonce(server_nonce) {
            return Err(ScramError::Malformed("server nonce"));
        }
        let credential = credential
            .filter(|c| c.mechanism == mechanism && c.is_well_formed())
            .unwrap_or_else(|| ScramCredential::decoy(mechanism, &first.user));
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let reply = server_first.clone().into_bytes();
        Ok((
            ServerExchange {
                first,
                server_first,
                nonce,
                credential,
            },
            reply,
        ))
    }

    /// The user the client claims to be.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.first.user
    }

    /// The exchange's mechanism.
    #[must_use]
    pub fn mechanism(&self) -> Mechanism {
        self.credential.mechanism
    }

    /// Checks the client-final message; on success, the proven user and the server-final
    /// message (`v=`) to send.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let message = text(client_final)?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut parts = without_proof.split(',');
        let binding = decode_base64(attribute(parts.next(), 'c')?, "channel binding")?;
        if binding != self.first.gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding differs from gs2 header",
            ));
        }
        // The nonce must end with this exchange's (client's and server's) nonce. Kafka's
        // server checks the same (`endsWith`), as librdkafka (at least to 2.0) sends its
        // own nonce again in front of the combined one; the server's fresh part still
        // makes a recorded final message useless in any other exchange, and the proof
        // covers the whole message.
        let nonce = attribute(parts.next(), 'r')?.as_bytes();
        let tail = nonce
            .len()
            .checked_sub(self.nonce.len())
            .and_then(|start| nonce.get(start..))
            .ok_or(ScramError::Nonce)?;
        if !constant_time_eq(tail, self.nonce.as_bytes()) {
            return Err(ScramError::Nonce);
        }
        let proof = decode_base64(proof, "proof")?;
        let mechanism = self.credential.mechanism;
        if proof.len() != mechanism.key_len() {
            return Err(ScramError::Proof);
        }
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let signature = mechanism.hmac(&self.credential.stored_key, &[auth_message.as_bytes()]);
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&mechanism.hash(&client_key), &self.credential.stored_key) {
            return Err(ScramError::Proof);
        }
        let server_signature =
            mechanism.hmac(&self.credential.server_key, &[auth_message.as_bytes()]);
        let reply = format!("v={}", BASE64.encode(server_signature)).into_bytes();
        Ok((self.first.user, reply))
    }
}

/// The client after its first message.
pub struct ClientExchange {
    mechanism: Mechanism,
    password: String,
    nonce: String,
    bare: String,
}

impl std::fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientExchange")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

/// The client after its final message: it checks the server's signature.
#[derive(Debug)]
pub struct ClientAwaitingFinal {
    server_signature: Vec<u8>,
}

impl ClientExchange {
    /// Starts an exchange as `user` with `password`: the client-first message to send.
    /// `nonce` is this side's fresh nonce ([`new_nonce`]).
    pub fn start(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        nonce: &str,
    ) -> Result<(ClientExchange, Vec<u8>), ScramError> {
        if user.is_empty() || !user.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(ScramError::NotAscii("the user name"));
        }
        saslprep(password)?;
        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("client nonce"));
        }
        let bare = format!("n={},r={nonce}", encode_saslname(user));
        let message = format!("n,,{bare}").into_bytes();
        Ok((
            ClientExchange {
                mechanism,
                password: password.to_owned(),
                nonce: nonce.to_owned(),
                bare,
            },
            message,
        ))
    }

    /// Answers the server-first message with the client-final one (computes Hi: the
    /// costly step, bounded by [`ITERATIONS_MAX`]).
    pub fn answer(self, server_first: &[u8]) -> Result<(ClientAwaitingFinal, Vec<u8>), ScramError> {
        let message = text(server_first)?;
        if let Some(error) = message.strip_prefix("e=") {
            return Err(ScramError::Server(error.chars().take(256).collect()));
        }
        let mut parts = message.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::Unsupported("mandatory extension"));
        }
        let nonce = attribute(first, 'r')?;
        if !valid_nonce(nonce) || nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce)
        {
            return Err(ScramError::Nonce);
        }
        let salt = decode_base64(attribute(parts.next(), 's')?, "salt")?;
        if salt.is_empty() || salt.len() > SALT_BYTES_MAX {
            return Err(ScramError::Malformed("salt length"));
        }
        let iterations: u32 = attribute(parts.next(), 'i')?
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count"))?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let mechanism = self.mechanism;
        let salted = mechanism.salted_password(self.password.as_bytes(), &salt, iterations);
        let keys = Keys::of(mechanism, &salted);
        // "biws" is base64 of "n,,": no channel binding, no authzid.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{message},{without_proof}", self.bare);
        let signature = mechanism.hmac(&keys.stored, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = keys
            .client
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = mechanism.hmac(&keys.server, &[auth_message.as_bytes()]);
        let reply = format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes();
        Ok((ClientAwaitingFinal { server_signature }, reply))
    }
}

impl ClientAwaitingFinal {
    /// Checks the server-final message: the server proved it holds the credential.
    pub fn verify(self, server_final: &[u8]) -> Result<(), ScramError> {
        let message = text(server_final)?;
        if let Some(error) = message.strip_prefix("e=") {
            return Err(ScramError::Server(error.chars().take(256).collect()));
        }
        let value = attribute(message.split(',').next(), 'v')?;
        let signature = decode_base64(value, "server signature")?;
        if constant_time_eq(&signature, &self.server_signature) {
            Ok(())
        } else {
            Err(ScramError::ServerSignature)
        }
    }
}

/// A SASL PLAIN message (RFC 4616): `[authzid] NUL authcid NUL password`. Returns the
/// user and password; an authzid other than the user is refused.
pub fn parse_plain(message: &[u8]) -> Result<(String, String), ScramError> {
    let message = text(message)?;
    let mut parts = message.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ScramError::Malformed(
            "PLAIN message is not authzid NUL user NUL password",
        ));
    };
    if user.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(ScramError::Authzid);
    }
    Ok((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// RFC 7677, section 3: the SCRAM-SHA-256 exchange of user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> ScramCredential {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredential::new(Mechanism::Sha256, "pencil", &salt, 4096).unwrap()
    }

    fn server(
        mechanism: Mechanism,
        credential: Option<ScramCredential>,
        client_first: &[u8],
    ) -> (ServerExchange, Vec<u8>) {
        let first = ClientFirst::parse(client_first).unwrap();
        ServerExchange::start(mechanism, first, credential, &new_nonce().unwrap()).unwrap()
    }

    #[test]
    fn rfc7677_server_side() {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(first.user, "user");
        let (exchange, server_first) = ServerExchange::start(
            Mechanism::Sha256,
            first,
            Some(rfc_credential()),
            SERVER_NONCE,
        )
        .unwrap();
        assert_eq!(server_first, SERVER_FIRST.as_bytes());
        let (user, server_final) = exchange.finish(CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(user, "user");
        assert_eq!(server_final, SERVER_FINAL.as_bytes());
    }

    #[test]
    fn rfc7677_client_side() {
        let (client, first) =
            ClientExchange::start(Mechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
                .unwrap();
        assert_eq!(first, CLIENT_FIRST.as_bytes());
        let (client, last) = client.answer(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(last, CLIENT_FINAL.as_bytes());
        client.verify(SERVER_FINAL.as_bytes()).unwrap();
        // A server that does not hold the credential cannot sign.
        let (client, _) =
            ClientExchange::start(Mechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
                .unwrap();
        let (client, _) = client.answer(SERVER_FIRST.as_bytes()).unwrap();
        let forged = "v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        assert_eq!(
            client.verify(forged.as_bytes()),
            Err(ScramError::ServerSignature)
        );
    }

    fn round_trip(mechanism: Mechanism, stored: &str, given: &str) -> Result<String, ScramError> {
        let credential = ScramCredential::generate(mechanism, stored, 4096).unwrap();
        let (client, first) =
            ClientExchange::start(mechanism, "alice", given, &new_nonce().unwrap()).unwrap();
        let (server, server_first) = server(mechanism, Some(credential), &first);
        let (client, last) = client.answer(&server_first)?;
        let (user, server_final) = server.finish(&last)?;
        client.verify(&server_final)?;
        Ok(user)
    }

    #[test]
    fn both_mechanisms_round_trip() {
        for mechanism in Mechanism::ALL {
            assert_eq!(
                round_trip(mechanism, "s3cret pass", "s3cret pass").unwrap(),
                "alice"
            );
        }
        let credential = ScramCredential::generate(Mechanism::Sha512, "x", 4096).unwrap();
        assert_eq!(credential.stored_key.len(), 64);
        assert!(credential.is_well_formed());
    }

    #[test]
    fn a_wrong_password_is_refused() {
        for mechanism in Mechanism::ALL {
            assert_eq!(
                round_trip(mechanism, "right", "wrong"),
                Err(ScramError::Proof)
            );
        }
    }

    #[test]
    fn an_unknown_user_fails_like_a_wrong_password() {
        let (client, first) =
            ClientExchange::start(Mechanism::Sha256, "nobody", "pw", &new_nonce().unwrap())
                .unwrap();
        let (server, server_first) = server(Mechanism::Sha256, None, &first);
        let (_, last) = client.answer(&server_first).unwrap();
        assert_eq!(server.finish(&last), Err(ScramError::Proof));
    }

    #[test]
    fn a_credential_of_the_other_mechanism_is_not_used() {
        let credential = ScramCredential::generate(Mechanism::Sha512, "pw", 4096).unwrap();
        let (client, first) =
            ClientExchange::start(Mechanism::Sha256, "alice", "pw", &new_nonce().unwrap()).unwrap();
        let (server, server_first) = server(Mechanism::Sha256, Some(credential), &first);
        let (_, last) = client.answer(&server_first).unwrap();
        assert_eq!(server.finish(&last), Err(ScramError::Proof));
    }

    /// A client-final message recorded from one exchange is refused by the next one (the
    /// server's nonce differs), and a final message whose nonce was altered is refused.
    #[test]
    fn a_replayed_or_altered_nonce_is_refused() {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let (exchange, _) = ServerExchange::start(
            Mechanism::Sha256,
            first,
            Some(rfc_credential()),
            &new_nonce().unwrap(),
        )
        .unwrap();
        assert_eq!(
            exchange.finish(CLIENT_FINAL.as_bytes()),
            Err(ScramError::Nonce)
        );
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let (exchange, _) = ServerExchange::start(
            Mechanism::Sha256,
            first,
            Some(rfc_credential()),
            SERVER_NONCE,
        )
        .unwrap();
        let altered = CLIENT_FINAL.replace("k0,p=", "k1,p=");
        assert_eq!(exchange.finish(altered.as_bytes()), Err(ScramError::Nonce));
        // A server nonce that does not extend the client's is refused by the client.
        let (client, _) =
            ClientExchange::start(Mechanism::Sha256, "user", "pencil", "abc").unwrap();
        let other = "r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            client.answer(other.as_bytes()).err(),
            Some(ScramError::Nonce)
        );
    }

    /// librdkafka's client-final repeats its own nonce before the combined one: accepted,
    /// as Kafka accepts it (the proof is over the message as sent).
    #[test]
    fn a_final_nonce_with_the_client_nonce_repeated_in_front_is_accepted() {
        let credential = ScramCredential::generate(Mechanism::Sha256, "pw", 4096).unwrap();
        let client_nonce = "cNonce";
        let first = ClientFirst::parse(format!("n,,n=alice,r={client_nonce}").as_bytes()).unwrap();
        let (server, server_first) =
            ServerExchange::start(Mechanism::Sha256, first, Some(credential.clone()), "sNonce")
                .unwrap();
        assert_eq!(
            server_first,
            b"r=cNoncesNonce,s="
                .iter()
                .copied()
                .chain(format!("{},i=4096", BASE64.encode(&credential.salt)).into_bytes())
                .collect::<Vec<_>>()
        );
        // Build the final message as librdkafka does: r=<cnonce><combined nonce>.
        let without_proof = "c=biws,r=cNoncecNoncesNonce";
        let auth = format!(
            "n=alice,r=cNonce,{},{without_proof}",
            String::from_utf8(server_first).unwrap()
        );
        let salted = Mechanism::Sha256.salted_password(b"pw", &credential.salt, 4096);
        let keys = Keys::of(Mechanism::Sha256, &salted);
        let signature = Mechanism::Sha256.hmac(&keys.stored, &[auth.as_bytes()]);
        let proof: Vec<u8> = keys
            .client
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let last = format!("{without_proof},p={}", BASE64.encode(proof));
        assert_eq!(server.finish(last.as_bytes()).unwrap().0, "alice");
    }

    #[test]
    fn truncated_and_garbage_messages_are_refused() {
        for bad in [
            "",
            "n",
            "n,",
            "n,,",
            "n,,n=",
            "n,,n=user",
            "n,,n=user,r=",
            "x,,n=user,r=abc",
            "p=tls-unique,,n=user,r=abc",
            "n,,m=ext,n=user,r=abc",
            "n,,n=us=er,r=abc",
            "n,a=other,n=user,r=abc",
        ] {
            assert!(ClientFirst::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(ClientFirst::parse(&[0xff, 0xfe]).is_err());
        assert!(matches!(
            ClientFirst::parse(&vec![b'a'; MESSAGE_BYTES_MAX + 1]),
            Err(ScramError::TooLong(_))
        ));
        let escaped = ClientFirst::parse(b"n,a=a=3Db,n=a=3Db,r=abc").unwrap();
        assert_eq!(escaped.user, "a=b");
        for bad in [
            "",
            "c=biws",
            "c=biws,r=x",
            "c=biws,p=abc",
            "c=!!,r=x,p=abc",
            &CLIENT_FINAL[..CLIENT_FINAL.len() - 3],
        ] {
            let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
            let (exchange, _) = ServerExchange::start(
                Mechanism::Sha256,
                first,
                Some(rfc_credential()),
                SERVER_NONCE,
            )
            .unwrap();
            assert!(exchange.finish(bad.as_bytes()).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "r=rOprNGfwEbeRWgbNEkqOx",
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22Z",
            "e=other-error",
        ] {
            let (client, _) =
                ClientExchange::start(Mechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
                    .unwrap();
            assert!(client.answer(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let (client, _) =
            ClientExchange::start(Mechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
                .unwrap();
        let weak = "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1";
        assert_eq!(
            client.answer(weak.as_bytes()).err(),
            Some(ScramError::Iterations(1))
        );
    }

    #[test]
    fn non_ascii_passwords_and_few_iterations_are_refused() {
        assert!(matches!(
            ScramCredential::generate(Mechanism::Sha256, "pässword", 4096),
            Err(ScramError::NotAscii(_))
        ));
        assert!(matches!(
            ScramCredential::generate(Mechanism::Sha256, "pw\n", 4096),
            Err(ScramError::NotAscii(_))
        ));
        assert_eq!(
            ScramCredential::generate(Mechanism::Sha256, "pw", 4095).err(),
            Some(ScramError::Iterations(4095))
        );
    }

    #[test]
    fn plain_checks_the_password_against_the_credential() {
        let credential = rfc_credential();
        let (user, password) = parse_plain(b"\0user\0pencil").unwrap();
        assert_eq!(user, "user");
        assert!(credential.verifies_password(&password));
        assert!(!credential.verifies_password("pencil2"));
        assert!(parse_plain(b"user\0pencil").is_err());
        assert_eq!(
            parse_plain(b"other\0user\0pencil"),
            Err(ScramError::Authzid)
        );
    }

    proptest! {
        /// Whatever bytes arrive at any step, each side answers with a value or an error.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                cut in 0usize..200) {
            let _ = ClientFirst::parse(&bytes);
            let _ = parse_plain(&bytes);
            let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
            let (exchange, _) = ServerExchange::start(
                Mechanism::Sha256, first, Some(rfc_credential()), SERVER_NONCE).unwrap();
            let _ = exchange.finish(&bytes);
            // A truncated final message, at every length.
            let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
            let (exchange, _) = ServerExchange::start(
                Mechanism::Sha256, first, Some(rfc_credential()), SERVER_NONCE).unwrap();
            let truncated = &CLIENT_FINAL.as_bytes()[..cut.min(CLIENT_FINAL.len() - 1)];
            prop_assert!(exchange.finish(truncated).is_err());
            let (client, _) = ClientExchange::start(
                Mechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO").unwrap();
            if let Ok((client, _)) = client.answer(&bytes) {
                let _ = client.verify(&bytes);
            }
        }
    }
}
