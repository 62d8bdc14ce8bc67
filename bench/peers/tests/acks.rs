//! peers-bench against scripted fake servers on 127.0.0.1: a clean run exits 0 with the
//! stored count equal to the acknowledged one, and every way a server can let a record
//! down (a refused ack, a repeated stream ID, a stored count below the acks, a protocol
//! error) makes it exit non-zero. The fakes speak just enough RESP and NATS for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How a fake server misbehaves.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Refuse every n-th record (0: never).
    refuse_every: u64,
    /// Give the n-th record the previous one's ID (Redis; 0: never).
    repeat_id_at: u64,
    /// Report this many records fewer than it stored.
    hide_stored: u64,
    /// Answer the n-th record with a protocol error line instead (NATS; 0: never).
    garbage_at: u64,
    /// Ping the client at the n-th record (NATS; 0: never).
    ping_at: u64,
    /// Answer no record from the n-th on (NATS; 0: never).
    silent_from: u64,
}

/// Runs peers-bench for 1 s of load; a run still going after 60 s is killed and fails
/// the test (a hang must fail, not stall the suite).
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peers-bench"))
        .args(args)
        .args(["--duration", "1", "--warmup", "0.2", "--reply-timeout", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("peers-bench starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("peers-bench {args:?} still running after 60 s");
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The outputs are a few lines: they fit in the pipes while the child runs.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_end(&mut stderr);
    Output {
        status,
        stdout,
        stderr,
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Starts `serve` on one accepted connection at a time; returns the address.
fn fake(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = Arc::clone(&serve);
            thread::spawn(move || serve(stream));
        }
    });
    address
}

// --- Redis ----------------------------------------------------------------------------

/// One RESP array of bulk strings, or None at the end of the connection.
fn read_command(reader: &mut BufReader<TcpStream>) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut parts = Vec::new();
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let length: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut part = vec![0; length + 2];
        reader.read_exact(&mut part).ok()?;
        part.truncate(length);
        parts.push(part);
    }
    Some(parts)
}

fn redis(faults: Faults) -> String {
    fake(move |stream| {
        let mut out = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        // Between MULTI and EXEC: the replies EXEC will return.
        let (mut stored, mut records, mut queued) = (0u64, 0u64, None::<Vec<Vec<u8>>>);
        while let Some(parts) = read_command(&mut reader) {
            let reply = match parts[0].as_slice() {
                b"DEL" => b":0\r\n".to_vec(),
                b"PING" => b"+PONG\r\n".to_vec(),
                b"XLEN" => {
                    format!(":{}\r\n", stored.saturating_sub(faults.hide_stored)).into_bytes()
                }
                b"MULTI" => {
                    queued = Some(Vec::new());
                    b"+OK\r\n".to_vec()
                }
                b"EXEC" => {
                    let results = queued.take().expect("EXEC after MULTI");
                    [
                        format!("*{}\r\n", results.len()).into_bytes(),
                        results.concat(),
                    ]
                    .concat()
                }
                b"XADD" => {
                    records += 1;
                    let id = if records == faults.repeat_id_at {
                        records - 1
                    } else {
                        records
                    };
                    let reply = if faults.refuse_every > 0 && records % faults.refuse_every == 0 {
                        b"-ERR refused\r\n".to_vec()
                    } else {
                        stored += 1;
                        let id = format!("1700000000000-{id}");
                        format!("${}\r\n{id}\r\n", id.len()).into_bytes()
                    };
                    match &mut queued {
                        Some(results) => {
                            results.push(reply);
                            b"+QUEUED\r\n".to_vec()
                        }
                        None => reply,
                    }
                }
                other => panic!("unexpected {}", String::from_utf8_lossy(other)),
            };
            if out.write_all(&reply).is_err() {
                return;
            }
        }
    })
}

