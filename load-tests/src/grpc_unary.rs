//! A lean gRPC unary client for load generation: one HTTP/2 connection (h2, no tower stack, no buffer task) over
//! TCP or a Unix domain socket, each request's message framed once in advance, and the answer judged by its status
//! and the length of its message without decoding it. tonic's client spends about as much CPU per request as the
//! server under test; this one leaves the generator's core free, so a one-core server is what a run measures.

use bytes::{BufMut, Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::endpoint::{Endpoint, SOCKET_HOST};

/// Receive windows large enough that the answers of big models flow without waiting for window updates.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;

/// The `ModelInfer` method's path.
const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// How one call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// gRPC status 0 with one message, and the `x-infergate-variant` metadata when the server sent it.
    Ok { variant: Option<String> },
    /// Another gRPC status code.
    Code(tonic::Code),
    /// Status 0 without exactly one whole message.
    NoMessage,
    /// An HTTP status other than 200 (a gRPC server answers 200 and puts errors in `grpc-status`).
    Http(u16),
    /// The server reset this stream; the connection stays usable.
    Reset(h2::Reason),
    /// The request never left: the connection was closed or going away. Safe to send again on a new one.
    Unsent,
    /// The connection failed while the request was out; a new one is needed.
    Broken,
}

/// One open connection.
#[derive(Debug)]
pub struct Connection {
    sender: h2::client::SendRequest<Bytes>,
    uri: Uri,
}

impl Connection {
    /// Connects to the endpoint (`http://host:port`, or a Unix socket) and completes the HTTP/2 handshake
    /// (cleartext, prior knowledge).
    pub async fn connect(endpoint: &Endpoint) -> Result<Connection, String> {
        let (authority, sender) = match endpoint {
            Endpoint::Tcp(url) => {
                let authority = tcp_authority(url)?;
                let tcp = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| format!("cannot connect to {url}: {e}"))?;
                tcp.set_nodelay(true).map_err(|e| format!("{url}: {e}"))?;
                (authority, handshake(tcp, endpoint).await?)
            }
            Endpoint::Unix(path) => {
                let unix = UnixStream::connect(path).await.map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
                (Authority::from_static(SOCKET_HOST), handshake(unix, endpoint).await?)
            }
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(MODEL_INFER)
            .build()
            .map_err(|e| format!("{endpoint}: {e}"))?;
        Ok(Connection { sender, uri })
    }

    /// Sends one framed message (see [`frame`]) and waits for the answer.
    pub async fn call(&mut self, message: &Bytes, routing_key: Option<&HeaderValue>) -> Answer {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        if let Some(key) = routing_key {
            headers.insert(crate::ROUTING_KEY, key.clone());
        }
        if let Err(e) = std::future::poll_fn(|cx| self.sender.poll_ready(cx)).await {
            return failure(&e, false);
        }
        let (answer, mut body) = match self.sender.send_request(request, false) {
            Ok(sent) => sent,
            Err(e) => return failure(&e, false),
        };
        if let Err(e) = body.send_data(message.clone(), true) {
            return failure(&e, true);
        }
        let answer = match answer.await {
            Ok(answer) => answer,
            Err(e) => return failure(&e, true),
        };
        if answer.status() != http::StatusCode::OK {
            return Answer::Http(answer.status().as_u16());
        }
        let variant = answer.headers().get(crate::VARIANT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // A failure may come as headers alone ("trailers-only"), with the status among them.
        if let Some(code) = grpc_status(answer.headers()) {
            return judge(code, None, variant);
        }
        let mut answer = answer.into_body();
        let mut message = Framing::default();
        while let Some(chunk) = answer.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = answer.flow_control().release_capacity(chunk.len());
                    message.add(&chunk);
                }
                Err(e) => return failure(&e, true),
            }
        }
        match answer.trailers().await {
            Ok(trailers) => match trailers.as_ref().and_then(grpc_status) {
                Some(code) => judge(code, Some(&message), variant),
                None => Answer::Code(tonic::Code::Unknown),
            },
            Err(e) => failure(&e, true),
        }
    }
}

/// The `host:port` of an `http://host:port` URL.
fn tcp_authority(url: &str) -> Result<Authority, String> {
    let base: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if base.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs (cleartext HTTP/2) are supported"));
    }
    base.authority().filter(|a| a.port().is_some()).cloned().ok_or_else(|| format!("{url}: name the port"))
}

/// The HTTP/2 handshake on a connected transport; the connection is then driven by a task of its own.
async fn handshake<T>(io: T, endpoint: &Endpoint) -> Result<h2::client::SendRequest<Bytes>, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {endpoint}: {e}"))?;
    tokio::spawn(async move {
        // Ends when the server closes the connection or the client's handles are dropped.
        let _ = connection.await;
    });
    Ok(sender)
}

/// The request as gRPC sends it: a flag byte (not compressed), the length, the encoded message.
pub fn frame(message: &impl Message) -> Result<Bytes, String> {
    let length = message.encoded_len();
    let prefix = u32::try_from(length).map_err(|_| format!("a gRPC message of {length} bytes is too large"))?;
    let mut framed = BytesMut::with_capacity(5 + length);
    framed.put_u8(0);
    framed.put_u32(prefix);
    message.encode(&mut framed).map_err(|e| format!("cannot encode the request: {e}"))?;
    Ok(framed.freeze())
}

