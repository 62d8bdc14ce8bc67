//! The reading half of a connection: CRLF-terminated lines and length-prefixed payloads
//! out of one fixed buffer. A server's bytes are input: a line or payload longer than the
//! buffer, or a payload not followed by CRLF, is an error, never a larger allocation.

use std::io::{self, Read};
use std::net::TcpStream;

/// Bytes buffered: a line or a payload (with its CRLF) must fit.
pub const INPUT_BYTES: usize = 256 << 10;

/// Buffered reads from the server.
pub struct Input {
    stream: TcpStream,
    buffer: Box<[u8]>,
    /// Unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl Input {
    /// Reads from `stream` (a clone of the connection's socket; its read timeout applies).
    pub fn new(stream: TcpStream) -> Input {
        Input {
            stream,
            buffer: vec![0; INPUT_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The socket read from (to change its read timeout).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The next line, without its CRLF.
    pub fn line(&mut self) -> io::Result<&[u8]> {
        let mut searched = 0;
        loop {
            let unread = &self.buffer[self.start + searched..self.end];
            if let Some(at) = unread.windows(2).position(|pair| pair == b"\r\n") {
                let line_end = self.start + searched + at;
                let line_start = self.start;
                self.start = line_end + 2;
                return Ok(&self.buffer[line_start..line_end]);
            }
            // Relative to `start`, so a compaction keeps it; a CR at the end may pair with
            // the next read's LF, so it is searched again.
            searched = (self.end - self.start).saturating_sub(1);
            if self.end - self.start == self.buffer.len() {
                return Err(invalid(format!("a line longer than {INPUT_BYTES} bytes")));
            }
            self.fill()?;
        }
    }

    /// The next `length` bytes, which must be followed by CRLF (consumed, not returned).
    pub fn payload(&mut self, length: usize) -> io::Result<&[u8]> {
        let framed = length
            .checked_add(2)
            .filter(|framed| *framed <= self.buffer.len())
            .ok_or_else(|| invalid(format!("a {length}-byte payload: over {INPUT_BYTES}")))?;
        while self.end - self.start < framed {
            self.fill()?;
        }
        let payload_start = self.start;
        self.start += framed;
        if &self.buffer[self.start - 2..self.start] != b"\r\n" {
            return Err(invalid(format!(
                "a {length}-byte payload not followed by CRLF"
            )));
        }
        Ok(&self.buffer[payload_start..payload_start + length])
    }

    /// Moves the unread bytes to the front if the tail is full, then reads once more.
    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buffer.len() {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let read = self.stream.read(&mut self.buffer[self.end..])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.end += read;
        Ok(())
    }
}

/// A protocol error: the server sent what it must not.
pub fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
