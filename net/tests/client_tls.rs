//! TLS on the client listeners against a real `shardlogd` (`--tls-cert`, `--tls-key`,
//! `--tls-client-ca`), through the client library: produce and fetch over TLS; a plain
//! client, a client trusting another CA and a client speaking garbage fail quickly and
//! leave the server serving; with client certificates required, a client without one is
//! refused and one with one is served, while `optional` lets both in; SIGHUP swaps the
//! certificate for new connections and open connections go on; a bad reload keeps the
//! old certificate. Certificates are made with rcgen in a temporary directory.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::certs::{Ca, Pair, presented_certificate};
use shardlog_net::api::{Acks, TopicConfig};
use shardlog_net::client::{Client, ClientConfig, ClientError, ClientTls, ClientTlsFiles};
use shardlog_net::testing::{Launch, LogTail, Shardlogd, StderrTo};

/// How long a refused client may take to fail: no hang.
const FAILS_WITHIN: Duration = Duration::from_secs(10);

fn server_args(pair: &Pair) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        pair.cert.display().to_string(),
        "--tls-key".into(),
        pair.key.display().to_string(),
    ]
}

fn start(data: &Path, args: &[String], stderr: StderrTo) -> Shardlogd {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Shardlogd::launch(&Launch {
        data_dir: data,
        listen: "127.0.0.1:0",
        args: &args,
        stderr,
    })
    .unwrap()
}

/// Client settings trusting `ca`, presenting `client` if given; no retries, so a refusal
/// shows at once.
fn tls_config(ca: &Ca, client: Option<&Pair>) -> ClientConfig {
    let files = ClientTlsFiles {
        ca: ca.pem.clone(),
        cert: client.map(|p| p.cert.clone()),
        key: client.map(|p| p.key.clone()),
        server_name: None,
    };
    ClientConfig {
        tls: Some(ClientTls::load(&files).unwrap()),
        retries: 0,
        ..ClientConfig::default()
    }
}

/// Creates topic `t`, produces `values` to it and reads them back, all over `config`.
async fn round_trip(brokers: &str, config: ClientConfig, topic: &str, values: &[&str]) {
    let client = Client::connect(brokers, config).await.unwrap();
    client
        .create_topic(topic, 1, 0, TopicConfig::default())
        .await
        .unwrap();
    let values: Vec<Vec<u8>> = values.iter().map(|v| v.as_bytes().to_vec()).collect();
    client
        .produce(topic, 0, Acks::All, common::batch(&values))
        .await
        .unwrap();
    let read = common::consume_all(&client, topic, 0, 0).await;
    let read: Vec<Vec<u8>> = read.into_iter().map(|(_, v)| v).collect();
    assert_eq!(read, values);
}

/// Connects with `config`, which must fail within [`FAILS_WITHIN`]; returns the error.
async fn refused(brokers: &str, config: ClientConfig) -> ClientError {
    let started = Instant::now();
    let error = match Client::connect(brokers, config).await {
        Ok(_) => panic!("the connection was not refused"),
        Err(error) => error,
    };
    assert!(
        started.elapsed() < FAILS_WITHIN,
        "refused only after {:?}: {error}",
        started.elapsed()
    );
    error
}

