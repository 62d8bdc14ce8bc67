//! The peer handshake (`peer::auth`) over real sockets on 127.0.0.1: each mode succeeds and
//! carries data both ways afterwards; wrong secrets, wrong nodes, non-members, replayed and
//! reflected messages, other CAs and certificates for other nodes are refused on the side
//! that can tell; garbage, truncated and silent peers get errors within the time limit;
//! the configuration loader names the file and the fix.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::handshake::message;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use glommio::net::{Preallocated, TcpListener, TcpStream};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use shardlog_net::peer::auth::{
    self, AuthError, MESSAGE_BYTES, Mode, PeerSecurity, PeerStream, Refusal, TlsFiles,
};

const DIALER_SAYS: &[u8] = b"replicate this, from the dialer";
const LISTENER_SAYS: &[u8] = b"acknowledged, from the listener";
const SHORT: Duration = Duration::from_millis(300);

// ---- the two ends -------------------------------------------------------------------

/// What each end of one handshake returned; the dialer's `Ok` carries whether TLS ran.
#[derive(Debug)]
struct Ends {
    dialer: Result<bool, AuthError>,
    listener: Result<u32, AuthError>,
}

/// The listener: node `me`, whose cluster has `members`.
struct Listener {
    security: PeerSecurity,
    me: u32,
    members: Vec<u32>,
}

/// The dialer: node `me`, connecting to the listener's address believing it is node `to`.
struct Dialer {
    security: PeerSecurity,
    me: u32,
    to: u32,
}

