//! The peer handshake: the first bytes on every node-to-node connection, which prove which
//! node is at the other end before any Replicate or Controller frame is read. It owns the
//! peer security configuration ([`PeerSecurity`], loaded once at start-up), the handshake
//! on both ends ([`dial`], [`accept`]) and the stream that comes out of it ([`PeerStream`]).
//!
//! Three modes, the same on every node of a cluster (a mismatch is refused and named):
//!
//! - **Mutual TLS** (`Tls`): TLS 1.3 (rustls, ring provider) with a cluster CA. Both ends
//!   present a certificate signed by the CA. A node's identity is the DNS name
//!   `shardlog-node-<id>` in its certificate's subject alternative names: the dialer
//!   verifies the listener's certificate for `shardlog-node-<to>`, and the listener
//!   verifies the client certificate for `shardlog-node-<claimed id>`, the id the dialer
//!   sends inside the TLS session. Each node has its own key, so one node cannot pose as
//!   another. How to make the certificates: [`TlsFiles`].
//! - **Cluster secret** (`Secret`): a mutual HMAC-SHA256 challenge-response over a secret
//!   shared by every node (`--cluster-secret-file`). It proves that the other end holds the
//!   secret and binds the node ids it claims, which stops anyone who merely can connect
//!   from posing as a node. It neither encrypts nor protects the bytes that follow: an
//!   attacker on the path can read them or take the connection over after the handshake
//!   (use mutual TLS on networks you do not trust), and any holder of the secret can claim
//!   any node id.
//! - **Insecure**: node ids are exchanged (the listener learns who claims to connect, and
//!   a dialer that reached the wrong node notices) but nothing is proven. The server warns
//!   loudly at start.
//!
//! # Wire format
//!
//! Every handshake message is one fixed-size 80-byte record; integers little-endian:
//!
//! | offset | bytes | field                                                          |
//! |--------|-------|----------------------------------------------------------------|
//! | 0      | 4     | magic `SLPA`                                                   |
//! | 4      | 1     | version, 1                                                     |
//! | 5      | 1     | kind: 1 hello, 2 challenge, 3 proof, 4 verdict                 |
//! | 6      | 1     | mode of the sender: 0 insecure, 1 cluster secret, 2 mutual TLS |
//! | 7      | 1     | verdict (kind 4 only, else 0): 0 accepted, else [`Refusal`]    |
//! | 8      | 4     | sender's node id                                               |
//! | 12     | 4     | receiver's node id, as the sender believes it                  |
//! | 16     | 32    | nonce: the dialer's in a hello, the listener's in a challenge  |
//! | 48     | 32    | HMAC-SHA256 in a challenge (listener's) or proof (dialer's)    |
//!
//! Fields a kind does not use are zero; anything else is refused. The exchanges are:
//!
//! ```text
//! cluster secret:  dialer --hello(nonce_d)-->  listener
//!                  dialer <--challenge(nonce_l, mac_l)--
//!                  dialer --proof(mac_d)-->
//!                  dialer <--verdict--
//! insecure, TLS:   dialer --hello--> listener; dialer <--verdict--   (TLS: inside the session)
//! ```
//!
//! A refusal is a verdict sent in place of the next message, then the listener closes.
//! Each MAC is HMAC-SHA256 keyed with the secret over the fixed-size concatenation
//! `"shardlog-peer-auth/1" | direction | dialer id | listener id | nonce_d | nonce_l`,
//! direction `L` for the listener's MAC and `D` for the dialer's. Both nonces are fresh
//! (32 bytes from the OS), so a recorded exchange is useless later; the direction byte
//! makes a reflected MAC (the listener's own, sent back) fail; the ids bind who talks to
//! whom, so a dialer that meant node 3 refuses node 4 even if node 4 holds the secret.
//!
//! Every handshake finishes within [`HANDSHAKE_TIMEOUT`] or fails; it reads only fixed
//! 80-byte messages (plus what TLS itself reads), so a silent, slow or garbage-speaking
//! peer costs a bounded amount of memory and time and gets an error, never a panic.
//!
//! Everything here is `!Send` once it holds a stream: a [`PeerStream`] lives on the shard
//! that accepted or dialled it. [`PeerSecurity`] is plain configuration, loaded with
//! blocking file reads at start-up, and shared by every shard.

#![deny(clippy::indexing_slicing)]

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, select};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use glommio::net::TcpStream;
use hmac::{Hmac, KeyInit, Mac};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use sha2::Sha256;

use crate::tls_files::{
    PemError, read_certificates, read_file, read_private_key, read_roots, refuse_world_readable,
    ring_provider,
};

/// How long a handshake may take, TCP connection excepted, before it fails.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest cluster secret accepted, in bytes after trimming surrounding whitespace.
pub const SECRET_BYTES_MIN: usize = 32;
/// The ALPN protocol both TLS ends insist on, so a certificate also used by another TLS
/// service cannot be talked into this one by accident.
const ALPN: &[u8] = b"shardlog-peer/1";

const MAGIC: [u8; 4] = *b"SLPA";
const VERSION: u8 = 1;
const NONCE_BYTES: usize = 32;
const MAC_BYTES: usize = 32;
/// The size of every handshake message.
pub const MESSAGE_BYTES: usize = 80;
const _: () = assert!(MESSAGE_BYTES == 4 + 1 + 1 + 1 + 1 + 4 + 4 + NONCE_BYTES + MAC_BYTES);
/// Label and version bound into every MAC.
const MAC_LABEL: &[u8; 20] = b"shardlog-peer-auth/1";

/// The DNS name a node's certificate must carry (as a subject alternative name) in
/// mutual TLS mode: `shardlog-node-<id>`.
#[must_use]
pub fn node_dns_name(node: u32) -> String {
    format!("shardlog-node-{node}")
}