/// The answer's body as it arrives: its first five bytes (the flag and the length prefix) and its size. The
/// prefix lives inline, so judging an answer allocates nothing.
#[derive(Debug, Default)]
struct Framing {
    prefix: [u8; 5],
    received: usize,
}

impl Framing {
    fn add(&mut self, chunk: &[u8]) {
        // The prefix is the body's first five bytes: those of it not yet received come from this chunk.
        let at = self.received.min(5);
        let wanted = (5 - at).min(chunk.len());
        self.prefix[at..at + wanted].copy_from_slice(&chunk[..wanted]);
        self.received += chunk.len();
    }

    /// Whether the body is exactly one message, as its prefix announces.
    fn one_message(&self) -> bool {
        let [_, a, b, c, d] = self.prefix;
        self.received >= 5 && self.received == 5 + u32::from_be_bytes([a, b, c, d]) as usize
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok())
}

/// The answer for a final `grpc-status`; `body` is `None` for a trailers-only answer.
fn judge(code: i32, body: Option<&Framing>, variant: Option<String>) -> Answer {
    match tonic::Code::from(code) {
        tonic::Code::Ok if body.is_some_and(Framing::one_message) => Answer::Ok { variant },
        tonic::Code::Ok => Answer::NoMessage,
        code => Answer::Code(code),
    }
}

/// An h2 error: a reset of this stream, or the connection's failure (`sent`: whether the request may have left).
fn failure(error: &h2::Error, sent: bool) -> Answer {
    match error.reason() {
        Some(reason) if error.is_reset() => Answer::Reset(reason),
        _ if !sent => Answer::Unsent,
        _ => Answer::Broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ModelInferRequest;

    #[test]
    fn messages_are_framed_with_their_length() {
        let request = ModelInferRequest { model_name: "mlp".to_owned(), ..Default::default() };
        let framed = frame(&request).unwrap();
        assert_eq!(framed[0], 0);
        assert_eq!(u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize, framed.len() - 5);
        assert_eq!(ModelInferRequest::decode(&framed[5..]).unwrap(), request);
    }

    /// Answers one call with an empty `ModelInferResponse`; gives the `:authority` the call came with.
    async fn answer_one_call(stream: UnixStream) -> Option<String> {
        let mut connection = h2::server::handshake(stream).await.unwrap();
        let (request, mut respond) = connection.accept().await.unwrap().unwrap();
        let authority = request.uri().authority().map(ToString::to_string);
        let mut body = request.into_body();
        while let Some(chunk) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.unwrap().len());
        }
        let head = http::Response::builder().status(200).header("content-type", "application/grpc").body(()).unwrap();
        let mut send = respond.send_response(head, false).unwrap();
        send.send_data(frame(&crate::proto::ModelInferResponse::default()).unwrap(), false).unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        send.send_trailers(trailers).unwrap();
        // Drives the connection, so the answer goes out, until the client hangs up.
        while connection.accept().await.is_some() {}
        authority
    }

    #[tokio::test]
    async fn calls_go_over_a_unix_socket() {
        let (dir, path, listener) = crate::endpoint::test_listener("grpc-unary");
        let server = tokio::spawn(async move { answer_one_call(listener.accept().await.unwrap().0).await });
        let mut connection = Connection::connect(&Endpoint::Unix(path)).await.unwrap();
        let request = frame(&ModelInferRequest { model_name: "mlp".to_owned(), ..Default::default() }).unwrap();
        assert_eq!(connection.call(&request, None).await, Answer::Ok { variant: None });
        drop(connection);
        assert_eq!(server.await.unwrap().as_deref(), Some(SOCKET_HOST));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn answers_are_judged_by_status_and_message() {
        let request = ModelInferRequest { model_name: "mlp".to_owned(), ..Default::default() };
        let framed = frame(&request).unwrap();
        // The body in three chunks, the length prefix split between the first two.
        let mut whole = Framing::default();
        for chunk in [&framed[..2], &framed[2..7], &framed[7..]] {
            whole.add(chunk);
        }
        let variant = Some("v2".to_owned());
        assert_eq!(judge(0, Some(&whole), variant.clone()), Answer::Ok { variant });
        // Status 0 with no message, a truncated one, or trailers alone is not an answer.
        assert_eq!(judge(0, Some(&Framing::default()), None), Answer::NoMessage);
        let mut short = Framing::default();
        short.add(&framed[..framed.len() - 1]);
        assert_eq!(judge(0, Some(&short), None), Answer::NoMessage);
        assert_eq!(judge(0, None, None), Answer::NoMessage);
        // Errors keep their code, with or without a body.
        assert_eq!(judge(8, None, None), Answer::Code(tonic::Code::ResourceExhausted));
        assert_eq!(judge(4, Some(&whole), None), Answer::Code(tonic::Code::DeadlineExceeded));
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&headers), Some(5));
    }
}
