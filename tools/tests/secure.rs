//! Everything on at once, the way the README's "Turning it all on" runs it: one
//! `shardlogd` with TLS on both client listeners (client certificates optional),
//! `--authentication sasl`, `--authorization on` and a bootstrap superuser from a file.
//! Real clients over it: confluent-kafka and kcat over `SASL_SSL` with SCRAM (kcat with
//! PLAIN too, which only TLS connections are offered), kcat over
//! mutual TLS (the certificate's user is the principal), the `shardlog` CLI and
//! `shardlog-bench` over TLS with SCRAM. A user allowed to read topic `a` reads it and
//! is refused writing it and reading `b`; a client without credentials is refused.
//!
//! kcat and confluent-kafka are installed on first use (`kafka_clients/setup.sh`);
//! `shardlog-bench` must be built beside `shardlog` (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

#[path = "../../net/tests/common/certs.rs"]
mod certs;
mod common;
#[allow(dead_code)]
#[path = "kafka_clients/nodes.rs"]
mod nodes;
#[allow(dead_code)]
#[path = "kafka_clients/script.rs"]
mod script;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::describe;
use nodes::Nodes;
use shardlog_net::testing::output_with_stdin;

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "the-admin-password";
const READER: &str = "reader";
const READER_PASSWORD: &str = "the-reader-password";

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The node, the CA its clients trust, and alice's client certificate.
struct Secure {
    nodes: Nodes,
    ca: String,
    alice: certs::Pair,
    _keys: tempfile::TempDir,
}

impl Secure {
    fn start() -> Secure {
        let keys = tempfile::Builder::new()
            .prefix("secure-")
            .tempdir_in(shardlog_net::testing::test_root().unwrap())
            .unwrap();
        let servers = certs::Ca::new(keys.path(), "servers");
        let clients = certs::Ca::new(keys.path(), "clients");
        let server = servers.server(keys.path(), "server");
        let alice = clients.client(keys.path(), "alice", "alice");
        let superuser = certs::write(
            keys.path(),
            "superuser",
            format!("{ADMIN}:{ADMIN_PASSWORD}\n").as_bytes(),
            0o600,
        );
        let (cert, key, client_ca, superuser) = (
            path(&server.cert),
            path(&server.key),
            path(&clients.pem),
            path(&superuser),
        );
        let nodes = Nodes::start_with(
            1,
            &[
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &client_ca,
                "--tls-client-auth",
                "optional",
                "--authentication",
                "sasl",
                "--authorization",
                "on",
                "--superuser-file",
                &superuser,
            ],
        );
        let secure = Secure {
            nodes,
            ca: path(&servers.pem),
            alice,
            _keys: keys,
        };
        let started = Instant::now();
        while !secure
            .shardlog((ADMIN, ADMIN_PASSWORD), &["user", "list"], "")
            .status
            .success()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the bootstrap superuser never authenticated"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        secure
    }

