//! Redis Streams over RESP2 (no client library): XADD per record, alone or `batch_records`
//! of them inside MULTI/EXEC.
//!
//! ```text
//! one record:  *5 $4 XADD $<k> <key> $1 * $1 v $<n> <value>         -> $<len> <ms>-<seq>
//! a batch:     *1 $5 MULTI, XADD x batch_records, *1 $4 EXEC        -> +OK, +QUEUED x batch,
//!                                                                      *<batch> ($<len> <id>)..
//! ```
//! (each element ends in CRLF). Redis answers in order, so the k-th reply is the k-th
//! request's, and the writer takes the free slots in the order the replies free them:
//! the k-th request holds slot k mod inflight. With `appendonly yes` and `appendfsync
//! always` Redis writes and fsyncs its AOF before it answers the commands it read (one
//! fsync per event-loop turn, whatever the pipeline holds). Every stream ID must be above
//! the one before (Redis assigns them increasing), which checks that no reply is lost or
//! read twice.

use std::io::{self, Write};
use std::net::TcpStream;

use crate::input::{Input, invalid};
use crate::load::{self, Decoder, Encoder, Reply, Shared};
use crate::nats::{lossy, parse_u64};

/// A connection after the stream key was deleted, before the load.
pub struct Connection {
    /// The writing side.
    pub stream: TcpStream,
    /// The reading side.
    pub input: Input,
}

impl Connection {
    /// Connects to `address` and deletes `key` (this run's stream starts empty).
    pub fn open(address: &str, key: &str, timeout: std::time::Duration) -> io::Result<Connection> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let input = Input::new(stream.try_clone()?);
        let mut connection = Connection { stream, input };
        connection.integer(&[b"DEL", key.as_bytes()])?;
        Ok(connection)
    }

    /// Entries in the stream at `key`.
    pub fn stream_length(&mut self, key: &str) -> io::Result<u64> {
        self.integer(&[b"XLEN", key.as_bytes()])
    }

    /// The encoder and decoder of the load.
    pub fn load(
        key: &str,
        record_size: usize,
        batch_records: usize,
        inflight: usize,
    ) -> (Adds, Ids) {
        let value = load::record_value(record_size);
        let xadd = command(&[b"XADD", key.as_bytes(), b"*", b"v", &value]);
        let request = if batch_records == 1 {
            xadd
        } else {
            let mut request = command(&[b"MULTI"]);
            for _ in 0..batch_records {
                request.extend_from_slice(&xadd);
            }
            request.extend_from_slice(&command(&[b"EXEC"]));
            request
        };
        let ids = Ids {
            batch_records,
            inflight,
            next_slot: 0,
            last_id: (0, 0),
        };
        (Adds { request }, ids)
    }

    /// Sends one command answered by an integer; skips the load's late `+PONG`s.
    fn integer(&mut self, parts: &[&[u8]]) -> io::Result<u64> {
        self.stream.write_all(&command(parts))?;
        loop {
            let line = self.input.line()?;
            if line == b"+PONG" {
                continue;
            }
            let name = lossy(parts[0]);
            return line
                .strip_prefix(b":")
                .and_then(parse_u64)
                .ok_or_else(|| invalid(format!("{name}: {}", lossy(line))));
        }
    }
}

/// A RESP array of bulk strings.
fn command(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Writes the request, the same bytes each time.
pub struct Adds {
    request: Vec<u8>,
}

impl Adds {
    /// Bytes of one request on the wire.
    pub fn request_bytes(&self) -> usize {
        self.request.len()
    }
}

impl Encoder for Adds {
    fn encode(&mut self, _slot: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request);
    }

    fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    }
}

/// Reads the replies in order.
pub struct Ids {
    batch_records: usize,
    inflight: usize,
    next_slot: usize,
    /// The last stream ID seen, (milliseconds, sequence).
    last_id: (u64, u64),
}

