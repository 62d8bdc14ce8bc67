//! NATS JetStream over the raw client protocol (text lines over TCP; no client library).
//!
//! ```text
//! server: INFO {..,"server_name":"n0",..}\r\n
//! client: CONNECT {"verbose":false,..}\r\n  SUB _INBOX.<run>.* 1\r\n  PING\r\n
//! server: PONG\r\n
//! client: PUB <subject> _INBOX.<run>.<slot> <n>\r\n<n bytes>\r\n
//! server: MSG _INBOX.<run>.<slot> 1 <n>\r\n{"stream":"PEERS0","seq":42}\r\n
//!     or: MSG _INBOX.<run>.<slot> 1 <n>\r\n{"error":{"code":503,..}}\r\n
//! ```
//! One subscription takes every reply; the slot in the reply subject says which publish
//! it acknowledges (JetStream may answer out of order). An acknowledgement is a record
//! stored by the stream: with `replicas: 3`, by a quorum. Stream management goes over the
//! same connection as JetStream API requests (`$JS.API.STREAM.CREATE.<name>`, `.INFO.`).

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::input::{Input, invalid};
use crate::load::{self, Decoder, Encoder, Reply, Shared};

/// Replies larger than this are refused (an acknowledgement is about 40 bytes; a stream
/// info a few KiB).
const REPLY_BYTES_MAX: usize = 64 << 10;
/// How long a JetStream API request may take before it is sent again (a new cluster has
/// no meta leader for a few seconds, and requests before that go unanswered).
const API_ATTEMPT: Duration = Duration::from_secs(2);

/// A connection after the handshake, before the load.
pub struct Connection {
    /// The writing side.
    pub stream: TcpStream,
    /// The reading side.
    pub input: Input,
    /// The server's name from its INFO.
    pub server_name: String,
    /// `_INBOX.<run>.`: every reply subject starts with it.
    inbox: String,
    requests: u64,
}

