//! A lean HTTP/1.1 client for load generation: one keep-alive connection, requests written as prepared bytes,
//! answers read by `Content-Length` (or chunked), over TCP or a Unix domain socket. A general-purpose client spends
//! more CPU per request than the server under test does on a small model, so the generator would measure itself.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::endpoint::Endpoint;

/// Headers an answer may carry that the generator looks at.
const MAX_HEADERS: usize = 32;
/// An answer larger than this is refused rather than buffered.
const MAX_BODY: usize = 256 << 20;

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `x-infergate-variant` header: which traffic variant answered.
    pub variant: Option<String>,
    /// The `retry-after` header, in seconds.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

/// Why an exchange failed, as a short kind for error counts and a message.
#[derive(Debug)]
pub struct Failure {
    pub kind: &'static str,
    pub message: String,
    /// The connection failed before any byte of the answer came: it may have been closed while idle.
    pub stale: bool,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into(), stale: false }
    }
}

/// A prepared request: the bytes of the request line, headers and body.
pub fn request(method: &str, host: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Bytes {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    Bytes::from(bytes)
}

/// The connection's transport. An enum rather than a boxed trait object: a request costs one branch, no dynamic
/// dispatch, and the caller's type stays the same for both transports.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    async fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.write_all(bytes).await,
            Stream::Unix(stream) => stream.write_all(bytes).await,
        }
    }

    async fn read_buf(&mut self, buffer: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read_buf(buffer).await,
            Stream::Unix(stream) => stream.read_buf(buffer).await,
        }
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    buffer: BytesMut,
}

impl Connection {
    pub async fn connect(endpoint: &Endpoint) -> Result<Connection, Failure> {
        let stream =
            Stream::connect(endpoint).await.map_err(|e| Failure::new("connect", format!("{endpoint}: {e}")))?;
        Ok(Connection { stream, buffer: BytesMut::with_capacity(16 * 1024) })
    }

    /// Sends one prepared request and reads its answer. After a failure the connection must not be reused.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Answer, Failure> {
        let stale = |mut failure: Failure| {
            failure.stale = true;
            failure
        };
        self.stream.write_all(request).await.map_err(|e| stale(Failure::new("io", e.to_string())))?;
        let (status, variant, retry_after, length, head) = loop {
            if let Some(parsed) = parse_head(&self.buffer)? {
                break parsed;
            }
            let nothing_yet = self.buffer.is_empty();
            self.fill().await.map_err(|f| if nothing_yet { stale(f) } else { f })?;
        };
        self.buffer.advance(head);
        let body = match length {
            BodyLength::Exact(length) => {
                if length > MAX_BODY {
                    return Err(Failure::new("protocol", format!("an answer of {length} bytes")));
                }
                while self.buffer.len() < length {
                    self.fill().await?;
                }
                self.buffer.split_to(length).freeze()
            }
            BodyLength::Chunked => self.read_chunked().await?,
        };
        Ok(Answer { status, variant, retry_after, body })
    }

    async fn fill(&mut self) -> Result<(), Failure> {
        if self.buffer.capacity() - self.buffer.len() < 4096 {
            self.buffer.reserve(16 * 1024);
        }
        match self.stream.read_buf(&mut self.buffer).await {
            Ok(0) => Err(Failure::new("closed", "the server closed the connection")),
            Ok(_) => Ok(()),
            Err(e) => Err(Failure::new("io", e.to_string())),
        }
    }

    async fn read_chunked(&mut self) -> Result<Bytes, Failure> {
        let mut body = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                    break end;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buffer[..line_end]).unwrap_or("");
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| Failure::new("protocol", format!("bad chunk size {size_text:?}")))?;
            if body.len() + size > MAX_BODY {
                return Err(Failure::new("protocol", "a chunked answer too large"));
            }
            self.buffer.advance(line_end + 2);
            while self.buffer.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buffer[..size]);
            self.buffer.advance(size + 2);
            if size == 0 {
                return Ok(body.freeze());
            }
        }
    }
}

enum BodyLength {
    Exact(usize),
    Chunked,
}

type Head = (u16, Option<String>, Option<u64>, BodyLength, usize);

/// The status, the headers of interest, the body's length and the head's length, once the head is complete.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buffer) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::new("protocol", format!("bad answer head: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let (mut variant, mut retry_after, mut length) = (None, None, None);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            let n = value.parse().map_err(|_| Failure::new("protocol", format!("content-length {value:?}")))?;
            length = Some(BodyLength::Exact(n));
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            length = Some(BodyLength::Chunked);
        } else if header.name.eq_ignore_ascii_case(crate::VARIANT) {
            variant = Some(value.to_owned());
        } else if header.name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse().ok();
        }
    }
    Ok(Some((status, variant, retry_after, length.unwrap_or(BodyLength::Exact(0)), head)))
}

/// Set-up calls and scenario actions unanswered after this long fail.
const ONCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One request on a fresh connection, for set-up calls and scenario actions.
pub async fn once(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<Answer, String> {
    let exchange = async {
        let mut connection = Connection::connect(endpoint).await.map_err(|f| f.message)?;
        let request = request(method, endpoint.host(), path, headers, body);
        connection.exchange(&request).await.map_err(|f| format!("{method} {path}: {}", f.message))
    };
    tokio::time::timeout(ONCE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{method} {path}: no answer within {ONCE_TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_once_complete() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n").unwrap().is_none());
        let text = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\nx-infergate-variant: b\r\ncontent-length: 2\r\n\r\n{}";
        let (status, variant, retry, length, head) = parse_head(text).unwrap().unwrap();
        assert_eq!((status, variant.as_deref(), retry), (429, Some("b"), Some(1)));
        assert!(matches!(length, BodyLength::Exact(2)));
        assert_eq!(&text[head..], b"{}");
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
    }

    /// Reads one request head (the tests' requests have no body) from `stream`.
    async fn read_head(stream: &mut UnixStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_kept_alive_over_a_unix_socket() {
        let (dir, path, listener) = crate::endpoint::test_listener("http1");
        // One connection, two answers: one sized, one chunked.
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut heads = Vec::new();
            for answer in [
                &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
                b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            ] {
                heads.push(read_head(&mut stream).await);
                stream.write_all(answer).await.unwrap();
            }
            heads
        });
        let endpoint = Endpoint::Unix(path);
        let mut connection = Connection::connect(&endpoint).await.unwrap();
        let request = request("GET", endpoint.host(), "/v2/health/ready", &[], b"");
        let first = connection.exchange(&request).await.unwrap();
        assert_eq!((first.status, &first.body[..]), (200, &b"ok"[..]));
        let second = connection.exchange(&request).await.unwrap();
        assert_eq!((second.status, &second.body[..]), (429, &b"hi"[..]));
        let heads = server.await.unwrap();
        assert!(heads.iter().all(|h| h.contains("\r\nhost: localhost\r\n")), "{heads:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prepared_requests_carry_their_length() {
        let bytes = request("POST", "h:1", "/x", &[("a", "b".to_owned())], b"abc");
        assert_eq!(&bytes[..], b"POST /x HTTP/1.1\r\nhost: h:1\r\ncontent-length: 3\r\na: b\r\n\r\nabc");
    }
}