    /// `shardlog ARGS` over TLS as `user` (password in `SHARDLOG_PASSWORD`).
    fn shardlog(&self, (user, password): (&str, &str), args: &[&str], stdin: &str) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardlog"));
        command
            .args(args)
            .args(["--brokers", &self.nodes.brokers(), "--tls-ca", &self.ca])
            .args(["--user", user])
            .env("SHARDLOG_PASSWORD", password)
            .env("SHARDLOG_NEW_PASSWORD", READER_PASSWORD);
        output_with_stdin(&mut command, stdin.as_bytes()).unwrap()
    }

    fn admin_ok(&self, args: &[&str], stdin: &str) -> String {
        let output = self.shardlog((ADMIN, ADMIN_PASSWORD), args, stdin);
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
        String::from_utf8(output.stdout).unwrap()
    }

    /// kcat's `-X` settings for SASL_SSL as `user`, or for plain TLS with alice's
    /// certificate (`None`), or for TLS with no credentials at all (`Some(("", ""))`).
    /// A user named `plain:NAME` authenticates with PLAIN (offered over TLS only) instead
    /// of SCRAM-SHA-256.
    fn kcat_auth(&self, user: Option<(&str, &str)>) -> Vec<String> {
        let mut settings = vec![format!("ssl.ca.location={}", self.ca)];
        match user {
            Some(("", "")) => settings.push("security.protocol=SSL".into()),
            Some((user, password)) => settings.extend([
                "security.protocol=SASL_SSL".into(),
                match user.strip_prefix("plain:") {
                    Some(_) => "sasl.mechanisms=PLAIN".into(),
                    None => "sasl.mechanisms=SCRAM-SHA-256".into(),
                },
                format!(
                    "sasl.username={}",
                    user.strip_prefix("plain:").unwrap_or(user)
                ),
                format!("sasl.password={password}"),
            ]),
            None => settings.extend([
                "security.protocol=SSL".into(),
                format!("ssl.certificate.location={}", path(&self.alice.cert)),
                format!("ssl.key.location={}", path(&self.alice.key)),
            ]),
        }
        settings
            .into_iter()
            .flat_map(|s| ["-X".to_owned(), s])
            .collect()
    }

    /// kcat ARGS against the Kafka listener as `user` (see `kcat_auth`), at most 30 s.
    fn kcat(&self, user: Option<(&str, &str)>, args: &[&str], stdin: &str) -> Output {
        common::kcat::ensure_kcat();
        let mut command = Command::new("timeout");
        command
            .args(["30", "kcat", "-b", &self.nodes.bootstrap()])
            .args(self.kcat_auth(user))
            .args(args);
        output_with_stdin(&mut command, stdin.as_bytes()).unwrap()
    }

    /// What kcat read of `topic` from the beginning, or why it could not.
    fn kcat_read(&self, user: Option<(&str, &str)>, topic: &str) -> Result<String, String> {
        let args = ["-C", "-t", topic, "-o", "beginning", "-e", "-q"];
        let output = self.kcat(user, &args, "");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() && !stderr.contains("ERROR") {
            Ok(String::from_utf8(output.stdout).unwrap())
        } else {
            Err(stderr)
        }
    }

    /// kcat writes `lines` to `topic`, or says why not.
    fn kcat_write(
        &self,
        user: Option<(&str, &str)>,
        topic: &str,
        lines: &str,
    ) -> Result<(), String> {
        let output = self.kcat(user, &["-P", "-t", topic], lines);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        // kcat reports a failed delivery on stderr and may still exit 0: both count.
        if output.status.success() && !stderr.contains("Delivery failed") {
            Ok(())
        } else {
            Err(stderr)
        }
    }
}

fn refused_as_unauthorized(result: Result<impl std::fmt::Debug, String>, what: &str) {
    match result {
        Ok(got) => panic!("{what}: allowed ({got:?})"),
        Err(why) => assert!(
            why.to_ascii_lowercase().contains("authorization failed"),
            "{what}: {why}"
        ),
    }
}

#[test]
fn sasl_ssl_mutual_tls_and_acls_with_real_clients_the_cli_and_the_bench() {
    let mut secure = Secure::start();
    confluent_kafka_over_sasl_ssl(&mut secure);
    topics_a_reader_and_acls(&secure);
    kcat_as_reader_alice_and_nobody(&secure);
    cli_as_reader(&secure);
    bench_as_admin(&secure);
}

fn confluent_kafka_over_sasl_ssl(secure: &mut Secure) {
    // confluent-kafka over SASL_SSL with both SCRAM mechanisms, as the superuser; a wrong
    // password and an unknown user get authentication errors.
    let bootstrap = secure.nodes.bootstrap();
    let args = [
        bootstrap.as_str(),
        "SASL_SSL",
        ADMIN,
        ADMIN_PASSWORD,
        secure.ca.as_str(),
    ];
    let summary = script::python_script(
        &mut secure.nodes,
        "confluent_sasl.py",
        &args,
        Duration::from_secs(240),
    );
    assert_eq!(summary["SCRAM-SHA-256"], 50, "{summary}");
    assert_eq!(summary["SCRAM-SHA-512"], 50, "{summary}");
    assert_eq!(summary["wrong_password"]["authentication_error"], true);
    assert_eq!(summary["unknown_user"]["authentication_error"], true);
}

