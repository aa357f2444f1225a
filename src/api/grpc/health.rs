//! `grpc.health.v1.Health` on the gRPC port, for Kubernetes' `grpc` probes, grpc_health_probe and gRPC load
//! balancers. The service "" is the server's readiness (as `/v2/health/ready`); a model's name is that model's
//! readiness (as `/v2/models/{model}/ready`). Never keyed, like the REST health routes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::api::{self, ApiError, Gateway};

/// The code generated from `proto/health.proto`.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod proto {
    tonic::include_proto!("grpc.health.v1");
}

use proto::health_check_response::ServingStatus;
use proto::health_server::{Health, HealthServer};
use proto::{HealthCheckRequest, HealthCheckResponse};

/// How often a Watch stream looks at the status again.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The health service of a gateway; `stop` turning true ends every Watch stream with NOT_SERVING, so open watches
/// never hold up a graceful shutdown.
pub fn service(gateway: Arc<Gateway>, stop: watch::Receiver<bool>) -> HealthServer<HealthApi> {
    HealthServer::new(HealthApi { gateway, stop })
}

#[derive(Debug, Clone)]
pub struct HealthApi {
    gateway: Arc<Gateway>,
    stop: watch::Receiver<bool>,
}

/// The status of `service` now; `None` when it names no model.
fn status(gateway: &Gateway, service: &str, stopping: bool) -> Result<Option<ServingStatus>, Status> {
    let table = gateway.table();
    if service.is_empty() {
        return Ok(Some(if table.is_ready() && !stopping {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }));
    }
    match api::model_ready(table, service, None) {
        Ok(()) if !stopping => Ok(Some(ServingStatus::Serving)),
        Ok(()) | Err(ApiError::ModelUnavailable(_) | ApiError::LoadPending { .. }) => {
            Ok(Some(ServingStatus::NotServing))
        }
        Err(ApiError::ModelNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status.into() }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match status(&self.gateway, &service, *self.stop.borrow())? {
            Some(status) => Ok(Response::new(answer(status))),
            None => Err(Status::not_found(format!("unknown service '{service}': not a model of this server"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let (gateway, stop) = (Arc::clone(&self.gateway), self.stop.clone());
        // State: the last status sent (None before the first), and whether the stream is over.
        let stream = futures_util::stream::unfold((None, stop, false), move |(last, mut stop, over)| {
            let (gateway, service) = (Arc::clone(&gateway), service.clone());
            async move {
                if over {
                    return None;
                }
                loop {
                    let stopping = *stop.borrow();
                    let now = match status(&gateway, &service, stopping) {
                        Ok(status) => status.unwrap_or(ServingStatus::ServiceUnknown),
                        Err(e) => return Some((Err(e), (last, stop, true))),
                    };
                    if stopping {
                        return Some((Ok(answer(now)), (Some(now), stop, true)));
                    }
                    if last != Some(now) {
                        return Some((Ok(answer(now)), (Some(now), stop, false)));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(WATCH_EVERY) => {}
                        changed = stop.changed() => if changed.is_err() {
                            // The server is gone: its last word is NOT_SERVING.
                            return Some((Ok(answer(ServingStatus::NotServing)), (last, stop, true)));
                        },
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
