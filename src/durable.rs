//! Files that must survive a crash: state the server keeps across restarts (traffic policies, rollout states, the
//! MLflow cache's records) is written so that a crash, `kill -9` or a power cut leaves the old file or the new
//! one, never a part.

use std::path::Path;

/// Writes `bytes` to `path` by a temp file beside it, fsync, rename, and an fsync of the folder so the rename
/// itself is on disk.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(path);
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let staging = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&staging)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(&staging, path)?;
    sync_folder(dir)
}

/// Makes a folder's entries (a file created or renamed into it) durable.
pub fn sync_folder(folder: &Path) -> std::io::Result<()> {
    std::fs::File::open(folder)?.sync_all()
}