#[test]
fn redis_clean_run_exits_zero_and_stores_what_it_acked() {
    let address = redis(Faults::default());
    let output = bench(&["redis", "--server", &address, "--inflight", "32"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("stored"))
        .expect("stored line");
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert!(numbers[0] > 0 && numbers[0] == numbers[1], "{line}");
    assert!(stdout.contains("records/s"), "{stdout}");
}

#[test]
fn redis_batches_in_multi_exec_are_counted_per_record() {
    let address = redis(Faults::default());
    let output = bench(&[
        "redis",
        "--server",
        &address,
        "--inflight",
        "4",
        "--batch-records",
        "10",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("batch=10 x 1024 B"),
        "{}",
        text(&output)
    );
}

#[test]
fn redis_refused_record_exits_one() {
    for batch in ["1", "10"] {
        let faults = Faults {
            refuse_every: 97,
            ..Faults::default()
        };
        let address = redis(faults);
        let output = bench(&["redis", "--server", &address, "--batch-records", batch]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("refused"),
            "{}",
            text(&output)
        );
    }
}

#[test]
fn redis_repeated_stream_id_exits_one() {
    let faults = Faults {
        repeat_id_at: 50,
        ..Faults::default()
    };
    let address = redis(faults);
    let output = bench(&["redis", "--server", &address]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("stream ID"),
        "{}",
        text(&output)
    );
}

#[test]
fn redis_storing_fewer_than_acked_exits_one() {
    let faults = Faults {
        hide_stored: 1,
        ..Faults::default()
    };
    let address = redis(faults);
    let output = bench(&["redis", "--server", &address]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("but acknowledged"),
        "{}",
        text(&output)
    );
}

// --- NATS -----------------------------------------------------------------------------

fn nats(faults: Faults, pongs: Arc<AtomicU64>) -> String {
    fake(move |stream| {
        let mut out = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let info = "INFO {\"server_id\":\"F\",\"server_name\":\"f0\",\"jetstream\":true}\r\n";
        out.write_all(info.as_bytes()).expect("INFO");
        let (mut stored, mut records) = (0u64, 0u64);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let reply = match fields.first().copied() {
                Some("PING") => "PONG\r\n".to_string(),
                Some("PONG") => {
                    pongs.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Some("CONNECT" | "SUB") => continue,
                Some("PUB") => {
                    let (subject, reply_to) = (fields[1], fields[2]);
                    let length: usize = fields[3].parse().expect("length");
                    let mut payload = vec![0; length + 2];
                    reader.read_exact(&mut payload).expect("payload");
                    let body = if subject.starts_with("$JS.API.STREAM.CREATE.") {
                        "{\"type\":\"io.nats.jetstream.api.v1.stream_create_response\"}".to_string()
                    } else if subject.starts_with("$JS.API.STREAM.INFO.") {
                        let messages = stored.saturating_sub(faults.hide_stored);
                        format!(
                            "{{\"state\":{{\"messages\":{messages}}},\"cluster\":{{\"leader\":\"f0\"}}}}"
                        )
                    } else {
                        records += 1;
                        if records == faults.garbage_at {
                            let _ = out.write_all(b"-ERR 'Unknown Protocol Operation'\r\n");
                            continue;
                        }
                        if faults.silent_from > 0 && records >= faults.silent_from {
                            continue;
                        }
                        if records == faults.ping_at {
                            let _ = out.write_all(b"PING\r\n");
                        }
                        if faults.refuse_every > 0 && records % faults.refuse_every == 0 {
                            "{\"error\":{\"code\":503,\"description\":\"no quorum\"}}".to_string()
                        } else {
                            stored += 1;
                            format!("{{\"stream\":\"PEERS0\",\"seq\":{stored}}}")
                        }
                    };
                    format!("MSG {reply_to} 1 {}\r\n{body}\r\n", body.len())
                }
                _ => panic!("unexpected {line}"),
            };
            if out.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn nats_clean_run_exits_zero_and_answers_the_servers_ping() {
    let pongs = Arc::new(AtomicU64::new(0));
    let faults = Faults {
        ping_at: 100,
        ..Faults::default()
    };
    let address = nats(faults, Arc::clone(&pongs));
    let output = bench(&["nats", "--servers", &address, "--inflight", "64"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(pongs.load(Ordering::Relaxed), 1, "{}", text(&output));
}

#[test]
fn nats_error_ack_exits_one() {
    let faults = Faults {
        refuse_every: 101,
        ..Faults::default()
    };
    let address = nats(faults, Arc::default());
    let output = bench(&["nats", "--servers", &address, "--inflight", "16"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no quorum"),
        "{}",
        text(&output)
    );
}

#[test]
fn nats_storing_fewer_than_acked_exits_one() {
    let faults = Faults {
        hide_stored: 1,
        ..Faults::default()
    };
    let address = nats(faults, Arc::default());
    let output = bench(&["nats", "--servers", &address]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
}

#[test]
fn nats_protocol_error_exits_two() {
    let faults = Faults {
        garbage_at: 10,
        ..Faults::default()
    };
    let address = nats(faults, Arc::default());
    let output = bench(&["nats", "--servers", &address]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Unknown Protocol Operation"),
        "{}",
        text(&output)
    );
}

#[test]
fn nats_server_that_stops_answering_fails_within_the_reply_timeout() {
    let faults = Faults {
        silent_from: 500,
        ..Faults::default()
    };
    let address = nats(faults, Arc::default());
    let output = bench(&["nats", "--servers", &address, "--inflight", "8"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unanswered"),
        "{}",
        text(&output)
    );
}