#[test]
fn tls_carries_produce_and_fetch_and_plain_or_untrusted_clients_fail_fast() {
    let data = common::data_dir();
    let keys = tempfile::tempdir().unwrap();
    let ca = Ca::new(keys.path(), "servers");
    let other_ca = Ca::new(keys.path(), "other");
    let server = start(
        data.path(),
        &server_args(&ca.server(keys.path(), "server")),
        StderrTo::Echo,
    );
    let brokers = server.brokers();
    let addr = server.addr;
    common::run(move || async move {
        round_trip(&brokers, tls_config(&ca, None), "t", &["a", "b", "c"]).await;

        // A plain client's first frame is not a ClientHello: the server closes.
        let plain = ClientConfig {
            retries: 0,
            ..ClientConfig::default()
        };
        let error = refused(&brokers, plain).await;
        eprintln!("plain client: {error}");

        // A client that does not trust the server's CA refuses it, and says why.
        let error = refused(&brokers, tls_config(&other_ca, None)).await;
        assert!(matches!(error, ClientError::Tls { .. }), "{error}");
        assert!(error.to_string().contains("UnknownIssuer"), "{error}");

        // Garbage instead of a handshake: closed, not a hang or a crash.
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(FAILS_WITHIN)).unwrap();
        raw.write_all(&[0xff; 300]).unwrap();
        let mut answer = Vec::new();
        let _ = raw.read_to_end(&mut answer);
        assert!(answer.len() < 300, "{answer:?}");

        // The server still serves TLS clients.
        let client = Client::connect(&brokers, tls_config(&ca, None))
            .await
            .unwrap();
        assert_eq!(client.partition_count("t").await.unwrap(), 1);
    });
    drop(server);
}

#[test]
fn required_client_certificates_refuse_a_client_without_one() {
    let data = common::data_dir();
    let keys = tempfile::tempdir().unwrap();
    let ca = Ca::new(keys.path(), "servers");
    let clients_ca = Ca::new(keys.path(), "clients");
    let strangers_ca = Ca::new(keys.path(), "strangers");
    let mut args = server_args(&ca.server(keys.path(), "server"));
    args.extend([
        "--tls-client-ca".into(),
        clients_ca.pem.display().to_string(),
    ]);
    let server = start(data.path(), &args, StderrTo::Echo);
    let brokers = server.brokers();
    let alice = clients_ca.client(keys.path(), "alice", "alice");
    let mallory = strangers_ca.client(keys.path(), "mallory", "mallory");
    common::run(move || async move {
        round_trip(&brokers, tls_config(&ca, Some(&alice)), "t", &["x"]).await;
        // Refused after the client's side of the handshake (TLS 1.3): the alert on the
        // first read is a TLS error, which no retry would change.
        let error = refused(&brokers, tls_config(&ca, None)).await;
        assert!(matches!(error, ClientError::Tls { .. }), "{error}");
        assert!(error.to_string().contains("CertificateRequired"), "{error}");
        let error = refused(&brokers, tls_config(&ca, Some(&mallory))).await;
        assert!(matches!(error, ClientError::Tls { .. }), "{error}");
        assert!(error.to_string().contains("UnknownCA"), "{error}");
    });
    drop(server);
}

#[test]
fn optional_client_certificates_let_both_kinds_in() {
    let data = common::data_dir();
    let keys = tempfile::tempdir().unwrap();
    let ca = Ca::new(keys.path(), "servers");
    let clients_ca = Ca::new(keys.path(), "clients");
    let mut args = server_args(&ca.server(keys.path(), "server"));
    args.extend([
        "--tls-client-ca".into(),
        clients_ca.pem.display().to_string(),
        "--tls-client-auth".into(),
        "optional".into(),
    ]);
    let server = start(data.path(), &args, StderrTo::Echo);
    let brokers = server.brokers();
    let bob = clients_ca.client(keys.path(), "bob", "bob");
    common::run(move || async move {
        round_trip(&brokers, tls_config(&ca, Some(&bob)), "with", &["1"]).await;
        round_trip(&brokers, tls_config(&ca, None), "without", &["2"]).await;
    });
    drop(server);
}

