//! Watching the repository folder: file-system notifications, and a look every interval as the fallback.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use super::ModelFingerprint;

/// What follows the folder: it says what each model's files look like now, and syncs a model whose files changed.
pub trait FolderFollower: Send + Sync {
    /// The fingerprint of every model to look at (a model whose folder is gone fingerprints as empty).
    fn fingerprints(&self) -> impl Future<Output = HashMap<String, ModelFingerprint>> + Send;
    /// Brings the model in line with its folder.
    fn changed(&self, model: &str) -> impl Future<Output = ()> + Send;
}

/// Watches the folder `root` until `stop`: file-system notifications, and a look every `interval` as the
/// fallback (notifications are lost on some file systems, e.g. network mounts). A model whose files changed is
/// synced once the change has settled: its files unchanged since the previous look and left alone for `settle`
/// (a copy still being written keeps changing, so a half-written version is never loaded). A notification
/// brings the next look forward to `settle` after it.
///
/// `applied` is what the follower was loaded from (fingerprinted before the initial load, so a change made during
/// it is picked up).
pub async fn watch(
    follower: &impl FolderFollower,
    root: &Path,
    interval: Duration,
    settle: Duration,
    mut applied: HashMap<String, ModelFingerprint>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (events, mut notified) = tokio::sync::mpsc::channel::<()>(1);
    let _watcher = notifications(root, events);
    let mut last = applied.clone();
    let mut next_look = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_look) => {}
            Some(()) = notified.recv() => {
                // A change brings the next look forward, never back: a folder that changes all the time is
                // still looked at.
                next_look = next_look.min(tokio::time::Instant::now() + settle);
                continue;
            }
            _ = stop.wait_for(|&stop| stop) => return,
        }
        let now = follower.fingerprints().await;
        let mut pending = false;
        for (name, fingerprint) in &now {
            if applied.get(name) == Some(fingerprint) {
                continue;
            }
            if last.get(name) == Some(fingerprint) && fingerprint.settled(settle) {
                tracing::info!(model = %name, "model files changed");
                follower.changed(name).await;
                applied.insert(name.clone(), fingerprint.clone());
            } else {
                pending = true;
            }
        }
        last = now;
        next_look = tokio::time::Instant::now() + if pending { settle.min(interval) } else { interval };
    }
}

/// File-system notifications for the repository folder, each one a nudge on `events` (a full channel already
/// holds a nudge, so none is lost). `None` when the platform cannot watch: polling alone then.
fn notifications(root: &Path, events: tokio::sync::mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    // Reads (ours included: looking at the folder and loading a file open them) are not changes.
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && (event.kind.is_create() || event.kind.is_modify() || event.kind.is_remove())
        {
            let _ = events.try_send(());
        }
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(root, notify::RecursiveMode::Recursive)?;
        Ok(watcher)
    });
    match watcher {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(error = %e, path = %root.display(), "no file-system notifications; polling only");
            None
        }
    }
}
