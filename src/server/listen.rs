//! The accept loop every listener runs: a bounded number of connections, optional TLS, and deadlines that keep
//! slow or silent clients from holding the server. HTTP/1.1 and HTTP/2 (gRPC) are told apart per connection.
//!
//! Deadlines:
//! - a new connection must complete its TLS handshake and send its first request's headers within the header
//!   timeout, or it is closed (this covers a peer that sends nothing, and one that trickles bytes);
//! - each later HTTP/1.1 request's headers must arrive within the same timeout (an idle keep-alive connection
//!   is closed when it runs out);
//! - bodies are read whole within the body timeout by the REST router (`api::http`).
//!
//! At shutdown the listener stops accepting, but connections the kernel already completed are still taken; each
//! connection finishes the request it is on and closes (one with no request yet gets `FIRST_REQUEST_AT_SHUTDOWN`
//! for its first), so a request already sent is answered, never reset.
//!
//! At most `max_connections` connections are open per listener; further clients wait in the kernel's accept
//! backlog until one closes, so a flood of idle connections delays new clients but cannot exhaust memory.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::response::Response;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use super::authority::AuthorityFix;
use crate::config::ConnectionLimits;

/// How long to wait before accepting again after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// At shutdown, a connection that has not yet delivered its first request (its bytes may be on the way, or not yet
/// read) gets this long to do so; that request is then answered, and the connection closed.
const FIRST_REQUEST_AT_SHUTDOWN: Duration = Duration::from_secs(2);

/// One listener's settings.
#[derive(Clone)]
pub struct Listen {
    pub limits: ConnectionLimits,
    /// Set: connections are TLS.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen").field("limits", &self.limits).field("tls", &self.tls.is_some()).finish()
    }
}

/// A listening socket: TCP, or a Unix domain socket for clients on the same host or in the same pod.
pub trait Acceptor: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
    /// Per-connection socket options.
    fn prepare(_io: &Self::Io) {}
    /// TLS applies to TCP only: a Unix socket's file mode is its access control.
    const TLS: bool;
}

impl Acceptor for TcpListener {
    type Io = TcpStream;
    const TLS: bool = true;

    async fn accept(&self) -> std::io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(tcp, _)| tcp)
    }

    fn prepare(tcp: &TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            // Small responses (a gRPC answer is several small frames) would wait for the peer's delayed ACK.
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    }
}

impl Acceptor for UnixListener {
    type Io = UnixStream;
    const TLS: bool = false;

    async fn accept(&self) -> std::io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// The gRPC API's Unix socket: its connections get the client's `:authority` made valid (see `authority`).
pub struct GrpcUnixListener(pub UnixListener);

impl Acceptor for GrpcUnixListener {
    type Io = AuthorityFix<UnixStream>;
    const TLS: bool = false;

    async fn accept(&self) -> std::io::Result<AuthorityFix<UnixStream>> {
        self.0.accept().await.map(|(stream, _)| AuthorityFix::new(stream))
    }
}

/// Serves `app` on `listener` until `stop` turns true; then stops accepting, lets each connection finish its
/// open requests, and returns once every connection has closed.
pub fn serve<L, S>(
    listener: L,
    app: S,
    listen: Listen,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>>
where
    L: Acceptor,
    S: App,
{
    tokio::spawn(async move {
        let slots = u32::try_from(listen.limits.max_connections).unwrap_or(u32::MAX);
        let open = Arc::new(Semaphore::new(slots as usize));
        let builder = Arc::new(connection_builder(&listen.limits));
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&open).acquire_owned() => permit.map_err(std::io::Error::other)?,
                () = stopped(&mut stop) => break,
            };
            let io = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(io) => io,
                    Err(e) => {
                        // Out of descriptors or a connection reset before it was accepted: neither stops the server.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = stopped(&mut stop) => break,
            };
            spawn_connection::<L, S>(io, permit, &app, &builder, &listen, &stop);
        }
        // Connections the kernel completed before the stop are clients already sending: serve them too (each gets
        // its first request answered, see FIRST_REQUEST_AT_SHUTDOWN) rather than resetting them with the listener.
        while let Some(Ok(io)) = listener.accept().now_or_never() {
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else { break };
            spawn_connection::<L, S>(io, permit, &app, &builder, &listen, &stop);
        }
        drop(listener);
        // Every connection holds a slot until it closes: all slots back means all connections are done.
        let _ = open.acquire_many(slots).await;
        Ok(())
    })
}

fn spawn_connection<L: Acceptor, S: App>(
    io: L::Io,
    permit: OwnedSemaphorePermit,
    app: &S,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    listen: &Listen,
    stop: &watch::Receiver<bool>,
) {
    L::prepare(&io);
    let connection = Connection {
        app: app.clone(),
        builder: Arc::clone(builder),
        header_timeout: listen.limits.header_read_timeout,
        stop: stop.clone(),
    };
    let tls = if L::TLS { listen.tls.clone() } else { None };
    tokio::spawn(async move {
        connection.run(io, tls).await;
        drop(permit);
    });
}

/// Returns once `stop` is true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}

fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        // Finds peers that vanished without closing, so their streams are freed.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// What a listener serves: an axum router, or a service in front of one.
pub trait App:
    Service<hyper::Request<Incoming>, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
{
}

impl<S> App for S where
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// One accepted connection.
struct Connection<S> {
    app: S,
    builder: Arc<auto::Builder<TokioExecutor>>,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl<S: App> Connection<S> {
    async fn run<I>(self, io: I, tls: Option<TlsAcceptor>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(tls) = tls else {
            return self.serve(io).await;
        };
        match tokio::time::timeout(self.header_timeout, tls.accept(io)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    }

    /// Serves HTTP on the connection until the peer closes it, it misses a deadline, or the server stops.
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { app, builder, header_timeout, mut stop } = self;
        let seen_request = Arc::new(AtomicBool::new(false));
        let first_seen = Arc::new(Notify::new());
        let (seen, notify) = (Arc::clone(&seen_request), Arc::clone(&first_seen));
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            if !seen.swap(true, Ordering::Relaxed) {
                notify.notify_one();
            }
            app.clone().oneshot(request)
        });
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let first_request = tokio::time::sleep(header_timeout);
        tokio::pin!(first_request);
        // Armed at shutdown for a connection with no request yet.
        let linger = tokio::time::sleep(header_timeout);
        tokio::pin!(linger);
        // Stopping: the server is stopping; shut: this connection was told to finish (graceful_shutdown).
        let (mut waiting_first, mut stopping, mut shut) = (true, false, false);
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = &mut first_request, if waiting_first => {
                    if !seen_request.load(Ordering::Relaxed) {
                        tracing::debug!("closing a connection that sent no request in time");
                        return;
                    }
                    waiting_first = false;
                }
                () = stopped(&mut stop), if !stopping => {
                    stopping = true;
                    if seen_request.load(Ordering::Relaxed) {
                        connection.as_mut().graceful_shutdown();
                        shut = true;
                    } else {
                        linger.as_mut().reset(tokio::time::Instant::now() + FIRST_REQUEST_AT_SHUTDOWN);
                    }
                }
                // Told to finish once its first request is in: hyper then answers it and closes.
                () = first_seen.notified(), if stopping && !shut => {
                    connection.as_mut().graceful_shutdown();
                    shut = true;
                }
                () = &mut linger, if stopping && !shut => {
                    connection.as_mut().graceful_shutdown();
                    shut = true;
                }
            }
        }
    }
}