/// Why a handshake or the loading of the peer security configuration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A configured file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    ReadFile {
        /// Which file ("cluster secret file", "TLS certificate", ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A secret or private key file is readable by every user of the machine.
    #[error(
        "the {what} {path} is readable by every user (mode {mode:04o}); \
         restrict it with `chmod 600 {path}`"
    )]
    WorldReadable {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The cluster secret file holds too little secret.
    #[error(
        "the cluster secret file {path} holds {len} bytes after trimming whitespace; it \
         needs at least {SECRET_BYTES_MIN}: make one with `(umask 077; openssl rand -base64 48 > {path})` \
         and copy it to every node"
    )]
    SecretFileTooShort {
        /// Its path.
        path: PathBuf,
        /// Its length after trimming.
        len: usize,
    },
    /// A cluster secret given as bytes is too short.
    #[error("a cluster secret needs at least {SECRET_BYTES_MIN} bytes, got {len}")]
    SecretTooShort {
        /// Its length.
        len: usize,
    },
    /// A PEM file does not parse, or holds none of what it should.
    #[error("the {what} {path} holds no usable PEM {expected}: {source}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The PEM section expected, e.g. "CERTIFICATE".
        expected: &'static str,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificates and key do not make a usable TLS configuration (a CA certificate
    /// that does not parse, a key that does not match the certificate, a certificate not
    /// signed by the CA, expired or without the client and server key usages, ...).
    #[error("TLS configuration ({path}): {source}")]
    TlsConfig {
        /// The file the problem was found in.
        path: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the one of the certificate.
    #[error("the TLS private key {key} does not belong to the certificate {cert}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// This node's certificate does not verify under the cluster CA as a client
    /// certificate (every node is also a TLS client of the nodes it dials).
    #[error(
        "this node's TLS certificate {cert} is not usable under the CA in {ca}: {source}; it \
         must be current, signed by that CA and allow the serverAuth and clientAuth extended \
         key usages"
    )]
    CertificateUnusable {
        /// The certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// The verification error.
        #[source]
        source: rustls::Error,
    },
    /// The CA file gave no usable trust anchor.
    #[error("the TLS CA file {path}: {source}")]
    TlsCa {
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// In mutual TLS mode, this node's own certificate is not valid for its node id.
    #[error(
        "this node's TLS certificate {path} is not valid for node {node} (it must carry the DNS \
         subject alternative name {name:?} and be signed by the cluster CA): {source}"
    )]
    OwnCertificate {
        /// The certificate file.
        path: PathBuf,
        /// This node's id.
        node: u32,
        /// The name it should carry.
        name: String,
        /// The verification error.
        #[source]
        source: rustls::Error,
    },
    /// The handshake did not finish in time.
    #[error("the peer handshake did not finish within {after:?}")]
    Timeout {
        /// The time allowed.
        after: Duration,
    },
    /// The other end closed the connection during the handshake.
    #[error("the other end closed the connection during the peer handshake")]
    Closed,
    /// The other end stopped in the middle of a handshake message.
    #[error(
        "the other end closed the connection after {got} of a {MESSAGE_BYTES}-byte handshake message"
    )]
    Truncated {
        /// Bytes received.
        got: usize,
    },
    /// The socket failed.
    #[error("peer handshake i/o: {0}")]
    Io(#[source] io::Error),
    /// TLS failed (bad or missing certificate, wrong name, untrusted CA, alert received).
    #[error("peer TLS: {0}")]
    Tls(#[source] io::Error),
    /// The other end speaks something else than this node's handshake.
    #[error("the other end does not speak the shardlog peer handshake: {reason}")]
    Malformed {
        /// What gave it away.
        reason: &'static str,
    },
    /// The other end is configured for another security mode.
    #[error(
        "peer security mismatch: this node uses {ours}, the other end uses {theirs}; \
         configure every node of the cluster alike"
    )]
    ModeMismatch {
        /// This node's mode.
        ours: Mode,
        /// The other end's.
        theirs: Mode,
    },
    /// The dialer reached another node than the one it meant.
    #[error("meant to reach node {expected} but reached node {found}; check --peers")]
    WrongNode {
        /// The node the dialer meant.
        expected: u32,
        /// The node that answered.
        found: u32,
    },
    /// The dialer (node `from`) meant to reach node `to`, not this node.
    #[error("node {from} dialled node {to}, but this is node {me}; check its --peers")]
    NotForUs {
        /// The dialer's claimed id.
        from: u32,
        /// The node it meant.
        to: u32,
        /// This node.
        me: u32,
    },
    /// The dialer claims a node id that is not a member (or is this node's own).
    #[error("node {node} is not a member of this cluster (or is this node itself)")]
    NotAllowed {
        /// The claimed id.
        node: u32,
    },
    /// A MAC did not verify: the other end does not hold the same cluster secret, or the
    /// message was replayed, reflected or altered.
    #[error(
        "node {node} failed the cluster secret challenge (a different secret, or a replayed \
         or forged message)"
    )]
    BadProof {
        /// The node that failed it.
        node: u32,
    },
    /// In mutual TLS mode, the dialer's certificate is not valid for the node id it claims.
    #[error(
        "the TLS certificate of the dialer is not valid for the node {node} it claims: {source}"
    )]
    CertificateNotForNode {
        /// The claimed id.
        node: u32,
        /// The name check's error.
        #[source]
        source: webpki::Error,
    },
    /// The listener refused this dialer.
    #[error("node {to} refused the peer handshake: {reason}")]
    Refused {
        /// The node dialled.
        to: u32,
        /// Its reason.
        reason: Refusal,
    },
    /// The operating system gave no random bytes.
    #[error("no random bytes for a handshake nonce: {0}")]
    Random(#[source] getrandom::Error),
}