impl Connection {
    /// Connects to `address`, subscribes to the reply inbox and waits for the PONG that
    /// proves the server has the subscription.
    pub fn open(address: &str, timeout: Duration) -> io::Result<Connection> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut input = Input::new(stream.try_clone()?);
        let info = input.line()?;
        let info = info
            .strip_prefix(b"INFO ")
            .ok_or_else(|| invalid(format!("{address}: no INFO line: {}", lossy(info))))?;
        let server_name = json_string(info, "server_name").unwrap_or_default();
        let inbox = format!("_INBOX.{}.", std::process::id());
        let mut connection = Connection {
            stream,
            input,
            server_name,
            inbox,
            requests: 0,
        };
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":false,\
             \"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":1}}\r\n\
             SUB {}* 1\r\nPING\r\n",
            connection.inbox
        );
        connection.stream.write_all(hello.as_bytes())?;
        loop {
            match connection.input.line()? {
                b"PONG" => return Ok(connection),
                b"+OK" | b"PING" => {}
                line if line.starts_with(b"INFO ") => {}
                line => return Err(invalid(format!("{address}: {}", lossy(line)))),
            }
        }
    }

    /// Creates stream `name` on `subject` with `replicas`, file storage. Retries while
    /// the cluster has no JetStream leader yet, for up to `patience`.
    pub fn create_stream(
        &mut self,
        name: &str,
        subject: &str,
        replicas: u32,
        patience: Duration,
    ) -> io::Result<()> {
        let config = format!(
            "{{\"name\":\"{name}\",\"subjects\":[\"{subject}\"],\"storage\":\"file\",\
             \"num_replicas\":{replicas},\"retention\":\"limits\",\"discard\":\"old\"}}"
        );
        let reply = self.api(&format!("$JS.API.STREAM.CREATE.{name}"), &config, patience)?;
        if has_error(&reply) {
            return Err(invalid(format!(
                "creating stream {name}: {}",
                lossy(&reply)
            )));
        }
        Ok(())
    }

    /// Asks stream `name`'s leader to hand over to server `preferred` (NATS 2.11 and
    /// later honour the preference), then waits up to `patience` for it to lead.
    /// Returns the leader at the end, which is another server if that did not work.
    pub fn move_leader(
        &mut self,
        name: &str,
        preferred: &str,
        patience: Duration,
    ) -> io::Result<Option<String>> {
        let deadline = Instant::now() + patience;
        let body = format!("{{\"placement\":{{\"preferred\":\"{preferred}\"}}}}");
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{name}");
        loop {
            let reply = self.api(&subject, &body, API_ATTEMPT * 5)?;
            let mut leader = self.stream_state(name)?.1;
            // The new leader takes a moment to be elected.
            while leader.is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
                leader = self.stream_state(name)?.1;
            }
            if leader.as_deref() == Some(preferred) || Instant::now() >= deadline {
                return Ok(leader);
            }
            if has_error(&reply) {
                eprintln!("peers-bench: stream {name} step-down: {}", lossy(&reply));
                return Ok(leader);
            }
        }
    }

    /// The stream's (stored messages, leader server name).
    pub fn stream_state(&mut self, name: &str) -> io::Result<(u64, Option<String>)> {
        let reply = self.api(&format!("$JS.API.STREAM.INFO.{name}"), "", API_ATTEMPT * 5)?;
        if has_error(&reply) {
            return Err(invalid(format!("stream {name} info: {}", lossy(&reply))));
        }
        let state = find(&reply, b"\"state\":")
            .ok_or_else(|| invalid(format!("stream {name} info without state")))?;
        let messages = json_u64(&reply[state..], b"\"messages\":")
            .ok_or_else(|| invalid(format!("stream {name} info without messages")))?;
        let leader = find(&reply, b"\"cluster\":")
            .and_then(|cluster| json_string(&reply[cluster..], "leader"));
        Ok((messages, leader))
    }

    /// The encoder and decoder of the load: records round-robin over `subjects`.
    pub fn load(&self, subjects: &[String], record_size: usize) -> (Publisher, Acks) {
        let payload = load::record_value(record_size);
        let publisher = Publisher {
            subjects: subjects.iter().map(|s| s.as_bytes().to_vec()).collect(),
            next_subject: 0,
            inbox: self.inbox.as_bytes().to_vec(),
            payload,
        };
        let acks = Acks {
            inbox: self.inbox.as_bytes().to_vec(),
        };
        (publisher, acks)
    }

    /// One JetStream API request and its reply payload, sent again every `API_ATTEMPT`
    /// (each time with a new reply subject) while no reply or a "temporarily
    /// unavailable" one comes, for up to `patience`.
    fn api(&mut self, subject: &str, body: &str, patience: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + patience;
        loop {
            self.requests += 1;
            let reply_to = format!("{}api{}", self.inbox, self.requests);
            let request = format!("PUB {subject} {reply_to} {}\r\n{body}\r\n", body.len());
            self.stream.write_all(request.as_bytes())?;
            match self.await_reply(reply_to.as_bytes(), Instant::now() + API_ATTEMPT) {
                Ok(Some(reply)) if !unavailable(&reply) => return Ok(reply),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{subject}: no JetStream answer in {patience:?}"),
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The payload of the MSG on `reply_to`, or None at `until`. Skips other messages
    /// (late replies to earlier attempts, the load's last pongs) and answers pings.
    fn await_reply(&mut self, reply_to: &[u8], until: Instant) -> io::Result<Option<Vec<u8>>> {
        let saved = self.input.stream().read_timeout()?;
        self.input
            .stream()
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        let result = loop {
            match self.input.line() {
                Ok(line) if line.starts_with(b"MSG ") => {
                    let (ours, length) = parse_msg(line)
                        .map(|message| (message.subject == reply_to, message.length))?;
                    let payload = self.input.payload(length)?;
                    if ours {
                        break Ok(Some(payload.to_vec()));
                    }
                }
                Ok(b"PING") => self.stream.write_all(b"PONG\r\n")?,
                Ok(b"PONG" | b"+OK") => {}
                Ok(line) if line.starts_with(b"INFO ") => {}
                Ok(line) => break Err(invalid(format!("unexpected: {}", lossy(line)))),
                Err(error) if timed_out(&error) => {
                    if Instant::now() >= until {
                        break Ok(None);
                    }
                }
                Err(error) => break Err(error),
            }
        };
        self.input.stream().set_read_timeout(saved)?;
        result
    }
}

/// Writes one PUB per record, its reply subject naming the slot.
pub struct Publisher {
    subjects: Vec<Vec<u8>>,
    next_subject: usize,
    inbox: Vec<u8>,
    payload: Vec<u8>,
}

impl Encoder for Publisher {
    fn encode(&mut self, slot: usize, out: &mut Vec<u8>) {
        let subject = &self.subjects[self.next_subject];
        self.next_subject = (self.next_subject + 1) % self.subjects.len();
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(subject);
        out.push(b' ');
        out.extend_from_slice(&self.inbox);
        // Writing integers into a Vec allocates only when it grows (it does not here).
        let _ = write!(out, "{slot} {}\r\n", self.payload.len());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(b"\r\n");
    }

    fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PING\r\n");
    }
}

/// Reads the acknowledgements.
pub struct Acks {
    inbox: Vec<u8>,
}

impl Decoder for Acks {
    fn next(&mut self, input: &mut Input, shared: &Shared) -> io::Result<Reply> {
        loop {
            let line = input.line()?;
            if line.starts_with(b"MSG ") {
                let message = parse_msg(line)?;
                let slot = message
                    .subject
                    .strip_prefix(self.inbox.as_slice())
                    .and_then(parse_u64)
                    .and_then(|slot| usize::try_from(slot).ok())
                    .ok_or_else(|| invalid(format!("a reply on {}", lossy(message.subject))))?;
                let length = message.length;
                let ack = input.payload(length)?;
                let error = ack_error(ack);
                return Ok(Reply::Done { slot, error });
            }
            match line {
                b"PING" => shared.pong_owed.store(true, Ordering::Release),
                b"PONG" => return Ok(Reply::Pong),
                b"+OK" => {}
                line if line.starts_with(b"INFO ") => {}
                line => return Err(invalid(format!("from the server: {}", lossy(line)))),
            }
        }
    }
}

/// None for a publish acknowledgement (`{"stream":"..","seq":N,..}` with N > 0), else
/// what went wrong.
fn ack_error(ack: &[u8]) -> Option<String> {
    if has_error(ack) {
        return Some(lossy(ack));
    }
    let stream = json_str(ack, b"\"stream\":\"").filter(|stream| !stream.is_empty());
    match (stream, json_u64(ack, b"\"seq\":")) {
        (Some(_), Some(seq)) if seq > 0 => None,
        _ => Some(format!("not an acknowledgement: {}", lossy(ack))),
    }
}

struct Msg<'a> {
    subject: &'a [u8],
    length: usize,
}

