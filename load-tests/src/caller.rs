//! One client of the server: a connection (REST keep-alive, gRPC over HTTP/2, or a gRPC stream) that sends the
//! prepared request and classifies the answer. Each load-generating task owns one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::ROUTING_KEY;
use crate::endpoint::Endpoint;
use crate::grpc_unary::{self, Answer};
use crate::http1::{self, Connection};
use crate::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::proto::{ModelInferRequest, ModelStreamInferResponse, infer_parameter};
use crate::workload::{Protocol, Workload};

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct Target {
    /// The REST endpoint: `host:port`, or a Unix socket.
    pub http: Endpoint,
    /// The gRPC endpoint: `http://host:port`, or a Unix socket.
    pub grpc: Endpoint,
    pub protocol: Protocol,
    /// Requests cycle through this many routing keys (`key-0`, `key-1`, ...); 0 sends none.
    pub routing_keys: usize,
    /// A request unanswered after this long counts as a `timeout` error.
    pub timeout: Duration,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; with the variant that answered, when the server says.
    Ok { variant: Option<String> },
    /// Refused for load: HTTP 429 or gRPC RESOURCE_EXHAUSTED.
    Shed,
    /// Any other failure, by kind (`http 503`, `grpc DeadlineExceeded`, `timeout`, `connect`, ...).
    Failed(String),
}

/// The request of each routing key.
#[derive(Debug)]
enum Prepared {
    Rest(Vec<Bytes>),
    /// Each request framed as gRPC sends it, with its routing key header.
    Grpc(Vec<(Bytes, Option<HeaderValue>)>),
    /// Each request with its routing key as gRPC metadata, parsed once.
    Stream(Vec<(ModelInferRequest, Option<MetadataValue<Ascii>>)>),
}

#[derive(Debug)]
enum Link {
    Rest(Option<Connection>),
    Grpc(Option<grpc_unary::Connection>),
    Stream(Box<Stream>),
}

/// An open `ModelStreamInfer` stream, and the request it sends.
#[derive(Debug)]
struct Stream {
    sender: tokio::sync::mpsc::Sender<ModelInferRequest>,
    answers: tonic::Streaming<ModelStreamInferResponse>,
    request: ModelInferRequest,
}

/// One client.
#[derive(Debug)]
pub struct Caller {
    target: Arc<Target>,
    prepared: Arc<Prepared>,
    link: Link,
    next: usize,
}

/// The requests every caller of a target sends, prepared once.
#[derive(Debug, Clone)]
pub struct Requests(Arc<Prepared>);

impl Requests {
    pub fn prepare(target: &Target, workload: &Workload) -> Result<Requests, String> {
        let keys: Vec<Option<String>> = if target.routing_keys == 0 {
            vec![None]
        } else {
            (0..target.routing_keys).map(|k| Some(format!("key-{k}"))).collect()
        };
        let path = format!("/v2/models/{}/infer", workload.model);
        let prepared = match target.protocol {
            Protocol::RestJson | Protocol::RestBinary => Prepared::Rest(
                keys.iter()
                    .map(|key| {
                        let mut headers = vec![("content-type", "application/json".to_owned())];
                        let body = if target.protocol == Protocol::RestBinary {
                            headers.push(("inference-header-content-length", workload.binary_header.to_string()));
                            &workload.binary_body
                        } else {
                            &workload.json_body
                        };
                        if let Some(key) = key {
                            headers.push((ROUTING_KEY, key.clone()));
                        }
                        http1::request("POST", target.http.host(), &path, &headers, body)
                    })
                    .collect(),
            ),
            Protocol::Grpc => {
                let request = workload.grpc.as_ref().ok_or("gRPC needs generated inputs, not a JSON body file")?;
                let framed = grpc_unary::frame(request)?;
                let keyed = keys.iter().map(|key| Ok((framed.clone(), key.as_deref().map(header).transpose()?)));
                Prepared::Grpc(keyed.collect::<Result<_, String>>()?)
            }
            Protocol::GrpcStream => {
                let request = workload.grpc.clone().ok_or("gRPC needs generated inputs, not a JSON body file")?;
                let keyed = keys.iter().map(|key| Ok((request.clone(), key.as_deref().map(metadata).transpose()?)));
                Prepared::Stream(keyed.collect::<Result<_, String>>()?)
            }
        };
        if target.protocol == Protocol::RestBinary && workload.binary_body.is_empty() {
            return Err("binary tensors need generated inputs, not a JSON body file".to_owned());
        }
        Ok(Requests(Arc::new(prepared)))
    }
}