impl From<PemError> for AuthError {
    fn from(error: PemError) -> AuthError {
        match error {
            PemError::ReadFile { what, path, source } => AuthError::ReadFile { what, path, source },
            PemError::WorldReadable { what, path, mode } => {
                AuthError::WorldReadable { what, path, mode }
            }
            PemError::Pem {
                what,
                path,
                expected,
                source,
            } => AuthError::Pem {
                what,
                path,
                expected,
                source,
            },
            PemError::Anchor { path, source } => AuthError::TlsConfig { path, source },
        }
    }
}

/// How the nodes of a cluster prove who they are. Loaded once at start-up
/// ([`PeerSecurity::load`]) and shared, read-only, by every shard.
pub enum PeerSecurity {
    /// Node ids are exchanged, nothing is proven.
    Insecure,
    /// An HMAC challenge-response over a shared cluster secret.
    Secret(ClusterSecret),
    /// Mutual TLS under a cluster CA.
    Tls(PeerTls),
}

/// The security mode of a node, as sent in every handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// No proof.
    Insecure = 0,
    /// Cluster secret.
    Secret = 1,
    /// Mutual TLS.
    Tls = 2,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Insecure => "no peer authentication",
            Mode::Secret => "a cluster secret",
            Mode::Tls => "mutual TLS",
        })
    }
}

impl TryFrom<u8> for Mode {
    type Error = AuthError;
    fn try_from(byte: u8) -> Result<Mode, AuthError> {
        match byte {
            0 => Ok(Mode::Insecure),
            1 => Ok(Mode::Secret),
            2 => Ok(Mode::Tls),
            _ => Err(AuthError::Malformed {
                reason: "unknown security mode",
            }),
        }
    }
}

/// Why a listener refused a dialer; sent in a verdict message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// The dialer meant another node.
    WrongNode = 1,
    /// The dialer's node id is not a member.
    NotAllowed = 2,
    /// The dialer's MAC did not verify.
    BadProof = 3,
    /// The two ends use different security modes.
    ModeMismatch = 4,
    /// The dialer's message did not parse.
    Malformed = 5,
    /// The dialer's TLS certificate is not valid for the node id it claims.
    CertificateNotForNode = 6,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::WrongNode => "it is not the node this one meant to reach",
            Refusal::NotAllowed => "this node's id is not a member there",
            Refusal::BadProof => "this node's proof of the cluster secret did not verify",
            Refusal::ModeMismatch => "it uses another peer security mode",
            Refusal::Malformed => "it could not parse this node's handshake",
            Refusal::CertificateNotForNode => {
                "this node's TLS certificate is not valid for this node's id"
            }
        })
    }
}

/// The shared cluster secret, kept as a keyed HMAC-SHA256 state. Its `Debug` shows nothing
/// of the secret.
#[derive(Clone)]
pub struct ClusterSecret {
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// The files of mutual TLS mode, PEM-encoded: this node's certificate (optionally followed
/// by intermediates), its private key (PKCS#8, SEC1 or PKCS#1; not readable by every user)
/// and the cluster CA certificate(s) that sign every node's certificate.
///
/// Each node's certificate carries the DNS subject alternative name `shardlog-node-<id>`
/// and both the `serverAuth` and `clientAuth` extended key usages (a node is a TLS server
/// to its dialers and a TLS client to the nodes it dials). With openssl, for node 1:
///
/// ```text
/// # once per cluster: the CA (keep ca.key off the nodes)
/// openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
///   -keyout ca.key -out ca.pem -days 3650 -subj "/CN=shardlog cluster CA"
///
/// # per node (here node 1)
/// openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
///   -keyout node1.key -out node1.csr -subj "/CN=shardlog-node-1"
/// printf '%s\n' 'subjectAltName = DNS:shardlog-node-1' \
///   'extendedKeyUsage = serverAuth, clientAuth' \
///   'keyUsage = critical, digitalSignature' \
///   'basicConstraints = critical, CA:FALSE' > node1.ext
/// openssl x509 -req -in node1.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
///   -out node1.pem -days 825 -sha256 -extfile node1.ext
/// chmod 600 node1.key
/// ```
///
/// Give node 1 `node1.pem`, `node1.key` and `ca.pem`. The name is what matters, not the
/// host: certificates do not change when a node moves to another address.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// The cluster CA certificate(s) (PEM).
    pub ca: PathBuf,
}

/// Mutual TLS mode, ready to use: both rustls configurations and this node's certificate.
pub struct PeerTls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    server_verifier: Arc<WebPkiServerVerifier>,
    chain: Vec<CertificateDer<'static>>,
    cert_path: PathBuf,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("cert", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PeerSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerSecurity::Insecure => f.write_str("Insecure"),
            PeerSecurity::Secret(secret) => f.debug_tuple("Secret").field(secret).finish(),
            PeerSecurity::Tls(tls) => f.debug_tuple("Tls").field(tls).finish(),
        }
    }
}

impl ClusterSecret {
    /// A secret from its bytes (surrounding ASCII whitespace is trimmed first); at least
    /// [`SECRET_BYTES_MIN`] must remain.
    pub fn new(secret: &[u8]) -> Result<ClusterSecret, AuthError> {
        let secret = secret.trim_ascii();
        if secret.len() < SECRET_BYTES_MIN {
            return Err(AuthError::SecretTooShort { len: secret.len() });
        }
        let keyed = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| AuthError::SecretTooShort { len: secret.len() })?;
        Ok(ClusterSecret { keyed })
    }

    fn load(path: &Path) -> Result<ClusterSecret, AuthError> {
        const WHAT: &str = "cluster secret file";
        refuse_world_readable(WHAT, path)?;
        let bytes = read_file(WHAT, path)?;
        ClusterSecret::new(&bytes).map_err(|e| match e {
            AuthError::SecretTooShort { len } => AuthError::SecretFileTooShort {
                path: path.to_owned(),
                len,
            },
            other => other,
        })
    }

    /// The MAC one side sends: see the module docs for what it covers.
    fn mac(
        &self,
        direction: u8,
        ids: Ids,
        dialer_nonce: &Nonce,
        listener_nonce: &Nonce,
    ) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(MAC_LABEL);
        mac.update(&[direction]);
        mac.update(&ids.dialer.to_le_bytes());
        mac.update(&ids.listener.to_le_bytes());
        mac.update(dialer_nonce);
        mac.update(listener_nonce);
        mac
    }

    fn sign(
        &self,
        direction: u8,
        ids: Ids,
        dialer_nonce: &Nonce,
        listener_nonce: &Nonce,
    ) -> [u8; MAC_BYTES] {
        let tag = self
            .mac(direction, ids, dialer_nonce, listener_nonce)
            .finalize()
            .into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&tag);
        out
    }

    /// Constant-time check of a received MAC.
    fn verifies(
        &self,
        direction: u8,
        ids: Ids,
        dialer_nonce: &Nonce,
        listener_nonce: &Nonce,
        tag: &[u8; MAC_BYTES],
    ) -> bool {
        self.mac(direction, ids, dialer_nonce, listener_nonce)
            .verify_slice(tag)
            .is_ok()
    }
}

