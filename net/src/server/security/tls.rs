//! TLS on the client listeners (the shardlog protocol's `--listen` and the Kafka
//! `--kafka-listen`): with `--tls-cert` and `--tls-key` both speak only TLS (1.3, rustls
//! with the ring provider). With `--tls-client-ca` the server asks each client for
//! a certificate signed by that CA: `--tls-client-auth required` (the default) refuses a
//! client without one, `optional` lets it in without a principal. A verified client
//! certificate names the connection's principal ([`principal_of`]).
//!
//! [`ListenerTls`] is shared by every shard: each accept takes the current rustls
//! configuration (a read lock and an `Arc` clone), and the handshake runs in the
//! connection's own task within [`HANDSHAKE_TIMEOUT`]. [`ListenerTls::reload`] (on
//! SIGHUP) reads the files again and swaps the configuration: connections accepted later
//! get the new certificate, open ones keep theirs. A reload that fails keeps the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::future::{Either, select};
use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;

use super::Principal;
use crate::tls_files::{PemError, read_certificates, read_private_key, read_roots, ring_provider};

/// How long a client may take to finish its TLS handshake, TCP connection excepted.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a client must present a certificate when `--tls-client-ca` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client without a certificate signed by the CA fails the handshake.
    #[default]
    Required,
    /// A client may present no certificate (then it has no principal); one it presents
    /// must still be signed by the CA.
    Optional,
}

/// The files TLS on the client listeners is made from (`--tls-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM), readable by this user only.
    pub key: PathBuf,
    /// The CA(s) (PEM) client certificates must be signed by; `None`: no client
    /// certificates are asked for.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (with `client_ca`).
    pub client_auth: ClientAuth,
}

