//! Where a server listens: a TCP address, or a Unix domain socket on this host (a sidecar reaches the server
//! through one in a shared volume, so a load test of that set-up must go the same way).

use std::fmt;
use std::path::PathBuf;

/// The Host header and HTTP/2 authority sent over a socket: a socket has no host name, and servers only need one
/// that is well formed.
pub const SOCKET_HOST: &str = "localhost";

/// One server endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// As given: `host:port` for REST, `http://host:port` for gRPC.
    Tcp(String),
    /// The path of a Unix domain socket.
    Unix(PathBuf),
}

impl Endpoint {
    /// A REST base URL (`http://host:port`, or `unix:/path` / `unix:///path` for a socket).
    pub fn rest(url: &str) -> Result<Endpoint, String> {
        match socket_path(url)? {
            Some(path) => Ok(Endpoint::Unix(path)),
            None => Ok(Endpoint::Tcp(url.trim_start_matches("http://").trim_end_matches('/').to_owned())),
        }
    }

    /// A gRPC URL (`http://host:port`, or `unix:/path` / `unix:///path` for a socket).
    pub fn grpc(url: &str) -> Result<Endpoint, String> {
        match socket_path(url)? {
            Some(path) => Ok(Endpoint::Unix(path)),
            None => Ok(Endpoint::Tcp(url.to_owned())),
        }
    }

    /// The Host header of REST requests.
    pub fn host(&self) -> &str {
        match self {
            Endpoint::Tcp(addr) => addr,
            Endpoint::Unix(_) => SOCKET_HOST,
        }
    }
}

/// The address, or the socket's path, as error messages and reports name the endpoint.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => f.write_str(addr),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The socket path of a `unix:` URL; `None` for any other URL.
fn socket_path(url: &str) -> Result<Option<PathBuf>, String> {
    let Some(rest) = url.strip_prefix("unix:") else { return Ok(None) };
    // `unix:///path` is the URL form of `unix:/path`; both are what gRPC's name syntax accepts.
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() {
        return Err(format!("{url}: name the socket's path (unix:/path)"));
    }
    Ok(Some(PathBuf::from(path)))
}

/// A Unix listener at `<temp>/loadgen-<tag>-<pid>/<tag>.sock` for the clients' tests: (its folder, to remove at
/// the end; the socket's path; the listener).
#[cfg(test)]
pub(crate) fn test_listener(tag: &str) -> (PathBuf, PathBuf, tokio::net::UnixListener) {
    let dir = std::env::temp_dir().join(format!("loadgen-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}.sock"));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    (dir, path, listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_urls_are_kept_as_before() {
        assert_eq!(Endpoint::rest("http://127.0.0.1:8000/").unwrap(), Endpoint::Tcp("127.0.0.1:8000".to_owned()));
        assert_eq!(Endpoint::rest("h:1").unwrap().host(), "h:1");
        let grpc = Endpoint::grpc("http://127.0.0.1:8001").unwrap();
        assert_eq!(grpc, Endpoint::Tcp("http://127.0.0.1:8001".to_owned()));
        assert_eq!(grpc.to_string(), "http://127.0.0.1:8001");
    }

    #[test]
    fn unix_urls_name_sockets() {
        for url in ["unix:/run/ig/http.sock", "unix:///run/ig/http.sock"] {
            let endpoint = Endpoint::rest(url).unwrap();
            assert_eq!(endpoint, Endpoint::Unix(PathBuf::from("/run/ig/http.sock")));
            assert_eq!((endpoint.host(), endpoint.to_string().as_str()), (SOCKET_HOST, "/run/ig/http.sock"));
            assert_eq!(Endpoint::grpc(url).unwrap(), endpoint);
        }
        assert_eq!(Endpoint::grpc("unix:grpc.sock").unwrap(), Endpoint::Unix(PathBuf::from("grpc.sock")));
        assert!(Endpoint::rest("unix:").is_err());
        assert!(Endpoint::grpc("unix://").is_err());
    }
}
