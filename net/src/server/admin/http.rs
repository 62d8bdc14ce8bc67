//! HTTP/1.1 for the admin listener: reading one request head (parsed by `httparse`,
//! bounded in size and time) and writing one response (by hand: a status line, a few
//! headers, the body). One request per connection: every response says
//! `Connection: close` (scrapers and browsers reconnect; keep-alive buys nothing here).

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most bytes a request head may take (request line and headers); past it: 431.
pub(crate) const HEAD_BYTES_MAX: usize = 8 << 10;
/// Most headers a request may carry; past it: 431.
const HEADERS_MAX: usize = 32;

/// A request the router can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: Method,
    /// The path, without the query.
    pub(crate) path: String,
    /// The query (after `?`), if any.
    pub(crate) query: Option<String>,
}

/// The methods the admin listener answers; anything else gets 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    /// A GET whose body is not sent.
    Head,
}

/// Why a request head could not be read; each answered with its status, or the
/// connection closed without an answer (`Closed`, `Io`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadRequest {
    /// The client closed (or sent nothing) before a whole head arrived.
    Closed,
    /// A read failed or timed out.
    Io(String),
    /// Not HTTP/1.x, or malformed: 400.
    Malformed(String),
    /// Head larger than `HEAD_BYTES_MAX`, or too many headers: 431.
    TooLarge,
    /// A method other than GET or HEAD: 405.
    Method(String),
    /// A body was announced: GET and HEAD carry none here (400).
    Body,
}

impl BadRequest {
    /// The status to answer with; `None`: close without answering.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            BadRequest::Closed | BadRequest::Io(_) => None,
            BadRequest::Malformed(_) | BadRequest::Body => Some(400),
            BadRequest::TooLarge => Some(431),
            BadRequest::Method(_) => Some(405),
        }
    }
}

/// Reads one request head (at most `HEAD_BYTES_MAX` bytes; the caller bounds the time).
pub(crate) async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Request, BadRequest> {
    let mut buf = vec![0u8; HEAD_BYTES_MAX];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(BadRequest::TooLarge);
        }
        let n = reader
            .read(&mut buf[filled..])
            .await
            .map_err(|e| BadRequest::Io(e.to_string()))?;
        if n == 0 {
            return Err(BadRequest::Closed);
        }
        filled += n;
        if let Some(request) = parse_head(&buf[..filled])? {
            return Ok(request);
        }
    }
}

/// The request in `bytes` if they hold a whole head; `Ok(None)`: more bytes needed.
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Option<Request>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            let method = match request.method {
                Some("GET") => Method::Get,
                Some("HEAD") => Method::Head,
                other => return Err(BadRequest::Method(other.unwrap_or("").to_owned())),
            };
            let announces_body = request.headers.iter().any(|h| {
                (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                    || h.name.eq_ignore_ascii_case("transfer-encoding")
            });
            if announces_body {
                return Err(BadRequest::Body);
            }
            let target = request.path.unwrap_or("/");
            if !target.starts_with('/') {
                return Err(BadRequest::Malformed(format!(
                    "request target {target:?} is not a path"
                )));
            }
            let (path, query) = match target.split_once('?') {
                Some((path, query)) => (path, Some(query.to_owned())),
                None => (target, None),
            };
            Ok(Some(Request {
                method,
                path: path.to_owned(),
                query,
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(BadRequest::TooLarge),
        Err(e) => Err(BadRequest::Malformed(e.to_string())),
    }
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// `status` with a plain-text body.
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    /// An error status with a one-line reason.
    pub(crate) fn error(status: u16) -> Response {
        Response::text(status, format!("{}\n", reason(status)))
    }
}

/// The reason phrase of the statuses the admin listener uses.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `response` (without its body for a HEAD request) and flushes.
pub(crate) async fn write_response<W: AsyncWrite + Unpin>(
    writer: &mut W,
    response: &Response,
    method: Method,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("Cache-Control: no-store\r\n\r\n");
    writer.write_all(head.as_bytes()).await?;
    if method == Method::Get {
        writer.write_all(&response.body).await?;
    }
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_parses_with_its_path_and_query() {
        let head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let request = parse_head(head).expect("valid").expect("complete");
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/metrics");
        assert_eq!(request.query.as_deref(), Some("x=1"));
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHo"), Ok(None));
    }

    #[test]
    fn bad_heads_get_their_status() {
        let status = |head: &[u8]| parse_head(head).map(|_| ()).err().and_then(|e| e.status());
        assert_eq!(status(b"POST / HTTP/1.1\r\n\r\n"), Some(405));
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status(b"\x00\x01garbage\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET http://x/ HTTP/1.1\r\n\r\n"), Some(400));
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(status(head.as_bytes()), Some(431));
    }
}