/// The two ends of a handshake, by role.
#[derive(Clone, Copy)]
struct Ids {
    dialer: u32,
    listener: u32,
}

type Nonce = [u8; NONCE_BYTES];
/// Direction byte of the listener's MAC (in the challenge).
const FROM_LISTENER: u8 = b'L';
/// Direction byte of the dialer's MAC (in the proof).
const FROM_DIALER: u8 = b'D';

impl PeerTls {
    fn load(files: &TlsFiles) -> Result<PeerTls, AuthError> {
        let chain = read_certificates("TLS certificate", &files.cert)?;
        let key = read_private_key("TLS private key", &files.key)?;
        let roots = Arc::new(read_roots(&files.ca)?);
        let provider = Arc::new(ring_provider());
        let config_error = |path: &Path| {
            let path = path.to_owned();
            let cert = files.cert.clone();
            move |source| match source {
                rustls::Error::InconsistentKeys(_) => AuthError::KeyMismatch { key: path, cert },
                source => AuthError::TlsConfig { path, source },
            }
        };
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|source| AuthError::TlsCa {
                    path: files.ca.clone(),
                    source,
                })?;
        // Fail at start-up, naming the file, rather than at every connection: our own
        // certificate must chain to the CA, be current and allow client authentication.
        if let Some((leaf, intermediates)) = chain.split_first() {
            client_verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .map_err(|source| AuthError::CertificateUnusable {
                    cert: files.cert.clone(),
                    ca: files.ca.clone(),
                    source,
                })?;
        }
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|source| AuthError::TlsCa {
                    path: files.ca.clone(),
                    source,
                })?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error(&files.cert))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config_error(&files.key))?;
        // No resumption: every connection presents and checks certificates afresh.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error(&files.cert))?
            .with_webpki_verifier(server_verifier.clone())
            .with_client_auth_cert(chain.clone(), key)
            .map_err(config_error(&files.key))?;
        client.resumption = rustls::client::Resumption::disabled();
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(PeerTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            server_verifier,
            chain,
            cert_path: files.cert.clone(),
        })
    }
}

impl PeerSecurity {
    /// The peer security from the server's configuration: mutual TLS when `tls` is given
    /// (then `secret_file` is not read, and a warning says so), else the cluster secret in
    /// `secret_file` (at least [`SECRET_BYTES_MIN`] bytes once surrounding whitespace is
    /// trimmed, used as they are; the file must not be readable by every user), else
    /// [`PeerSecurity::Insecure`], which the caller should warn about loudly.
    ///
    /// Blocking: reads files with `std::fs`; call it at start-up, not on an executor.
    /// Call [`PeerSecurity::check_node_id`] next, once the node id is known.
    pub fn load(
        secret_file: Option<&Path>,
        tls: Option<TlsFiles>,
    ) -> Result<PeerSecurity, AuthError> {
        match (tls, secret_file) {
            (Some(files), secret_file) => {
                if let Some(path) = secret_file {
                    tracing::warn!(
                        secret_file = %path.display(),
                        "both TLS files and a cluster secret file are configured; peers use \
                         mutual TLS and the secret file is not read"
                    );
                }
                Ok(PeerSecurity::Tls(PeerTls::load(&files)?))
            }
            (None, Some(path)) => Ok(PeerSecurity::Secret(ClusterSecret::load(path)?)),
            (None, None) => Ok(PeerSecurity::Insecure),
        }
    }

    /// The mode, as sent in handshakes and shown in logs.
    #[must_use]
    pub fn mode(&self) -> Mode {
        match self {
            PeerSecurity::Insecure => Mode::Insecure,
            PeerSecurity::Secret(_) => Mode::Secret,
            PeerSecurity::Tls(_) => Mode::Tls,
        }
    }

    /// Start-up check that this node can prove it is node `me`: in mutual TLS mode its
    /// certificate must be valid for `shardlog-node-<me>` under the cluster CA (a clear
    /// error now instead of refused connections later). Nothing to check in other modes.
    pub fn check_node_id(&self, me: u32) -> Result<(), AuthError> {
        let PeerSecurity::Tls(tls) = self else {
            return Ok(());
        };
        let Some((leaf, intermediates)) = tls.chain.split_first() else {
            return Ok(());
        };
        let name = node_dns_name(me);
        let own_error = |source| AuthError::OwnCertificate {
            path: tls.cert_path.clone(),
            node: me,
            name: name.clone(),
            source,
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| own_error(rustls::Error::General("invalid node name".into())))?;
        tls.server_verifier
            .verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(own_error)
    }
}

