//! One registered region: a window of a POSIX shared-memory object (a file in `/dev/shm`) that a client on the
//! same host writes tensors into and reads outputs from.
//!
//! Regions are read and written with positioned reads and writes on the open file, not through a mapping. Both
//! cost one copy of the tensor (the page cache of a `tmpfs` file is the shared memory itself), but a mapping hands
//! the server's memory safety to the client: a client that truncates its object while the server reads a mapped
//! window kills the server with SIGBUS, and memory another process writes under a Rust slice is undefined
//! behaviour. A positioned read of a truncated object is only short, and answered as the client's error. The one
//! unsafe block, a read into a buffer not zeroed first, is in `read`.
//!
//! The file stays open while the region is registered and while any request that named it is in flight, so a
//! region unregistered (or unlinked by its owner) mid-request is still read and written whole.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::api::ApiError;

/// Where POSIX shared-memory objects live: `shm_open("/name")` opens `/dev/shm/name`.
pub const SHM_DIR: &str = "/dev/shm";

/// The longest key accepted (NAME_MAX, with the leading slash).
const MAX_KEY_BYTES: usize = 256;

/// A registered window `[offset, offset + byte_size)` of a shared-memory object.
#[derive(Debug)]
pub struct Region {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
    file: File,
}

impl Region {
    /// Opens the object named by `key` (`/name` or `name`, a file directly in `/dev/shm`) read-write and checks
    /// that the window fits in it. Symbolic links, other file types and names that leave `/dev/shm` are refused.
    pub fn open(name: &str, key: &str, offset: u64, byte_size: u64) -> Result<Region, ApiError> {
        let path = object_path(key)?;
        if byte_size == 0 {
            return Err(ApiError::invalid_input(format!("region '{name}': byte_size must be greater than 0")));
        }
        let end = offset.checked_add(byte_size).ok_or_else(|| {
            ApiError::invalid_input(format!("region '{name}': offset {offset} + byte_size {byte_size} overflows"))
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            // No link is followed out of the folder, and a FIFO planted under the name cannot block the open.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                ApiError::invalid_input(format!(
                    "region '{name}': cannot open shared memory key '{key}' ({}): {e}",
                    path.display()
                ))
            })?;
        let metadata = file.metadata().map_err(|e| {
            ApiError::invalid_input(format!("region '{name}': cannot read shared memory key '{key}': {e}"))
        })?;
        if !metadata.is_file() {
            return Err(ApiError::invalid_input(format!(
                "region '{name}': shared memory key '{key}' is not a shared memory object"
            )));
        }
        if end > metadata.len() {
            return Err(ApiError::invalid_input(format!(
                "region '{name}': offset {offset} + byte_size {byte_size} is past the end of shared memory key \
                 '{key}' ({} bytes)",
                metadata.len()
            )));
        }
        Ok(Region { name: name.to_owned(), key: key.to_owned(), offset, byte_size, file })
    }

    /// Checks that `[offset, offset + len)` of the region is inside it, naming `what` uses it.
    pub fn check_window(&self, what: &str, offset: u64, len: u64) -> Result<(), ApiError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.byte_size => Ok(()),
            _ => Err(ApiError::invalid_input(format!(
                "{what}: shared_memory_offset {offset} + shared_memory_byte_size {len} is past the end of region \
                 '{}' ({} bytes)",
                self.name, self.byte_size
            ))),
        }
    }

    /// Reads `len` bytes at `offset` within the region (checked by the caller with [`Region::check_window`]).
    pub fn read(&self, what: &str, offset: u64, len: usize) -> Result<Vec<u8>, ApiError> {
        super::read::read_exact_at(&self.file, self.offset + offset, len).map_err(|e| self.io_error(what, e))
    }

    /// Writes `data` at `offset` within the region (checked by the caller with [`Region::check_window`]). The
    /// object must still be as long as it was when registered: a write never grows a truncated object.
    pub fn write(&self, what: &str, offset: u64, data: &[u8]) -> Result<(), ApiError> {
        let end = self.offset + offset + data.len() as u64;
        let length = self.file.metadata().map_err(|e| self.io_error(what, e))?.len();
        if end > length {
            return Err(self.io_error(what, std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.file.write_all_at(data, self.offset + offset).map_err(|e| self.io_error(what, e))
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> ApiError {
        let reason = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the shared memory object is shorter than when it was registered".to_owned()
        } else {
            e.to_string()
        };
        ApiError::invalid_input(format!("{what}: region '{}' (key '{}'): {reason}", self.name, self.key))
    }
}

/// The file of a shared-memory key: one name directly in `/dev/shm`, as `shm_open` takes it.
fn object_path(key: &str) -> Result<PathBuf, ApiError> {
    let name = key.strip_prefix('/').unwrap_or(key);
    let refuse = |why: &str| {
        ApiError::invalid_input(format!(
            "shared memory key '{key}' {why}; a key names an object in {SHM_DIR}, like '/my_region'"
        ))
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(refuse("names no object"));
    }
    if name.contains('/') {
        return Err(refuse("has a '/' after the first character"));
    }
    if name.contains('\0') {
        return Err(refuse("holds a NUL character"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(refuse("is longer than 255 bytes"));
    }
    Ok(Path::new(SHM_DIR).join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_objects_in_dev_shm_only() {
        assert_eq!(object_path("/abc").unwrap(), Path::new("/dev/shm/abc"));
        assert_eq!(object_path("abc").unwrap(), Path::new("/dev/shm/abc"));
        for bad in ["", "/", "/.", "/..", "..", "/../etc/passwd", "/a/b", "a/../../etc", "/a\0b", &"x".repeat(300)] {
            assert!(object_path(bad).is_err(), "{bad:?}");
        }
    }
}