/// `MSG <subject> <sid> [reply-to] <length>`.
fn parse_msg(line: &[u8]) -> io::Result<Msg<'_>> {
    let bad = || invalid(format!("a bad MSG line: {}", lossy(line)));
    let mut fields = line.split(|byte| *byte == b' ').filter(|f| !f.is_empty());
    let _msg = fields.next();
    let subject = fields.next().ok_or_else(bad)?;
    let _sid = fields.next().ok_or_else(bad)?;
    let third = fields.next().ok_or_else(bad)?;
    let length = match (fields.next(), fields.next()) {
        (None, _) => third,
        (Some(fourth), None) => fourth,
        (Some(_), Some(_)) => return Err(bad()),
    };
    let length = parse_u64(length).ok_or_else(bad)?;
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= REPLY_BYTES_MAX)
        .ok_or_else(|| invalid(format!("a {length}-byte reply")))?;
    Ok(Msg { subject, length })
}

fn has_error(reply: &[u8]) -> bool {
    find(reply, b"\"error\"").is_some()
}

/// Replies a new cluster gives before its JetStream is up (code 503, "JetStream system
/// temporarily unavailable"), answered by sending again.
fn unavailable(reply: &[u8]) -> bool {
    has_error(reply) && find(reply, b"\"code\":503").is_some()
}

fn timed_out(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The string after the first `needle` (`"key":"`) in `json`, up to the next quote (no
/// escapes: the names and descriptions read here have none that matter).
fn json_str<'a>(json: &'a [u8], needle: &[u8]) -> Option<&'a [u8]> {
    let rest = json.get(find(json, needle)? + needle.len()..)?;
    let end = rest.iter().position(|byte| *byte == b'"')?;
    Some(&rest[..end])
}

fn json_string(json: &[u8], key: &str) -> Option<String> {
    json_str(json, format!("\"{key}\":\"").as_bytes()).map(lossy)
}

/// The number after the first `needle` (`"key":`) in `json`.
fn json_u64(json: &[u8], needle: &[u8]) -> Option<u64> {
    let rest = json.get(find(json, needle)? + needle.len()..)?;
    let end = rest
        .iter()
        .position(|byte| !byte.is_ascii_digit())
        .unwrap_or(rest.len());
    parse_u64(&rest[..end])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A decimal number of 1 to 19 digits.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |n, digit| n * 10 + u64::from(digit - b'0')),
    )
}

/// Server text for a message.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_and_refusals() {
        assert_eq!(ack_error(br#"{"stream":"PEERS0","seq":42}"#), None);
        assert_eq!(
            ack_error(br#"{"stream":"PEERS0","seq":7,"duplicate":true}"#),
            None
        );
        let refused = br#"{"error":{"code":503,"err_code":10077,"description":"x"}}"#;
        assert!(ack_error(refused).is_some());
        assert!(ack_error(br#"{"stream":"PEERS0","seq":0}"#).is_some());
        assert!(ack_error(br#"{"stream":"","seq":3}"#).is_some());
        assert!(ack_error(b"garbage").is_some());
    }

    #[test]
    fn msg_lines() {
        let message = parse_msg(b"MSG _INBOX.1.7 1 30").unwrap();
        assert_eq!((message.subject, message.length), (&b"_INBOX.1.7"[..], 30));
        let message = parse_msg(b"MSG a.b 1 reply.to 5").unwrap();
        assert_eq!((message.subject, message.length), (&b"a.b"[..], 5));
        assert!(parse_msg(b"MSG a.b 1").is_err());
        assert!(parse_msg(b"MSG a.b 1 x y 5").is_err());
        assert!(parse_msg(b"MSG a.b 1 99999999").is_err());
        assert!(parse_msg(b"MSG a.b 1 -5").is_err());
    }

    #[test]
    fn stream_info_fields() {
        let info = br#"{"config":{"name":"S"},"state":{"messages":12,"bytes":9},"cluster":{"name":"c","leader":"n2"}}"#;
        let state = find(info, b"\"state\":").unwrap();
        assert_eq!(json_u64(&info[state..], b"\"messages\":"), Some(12));
        assert_eq!(json_string(info, "leader"), Some("n2".to_string()));
        assert_eq!(parse_u64(b"12345678901234567890"), None);
    }
}