/// Why the client listeners' TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    /// A file is missing, unreadable or holds no usable PEM.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The client CA gives no usable trust anchor.
    #[error("the TLS client CA file {path}: {source}")]
    ClientCa {
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The private key is not the one of the certificate.
    #[error("the TLS private key {key} does not belong to the certificate {cert}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// rustls refused the certificate or key.
    #[error("TLS configuration ({path}): {source}")]
    Config {
        /// The file the problem was found in.
        path: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
}

/// TLS for the client listeners, shared by every shard; see the module docs.
pub(crate) struct ListenerTls {
    files: ClientTlsFiles,
    current: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Reads the files. Blocking: call it at start-up, not on an executor.
    pub(crate) fn load(files: ClientTlsFiles) -> Result<ListenerTls, ListenerTlsError> {
        let acceptor = acceptor(&files)?;
        Ok(ListenerTls {
            files,
            current: RwLock::new(acceptor),
        })
    }

    /// What a connection accepted now handshakes with.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        // A poisoned lock still holds a complete acceptor: writers only swap it.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again; on success connections accepted from now on use them. On
    /// failure nothing changes. Blocking (file reads): call it off the executors.
    pub(crate) fn reload(&self) -> Result<(), ListenerTlsError> {
        let fresh = acceptor(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// The rustls server configuration the files describe.
fn acceptor(files: &ClientTlsFiles) -> Result<TlsAcceptor, ListenerTlsError> {
    let chain = read_certificates("TLS certificate", &files.cert)?;
    let key = read_private_key("TLS private key", &files.key)?;
    let provider = Arc::new(ring_provider());
    let config_error = |path: &Path| {
        let path = path.to_owned();
        let cert = files.cert.clone();
        move |source| match source {
            rustls::Error::InconsistentKeys(_) => ListenerTlsError::KeyMismatch { key: path, cert },
            source => ListenerTlsError::Config { path, source },
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error(&files.cert))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = Arc::new(read_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = match files.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|source| ListenerTlsError::ClientCa {
                    path: ca.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(config_error(&files.key))?;
    // Our suite order (AES-128-GCM first, see `ring_provider`) over the client's: OpenSSL
    // clients (librdkafka) list AES-256 first, which costs the server more per byte.
    config.ignore_client_order = true;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Runs the server side of a TLS handshake on `stream` within [`HANDSHAKE_TIMEOUT`]; the
/// stream and the principal its client certificate names (if it presented one).
pub(crate) async fn handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
) -> std::io::Result<(TlsStream<S>, Option<Principal>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let accept = std::pin::pin!(acceptor.accept(stream));
    let timeout = std::pin::pin!(glommio::timer::sleep(HANDSHAKE_TIMEOUT));
    let stream = match select(accept, timeout).await {
        Either::Left((accepted, _)) => accepted?,
        Either::Right(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
            ));
        }
    };
    // rustls verified the chain against the client CA before the handshake completed.
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .and_then(principal_of);
    Ok((stream, principal))
}

/// The user a client certificate names: its subject's common name, else its first DNS
/// subject alternative name. `None` for a certificate with neither (or that does not
/// parse, which rustls would have refused already).
pub(crate) fn principal_of(certificate: &CertificateDer<'_>) -> Option<Principal> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty());
    let name = match common_name {
        Some(cn) => cn.to_owned(),
        None => {
            let names = parsed.subject_alternative_name().ok().flatten()?;
            names
                .value
                .general_names
                .iter()
                .find_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })?
        }
    };
    Some(Principal(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: Option<&str>, sans: &[&str]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "shardlog tests");
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_common_name_names_the_principal() {
        let cert = certificate(Some("alice"), &["alice.example"]);
        assert_eq!(principal_of(&cert), Some(Principal("alice".into())));
        assert_eq!(principal_of(&cert).unwrap().to_string(), "User:alice");
    }

    #[test]
    fn without_a_common_name_the_first_dns_name_does() {
        let cert = certificate(None, &["bob.example", "other.example"]);
        assert_eq!(principal_of(&cert), Some(Principal("bob.example".into())));
    }

    /// A CA issuer and its certificate's PEM.
    fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (rcgen::Issuer::new(params, key), pem)
    }

    /// A certificate `issuer` signs for `names` with subject CN `cn`: (cert, key) PEM.
    fn signed(
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        names: &[&str],
        cn: &str,
    ) -> (String, String) {
        let names = names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A real handshake over loopback between the server side here and the client
    /// library's: the principal comes from the client certificate the CA signed.
    #[test]
    fn a_verified_client_certificate_names_the_connection_principal() {
        let dir = tempfile::tempdir().unwrap();
        let (servers, servers_pem) = ca();
        let (clients, clients_pem) = ca();
        let (server_cert, server_key) = signed(&servers, &["localhost"], "server");
        let (alice_cert, alice_key) = signed(&clients, &[], "alice");
        let files = ClientTlsFiles {
            cert: write(dir.path(), "server.pem", &server_cert),
            key: write(dir.path(), "server.key", &server_key),
            client_ca: Some(write(dir.path(), "clients.pem", &clients_pem)),
            client_auth: ClientAuth::Required,
        };
        let listener_tls = ListenerTls::load(files).unwrap();
        let client_tls = crate::client::ClientTls::load(&crate::client::ClientTlsFiles {
            ca: write(dir.path(), "servers.pem", &servers_pem),
            cert: Some(write(dir.path(), "alice.pem", &alice_cert)),
            key: Some(write(dir.path(), "alice.key", &alice_key)),
            server_name: None,
        })
        .unwrap();
        let acceptor = listener_tls.acceptor();
        let principal = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let port = listener.local_addr().unwrap().port();
                let server = glommio::spawn_local(async move {
                    let stream = listener.accept().await.unwrap();
                    handshake(&acceptor, stream).await.map(|(_, p)| p)
                });
                let stream = glommio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                // Dialled as localhost: the name the server's certificate carries.
                let addr = format!("localhost:{port}");
                let mut client = client_tls.handshake(stream, &addr).await.unwrap();
                // TLS 1.3: the server checks the client's certificate after the client's
                // side completed; a write carries the client's last flight.
                futures::AsyncWriteExt::write_all(&mut client, b"x")
                    .await
                    .unwrap();
                futures::AsyncWriteExt::flush(&mut client).await.unwrap();
                server.await.unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(principal.unwrap().to_string(), "User:alice");
    }

    #[test]
    fn a_certificate_naming_no_one_gives_no_principal() {
        assert_eq!(principal_of(&certificate(None, &[])), None);
        assert_eq!(
            principal_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2])),
            None
        );
    }
}
