//! Starting and stopping the whole server: bind the listeners, load the repository, serve until asked to stop,
//! then drain in-flight requests within the grace period.

mod authority;
mod endpoints;
mod listen;
mod socket;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api;
use crate::backend::Backends;
use crate::config::{Config, ModelControlMode};
use crate::lifecycle::ModelTable;
use crate::routing::TrafficTable;
use crate::telemetry::Telemetry;
use crate::telemetry::feedback::PredictionStore;
use crate::telemetry::payload::PayloadLog;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Mlflow(String),
    #[error("{0}")]
    Tls(String),
    #[error("cannot serve {what} on the socket {}: {reason}", path.display())]
    Socket { what: &'static str, path: std::path::PathBuf, reason: String },
    #[error("the payload log cannot start: {0}")]
    PayloadLog(std::io::Error),
    #[error("the {what} {} is not writable ({source}): give it a writable volume", path.display())]
    NotWritable { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
}

/// Fails the start when a folder the server writes to cannot be written (a read-only root filesystem with no
/// volume there), rather than failing the first rollout or MLflow download much later. The check writes a file
/// the way the server's state is written (`durable::write_atomically`), then removes it.
fn check_writable(what: &'static str, path: &std::path::Path) -> Result<(), ServerError> {
    let fail = |source| ServerError::NotWritable { what, path: path.to_owned(), source };
    let probe = path.join(format!(".infergate-write-check-{}", std::process::id()));
    crate::durable::write_atomically(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Starts following the MLflow Model Registry; returns where webhook deliveries go.
fn start_mlflow(
    mlflow: &crate::config::MlflowSettings,
    table: &Arc<ModelTable>,
    stop: watch::Receiver<bool>,
) -> Result<api::MlflowHook, String> {
    let client = crate::repository::mlflow::MlflowClient::new(&mlflow.uri, mlflow.auth.clone())?;
    let (nudges, nudged) = tokio::sync::mpsc::channel(64);
    let hook = match &mlflow.webhook_secret {
        Some(secret) => {
            let registered = mlflow.models.iter().map(|m| m.registered.clone()).collect();
            api::MlflowHook::new(&secret.0, registered, nudges)
        }
        None => api::MlflowHook::disabled(),
    };
    let follower = crate::lifecycle::MlflowFollower {
        client,
        models: mlflow.models.clone(),
        cache: mlflow.cache.clone(),
        poll: mlflow.poll,
    };
    tracing::info!(uri = %mlflow.uri, models = mlflow.models.len(), cache = %mlflow.cache.display(), "following the MLflow Model Registry");
    tokio::spawn(Arc::clone(table).follow_mlflow(follower, nudged, stop));
    Ok(hook)
}

/// How the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request was answered.
    Drained,
    /// The grace period ran out with requests still in flight.
    GraceExpired,
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`] then [`Server::wait`].
#[derive(Debug)]
pub struct Server {
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    metrics_addr: SocketAddr,
    table: Arc<ModelTable>,
    shutdown: watch::Sender<bool>,
    /// The REST and gRPC listeners' tasks, drained at shutdown.
    apis: Vec<JoinHandle<std::io::Result<()>>>,
    /// Removed when the server is done.
    socket_files: Vec<socket::SocketFile>,
    metrics: JoinHandle<std::io::Result<()>>,
    grace: Duration,
    /// Stopped after the listeners, so that what the last requests logged is written.
    payload_log: Arc<PayloadLog>,
}

/// Asks a server to stop; cheap to clone and usable from a signal handler.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

impl Server {
    /// Binds the REST and metrics listeners, starts loading the model repository in the background and serves. The server is
    /// live at once and ready (`/v2/health/ready`) once every model has loaded or failed.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        if let Some(dir) = &config.state_dir {
            check_writable("state directory", dir)?;
        }
        if let Some(mlflow) = &config.mlflow {
            check_writable("MLflow cache", &mlflow.cache)?;
        }
        if let Some(dir) = &config.payload_log.dir {
            check_writable("payload log folder", dir)?;
        }
        let tls = config.tls.as_ref().map(tls::acceptor).transpose().map_err(ServerError::Tls)?;
        let listen = listen::Listen { limits: config.connections, tls };
        let http = endpoints::Placement::of("REST", &config, config.http_host, config.http_port, &config.http_socket);
        let http = http.bind().await?;
        let grpc = endpoints::Placement::of("gRPC", &config, config.grpc_host, config.grpc_port, &config.grpc_socket);
        let grpc = grpc.grpc();
        let grpc = grpc.bind().await?;
        let (metrics_listener, metrics_addr) =
            bind("metrics", SocketAddr::new(config.metrics_host, config.metrics_port)).await?;

        let ort_library = config.ort_library.clone();
        let backends = tokio::task::spawn_blocking(move || Backends::discover(ort_library.as_deref()))
            .await
            .map_err(|e| ServerError::Backend(format!("looking for backends failed: {e}")))?
            .map_err(ServerError::Backend)?
            .with_max_model_bytes(config.max_model_bytes);
        for status in backends.statuses(false) {
            tracing::info!(backend = status.name, available = status.available, detail = %status.detail, "backend");
        }
        let telemetry = Arc::new(Telemetry::new(config.metrics_window));
        let traffic = Arc::new(TrafficTable::new(telemetry.traffic.clone(), config.state_dir.clone()));
        let followed = config.mlflow.iter().flat_map(|m| m.models.iter().map(|model| model.serve_as.clone()));
        let table = Arc::new(
            ModelTable::new(telemetry, Arc::new(backends), config.model_repository.clone())
                .with_mlflow_models(followed)
                .with_on_demand(config.model_control_mode == ModelControlMode::OnDemand, config.on_demand)
                .with_listing_observer(Arc::clone(&traffic) as Arc<dyn crate::lifecycle::ListingObserver>),
        );
        let (shutdown, stop) = watch::channel(false);
        let hook = match &config.mlflow {
            Some(mlflow) => start_mlflow(mlflow, &table, stop.clone()).map_err(ServerError::Mlflow)?,
            None => api::MlflowHook::disabled(),
        };
        let loader = Arc::clone(&table);
        let (mode, poll, settle) = (config.model_control_mode, config.repository_poll, config.repository_settle);
        let (explicit, watch_stop) = (config.load_models.clone(), stop.clone());
        tokio::spawn(async move {
            let before = loader.fingerprints().await;
            match mode {
                ModelControlMode::Explicit => loader.load_named(&explicit).await,
                ModelControlMode::Poll | ModelControlMode::None | ModelControlMode::OnDemand => {
                    loader.load_local_repository().await
                }
            }
            if matches!(mode, ModelControlMode::Poll | ModelControlMode::OnDemand) {
                loader.watch(poll, settle, before, watch_stop).await;
            }
        });

        let payload_log = Arc::new(PayloadLog::start(&config.payload_log).map_err(ServerError::PayloadLog)?);
        let predictions = Arc::new(PredictionStore::new(config.feedback));
        let gateway = Arc::new(
            api::Gateway::new(Arc::clone(&table), traffic, config.request_limits)
                .with_observation(Arc::clone(&payload_log), predictions)
                .with_control(api::ModelControl::new(config.admin_token.as_ref().map(|token| token.0.clone())))
                .with_keys(api::ApiKeys::new(config.api_keys.iter().map(|key| key.0.clone())))
                .with_hook(hook)
                .with_shared_memory(api::SharedMemory::new(config.shared_memory, config.max_request_bytes)),
        );
        let limits = api::http::Limits {
            max_request_bytes: config.max_request_bytes,
            body_timeout: config.connections.body_read_timeout,
        };
        let (http_addr, grpc_addr) = (http.addr, grpc.addr);
        let (http_endpoints, grpc_endpoints) = (http.endpoints(), grpc.endpoints());
        let rest = http.serve(api::http::router(Arc::clone(&gateway), limits), &listen, &stop, &shutdown);
        let grpc_api = api::grpc::router(gateway, config.max_request_bytes, stop.clone());
        let grpc = grpc.serve(grpc_api, &listen, &stop, &shutdown);
        let apis = rest.tasks.into_iter().chain(grpc.tasks).collect();
        let socket_files = rest.socket_file.into_iter().chain(grpc.socket_file).collect();
        // Prometheus scrapes in plain HTTP from inside the cluster; the metrics port never carries TLS.
        let metrics_listen = listen::Listen { limits: config.connections, tls: None };
        let metrics =
            listen::serve(metrics_listener, api::http::metrics_router(Arc::clone(&table)), metrics_listen, stop);
        tracing::info!(
            http_addr = %http_endpoints,
            grpc_addr = %grpc_endpoints,
            %metrics_addr,
            repository = %config.model_repository.display(),
            model_control = config.admin_token.is_some(),
            tls = config.tls.is_some(),
            api_keys = !config.api_keys.is_empty(),
            "infergate listening"
        );
        let grace = config.shutdown_grace;
        Ok(Server {
            http_addr,
            grpc_addr,
            metrics_addr,
            table,
            shutdown,
            apis,
            socket_files,
            metrics,
            grace,
            payload_log,
        })
    }

    /// The REST API's TCP address; `None` when it is served on its socket only.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The gRPC API's TCP address; `None` when it is served on its socket only.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn models(&self) -> &Arc<ModelTable> {
        &self.table
    }

    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.shutdown.clone())
    }

    /// Stops accepting connections and lets in-flight requests finish.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until the server has stopped: after a shutdown request (or a listener's failure, which asks for one),
    /// until in-flight requests are answered or the grace period runs out.
    pub async fn wait(self) -> Result<Stopped, ServerError> {
        let Server { mut apis, socket_files, metrics, shutdown, grace, payload_log, .. } = self;
        // Only the stop is awaited here, never a listener's end: at shutdown an idle listener's task ends at once,
        // and taking that for the server's end would exit with the other listeners' requests in flight.
        let _ = shutdown.subscribe().wait_for(|&stop| stop).await;
        tracing::info!(grace_seconds = grace.as_secs(), "shutting down: draining in-flight requests");
        // Scrapes are quick; the metrics server gets no grace of its own.
        metrics.abort();
        let drained = tokio::time::timeout(grace, futures_util::future::join_all(apis.iter_mut())).await;
        // The sockets' files go once nothing is served on them.
        drop(socket_files);
        // What the payload log holds is written (its file closed) once no request can add to it.
        if let Err(e) = tokio::task::spawn_blocking(move || payload_log.shutdown()).await {
            tracing::error!(error = %e, "the payload log did not stop cleanly");
        }
        match drained {
            Ok(results) => {
                results.into_iter().try_for_each(|result| finished(result).map(drop)).map(|()| Stopped::Drained)
            }
            Err(_) => {
                tracing::warn!("grace period over with requests still in flight; exiting");
                apis.iter().for_each(JoinHandle::abort);
                Ok(Stopped::GraceExpired)
            }
        }
    }
}

/// Binds a listener; returns it with the address it got (port 0 asks for any free port).
async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { what, addr, source })?;
    let bound = listener.local_addr().map_err(ServerError::Serve)?;
    Ok((listener, bound))
}

fn finished(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<Stopped, ServerError> {
    match result {
        Ok(Ok(())) => Ok(Stopped::Drained),
        Ok(Err(e)) => Err(ServerError::Serve(e)),
        Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
    }
}