impl Caller {
    /// Client number `index`: REST connects on its first request; gRPC connects now, and a stream client opens
    /// its stream (with routing key number `index`, when keys are used: a stream's metadata is fixed).
    pub async fn new(target: Arc<Target>, requests: &Requests, index: usize) -> Result<Caller, String> {
        let prepared = Arc::clone(&requests.0);
        let link = match target.protocol {
            Protocol::RestJson | Protocol::RestBinary => Link::Rest(None),
            Protocol::Grpc => Link::Grpc(Some(grpc_unary::Connection::connect(&target.grpc).await?)),
            Protocol::GrpcStream => {
                let Prepared::Stream(requests) = prepared.as_ref() else { unreachable!("prepared for streams") };
                let (request, key) = requests[index % requests.len()].clone();
                let mut client = connect(&target.grpc).await?;
                let (sender, mut outbound) = tokio::sync::mpsc::channel::<ModelInferRequest>(1);
                let stream = futures_util::stream::poll_fn(move |cx| outbound.poll_recv(cx));
                let mut call = tonic::Request::new(stream);
                if let Some(key) = key {
                    call.metadata_mut().insert(ROUTING_KEY, key);
                }
                let answers = client
                    .model_stream_infer(call)
                    .await
                    .map_err(|status| format!("cannot open a stream: {}", status.message()))?
                    .into_inner();
                Link::Stream(Box::new(Stream { sender, answers, request }))
            }
        };
        Ok(Caller { target, prepared, link, next: index })
    }