/// A peer connection after its handshake: application bytes in and out, through TLS in
/// mutual TLS mode, else straight to the socket (no per-byte work after the handshake).
///
/// `S` is the socket: glommio's [`TcpStream`], or its buffered form
/// (`TcpStream<Preallocated>` from `buffered_with`), which the plain modes then read
/// through; rustls buffers on its own. It is `AsyncRead + AsyncWrite + Unpin`, so
/// `futures::io::AsyncReadExt::split` and `futures::io::BufReader` work on it. `!Send`:
/// it lives on the shard that made it.
pub struct PeerStream<S = TcpStream> {
    inner: Inner<S>,
}

enum Inner<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S> PeerStream<S> {
    /// The socket underneath (for `peer_addr`, `set_nodelay`, ...). In TLS mode, reading
    /// or writing it directly would break the session.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        match &self.inner {
            Inner::Plain(stream) => stream,
            Inner::Tls(stream) => stream.get_ref().0,
        }
    }

    /// Whether the bytes travel inside TLS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }

    /// A plain stream whose handshake was done on another shard (a link moved to the shard
    /// it asked for, `Api::BindShard`): what that handshake proved moves with it.
    pub(crate) fn proven_plain(stream: S) -> PeerStream<S> {
        PeerStream {
            inner: Inner::Plain(stream),
        }
    }

    /// The socket itself when no TLS runs over it, else the stream back.
    pub fn into_plain(self) -> Result<S, PeerStream<S>> {
        match self.inner {
            Inner::Plain(stream) => Ok(stream),
            inner @ Inner::Tls(_) => Err(PeerStream { inner }),
        }
    }
}

impl<S> fmt::Debug for PeerStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerStream")
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PeerStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Inner::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(stream) => Pin::new(stream).poll_read_vectored(cx, bufs),
            Inner::Tls(stream) => Pin::new(stream.as_mut()).poll_read_vectored(cx, bufs),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PeerStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Inner::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Inner::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Inner::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(stream) => Pin::new(stream).poll_close(cx),
            Inner::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
    }
}

/// Dialer side: node `me`, connected to the address it has for node `to`, proves itself
/// and checks that node `to` answered. Fails within [`HANDSHAKE_TIMEOUT`].
pub async fn dial<S>(
    security: &PeerSecurity,
    stream: S,
    me: u32,
    to: u32,
) -> Result<PeerStream<S>, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    dial_within(security, stream, me, to, HANDSHAKE_TIMEOUT).await
}

/// [`dial`] with another time limit.
pub async fn dial_within<S>(
    security: &PeerSecurity,
    stream: S,
    me: u32,
    to: u32,
    timeout: Duration,
) -> Result<PeerStream<S>, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    bounded(timeout, dial_unbounded(security, stream, me, to)).await
}

/// Listener side: node `me` learns and checks which node connected. `allowed(id)` says
/// whether `id` is a member of the cluster; this node's own id is refused regardless.
/// Returns the stream and the proven node id. Fails within [`HANDSHAKE_TIMEOUT`].
pub async fn accept<S>(
    security: &PeerSecurity,
    stream: S,
    me: u32,
    allowed: impl Fn(u32) -> bool,
) -> Result<(PeerStream<S>, u32), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_within(security, stream, me, allowed, HANDSHAKE_TIMEOUT).await
}

/// [`accept`] with another time limit.
pub async fn accept_within<S>(
    security: &PeerSecurity,
    stream: S,
    me: u32,
    allowed: impl Fn(u32) -> bool,
    timeout: Duration,
) -> Result<(PeerStream<S>, u32), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    bounded(timeout, accept_unbounded(security, stream, me, allowed)).await
}

async fn bounded<T>(
    timeout: Duration,
    handshake: impl Future<Output = Result<T, AuthError>>,
) -> Result<T, AuthError> {
    let timer = glommio::timer::Timer::new(timeout);
    match select(std::pin::pin!(handshake), timer).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(AuthError::Timeout { after: timeout }),
    }
}

async fn dial_unbounded<S>(
    security: &PeerSecurity,
    stream: S,
    me: u32,
    to: u32,
) -> Result<PeerStream<S>, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ids = Ids {
        dialer: me,
        listener: to,
    };
    match security {
        PeerSecurity::Insecure => {
            let mut stream = stream;
            dialer_exchange(&mut stream, Mode::Insecure, None, ids).await?;
            Ok(PeerStream {
                inner: Inner::Plain(stream),
            })
        }
        PeerSecurity::Secret(secret) => {
            let mut stream = stream;
            dialer_exchange(&mut stream, Mode::Secret, Some(secret), ids).await?;
            Ok(PeerStream {
                inner: Inner::Plain(stream),
            })
        }
        PeerSecurity::Tls(tls) => {
            let name =
                ServerName::try_from(node_dns_name(to)).map_err(|_| AuthError::Malformed {
                    reason: "node id makes no valid DNS name",
                })?;
            let mut stream = tls
                .connector
                .connect(name, stream)
                .await
                .map_err(AuthError::Tls)?;
            dialer_exchange(&mut stream, Mode::Tls, None, ids).await?;
            Ok(PeerStream {
                inner: Inner::Tls(Box::new(TlsStream::Client(stream))),
            })
        }
    }
}

async fn accept_unbounded<S>(
    security: &PeerSecurity,
    stream: S,
    me: u32,
    allowed: impl Fn(u32) -> bool,
) -> Result<(PeerStream<S>, u32), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let allowed = |node: u32| node != me && allowed(node);
    match security {
        PeerSecurity::Insecure | PeerSecurity::Secret(_) => {
            let (mode, secret) = match security {
                PeerSecurity::Secret(secret) => (Mode::Secret, Some(secret)),
                _ => (Mode::Insecure, None),
            };
            let mut stream = stream;
            let from =
                listener_exchange(&mut stream, mode, secret, me, &allowed, |_| Ok(())).await?;
            Ok((
                PeerStream {
                    inner: Inner::Plain(stream),
                },
                from,
            ))
        }
        PeerSecurity::Tls(tls) => {
            let mut stream = tls.acceptor.accept(stream).await.map_err(AuthError::Tls)?;
            let peer_certificates = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec);
            let certificate_names =
                |node: u32| client_certificate_names(peer_certificates.as_deref(), node);
            let from = listener_exchange(
                &mut stream,
                Mode::Tls,
                None,
                me,
                &allowed,
                certificate_names,
            )
            .await?;
            Ok((
                PeerStream {
                    inner: Inner::Tls(Box::new(TlsStream::Server(stream))),
                },
                from,
            ))
        }
    }
}