/// Runs one handshake between a real dialer and a real listener; when both succeed, each
/// sends bytes to the other through the resulting streams.
fn handshake(listener: Listener, dialer: Dialer) -> Ends {
    common::run(move || async move {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let accepting = glommio::spawn_local(async move {
            let stream = server.accept().await.unwrap();
            let members = listener.members;
            let allowed = |node| members.contains(&node);
            let (stream, from) =
                auth::accept(&listener.security, stream, listener.me, allowed).await?;
            listener_talks(stream).await;
            Ok(from)
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let dialer = match auth::dial(&dialer.security, stream, dialer.me, dialer.to).await {
            Ok(stream) => {
                let tls = stream.is_tls();
                dialer_talks(stream).await;
                Ok(tls)
            }
            Err(e) => Err(e),
        };
        let listener = accepting.await;
        Ends { dialer, listener }
    })
}

async fn dialer_talks<S: AsyncRead + AsyncWrite + Unpin>(mut stream: PeerStream<S>) {
    stream.write_all(DIALER_SAYS).await.unwrap();
    stream.flush().await.unwrap();
    let mut heard = vec![0; LISTENER_SAYS.len()];
    stream.read_exact(&mut heard).await.unwrap();
    assert_eq!(heard, LISTENER_SAYS);
}

/// The listener reads through a `BufReader` on the read half of a split stream, as a
/// connection loop would.
async fn listener_talks<S: AsyncRead + AsyncWrite + Unpin>(stream: PeerStream<S>) {
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::new(reader);
    let mut heard = vec![0; DIALER_SAYS.len()];
    reader.read_exact(&mut heard).await.unwrap();
    assert_eq!(heard, DIALER_SAYS);
    writer.write_all(LISTENER_SAYS).await.unwrap();
    writer.flush().await.unwrap();
}

fn members(ids: &[u32]) -> Vec<u32> {
    ids.to_vec()
}

// ---- configuration --------------------------------------------------------------------

/// A directory for key material; removed when dropped.
fn key_dir() -> tempfile::TempDir {
    common::data_dir()
}

fn write_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn secret(dir: &Path, content: &str) -> PeerSecurity {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let name = format!("secret-{}", FILES.fetch_add(1, Ordering::Relaxed));
    let path = write_file(dir, &name, content.as_bytes(), 0o600);
    PeerSecurity::load(Some(&path), None).unwrap()
}

const SECRET: &str = "0123456789abcdef0123456789abcdef-cluster-a\n";
const OTHER_SECRET: &str = "0123456789abcdef0123456789abcdef-cluster-b-2\n";

/// A cluster CA made with rcgen.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A node certificate signed by `ca` for the DNS `names`, with `usages`; returns the
/// certificate and key PEM.
fn certificate(
    ca: &Ca,
    names: &[String],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let mut params = CertificateParams::new(names.to_vec()).unwrap();
    params.extended_key_usages = usages;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn both_usages() -> Vec<ExtendedKeyUsagePurpose> {
    vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ]
}

/// TLS files for a node whose certificate (signed by `signer`) names node `named`,
/// trusting the `trusted` CAs.
fn tls_files(dir: &Path, tag: &str, signer: &Ca, named: u32, trusted: &[&Ca]) -> TlsFiles {
    let (cert, key) = certificate(signer, &[auth::node_dns_name(named)], both_usages());
    let cas: String = trusted.iter().map(|ca| ca.pem.as_str()).collect();
    TlsFiles {
        cert: write_file(dir, &format!("{tag}.pem"), cert.as_bytes(), 0o644),
        key: write_file(dir, &format!("{tag}.key"), key.as_bytes(), 0o600),
        ca: write_file(dir, &format!("{tag}-ca.pem"), cas.as_bytes(), 0o644),
    }
}

fn tls(dir: &Path, tag: &str, signer: &Ca, named: u32, trusted: &[&Ca]) -> PeerSecurity {
    PeerSecurity::load(None, Some(tls_files(dir, tag, signer, named, trusted))).unwrap()
}

// ---- cluster secret ---------------------------------------------------------------------

#[test]
fn secret_handshake_proves_both_ends_either_way() {
    let dir = key_dir();
    for (dialer, listener) in [(1, 2), (2, 1)] {
        let ends = handshake(
            Listener {
                security: secret(dir.path(), SECRET),
                me: listener,
                members: members(&[1, 2, 3]),
            },
            Dialer {
                security: secret(dir.path(), SECRET),
                me: dialer,
                to: listener,
            },
        );
        assert!(
            !ends.dialer.unwrap(),
            "plain stream after a secret handshake"
        );
        assert_eq!(ends.listener.unwrap(), dialer);
    }
}

#[test]
fn a_wrong_secret_is_refused_on_both_sides() {
    let dir = key_dir();
    let ends = handshake(
        Listener {
            security: secret(dir.path(), SECRET),
            me: 2,
            members: members(&[1, 2]),
        },
        Dialer {
            security: secret(dir.path(), OTHER_SECRET),
            me: 1,
            to: 2,
        },
    );
    // The dialer checks the listener's MAC first and hangs up; the listener never accepts.
    assert!(
        matches!(ends.dialer, Err(AuthError::BadProof { node: 2 })),
        "{ends:?}"
    );
    assert!(ends.listener.is_err(), "{ends:?}");

    // A dialer that skips the check and sends a proof made with another secret is refused
    // by the listener's own check.
    let (listener, answers) = against_raw_dialer(secret(dir.path(), SECRET), 2, |challenge| {
        vec![message(
            3,
            1,
            0,
            1,
            2,
            [0; 32],
            mac_of(&challenge).map(|b| !b),
        )]
    });
    assert!(
        matches!(listener, Err(AuthError::BadProof { node: 1 })),
        "{listener:?}"
    );
    assert_eq!(answers.last().unwrap()[7], Refusal::BadProof as u8);
}

#[test]
fn a_dialer_that_reached_another_node_refuses_it() {
    let dir = key_dir();
    for mode in ["secret", "insecure"] {
        let security = || match mode {
            "secret" => secret(dir.path(), SECRET),
            _ => PeerSecurity::Insecure,
        };
        // Node 1 believes the address is node 2's; node 3 answers.
        let ends = handshake(
            Listener {
                security: security(),
                me: 3,
                members: members(&[1, 2, 3]),
            },
            Dialer {
                security: security(),
                me: 1,
                to: 2,
            },
        );
        assert!(
            matches!(
                ends.dialer,
                Err(AuthError::WrongNode {
                    expected: 2,
                    found: 3
                })
            ),
            "{mode}: {ends:?}"
        );
        assert!(
            matches!(
                ends.listener,
                Err(AuthError::NotForUs {
                    from: 1,
                    to: 2,
                    me: 3
                })
            ),
            "{mode}: {ends:?}"
        );
    }
}

#[test]
fn a_node_id_that_is_not_a_member_is_refused() {
    let dir = key_dir();
    // Node 9 is not a member; node 2 claiming to be node 2 (itself) is refused too.
    for (claimed, members) in [(9, vec![1, 2, 3]), (2, vec![1, 2, 3])] {
        let ends = handshake(
            Listener {
                security: secret(dir.path(), SECRET),
                me: 2,
                members,
            },
            Dialer {
                security: secret(dir.path(), SECRET),
                me: claimed,
                to: 2,
            },
        );
        assert!(
            matches!(ends.listener, Err(AuthError::NotAllowed { node }) if node == claimed),
            "{ends:?}"
        );
        assert!(
            matches!(
                ends.dialer,
                Err(AuthError::Refused {
                    to: 2,
                    reason: Refusal::NotAllowed
                })
            ),
            "{ends:?}"
        );
    }
}

#[test]
fn a_mode_mismatch_is_refused_and_named() {
    let dir = key_dir();
    let ends = handshake(
        Listener {
            security: secret(dir.path(), SECRET),
            me: 2,
            members: members(&[1, 2]),
        },
        Dialer {
            security: PeerSecurity::Insecure,
            me: 1,
            to: 2,
        },
    );
    assert!(
        matches!(
            ends.listener,
            Err(AuthError::ModeMismatch {
                ours: Mode::Secret,
                theirs: Mode::Insecure
            })
        ),
        "{ends:?}"
    );
    assert!(
        matches!(
            ends.dialer,
            Err(AuthError::ModeMismatch {
                ours: Mode::Insecure,
                theirs: Mode::Secret
            })
        ),
        "{ends:?}"
    );
}

// ---- replay and reflection ----------------------------------------------------------------

/// A stream that keeps a copy of every byte written through it.
struct Recorder<S> {
    inner: S,
    written: Rc<RefCell<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = poll {
            this.written.borrow_mut().extend_from_slice(&buf[..n]);
        }
        poll
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// One genuine secret handshake (node 1 dials node 2) with both ends' bytes recorded:
/// (dialer's bytes, listener's bytes).
fn recorded_exchange(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let (dialer_security, listener_security) = (secret(dir, SECRET), secret(dir, SECRET));
    common::run(move || async move {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let accepting = glommio::spawn_local(async move {
            let written = Rc::new(RefCell::new(Vec::new()));
            let stream = Recorder {
                inner: server.accept().await.unwrap(),
                written: written.clone(),
            };
            auth::accept(&listener_security, stream, 2, |n| n == 1)
                .await
                .unwrap();
            written.take()
        });
        let written = Rc::new(RefCell::new(Vec::new()));
        let stream = Recorder {
            inner: TcpStream::connect(address).await.unwrap(),
            written: written.clone(),
        };
        auth::dial(&dialer_security, stream, 1, 2).await.unwrap();
        (written.take(), accepting.await)
    })
}

#[test]
fn a_recorded_exchange_replayed_is_refused_by_either_end() {
    let dir = key_dir();
    let (dialer_bytes, listener_bytes) = recorded_exchange(dir.path());
    assert_eq!(dialer_bytes.len(), 2 * MESSAGE_BYTES, "hello + proof");
    assert_eq!(
        listener_bytes.len(),
        2 * MESSAGE_BYTES,
        "challenge + verdict"
    );

    // Replayed to the listener: its fresh nonce makes the old proof worthless.
    let (hello, proof) = dialer_bytes.split_at(MESSAGE_BYTES);
    let proof = proof.to_vec();
    let (listener, answers) = raw_dialer(
        secret(dir.path(), SECRET),
        2,
        hello.to_vec(),
        SHORT * 10,
        move |_| vec![proof],
    );
    assert!(
        matches!(listener, Err(AuthError::BadProof { node: 1 })),
        "{listener:?}"
    );
    assert_eq!(answers.last().unwrap()[7], Refusal::BadProof as u8);

    // Replayed to a dialer: its fresh nonce makes the old challenge worthless.
    let dialer = against_raw_listener(secret(dir.path(), SECRET), 1, 2, move |_hello| {
        vec![listener_bytes[..MESSAGE_BYTES].to_vec()]
    });
    assert!(
        matches!(dialer, Err(AuthError::BadProof { node: 2 })),
        "{dialer:?}"
    );
}

#[test]
fn reflected_messages_are_refused() {
    let dir = key_dir();
    // The listener's own MAC sent back as the proof.
    let (listener, _) = against_raw_dialer(secret(dir.path(), SECRET), 2, |challenge| {
        vec![message(3, 1, 0, 1, 2, [0; 32], mac_of(&challenge))]
    });
    assert!(
        matches!(listener, Err(AuthError::BadProof { node: 1 })),
        "{listener:?}"
    );
    // The whole challenge sent back.
    let (listener, _) =
        against_raw_dialer(secret(dir.path(), SECRET), 2, |challenge| vec![challenge]);
    assert!(
        matches!(listener, Err(AuthError::BadProof { node: 1 })),
        "{listener:?}"
    );
    // A dialer whose hello comes back as the answer.
    let dialer = against_raw_listener(secret(dir.path(), SECRET), 1, 2, |hello| vec![hello]);
    assert!(dialer.is_err(), "{dialer:?}");
    // A "challenge" that echoes the dialer's own nonce (and so could echo its MAC input).
    let dialer = against_raw_listener(secret(dir.path(), SECRET), 1, 2, |hello| {
        let nonce: [u8; 32] = hello[16..48].try_into().unwrap();
        vec![message(2, 1, 0, 2, 1, nonce, [7; 32])]
    });
    assert!(
        matches!(dialer, Err(AuthError::BadProof { node: 2 })),
        "{dialer:?}"
    );
}

// ---- raw peers: garbage, truncation, silence ---------------------------------------------

fn mac_of(message: &[u8]) -> [u8; 32] {
    message[48..80].try_into().unwrap()
}

/// A hand-made dialer claiming node 1 talks to a real listener (node `me`, members 1..=3):
/// it sends a secret-mode hello, reads one answer, and sends whatever `then(answer)`
/// returns, each chunk followed by reading one more answer. Returns the listener's result
/// and every answer the dialer read.
fn against_raw_dialer(
    security: PeerSecurity,
    me: u32,
    then: impl FnOnce(Vec<u8>) -> Vec<Vec<u8>> + Send + 'static,
) -> (Result<u32, AuthError>, Vec<Vec<u8>>) {
    let hello = message(1, 1, 0, 1, me, [5; 32], [0; 32]);
    raw_dialer(security, me, hello, SHORT * 10, then)
}

fn raw_dialer(
    security: PeerSecurity,
    me: u32,
    first: Vec<u8>,
    timeout: Duration,
    then: impl FnOnce(Vec<u8>) -> Vec<Vec<u8>> + Send + 'static,
) -> (Result<u32, AuthError>, Vec<Vec<u8>>) {
    common::run(move || async move {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let accepting = glommio::spawn_local(async move {
            let stream = server.accept().await.unwrap();
            let accepted =
                auth::accept_within(&security, stream, me, |n| (1..=3).contains(&n), timeout).await;
            accepted.map(|(_, from)| from)
        });
        let mut stream = TcpStream::connect(address).await.unwrap();
        let mut answers = Vec::new();
        stream.write_all(&first).await.unwrap();
        if let Some(answer) = read_answer(&mut stream).await {
            answers.push(answer.clone());
            for chunk in then(answer) {
                if stream.write_all(&chunk).await.is_err() {
                    break;
                }
                match read_answer(&mut stream).await {
                    Some(answer) => answers.push(answer),
                    None => break,
                }
            }
        }
        (accepting.await, answers)
    })
}

async fn read_answer(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut answer = vec![0; MESSAGE_BYTES];
    stream.read_exact(&mut answer).await.ok().map(|()| answer)
}

/// A real dialer (node `me`, meaning node `to`) talks to a hand-made listener that reads
/// each message and answers with `answer(first message)` chunks.
fn against_raw_listener(
    security: PeerSecurity,
    me: u32,
    to: u32,
    answer: impl FnOnce(Vec<u8>) -> Vec<Vec<u8>> + Send + 'static,
) -> Result<(), AuthError> {
    common::run(move || async move {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let fake = glommio::spawn_local(async move {
            let mut stream = server.accept().await.unwrap();
            let mut hello = vec![0; MESSAGE_BYTES];
            if stream.read_exact(&mut hello).await.is_ok() {
                for chunk in answer(hello) {
                    let _ = stream.write_all(&chunk).await;
                }
            }
            // Hold the connection until the dialer is done with it.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let dialed = auth::dial_within(&security, stream, me, to, SHORT * 10).await;
        let dialed = dialed.map(drop);
        fake.await;
        dialed
    })
}

#[test]
fn garbage_truncated_and_oversized_hellos_are_refused_without_panic() {
    let dir = key_dir();
    let mut garbage = vec![0u8; 1 << 20];
    for (i, byte) in garbage.iter_mut().enumerate() {
        *byte = u8::try_from((i * 7919 + 13) % 251).unwrap();
    }
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let wrong_version = {
        let mut hello = message(1, 1, 0, 1, 2, [5; 32], [0; 32]);
        hello[4] = 9;
        hello
    };
    let mac_in_hello = message(1, 1, 0, 1, 2, [5; 32], [1; 32]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a megabyte of garbage", garbage),
        ("an HTTP request", http),
        ("an unknown version", wrong_version),
        ("a MAC in a hello", mac_in_hello),
        (
            "half a hello",
            message(1, 1, 0, 1, 2, [5; 32], [0; 32])[..40].to_vec(),
        ),
    ];
    for (what, first) in cases {
        let short = first.len() < MESSAGE_BYTES;
        let (listener, _) = raw_dialer_then_close(secret(dir.path(), SECRET), first);
        match listener {
            Err(AuthError::Truncated { got }) if short => assert!(got < MESSAGE_BYTES, "{what}"),
            Err(AuthError::Malformed { .. }) if !short => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// A hand-made dialer sends `first` and closes its sending side.
fn raw_dialer_then_close(
    security: PeerSecurity,
    first: Vec<u8>,
) -> (Result<u32, AuthError>, Vec<Vec<u8>>) {
    common::run(move || async move {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let accepting = glommio::spawn_local(async move {
            let stream = server.accept().await.unwrap();
            let accepted = auth::accept_within(&security, stream, 2, |_| true, SHORT * 10).await;
            accepted.map(|(_, from)| from)
        });
        let mut stream = TcpStream::connect(address).await.unwrap();
        // The listener may refuse and close before reading everything: ignore write errors.
        let _ = stream.write_all(&first).await;
        let _ = stream.shutdown(std::net::Shutdown::Write).await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        (accepting.await, vec![rest])
    })
}

#[test]
fn a_dialer_refuses_garbage_and_truncated_answers() {
    let dir = key_dir();
    let garbage = against_raw_listener(secret(dir.path(), SECRET), 1, 2, |_| {
        vec![b"HTTP/1.1 400 Bad Request\r\n\r\n".repeat(4)]
    });
    assert!(
        matches!(garbage, Err(AuthError::Malformed { .. })),
        "{garbage:?}"
    );
    let truncated = against_raw_listener(secret(dir.path(), SECRET), 1, 2, |_| {
        vec![message(2, 1, 0, 2, 1, [6; 32], [7; 32])[..50].to_vec()]
    });
    // The fake keeps the connection open after the partial answer: the time limit ends it.
    assert!(
        matches!(truncated, Err(AuthError::Timeout { .. })),
        "{truncated:?}"
    );
}

#[test]
fn a_silent_peer_times_out_on_either_side() {
    let dir = key_dir();
    for security in [secret(dir.path(), SECRET), PeerSecurity::Insecure, {
        let ca = ca("silent CA");
        tls(dir.path(), "silent", &ca, 2, &[&ca])
    }] {
        let mode = security.mode();
        let (listener, dialer) = common::run(move || async move {
            let server = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = server.local_addr().unwrap();
            // A connection that never speaks, to the listener.
            let silent = TcpStream::connect(address).await.unwrap();
            let stream = server.accept().await.unwrap();
            let listener = auth::accept_within(&security, stream, 2, |_| true, SHORT).await;
            drop(silent);
            // A listener that never answers, to the dialer.
            let stream = TcpStream::connect(address).await.unwrap();
            let _held = server.accept().await.unwrap();
            let dialer = auth::dial_within(&security, stream, 1, 2, SHORT).await;
            (listener.map(|(_, from)| from), dialer.map(drop))
        });
        assert!(
            matches!(listener, Err(AuthError::Timeout { .. })),
            "{mode}: {listener:?}"
        );
        assert!(
            matches!(dialer, Err(AuthError::Timeout { .. })),
            "{mode}: {dialer:?}"
        );
    }
}

// ---- insecure mode and the buffered socket --------------------------------------------------

#[test]
fn insecure_mode_exchanges_node_ids() {
    let ends = handshake(
        Listener {
            security: PeerSecurity::Insecure,
            me: 2,
            members: members(&[1, 2, 3]),
        },
        Dialer {
            security: PeerSecurity::Insecure,
            me: 3,
            to: 2,
        },
    );
    assert!(!ends.dialer.unwrap(), "plain stream in insecure mode");
    assert_eq!(ends.listener.unwrap(), 3);
}

#[test]
fn a_buffered_socket_works_under_the_handshake() {
    let dir = key_dir();
    let (listener_security, dialer_security) =
        (secret(dir.path(), SECRET), secret(dir.path(), SECRET));
    let from = common::run(move || async move {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let accepting = glommio::spawn_local(async move {
            let stream = server
                .accept()
                .await
                .unwrap()
                .buffered_with(Preallocated::new(64 << 10));
            let (stream, from) = auth::accept(&listener_security, stream, 2, |n| n == 1)
                .await
                .unwrap();
            listener_talks(stream).await;
            from
        });
        let stream = TcpStream::connect(address)
            .await
            .unwrap()
            .buffered_with(Preallocated::new(64 << 10));
        let stream = auth::dial(&dialer_security, stream, 1, 2).await.unwrap();
        // Plain modes hand the socket back untouched.
        let stream: TcpStream<Preallocated> = stream.into_plain().unwrap();
        dialer_talks_raw(stream).await;
        accepting.await
    });
    assert_eq!(from, 1);
}

async fn dialer_talks_raw(mut stream: TcpStream<Preallocated>) {
    stream.write_all(DIALER_SAYS).await.unwrap();
    let mut heard = vec![0; LISTENER_SAYS.len()];
    stream.read_exact(&mut heard).await.unwrap();
    assert_eq!(heard, LISTENER_SAYS);
}

// ---- mutual TLS ----------------------------------------------------------------------------

#[test]
fn mutual_tls_proves_both_ends_and_carries_data() {
    let dir = key_dir();
    let ca = ca("cluster CA");
    for (dialer, listener) in [(1, 2), (2, 1)] {
        let ends = handshake(
            Listener {
                security: tls(dir.path(), &format!("l{listener}"), &ca, listener, &[&ca]),
                me: listener,
                members: members(&[1, 2, 3]),
            },
            Dialer {
                security: tls(dir.path(), &format!("d{dialer}"), &ca, dialer, &[&ca]),
                me: dialer,
                to: listener,
            },
        );
        assert!(ends.dialer.unwrap(), "TLS stream after a TLS handshake");
        assert_eq!(ends.listener.unwrap(), dialer);
    }
}

#[test]
fn mutual_tls_refuses_a_certificate_for_another_node() {
    let dir = key_dir();
    let ca = ca("cluster CA");
    // Node 3's certificate, used by a dialer claiming to be node 1.
    let ends = handshake(
        Listener {
            security: tls(dir.path(), "l2", &ca, 2, &[&ca]),
            me: 2,
            members: members(&[1, 2, 3]),
        },
        Dialer {
            security: tls(dir.path(), "d3", &ca, 3, &[&ca]),
            me: 1,
            to: 2,
        },
    );
    assert!(
        matches!(
            ends.listener,
            Err(AuthError::CertificateNotForNode { node: 1, .. })
        ),
        "{ends:?}"
    );
    assert!(
        matches!(
            ends.dialer,
            Err(AuthError::Refused {
                to: 2,
                reason: Refusal::CertificateNotForNode
            })
        ),
        "{ends:?}"
    );
    // A listener holding node 3's certificate where the dialer meant node 2.
    let ends = handshake(
        Listener {
            security: tls(dir.path(), "l3", &ca, 3, &[&ca]),
            me: 2,
            members: members(&[1, 2, 3]),
        },
        Dialer {
            security: tls(dir.path(), "d1", &ca, 1, &[&ca]),
            me: 1,
            to: 2,
        },
    );
    assert!(matches!(ends.dialer, Err(AuthError::Tls(_))), "{ends:?}");
    assert!(ends.listener.is_err(), "{ends:?}");
}

#[test]
fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let dir = key_dir();
    let (ca, rogue) = (ca("cluster CA"), ca("rogue CA"));
    // The dialer's certificate is signed by another CA (which it trusts too, so that it
    // loads and accepts the listener's certificate).
    let ends = handshake(
        Listener {
            security: tls(dir.path(), "l2", &ca, 2, &[&ca]),
            me: 2,
            members: members(&[1, 2]),
        },
        Dialer {
            security: tls(dir.path(), "d1", &rogue, 1, &[&ca, &rogue]),
            me: 1,
            to: 2,
        },
    );
    assert!(matches!(ends.listener, Err(AuthError::Tls(_))), "{ends:?}");
    assert!(ends.dialer.is_err(), "{ends:?}");
    // The listener's certificate is signed by another CA (which it trusts too).
    let ends = handshake(
        Listener {
            security: tls(dir.path(), "l2r", &rogue, 2, &[&ca, &rogue]),
            me: 2,
            members: members(&[1, 2]),
        },
        Dialer {
            security: tls(dir.path(), "d1r", &ca, 1, &[&ca]),
            me: 1,
            to: 2,
        },
    );
    assert!(matches!(ends.dialer, Err(AuthError::Tls(_))), "{ends:?}");
    assert!(ends.listener.is_err(), "{ends:?}");
}

#[test]
fn a_tls_node_and_a_secret_node_do_not_talk() {
    let dir = key_dir();
    let ca = ca("cluster CA");
    let ends = handshake(
        Listener {
            security: tls(dir.path(), "l2", &ca, 2, &[&ca]),
            me: 2,
            members: members(&[1, 2]),
        },
        Dialer {
            security: secret(dir.path(), SECRET),
            me: 1,
            to: 2,
        },
    );
    assert!(ends.listener.is_err(), "{ends:?}");
    assert!(ends.dialer.is_err(), "{ends:?}");
}

// ---- loading the configuration ----------------------------------------------------------

#[test]
fn loading_a_secret_names_the_file_and_the_fix() {
    let dir = key_dir();
    let d = dir.path();
    let err = |r: Result<PeerSecurity, AuthError>| r.unwrap_err().to_string();

    let short = write_file(d, "short", b"  too short  \n", 0o600);
    let message = err(PeerSecurity::load(Some(&short), None));
    assert!(
        message.contains("short") && message.contains("openssl rand"),
        "{message}"
    );

    let open = write_file(d, "open", SECRET.as_bytes(), 0o644);
    let message = err(PeerSecurity::load(Some(&open), None));
    assert!(message.contains("chmod 600"), "{message}");

    let missing = d.join("missing");
    let message = err(PeerSecurity::load(Some(&missing), None));
    assert!(
        message.contains("missing") && message.contains("cluster secret"),
        "{message}"
    );

    assert!(matches!(
        PeerSecurity::load(None, None),
        Ok(PeerSecurity::Insecure)
    ));
}

#[test]
fn loading_tls_names_the_file_and_the_fix() {
    let dir = key_dir();
    let d = dir.path();
    let err = |r: Result<PeerSecurity, AuthError>| r.unwrap_err().to_string();
    let missing = d.join("missing");

    let ca = ca("cluster CA");
    // TLS wins over a secret file (which is then not even read).
    let files = tls_files(d, "n1", &ca, 1, &[&ca]);
    let both = PeerSecurity::load(Some(&missing), Some(files.clone())).unwrap();
    assert_eq!(both.mode(), Mode::Tls);
    both.check_node_id(1).unwrap();
    let message = both.check_node_id(2).unwrap_err().to_string();
    assert!(message.contains("shardlog-node-2"), "{message}");

    // A world-readable key.
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = err(PeerSecurity::load(None, Some(files.clone())));
    assert!(
        message.contains("n1.key") && message.contains("chmod 600"),
        "{message}"
    );
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A key that is not the certificate's.
    let other = tls_files(d, "n2", &ca, 2, &[&ca]);
    let mismatched = TlsFiles {
        key: other.key.clone(),
        ..files.clone()
    };
    let message = err(PeerSecurity::load(None, Some(mismatched)));
    assert!(
        message.contains("n2.key") && message.contains("n1.pem"),
        "{message}"
    );

    // A certificate file that holds no certificate.
    let not_pem = TlsFiles {
        cert: write_file(d, "not.pem", b"hello", 0o644),
        ..files.clone()
    };
    let message = err(PeerSecurity::load(None, Some(not_pem)));
    assert!(
        message.contains("not.pem") && message.contains("CERTIFICATE"),
        "{message}"
    );

    // A certificate not signed by the configured CA.
    let rogue = self::ca("rogue CA");
    let foreign = tls_files(d, "f1", &rogue, 1, &[&ca]);
    let message = err(PeerSecurity::load(None, Some(foreign)));
    assert!(
        message.contains("f1.pem") && message.contains("f1-ca.pem"),
        "{message}"
    );

    // A certificate without the client usage (a node is also a TLS client).
    let (cert, key) = certificate(
        &ca,
        &[auth::node_dns_name(1)],
        vec![ExtendedKeyUsagePurpose::ServerAuth],
    );
    let server_only = TlsFiles {
        cert: write_file(d, "s1.pem", cert.as_bytes(), 0o644),
        key: write_file(d, "s1.key", key.as_bytes(), 0o600),
        ca: files.ca.clone(),
    };
    let message = err(PeerSecurity::load(None, Some(server_only)));
    assert!(
        message.contains("s1.pem") && message.contains("clientAuth"),
        "{message}"
    );
}
