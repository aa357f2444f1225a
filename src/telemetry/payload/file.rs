//! The file sink: JSON lines in a folder, one file open at a time.
//!
//! The file being written is `payloads-<time>-<pid>-<n>.jsonl.open`. Whole lines are gathered and written together
//! at least every [`FLUSH_EVERY`]; at its size or age limit (or when the server stops) the file is fsync'd and
//! renamed to `.jsonl`, and the folder fsync'd. So a closed file is always whole, and a crash loses at most the
//! open file's unwritten tail. At start, a `.jsonl.open` left by a crash is cut after its last whole line and
//! closed. Closed files past the disk cap are deleted, oldest first.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime};

use super::{Next, PayloadLogSettings, PayloadRecord, SinkCounters, format_time, metrics, next_record};
use crate::durable::sync_folder;

/// Lines gathered before a write; a write also happens at least every [`FLUSH_EVERY`].
const FLUSH_BYTES: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const OPEN_SUFFIX: &str = ".jsonl.open";
const CLOSED_SUFFIX: &str = ".jsonl";

#[derive(Debug)]
pub(super) struct FileWriter {
    dir: PathBuf,
    max_file_bytes: u64,
    max_file_age: Duration,
    max_disk_bytes: u64,
    counters: SinkCounters,
    open: Option<OpenFile>,
    /// Whole lines not yet written, and how many records they are.
    buffer: Vec<u8>,
    buffered: u64,
    last_write: Instant,
    files: u64,
}

#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    file: File,
    written: u64,
    opened: Instant,
}

impl FileWriter {
    /// Creates the folder and closes any file a crash left open in it.
    pub(super) fn open(dir: PathBuf, settings: &PayloadLogSettings, counters: SinkCounters) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        recover(&dir)?;
        Ok(FileWriter {
            dir,
            max_file_bytes: settings.max_file_bytes.max(1),
            max_file_age: settings.max_file_age,
            max_disk_bytes: settings.max_disk_bytes,
            counters,
            open: None,
            buffer: Vec::with_capacity(FLUSH_BYTES * 2),
            buffered: 0,
            last_write: Instant::now(),
            files: 0,
        })
    }

    pub(super) fn run(mut self, receiver: &Receiver<PayloadRecord>, stopping: &AtomicBool) {
        loop {
            match next_record(receiver, stopping, FLUSH_EVERY) {
                Next::Record(record) => self.add(&record),
                Next::Idle => {}
                Next::Stop => break,
            }
            // A file ends at its size limit (past it by less than a line), however lines are gathered.
            let written = self.open.as_ref().map_or(0, |f| f.written);
            if written + self.buffer.len() as u64 >= self.max_file_bytes {
                self.write();
                self.close();
                continue;
            }
            if self.buffer.len() >= FLUSH_BYTES || self.last_write.elapsed() >= FLUSH_EVERY {
                self.write();
            }
            if self
                .open
                .as_ref()
                .is_some_and(|f| f.written >= self.max_file_bytes || f.opened.elapsed() >= self.max_file_age)
            {
                self.close();
            }
        }
        self.write();
        self.close();
    }

    fn add(&mut self, record: &PayloadRecord) {
        let line = record.line();
        if line.len() > record.max_bytes {
            self.counters.too_large.inc();
            return;
        }
        self.buffer.extend_from_slice(&line);
        self.buffered += 1;
    }

    /// Writes the gathered lines to the open file, opening one when none is.
    fn write(&mut self) {
        self.last_write = Instant::now();
        if self.buffer.is_empty() {
            return;
        }
        let buffer = std::mem::take(&mut self.buffer);
        let written = self.open_file().and_then(|open| {
            open.file.write_all(&buffer)?;
            open.written += buffer.len() as u64;
            Ok(())
        });
        self.buffer = buffer;
        match written {
            Ok(()) => self.counters.delivered.inc_by(self.buffered),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot write the payload log");
                self.counters.write_failed.inc_by(self.buffered);
                // A file that failed a write is left as it is: the next start cuts it after its last whole line.
                self.open = None;
            }
        }
        self.buffer.clear();
        self.buffered = 0;
    }

    fn open_file(&mut self) -> std::io::Result<&mut OpenFile> {
        if self.open.is_none() {
            let stamp: String = format_time(SystemTime::now()).chars().filter(char::is_ascii_alphanumeric).collect();
            self.files += 1;
            let name = format!("payloads-{stamp}-{}-{}{OPEN_SUFFIX}", std::process::id(), self.files);
            let path = self.dir.join(name);
            let file = File::options().create_new(true).append(true).open(&path)?;
            self.open = Some(OpenFile { path, file, written: 0, opened: Instant::now() });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Makes the open file durable and closes it, then keeps the folder under its cap.
    fn close(&mut self) {
        let Some(open) = self.open.take() else { return };
        if let Err(e) = close_file(&open.file, &open.path) {
            tracing::error!(file = %open.path.display(), error = %e, "cannot close a payload-log file");
        }
        if let Err(e) = self.enforce_cap() {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot keep the payload log under its disk cap");
        }
    }

    /// Deletes the oldest closed files while the folder holds more than the cap.
    fn enforce_cap(&self) -> std::io::Result<()> {
        let mut closed: Vec<(PathBuf, u64)> = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(CLOSED_SUFFIX) && entry.file_type()?.is_file() {
                closed.push((entry.path(), entry.metadata()?.len()));
            }
        }
        // Names start with their opening time, so they sort oldest first.
        closed.sort();
        let mut total: u64 = closed.iter().map(|(_, size)| size).sum();
        for (path, size) in closed {
            if total <= self.max_disk_bytes {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= size;
            metrics().files_deleted.inc();
        }
        Ok(())
    }
}

/// fsync, rename to `.jsonl`, fsync of the folder.
fn close_file(file: &File, path: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    let closed = closed_name(path);
    std::fs::rename(path, &closed)?;
    sync_folder(path.parent().unwrap_or(Path::new(".")))
}

fn closed_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{}{CLOSED_SUFFIX}", name.trim_end_matches(OPEN_SUFFIX)))
}

/// Closes the files a crash left open: each is cut after its last whole line (or removed when it has none).
fn recover(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(OPEN_SUFFIX) || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole == 0 {
            std::fs::remove_file(&path)?;
            continue;
        }
        let file = File::options().write(true).open(&path)?;
        file.set_len(whole as u64)?;
        close_file(&file, &path)?;
        tracing::warn!(
            file = %closed_name(&path).display(),
            cut_bytes = bytes.len() - whole,
            "closed a payload-log file left open by a crash"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_left_open_is_cut_after_its_last_whole_line_and_closed() {
        let dir = std::env::temp_dir().join(format!("infergate-payload-recover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("payloads-1-1-1.jsonl.open"), b"{\"a\":1}\n{\"a\":2}\n{\"a\"").unwrap();
        std::fs::write(dir.join("payloads-1-1-2.jsonl.open"), b"{\"a\"").unwrap();
        recover(&dir).unwrap();
        assert_eq!(std::fs::read(dir.join("payloads-1-1-1.jsonl")).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        assert!(!dir.join("payloads-1-1-1.jsonl.open").exists());
        assert!(!dir.join("payloads-1-1-2.jsonl.open").exists() && !dir.join("payloads-1-1-2.jsonl").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
