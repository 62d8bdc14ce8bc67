//! TLS for a client's connections to brokers whose listeners speak it (`shardlogd
//! --tls-cert`): the server's certificate is verified against a CA file, for the host of
//! the address dialled (a DNS name or an IP address) unless a name is given; a client
//! certificate and key are presented when the server asks (mutual TLS, which names the
//! connection's principal on the server).

use std::path::PathBuf;
use std::sync::Arc;

use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use rustls::pki_types::ServerName;

use crate::client::ClientError;
use crate::client::connection::is_tls_failure;
use crate::tls_files::{PemError, read_certificates, read_private_key, read_roots, ring_provider};

/// The files a client's TLS is made from (`--tls-ca`, `--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA (PEM) the brokers' certificates must be signed by.
    pub ca: PathBuf,
    /// This client's certificate chain (PEM), for brokers that ask for one; needs `key`.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM), readable by this user only.
    pub key: Option<PathBuf>,
    /// The name the brokers' certificates must carry; `None`: the host of each address
    /// dialled.
    pub server_name: Option<String>,
}

/// Why a client's TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// A file is missing, unreadable or holds no usable PEM.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A certificate without its key or the other way round.
    #[error("a TLS client certificate needs its key, and a key its certificate")]
    CertWithoutKey,
    /// The server name given is not a DNS name or an IP address.
    #[error("TLS server name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
    /// rustls refused the CA, certificate or key.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// A client's TLS, ready to dial with; cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the files (blocking: call it before starting the client).
    pub fn load(files: &ClientTlsFiles) -> Result<ClientTls, ClientTlsError> {
        let roots = Arc::new(read_roots(&files.ca)?);
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .map_err(ClientTlsError::Config)?
            .with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates("TLS client certificate", cert)?;
                let key = read_private_key("TLS client key", key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(ClientTlsError::Config)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(ClientTlsError::CertWithoutKey),
        };
        let server_name = files
            .server_name
            .as_ref()
            .map(|name| {
                ServerName::try_from(name.clone())
                    .map_err(|_| ClientTlsError::ServerName(name.clone()))
            })
            .transpose()?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the client side of the handshake over `stream`, connected to `addr`
    /// (`HOST:PORT`). A certificate or protocol failure is [`ClientError::Tls`] (retrying
    /// does not help); a broken socket is [`ClientError::Io`].
    pub(crate) async fn handshake<S>(
        &self,
        stream: S,
        addr: &str,
    ) -> Result<TlsStream<S>, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = host_of(addr);
                ServerName::try_from(host.to_owned()).map_err(|_| ClientError::Tls {
                    addr: addr.to_owned(),
                    reason: format!("{host:?} is not a name TLS can verify; set a server name"),
                })?
            }
        };
        self.connector.connect(name, stream).await.map_err(|error| {
            if is_tls_failure(&error) {
                ClientError::Tls {
                    addr: addr.to_owned(),
                    reason: error.to_string(),
                }
            } else {
                ClientError::Io(error)
            }
        })
    }
}

/// The host of `HOST:PORT` or `[IPV6]:PORT`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("broker1.example:9095"), "broker1.example");
        assert_eq!(host_of("127.0.0.1:9095"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9095"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
