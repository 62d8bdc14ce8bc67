//! Certificates, keys and CAs read from PEM files, for every TLS user in the crate: the
//! peer handshake (`peer::auth`), the client listeners (`server::security::tls`) and
//! the client library (`client::tls`). Each error names the file and what it should
//! have held; a private key readable by every user of the machine is refused.
//!
//! Blocking: these read with `std::fs`. The server calls them at start-up and on a
//! reload (SIGHUP, from the main thread), a client when it is configured; never on an
//! executor's hot path.

use std::io;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    ReadFile {
        /// Which file ("TLS certificate", "TLS private key", ...).
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
    /// The file does not parse as PEM, or holds none of what it should.
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
    /// A CA certificate that rustls cannot use as a trust anchor.
    #[error("the TLS CA file {path}: {source}")]
    Anchor {
        /// Its path.
        path: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
}

/// rustls' *ring* provider. rustls 0.23.48 deprecates it because it has no post-quantum
/// key exchange (X25519MLKEM768 needs the aws-lc-rs provider); we keep it so a build needs
/// no aws-lc C/CMake build. TLS then uses X25519 (or P-256/P-384) key exchange.
///
/// Its cipher suites are reordered to prefer AES-128-GCM (TLS 1.3's mandatory suite):
/// encryption is most of what TLS costs a fetch of large batches, and AES-128 runs 10
/// rounds to AES-256's 14. Every suite stays available.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort (the build has TLS 1.3 suites only: rustls without `tls12`).
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

/// The bytes of a file, the error naming it as `what`.
pub(crate) fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Refuses a secret that every user of the machine can read: it would prove nothing.
pub(crate) fn refuse_world_readable(what: &'static str, path: &Path) -> Result<(), PemError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| PemError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(PemError::WorldReadable {
            what,
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Every certificate in a PEM file, in file order (a chain: leaf first); at least one.
pub(crate) fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read_file(what, path)?;
    let pem_error = |source| PemError::Pem {
        what,
        path: path.to_owned(),
        expected: "CERTIFICATE",
        source,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certificates.is_empty() {
        return Err(pem_error(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certificates)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file that only its owner (and
/// group) may read.
pub(crate) fn read_private_key(
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, PemError> {
    refuse_world_readable(what, path)?;
    let pem = read_file(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| PemError::Pem {
        what,
        path: path.to_owned(),
        expected: "PRIVATE KEY",
        source,
    })
}

/// The trust anchors of a CA file: every certificate in it.
pub(crate) fn read_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates("TLS CA file", path)? {
        roots.add(certificate).map_err(|source| PemError::Anchor {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}