fn topics_a_reader_and_acls(secure: &Secure) {
    // The CLI over TLS with SCRAM, as the superuser: topics, records, a user, ACLs.
    for topic in ["a", "b"] {
        secure.admin_ok(&["topic", "create", topic, "--partitions", "1"], "");
        secure.admin_ok(
            &["produce", "--topic", topic],
            &format!("{topic}-1\n{topic}-2\n"),
        );
    }
    secure.admin_ok(&["user", "create", READER], "");
    for principal in ["User:reader", "User:alice"] {
        let acl = ["acl", "add", "--principal", principal];
        secure.admin_ok(
            &[&acl[..], &["--operation", "read", "--topic", "a"]].concat(),
            "",
        );
    }
}

fn kcat_as_reader_alice_and_nobody(secure: &Secure) {
    // kcat over SASL_SSL as the reader: reads a, may not write it nor read b.
    let reader = Some((READER, READER_PASSWORD));
    assert_eq!(secure.kcat_read(reader, "a").unwrap(), "a-1\na-2\n");
    refused_as_unauthorized(secure.kcat_write(reader, "a", "nope\n"), "reader writes a");
    refused_as_unauthorized(secure.kcat_read(reader, "b"), "reader reads b");
    // PLAIN, offered on TLS connections: the same user, the same rights.
    let plain = Some(("plain:reader", READER_PASSWORD));
    assert_eq!(secure.kcat_read(plain, "a").unwrap(), "a-1\na-2\n");
    refused_as_unauthorized(secure.kcat_read(plain, "b"), "reader (PLAIN) reads b");

    // kcat over mutual TLS, no SASL: the certificate names User:alice, who may read a.
    assert_eq!(secure.kcat_read(None, "a").unwrap(), "a-1\na-2\n");
    refused_as_unauthorized(secure.kcat_write(None, "a", "nope\n"), "alice writes a");

    // TLS without credentials: the broker requires SASL and closes the connection.
    let anonymous = secure.kcat(Some(("", "")), &["-L", "-m", "5"], "");
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        !anonymous.status.success(),
        "listed without credentials: {stderr}"
    );
    // librdkafka names SASL as the likely cause over plain TCP; over TLS it sees the
    // session end (the broker closes it after the first request, as Kafka does).
    assert!(
        stderr.contains("might require SASL authentication")
            || stderr.contains("unexpected eof while reading"),
        "{stderr}"
    );
}

fn cli_as_reader(secure: &Secure) {
    // The CLI as the reader: consumes a, is refused producing to it.
    let reader = (READER, READER_PASSWORD);
    let read = secure.shardlog(
        reader,
        &[
            "consume",
            "--topic",
            "a",
            "--from",
            "beginning",
            "--count",
            "2",
        ],
        "",
    );
    assert!(read.status.success(), "{}", describe(&read));
    assert_eq!(String::from_utf8_lossy(&read.stdout), "a-1\na-2\n");
    let write = secure.shardlog(reader, &["produce", "--topic", "a"], "nope\n");
    assert!(!write.status.success(), "{}", describe(&write));
    assert!(
        describe(&write).contains("not authorized"),
        "{}",
        describe(&write)
    );
    let wrong = secure.shardlog((READER, "wrong"), &["topic", "list"], "");
    assert!(!wrong.status.success(), "{}", describe(&wrong));
}

fn bench_as_admin(secure: &Secure) {
    // shardlog-bench over TLS with SCRAM, as the superuser.
    let bench = Path::new(env!("CARGO_BIN_EXE_shardlog"))
        .parent()
        .unwrap()
        .join("shardlog-bench");
    assert!(
        bench.exists(),
        "build shardlog-bench (cargo build --workspace --bins)"
    );
    for (workload, extra) in [
        ("produce", &[][..]),
        ("consume", &["--from", "beginning"][..]),
    ] {
        let output = Command::new(&bench)
            .arg(workload)
            .args(["--brokers", &secure.nodes.brokers(), "--tls-ca", &secure.ca])
            .args(["--user", ADMIN, "--topic", "bench", "--count", "2000"])
            .args(["--record-size", "256"])
            .args(extra)
            .env("SHARDLOG_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "bench {workload}: {}",
            describe(&output)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("records/s"), "bench {workload}: {text}");
    }
}