/// Whether the client certificate (already verified against the CA by rustls) is valid for
/// `shardlog-node-<node>`.
fn client_certificate_names(
    certificates: Option<&[CertificateDer<'static>]>,
    node: u32,
) -> Result<(), AuthError> {
    let not_for_node = |source| AuthError::CertificateNotForNode { node, source };
    let leaf = certificates
        .and_then(<[_]>::first)
        .ok_or(not_for_node(webpki::Error::BadDer))?;
    let leaf = webpki::EndEntityCert::try_from(leaf).map_err(not_for_node)?;
    let name = ServerName::try_from(node_dns_name(node))
        .map_err(|_| not_for_node(webpki::Error::MalformedDnsIdentifier))?;
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(not_for_node)
}

/// The dialer's half of the exchange in the module docs.
async fn dialer_exchange<S>(
    stream: &mut S,
    mode: Mode,
    secret: Option<&ClusterSecret>,
    ids: Ids,
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let dialer_nonce = match secret {
        Some(_) => fresh_nonce()?,
        None => [0; NONCE_BYTES],
    };
    let hello = Message {
        kind: Kind::Hello,
        mode,
        verdict: 0,
        sender: ids.dialer,
        receiver: ids.listener,
        nonce: dialer_nonce,
        mac: [0; MAC_BYTES],
    };
    send(stream, &hello).await?;
    let reply = receive(stream).await?;
    check_reply(&reply, mode, ids)?;
    let Some(secret) = secret else {
        return expect_accepted(&reply);
    };
    if reply.kind != Kind::Challenge {
        return Err(AuthError::Malformed {
            reason: "expected a challenge",
        });
    }
    if reply.nonce == dialer_nonce {
        return Err(AuthError::BadProof { node: ids.listener });
    }
    if !secret.verifies(FROM_LISTENER, ids, &dialer_nonce, &reply.nonce, &reply.mac) {
        return Err(AuthError::BadProof { node: ids.listener });
    }
    let proof = Message {
        kind: Kind::Proof,
        mode,
        verdict: 0,
        sender: ids.dialer,
        receiver: ids.listener,
        nonce: [0; NONCE_BYTES],
        mac: secret.sign(FROM_DIALER, ids, &dialer_nonce, &reply.nonce),
    };
    send(stream, &proof).await?;
    let verdict = receive(stream).await?;
    check_reply(&verdict, mode, ids)?;
    expect_accepted(&verdict)
}

/// Checks that a listener's message is in our mode, from the node we meant, to us, and
/// not a refusal.
fn check_reply(reply: &Message, mode: Mode, ids: Ids) -> Result<(), AuthError> {
    if reply.mode != mode {
        return Err(AuthError::ModeMismatch {
            ours: mode,
            theirs: reply.mode,
        });
    }
    if reply.sender != ids.listener {
        return Err(AuthError::WrongNode {
            expected: ids.listener,
            found: reply.sender,
        });
    }
    if reply.kind == Kind::Verdict && reply.verdict != 0 {
        return Err(AuthError::Refused {
            to: ids.listener,
            reason: Refusal::try_from(reply.verdict)?,
        });
    }
    if reply.receiver != ids.dialer {
        return Err(AuthError::Malformed {
            reason: "the reply is addressed to another node",
        });
    }
    Ok(())
}

fn expect_accepted(reply: &Message) -> Result<(), AuthError> {
    match reply.kind {
        Kind::Verdict => Ok(()),
        Kind::Hello | Kind::Challenge | Kind::Proof => Err(AuthError::Malformed {
            reason: "expected a verdict",
        }),
    }
}

/// The listener's half of the exchange in the module docs; `certificate_names(from)`
/// checks, in TLS mode, that the dialer's certificate is valid for the id it claims.
async fn listener_exchange<S>(
    stream: &mut S,
    mode: Mode,
    secret: Option<&ClusterSecret>,
    me: u32,
    allowed: &impl Fn(u32) -> bool,
    certificate_names: impl FnOnce(u32) -> Result<(), AuthError>,
) -> Result<u32, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = match receive(stream).await {
        Ok(hello) if hello.kind == Kind::Hello => hello,
        Ok(_) => {
            let error = AuthError::Malformed {
                reason: "expected a hello",
            };
            return refuse(stream, mode, me, 0, Refusal::Malformed, error).await;
        }
        Err(error @ AuthError::Malformed { .. }) => {
            return refuse(stream, mode, me, 0, Refusal::Malformed, error).await;
        }
        Err(error) => return Err(error),
    };
    let from = hello.sender;
    if hello.mode != mode {
        let error = AuthError::ModeMismatch {
            ours: mode,
            theirs: hello.mode,
        };
        return refuse(stream, mode, me, from, Refusal::ModeMismatch, error).await;
    }
    if hello.receiver != me {
        let error = AuthError::NotForUs {
            from,
            to: hello.receiver,
            me,
        };
        return refuse(stream, mode, me, from, Refusal::WrongNode, error).await;
    }
    if !allowed(from) {
        let error = AuthError::NotAllowed { node: from };
        return refuse(stream, mode, me, from, Refusal::NotAllowed, error).await;
    }
    if let Err(error) = certificate_names(from) {
        return refuse(
            stream,
            mode,
            me,
            from,
            Refusal::CertificateNotForNode,
            error,
        )
        .await;
    }
    let ids = Ids {
        dialer: from,
        listener: me,
    };
    if let Some(secret) = secret {
        if let Err((refusal, error)) = challenge(stream, secret, ids, &hello.nonce).await? {
            return refuse(stream, mode, me, from, refusal, error).await;
        }
    }
    let accepted = Message {
        kind: Kind::Verdict,
        mode,
        verdict: 0,
        sender: me,
        receiver: from,
        nonce: [0; NONCE_BYTES],
        mac: [0; MAC_BYTES],
    };
    send(stream, &accepted).await?;
    Ok(from)
}