/// Waits until the server's log has `count` lines containing `text`.
fn wait_for_lines(tail: &LogTail, text: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tail.lines().iter().filter(|l| l.contains(text)).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in {:#?}",
            tail.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_gives_new_connections_the_new_certificate_and_keeps_open_ones() {
    let data = common::data_dir();
    let keys = tempfile::tempdir().unwrap();
    let ca_a = Ca::new(keys.path(), "a");
    let ca_b = Ca::new(keys.path(), "b");
    let served = ca_a.server(keys.path(), "served");
    let b = ca_b.server(keys.path(), "b-server");
    let tail = LogTail::new(500);
    let mut server = start(
        data.path(),
        &server_args(&served),
        StderrTo::Tail(tail.clone()),
    );
    let brokers = server.brokers();
    let addr = server.addr;
    let cert_a = presented_certificate(addr);
    let (to_test, hung_up) = std::sync::mpsc::channel::<()>();
    let (to_client, reloaded) = std::sync::mpsc::channel::<()>();
    let client_side = std::thread::spawn(move || {
        common::run(move || async move {
            // The old connection: trusts only CA A, so it cannot reconnect after the
            // swap; its produce after the reload proves it stayed open.
            let old = Client::connect(&brokers, tls_config(&ca_a, None))
                .await
                .unwrap();
            old.create_topic("t", 1, 0, TopicConfig::default())
                .await
                .unwrap();
            let one = common::batch(&[b"before".to_vec()]);
            old.produce("t", 0, Acks::All, one).await.unwrap();
            to_test.send(()).unwrap();
            reloaded.recv().unwrap();
            let two = common::batch(&[b"after".to_vec()]);
            assert_eq!(old.produce("t", 0, Acks::All, two).await.unwrap(), Some(1));
            // A new connection gets certificate B: a client trusting only B reads both.
            let new = Client::connect(&brokers, tls_config(&ca_b, None))
                .await
                .unwrap();
            let read = common::consume_all(&new, "t", 0, 0).await;
            assert_eq!(read, vec![(0, b"before".to_vec()), (1, b"after".to_vec())]);
            let error = refused(&brokers, tls_config(&ca_a, None)).await;
            assert!(matches!(error, ClientError::Tls { .. }), "{error}");
        });
    });
    hung_up.recv().unwrap();
    // Replace the files in place with a certificate from another CA, then SIGHUP.
    std::fs::copy(&b.cert, &served.cert).unwrap();
    std::fs::copy(&b.key, &served.key).unwrap();
    server.hangup().unwrap();
    wait_for_lines(&tail, "client listener TLS reloaded", 1);
    let cert_b = presented_certificate(addr);
    assert_ne!(cert_a, cert_b);
    assert_eq!(cert_b, pem_der(&b.cert));
    to_client.send(()).unwrap();
    client_side.join().unwrap();

    // A reload that fails (a key that is not PEM) keeps certificate B and says so.
    std::fs::write(&served.key, b"not a key").unwrap();
    server.hangup().unwrap();
    wait_for_lines(&tail, "client listener TLS not reloaded", 1);
    assert_eq!(presented_certificate(addr), cert_b);
    assert!(server.is_running());
}

/// The DER of the (first) certificate in a PEM file.
fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

#[test]
fn bad_tls_flags_are_refused_at_start_naming_the_fix() {
    let data = common::data_dir();
    let keys = tempfile::tempdir().unwrap();
    let ca = Ca::new(keys.path(), "servers");
    let pair = ca.server(keys.path(), "server");
    let world_readable = common::certs::write(
        keys.path(),
        "open.key",
        &std::fs::read(&pair.key).unwrap(),
        0o644,
    );
    let cert = pair.cert.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--tls-cert".into(), cert.clone()],
            "both --tls-cert and --tls-key",
        ),
        (
            vec!["--tls-client-ca".into(), ca.pem.display().to_string()],
            "need --tls-cert and --tls-key",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.clone(),
                "--tls-key".into(),
                world_readable.display().to_string(),
            ],
            "chmod 600",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert,
                "--tls-key".into(),
                ca.client(keys.path(), "other", "other")
                    .key
                    .display()
                    .to_string(),
            ],
            "does not belong to the certificate",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let launch = Launch {
            data_dir: data.path(),
            listen: "127.0.0.1:0",
            args: &args,
            stderr: StderrTo::Echo,
        };
        let exited =
            shardlog_net::testing::refused_start(&launch, Duration::from_secs(20)).unwrap();
        assert!(!exited.status.success(), "{args:?}");
        assert!(exited.stderr.contains(says), "{args:?}: {}", exited.stderr);
    }
}
