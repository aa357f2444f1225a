//! Unix domain socket files: a sidecar's application reaches the APIs through one in a shared volume, without the
//! TCP stack.
//!
//! At bind, a file already at the path is handled by what it is: a socket nobody answers on (left by a crashed
//! server) is replaced; one a live server answers on is refused, so two servers never share a path; anything that
//! is not a socket is never deleted. The file gets the configured mode, and is removed when the server stops,
//! unless another file has taken its place by then.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::ServerError;

/// A bound socket's file, removed when dropped.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode at bind: the file removed at the end must still be this one.
    identity: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket file");
        }
    }
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds a Unix socket at `path` with file mode `mode`; `what` names the API in errors.
pub fn bind(what: &'static str, path: &Path, mode: u32) -> Result<(UnixListener, SocketFile), ServerError> {
    let fail = |reason: String| ServerError::Socket { what, path: path.to_owned(), reason };
    clear_stale(path).map_err(fail)?;
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| fail(e.to_string()))?;
    // Owned from here: a failure below removes the file again.
    let file = SocketFile { path: path.to_owned(), identity: (meta.dev(), meta.ino()) };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| fail(e.to_string()))?;
    Ok((listener, file))
}

/// Removes a socket file no server answers on; refuses a live one and anything that is not a socket.
fn clear_stale(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.file_type().is_socket() {
        return Err("a file that is not a socket is already there; it is left alone".to_owned());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err("another server is listening on it".to_owned()),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket file: {e}"))
        }
        Err(e) => Err(format!("cannot tell whether a server listens on it: {e}")),
    }
}