/// Sends the listener's challenge and checks the dialer's proof. The outer error is the
/// socket's; the inner one a refusal to send.
async fn challenge<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    ids: Ids,
    dialer_nonce: &Nonce,
) -> Result<Result<(), (Refusal, AuthError)>, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let listener_nonce = fresh_nonce()?;
    let challenge = Message {
        kind: Kind::Challenge,
        mode: Mode::Secret,
        verdict: 0,
        sender: ids.listener,
        receiver: ids.dialer,
        nonce: listener_nonce,
        mac: secret.sign(FROM_LISTENER, ids, dialer_nonce, &listener_nonce),
    };
    send(stream, &challenge).await?;
    let proof = match receive(stream).await {
        Ok(proof) => proof,
        Err(error @ AuthError::Malformed { .. }) => return Ok(Err((Refusal::Malformed, error))),
        Err(error) => return Err(error),
    };
    let bad_proof = AuthError::BadProof { node: ids.dialer };
    if proof.kind != Kind::Proof
        || proof.mode != Mode::Secret
        || proof.sender != ids.dialer
        || proof.receiver != ids.listener
    {
        return Ok(Err((Refusal::BadProof, bad_proof)));
    }
    if !secret.verifies(FROM_DIALER, ids, dialer_nonce, &listener_nonce, &proof.mac) {
        return Ok(Err((Refusal::BadProof, bad_proof)));
    }
    Ok(Ok(()))
}

/// Tells the dialer why it is refused (best effort: it may be gone or not listening) and
/// returns `error`.
async fn refuse<S, T>(
    stream: &mut S,
    mode: Mode,
    me: u32,
    to: u32,
    refusal: Refusal,
    error: AuthError,
) -> Result<T, AuthError>
where
    S: AsyncWrite + Unpin,
{
    let verdict = Message {
        kind: Kind::Verdict,
        mode,
        verdict: refusal as u8,
        sender: me,
        receiver: to,
        nonce: [0; NONCE_BYTES],
        mac: [0; MAC_BYTES],
    };
    let _ = send(stream, &verdict).await;
    Err(error)
}