impl Decoder for Ids {
    fn next(&mut self, input: &mut Input, _shared: &Shared) -> io::Result<Reply> {
        let first = input.line()?;
        if first == b"+PONG" {
            return Ok(Reply::Pong);
        }
        let error = if self.batch_records == 1 {
            let head = bulk_head(first)?;
            self.id_reply(input, head)?
        } else {
            let multi = simple_reply(first, b"+OK", "MULTI")?;
            let queued = self.queued(input)?;
            let exec = self.exec_reply(input)?;
            multi.or(queued).or(exec)
        };
        let slot = self.next_slot;
        self.next_slot = (self.next_slot + 1) % self.inflight;
        Ok(Reply::Done { slot, error })
    }
}

impl Ids {
    /// The `+QUEUED` of each XADD in a MULTI (or its refusal).
    fn queued(&mut self, input: &mut Input) -> io::Result<Option<String>> {
        let mut error = None;
        for _ in 0..self.batch_records {
            let refused = simple_reply(input.line()?, b"+QUEUED", "XADD in MULTI")?;
            error = error.or(refused);
        }
        Ok(error)
    }

    /// EXEC's reply: an array of one stream ID (or error) per XADD, or an error.
    fn exec_reply(&mut self, input: &mut Input) -> io::Result<Option<String>> {
        let line = input.line()?;
        if line.starts_with(b"-") {
            return Ok(Some(lossy(line)));
        }
        let count = line.strip_prefix(b"*").and_then(parse_u64);
        if count != Some(self.batch_records as u64) {
            return Err(invalid(format!(
                "EXEC of {}: {}",
                self.batch_records,
                lossy(line)
            )));
        }
        let mut error = None;
        for _ in 0..self.batch_records {
            let head = bulk_head(input.line()?)?;
            error = error.or(self.id_reply(input, head)?);
        }
        Ok(error)
    }

    /// One XADD's reply, its first line read: a stream ID `<ms>-<seq>` above the last
    /// one, or the server's refusal (counted, not fatal).
    fn id_reply(&mut self, input: &mut Input, head: Head) -> io::Result<Option<String>> {
        let length = match head {
            Head::Refused(error) => return Ok(Some(error)),
            Head::Bulk(length) => length,
        };
        let id = input.payload(length)?;
        let parsed = id
            .iter()
            .position(|byte| *byte == b'-')
            .and_then(|dash| Some((parse_u64(&id[..dash])?, parse_u64(&id[dash + 1..])?)));
        let Some(id) = parsed else {
            return Err(invalid(format!("XADD returned {}", lossy(id))));
        };
        if id <= self.last_id {
            return Ok(Some(format!(
                "stream ID {}-{} after {}-{}",
                id.0, id.1, self.last_id.0, self.last_id.1
            )));
        }
        self.last_id = id;
        Ok(None)
    }
}

/// The first line of a reply that must be a bulk string.
enum Head {
    /// `$<length>`: that many bytes follow.
    Bulk(usize),
    /// `-<error>`.
    Refused(String),
}

/// A bulk string's length line, or an error reply; anything else means the replies are
/// out of step: fatal.
fn bulk_head(line: &[u8]) -> io::Result<Head> {
    if line.starts_with(b"-") {
        return Ok(Head::Refused(lossy(line)));
    }
    line.strip_prefix(b"$")
        .and_then(parse_u64)
        .and_then(|length| usize::try_from(length).ok())
        .map(Head::Bulk)
        .ok_or_else(|| invalid(format!("XADD: {}", lossy(line))))
}

/// `expected`, or an error reply (returned), or anything else (fatal).
fn simple_reply(line: &[u8], expected: &[u8], what: &str) -> io::Result<Option<String>> {
    if line == expected {
        Ok(None)
    } else if line.starts_with(b"-") {
        Ok(Some(lossy(line)))
    } else {
        Err(invalid(format!("{what}: {}", lossy(line))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"XADD", b"k", b"*", b"v", b"abc"]),
            b"*5\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n$1\r\nv\r\n$3\r\nabc\r\n"
        );
    }

    #[test]
    fn replies_other_than_expected() {
        assert_eq!(simple_reply(b"+OK", b"+OK", "x").unwrap(), None);
        assert!(simple_reply(b"-ERR no", b"+OK", "x").unwrap().is_some());
        assert!(simple_reply(b":1", b"+OK", "x").is_err());
    }
}
