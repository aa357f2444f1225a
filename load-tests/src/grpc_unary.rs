//! A lean gRPC unary client for load generation: one HTTP/2 connection (h2, no tower stack, no buffer task), each
//! request's message framed once in advance, and the answer judged by its status without decoding it. tonic's
//! client spends about as much CPU per request as the server under test; this one leaves the generator's core
//! free, so a one-core server is what a run measures.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Uri};
use prost::Message;
use tokio::net::TcpStream;

/// Receive windows large enough that the answers of big models flow without waiting for window updates.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;

/// The `ModelInfer` method's path.
const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// How a request ended, before it is classified as the caller's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    /// gRPC status 0, with the `x-infergate-variant` metadata when the server sent it.
    Ok { variant: Option<String> },
    /// Another gRPC status code.
    Code(tonic::Code),
    /// An HTTP status other than 200 (a gRPC server answers 200 and puts errors in `grpc-status`).
    Http(u16),
    /// The connection failed; a new one is needed.
    Transport,
}

/// One open connection.
#[derive(Debug)]
pub struct Connection {
    sender: h2::client::SendRequest<Bytes>,
    uri: Uri,
}

impl Connection {
    /// Connects to `url` (`http://host:port`) and completes the HTTP/2 handshake.
    pub async fn connect(url: &str) -> Result<Connection, String> {
        let base: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let authority = base.authority().ok_or_else(|| format!("{url}: no host and port"))?.clone();
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(MODEL_INFER)
            .build()
            .map_err(|e| format!("{url}: {e}"))?;
        let tcp = TcpStream::connect(authority.as_str()).await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("{url}: {e}"))?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {url}: {e}"))?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or the client's handles are dropped.
            let _ = connection.await;
        });
        Ok(Connection { sender, uri })
    }

    /// Sends one framed message (see [`frame`]) and waits for the answer's status.
    pub async fn call(&mut self, message: &Bytes, routing_key: Option<&HeaderValue>) -> Status {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(key) = routing_key {
            request = request.header(crate::caller::ROUTING_KEY, key.clone());
        }
        let Ok(request) = request.body(()) else { unreachable!("the method, URI and headers are valid") };
        if std::future::poll_fn(|cx| self.sender.poll_ready(cx)).await.is_err() {
            return Status::Transport;
        }
        let Ok((answer, mut body)) = self.sender.send_request(request, false) else { return Status::Transport };
        if body.send_data(message.clone(), true).is_err() {
            return Status::Transport;
        }
        let Ok(answer) = answer.await else { return Status::Transport };
        if answer.status() != http::StatusCode::OK {
            return Status::Http(answer.status().as_u16());
        }
        let variant = header_text(answer.headers(), crate::caller::VARIANT);
        // A failure may come as headers alone ("trailers-only"), with the status among them.
        if let Some(code) = grpc_status(answer.headers()) {
            return finish(code, variant);
        }
        let mut answer = answer.into_body();
        while let Some(chunk) = answer.data().await {
            let Ok(chunk) = chunk else { return Status::Transport };
            let _ = answer.flow_control().release_capacity(chunk.len());
        }
        match answer.trailers().await {
            Ok(Some(trailers)) => match grpc_status(&trailers) {
                Some(code) => finish(code, variant),
                None => Status::Code(tonic::Code::Unknown),
            },
            Ok(None) => Status::Code(tonic::Code::Unknown),
            Err(_) => Status::Transport,
        }
    }
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

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    header_text(headers, "grpc-status").and_then(|s| s.parse().ok())
}

fn header_text(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn finish(code: i32, variant: Option<String>) -> Status {
    match tonic::Code::from(code) {
        tonic::Code::Ok => Status::Ok { variant },
        code => Status::Code(code),
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
}
