//! Where one API (REST or gRPC) is served: a TCP address, a Unix socket, or both, each with the same app, limits
//! and drain.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::listen::{self, App, Listen};
use super::socket::{self, SocketFile};
use super::{ServerError, bind};
use crate::config::Config;

/// Where an API listens, as the configuration asks.
pub struct Placement<'a> {
    what: &'static str,
    /// `None`: sockets only.
    addr: Option<SocketAddr>,
    socket: Option<&'a Path>,
    socket_mode: u32,
    /// gRPC: connections on the socket get their `:authority` made valid.
    grpc: bool,
}

/// One API's bound listeners.
pub struct Bound {
    what: &'static str,
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, SocketFile)>,
    grpc: bool,
    /// The TCP address it got (port 0 asks for any free port).
    pub addr: Option<SocketAddr>,
}

impl<'a> Placement<'a> {
    /// Where `config` puts one API: `host:port` unless it serves on sockets only, and `socket` when set.
    pub fn of(what: &'static str, config: &Config, host: IpAddr, port: u16, socket: &'a Option<PathBuf>) -> Self {
        let addr = (!config.sockets_only).then(|| SocketAddr::new(host, port));
        Placement { what, addr, socket: socket.as_deref(), socket_mode: config.socket_mode, grpc: false }
    }

    /// The gRPC API: clients built on gRPC's C core send the socket's path as `:authority`, which is fixed.
    pub fn grpc(self) -> Self {
        Placement { grpc: true, ..self }
    }

    pub async fn bind(self) -> Result<Bound, ServerError> {
        let (tcp, addr) = match self.addr {
            Some(addr) => {
                let (listener, bound) = bind(self.what, addr).await?;
                (Some(listener), Some(bound))
            }
            None => (None, None),
        };
        let unix = self.socket.map(|path| socket::bind(self.what, path, self.socket_mode)).transpose()?;
        Ok(Bound { what: self.what, tcp, unix, grpc: self.grpc, addr })
    }
}

/// One API served: its listeners' tasks, and its socket file (removed when dropped, after the drain).
pub struct Serving {
    pub tasks: Vec<JoinHandle<std::io::Result<()>>>,
    pub socket_file: Option<SocketFile>,
}

impl Bound {
    /// Serves `app` on every listener; a listener that fails stops the whole server (`shutdown`).
    pub fn serve<S: App>(
        self,
        app: S,
        listen: &Listen,
        stop: &watch::Receiver<bool>,
        shutdown: &watch::Sender<bool>,
    ) -> Serving {
        let mut tasks = Vec::new();
        if let Some(tcp) = self.tcp {
            let task = listen::serve(tcp, app.clone(), listen.clone(), stop.clone());
            tasks.push(stop_on_failure(self.what, task, shutdown.clone()));
        }
        let socket_file = self.unix.map(|(unix, file)| {
            let task = if self.grpc {
                listen::serve(listen::GrpcUnixListener(unix), app, listen.clone(), stop.clone())
            } else {
                listen::serve(unix, app, listen.clone(), stop.clone())
            };
            tasks.push(stop_on_failure(self.what, task, shutdown.clone()));
            file
        });
        Serving { tasks, socket_file }
    }

    /// The API's endpoints for the start's log line: `0.0.0.0:8000`, `unix:/run/infergate/http.sock`, or both.
    pub fn endpoints(&self) -> String {
        let tcp = self.addr.map(|addr| addr.to_string());
        let unix = self.unix.as_ref().map(|(_, file)| format!("unix:{}", file.path().display()));
        tcp.into_iter().chain(unix).collect::<Vec<_>>().join(", ")
    }
}

/// A listener's task ends at the stop, or on an error; an error stops the whole server, so the other listeners
/// drain and `Server::wait` returns it.
fn stop_on_failure(
    what: &'static str,
    task: JoinHandle<std::io::Result<()>>,
    shutdown: watch::Sender<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        let result = task.await.map_err(std::io::Error::other).and_then(|served| served);
        if let Err(e) = &result {
            tracing::error!(listener = what, error = %e, "a listener failed; stopping the server");
            shutdown.send_replace(true);
        }
        result
    })
}