fn fresh_nonce() -> Result<Nonce, AuthError> {
    let mut nonce = [0; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(AuthError::Random)?;
    Ok(nonce)
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, message: &Message) -> Result<(), AuthError> {
    stream
        .write_all(&message.encode())
        .await
        .map_err(AuthError::Io)?;
    stream.flush().await.map_err(AuthError::Io)
}

/// Reads one message: exactly [`MESSAGE_BYTES`], never more.
async fn receive<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Message, AuthError> {
    let mut buf = [0u8; MESSAGE_BYTES];
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|rest| !rest.is_empty()) {
        match stream.read(rest).await {
            Ok(0) if got == 0 => return Err(AuthError::Closed),
            Ok(0) => return Err(truncated(&buf, got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(tls_or_io(e)),
        }
    }
    Message::decode(&buf)
}

/// A short message: say so, or name the protocol it looks like.
fn truncated(buf: &[u8; MESSAGE_BYTES], got: usize) -> AuthError {
    match buf {
        // A TLS alert record (content type 21, version 3.x): the other end runs TLS.
        [0x15, 0x03, ..] => AuthError::Malformed {
            reason: "it answered with a TLS alert; configure TLS alike on every node",
        },
        _ => AuthError::Truncated { got },
    }
}

/// futures-rustls reports TLS failures (alerts, bad certificates) as I/O errors that wrap
/// a rustls error.
fn tls_or_io(error: io::Error) -> AuthError {
    let is_tls = error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>());
    if is_tls {
        AuthError::Tls(error)
    } else {
        AuthError::Io(error)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Hello = 1,
    Challenge = 2,
    Proof = 3,
    Verdict = 4,
}

impl TryFrom<u8> for Kind {
    type Error = AuthError;
    fn try_from(byte: u8) -> Result<Kind, AuthError> {
        match byte {
            1 => Ok(Kind::Hello),
            2 => Ok(Kind::Challenge),
            3 => Ok(Kind::Proof),
            4 => Ok(Kind::Verdict),
            _ => Err(AuthError::Malformed {
                reason: "unknown message kind",
            }),
        }
    }
}

impl TryFrom<u8> for Refusal {
    type Error = AuthError;
    fn try_from(byte: u8) -> Result<Refusal, AuthError> {
        match byte {
            1 => Ok(Refusal::WrongNode),
            2 => Ok(Refusal::NotAllowed),
            3 => Ok(Refusal::BadProof),
            4 => Ok(Refusal::ModeMismatch),
            5 => Ok(Refusal::Malformed),
            6 => Ok(Refusal::CertificateNotForNode),
            _ => Err(AuthError::Malformed {
                reason: "unknown refusal code",
            }),
        }
    }
}

/// One handshake message (layout in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    kind: Kind,
    mode: Mode,
    /// 0 accepted, else a [`Refusal`] (verdicts only).
    verdict: u8,
    sender: u32,
    receiver: u32,
    nonce: Nonce,
    mac: [u8; MAC_BYTES],
}

impl Message {
    fn encode(&self) -> [u8; MESSAGE_BYTES] {
        let mut out = [0u8; MESSAGE_BYTES];
        let fields: [&[u8]; 9] = [
            &MAGIC,
            &[VERSION],
            &[self.kind as u8],
            &[self.mode as u8],
            &[self.verdict],
            &self.sender.to_le_bytes(),
            &self.receiver.to_le_bytes(),
            &self.nonce,
            &self.mac,
        ];
        let mut rest = out.as_mut_slice();
        for field in fields {
            let (head, tail) = rest.split_at_mut(field.len());
            head.copy_from_slice(field);
            rest = tail;
        }
        assert!(rest.is_empty(), "{} bytes left", rest.len());
        out
    }

    /// Parses untrusted bytes: any deviation from the layout is `Malformed`.
    fn decode(buf: &[u8; MESSAGE_BYTES]) -> Result<Message, AuthError> {
        let malformed = |reason| AuthError::Malformed { reason };
        let mut rest = buf.as_slice();
        let magic: [u8; 4] = take(&mut rest)?;
        if magic != MAGIC {
            return Err(malformed(match magic {
                [0x16, 0x03, ..] => "it speaks TLS; configure TLS alike on every node",
                _ => "bad magic",
            }));
        }
        let [version, kind, mode, verdict] = take(&mut rest)?;
        if version != VERSION {
            return Err(malformed("unsupported handshake version"));
        }
        let message = Message {
            kind: Kind::try_from(kind)?,
            mode: Mode::try_from(mode)?,
            verdict,
            sender: u32::from_le_bytes(take(&mut rest)?),
            receiver: u32::from_le_bytes(take(&mut rest)?),
            nonce: take(&mut rest)?,
            mac: take(&mut rest)?,
        };
        if message.kind != Kind::Verdict && message.verdict != 0 {
            return Err(malformed("a verdict code outside a verdict"));
        }
        if message.kind == Kind::Verdict && message.verdict != 0 {
            Refusal::try_from(message.verdict)?;
        }
        let uses_nonce =
            matches!(message.kind, Kind::Hello | Kind::Challenge) && message.mode == Mode::Secret;
        if !uses_nonce && message.nonce != [0; NONCE_BYTES] {
            return Err(malformed("a nonce where none belongs"));
        }
        let uses_mac = matches!(message.kind, Kind::Challenge | Kind::Proof);
        if !uses_mac && message.mac != [0; MAC_BYTES] {
            return Err(malformed("a MAC where none belongs"));
        }
        Ok(message)
    }
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], AuthError> {
    let (head, tail) = rest.split_first_chunk::<N>().ok_or(AuthError::Malformed {
        reason: "short message",
    })?;
    *rest = tail;
    Ok(*head)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn hello() -> Message {
        Message {
            kind: Kind::Hello,
            mode: Mode::Secret,
            verdict: 0,
            sender: 7,
            receiver: 0xdead_beef,
            nonce: [9; NONCE_BYTES],
            mac: [0; MAC_BYTES],
        }
    }

    #[test]
    fn messages_roundtrip() {
        let message = hello();
        let bytes = message.encode();
        assert_eq!(&bytes[..4], b"SLPA");
        assert_eq!(bytes[8..12], 7u32.to_le_bytes());
        assert_eq!(Message::decode(&bytes).unwrap(), message);
    }

    #[test]
    fn every_single_byte_flip_in_the_header_is_refused_or_harmless() {
        let bytes = hello().encode();
        for at in 0..MESSAGE_BYTES {
            for bit in 0..8 {
                let mut flipped = bytes;
                flipped[at] ^= 1 << bit;
                // Never a panic; header flips are errors; id and nonce flips parse (and
                // then fail the MAC or the id checks).
                let decoded = Message::decode(&flipped);
                if !(8..48).contains(&at) {
                    assert!(decoded.is_err(), "flip at byte {at} bit {bit} accepted");
                }
            }
        }
    }

    #[test]
    fn macs_bind_direction_ids_and_nonces() {
        let secret = ClusterSecret::new(&[1; 32]).unwrap();
        let ids = Ids {
            dialer: 1,
            listener: 2,
        };
        let (d, l) = ([3; NONCE_BYTES], [4; NONCE_BYTES]);
        let tag = secret.sign(FROM_LISTENER, ids, &d, &l);
        assert!(secret.verifies(FROM_LISTENER, ids, &d, &l, &tag));
        assert!(!secret.verifies(FROM_DIALER, ids, &d, &l, &tag));
        assert!(!secret.verifies(FROM_LISTENER, ids, &l, &d, &tag));
        let swapped = Ids {
            dialer: 2,
            listener: 1,
        };
        assert!(!secret.verifies(FROM_LISTENER, swapped, &d, &l, &tag));
        let other = ClusterSecret::new(&[2; 32]).unwrap();
        assert!(!other.verifies(FROM_LISTENER, ids, &d, &l, &tag));
    }

    proptest::proptest! {
        /// Any 80 bytes decode to a message or an error, never a panic; what decodes
        /// encodes back to the same bytes (the layout has no slack).
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, MESSAGE_BYTES)) {
            let buf: [u8; MESSAGE_BYTES] = bytes.try_into().unwrap();
            if let Ok(message) = Message::decode(&buf) {
                proptest::prop_assert_eq!(message.encode(), buf);
            }
        }

        /// A well-formed header followed by any ids, nonce and MAC never panics either.
        #[test]
        fn any_body_decodes_without_panic(kind in 1u8..=4, mode in 0u8..=2, verdict in 0u8..=7, body in proptest::collection::vec(proptest::num::u8::ANY, MESSAGE_BYTES - 8)) {
            let mut buf = [0u8; MESSAGE_BYTES];
            buf[..8].copy_from_slice(&[b'S', b'L', b'P', b'A', VERSION, kind, mode, verdict]);
            buf[8..].copy_from_slice(&body);
            if let Ok(message) = Message::decode(&buf) {
                proptest::prop_assert_eq!(message.encode(), buf);
            }
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            ClusterSecret::new(b"  short secret \n"),
            Err(AuthError::SecretTooShort { len: 12 })
        ));
        assert!(ClusterSecret::new(&[b'x'; SECRET_BYTES_MIN]).is_ok());
    }
}