    /// Sends the next request and waits for its answer.
    pub async fn call(&mut self) -> Outcome {
        let timeout = self.target.timeout;
        match tokio::time::timeout(timeout, self.exchange()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // An answer may still arrive on this connection; start afresh.
                if let Link::Rest(connection) = &mut self.link {
                    *connection = None;
                }
                Outcome::Failed("timeout".to_owned())
            }
        }
    }

    async fn exchange(&mut self) -> Outcome {
        let key = self.next;
        self.next = self.next.wrapping_add(1);
        match (&mut self.link, self.prepared.as_ref()) {
            (Link::Rest(connection), Prepared::Rest(requests)) => {
                let request = &requests[key % requests.len()];
                // A kept-alive connection the server has closed meanwhile fails before any answer; like any HTTP
                // client, send once more on a fresh connection. A fresh connection's failure counts.
                let mut reused = connection.is_some();
                loop {
                    if connection.is_none() {
                        match Connection::connect(&self.target.http).await {
                            Ok(c) => *connection = Some(c),
                            Err(failure) => return Outcome::Failed(failure.kind.to_owned()),
                        }
                    }
                    let Some(open) = connection.as_mut() else { unreachable!("connected above") };
                    match open.exchange(request).await {
                        Ok(answer) if answer.status == 200 => return Outcome::Ok { variant: answer.variant },
                        Ok(answer) if answer.status == 429 => return Outcome::Shed,
                        Ok(answer) => return Outcome::Failed(format!("http {}", answer.status)),
                        Err(failure) => {
                            *connection = None;
                            if !(reused && failure.stale) {
                                return Outcome::Failed(failure.kind.to_owned());
                            }
                            reused = false;
                        }
                    }
                }
            }
            (Link::Grpc(connection), Prepared::Grpc(requests)) => {
                let (message, routing_key) = &requests[key % requests.len()];
                // As for REST: a request that never left a reused connection (closed by the server meanwhile) is
                // sent once more on a fresh one.
                let mut reused = connection.is_some();
                loop {
                    if connection.is_none() {
                        match grpc_unary::Connection::connect(&self.target.grpc).await {
                            Ok(c) => *connection = Some(c),
                            Err(_) => return Outcome::Failed("connect".to_owned()),
                        }
                    }
                    let Some(open) = connection.as_mut() else { unreachable!("connected above") };
                    return match open.call(message, routing_key.as_ref()).await {
                        Answer::Ok { variant } => Outcome::Ok { variant },
                        Answer::Code(tonic::Code::ResourceExhausted) => Outcome::Shed,
                        Answer::Code(code) => Outcome::Failed(format!("grpc {code:?}")),
                        Answer::NoMessage => Outcome::Failed("grpc no message".to_owned()),
                        Answer::Http(status) => Outcome::Failed(format!("http {status}")),
                        Answer::Reset(reason) => Outcome::Failed(format!("grpc reset {reason:?}")),
                        Answer::Unsent if reused => {
                            *connection = None;
                            reused = false;
                            continue;
                        }
                        Answer::Unsent | Answer::Broken => {
                            *connection = None;
                            Outcome::Failed("grpc connection".to_owned())
                        }
                    };
                }
            }
            (Link::Stream(stream), _) => {
                let Stream { sender, answers, request } = stream.as_mut();
                if sender.send(request.clone()).await.is_err() {
                    return Outcome::Failed("stream closed".to_owned());
                }
                match answers.message().await {
                    Ok(Some(answer)) if answer.error_message.is_empty() => {
                        let variant = answer
                            .infer_response
                            .and_then(|r| r.parameters.get("variant").cloned())
                            .and_then(|p| match p.parameter_choice {
                                Some(infer_parameter::ParameterChoice::StringParam(s)) => Some(s),
                                _ => None,
                            });
                        Outcome::Ok { variant }
                    }
                    Ok(Some(answer)) if is_shed_message(&answer.error_message) => Outcome::Shed,
                    Ok(Some(_)) => Outcome::Failed("stream error".to_owned()),
                    Ok(None) => Outcome::Failed("stream closed".to_owned()),
                    Err(status) => grpc_failure(&status),
                }
            }
            _ => unreachable!("requests are prepared for the caller's protocol"),
        }
    }
}

/// A tonic client for streams. tonic connects to Unix sockets itself, given a `unix:` URL.
async fn connect(endpoint: &Endpoint) -> Result<GrpcInferenceServiceClient<Channel>, String> {
    let url = match endpoint {
        Endpoint::Tcp(url) => url.clone(),
        Endpoint::Unix(path) => format!("unix:{}", path.to_str().ok_or_else(|| format!("{endpoint}: not UTF-8"))?),
    };
    let channel = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| format!("{endpoint}: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    let client = GrpcInferenceServiceClient::new(channel);
    Ok(client.max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20))
}

fn header(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|_| format!("{value:?} is not a valid header value"))
}

fn metadata(value: &str) -> Result<MetadataValue<Ascii>, String> {
    value.parse().map_err(|_| format!("{value:?} is not valid gRPC metadata"))
}

fn grpc_failure(status: &tonic::Status) -> Outcome {
    match status.code() {
        tonic::Code::ResourceExhausted => Outcome::Shed,
        code => Outcome::Failed(format!("grpc {code:?}")),
    }
}

/// Streams carry errors as text; a full queue is load shedding like the unary RESOURCE_EXHAUSTED.
fn is_shed_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    (lower.contains("queue") && lower.contains("full")) || lower.contains("resource exhausted")
}
