//! The table of served models and the states of their versions.
//!
//! Each model's versions are one [`VersionSet`] value behind an `ArcSwap`: a change builds a new set and stores
//! it in one step, and a request holds the `Arc<ServingVersion>` it started on until it has been answered.
//! `table` looks up, `version_set` holds the rules of a swap, `sync` brings the table in line with a source's
//! listing (loads and stores only), `loader` loads, checks and warms up one version, `mlflow` follows the
//! registry. `on_demand` loads a listed version on its first request and evicts idle ones to fit the memory
//! budget (whose arithmetic is `budget`'s); `listed` is the state of a version known but not loaded. The lifecycle
//! knows nothing of traffic: a [`ListingObserver`] hears of every listing applied.

mod budget;
mod listed;
mod loader;
mod mlflow;
mod on_demand;
mod sync;
mod table;
mod trim;
mod version_set;

pub use listed::{Evicted, Listed, LoadFailure};
pub use loader::{REFERENCE_FILE, monitor_plan};
pub use mlflow::{MlflowFollower, MlflowStatus};
pub use on_demand::LoadOutcome;
pub use table::ModelTable;
pub use version_set::{VersionSet, VersionState};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use thiserror::Error;

use crate::backend::{Backend, Device, Signature};
use crate::repository::local::FileStamp;
use crate::repository::{ModelConfig, ModelSpec};
use crate::scheduler::Scheduler;
use crate::telemetry::VersionMetrics;

/// A loaded version that takes traffic.
#[derive(Debug)]
pub struct ServingVersion {
    pub name: String,
    pub version: u64,
    pub backend_name: &'static str,
    pub device: Device,
    /// The model file as it was when loaded; a different stamp later means a new copy to load.
    pub stamp: Option<FileStamp>,
    pub signature: Signature,
    pub scheduler: Scheduler,
    pub metrics: VersionMetrics,
    /// What it was loaded from (its file, and its `model.toml` as it was loaded with): an evicted version is
    /// loaded again from it.
    pub spec: Arc<ModelSpec>,
    /// Bytes its load measured (resident memory before and after, at least the model file's size).
    pub cost: u64,
    /// An on-demand version, which the budget may evict when idle.
    pub evictable: bool,
    /// Milliseconds since the Unix epoch of its last use (kept for evictable versions only).
    last_use: AtomicU64,
    /// Alive until its instances have let go of the backend's session: until then its memory is not freed.
    backend: Weak<dyn Backend>,
}

impl ServingVersion {
    /// Marks the version used now, for least-recently-used eviction; a store only when the millisecond changed,
    /// so requests to a busy version mostly only read the shared line.
    pub fn touch(&self) {
        if self.evictable {
            let now = unix_millis(SystemTime::now());
            if self.last_use.load(Ordering::Relaxed) != now {
                self.last_use.store(now, Ordering::Relaxed);
            }
        }
    }

    /// Milliseconds since the Unix epoch of its last use (its load, when never asked for since).
    pub fn last_use_millis(&self) -> u64 {
        self.last_use.load(Ordering::Relaxed)
    }

    /// Its last use; `None` for a version that is never evicted (its uses are not kept).
    pub fn last_use(&self) -> Option<SystemTime> {
        self.evictable.then(|| UNIX_EPOCH + Duration::from_millis(self.last_use_millis()))
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub versions: ArcSwap<VersionSet>,
    /// Versions taken out of service whose requests in flight, or instances, still hold them.
    draining: Mutex<Vec<Draining>>,
}

/// A version out of service: held by requests in flight until `serving` is gone, in memory until `backend` is.
#[derive(Debug)]
struct Draining {
    version: u64,
    serving: Weak<ServingVersion>,
    backend: Weak<dyn Backend>,
    cost: u64,
}

impl ModelEntry {
    fn new(name: &str, set: VersionSet) -> ModelEntry {
        ModelEntry { name: name.to_owned(), versions: ArcSwap::from_pointee(set), draining: Mutex::new(Vec::new()) }
    }

    /// The versions still draining, those already freed forgotten.
    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Draining>> {
        let mut draining = self.draining.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        draining.retain(|d| d.backend.strong_count() > 0);
        draining
    }

    /// Records versions taken out of service.
    fn drain(&self, versions: Vec<(u64, Arc<ServingVersion>)>) {
        self.live().extend(versions.into_iter().map(|(version, serving)| Draining {
            version,
            serving: Arc::downgrade(&serving),
            backend: Weak::clone(&serving.backend),
            cost: serving.cost,
        }));
    }

    /// (version, requests holding it) of every version still draining. Counting takes no reference, so looking
    /// never delays the free.
    pub fn draining(&self) -> Vec<(u64, usize)> {
        self.live().iter().map(|d| (d.version, d.serving.strong_count())).filter(|&(_, n)| n > 0).collect()
    }

    /// Bytes and versions out of service whose memory is not freed yet (requests or instances still hold them).
    fn draining_cost(&self) -> (u64, usize) {
        let draining = self.live();
        (draining.iter().map(|d| d.cost).sum(), draining.len())
    }
}

/// Hears of every listing the table applied (a model's versions brought in line with its source), with the
/// model's `model.toml` as listed; called in order, while no other change of the table runs.
pub trait ListingObserver: Send + Sync + std::fmt::Debug {
    fn listing_applied(&self, table: &ModelTable, entry: &ModelEntry, config: &ModelConfig);
}

/// One row of the repository index: a model, or one of its versions, with its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: Option<u64>,
    /// Triton's state names: READY, LOADING, UNLOADING (draining), UNAVAILABLE.
    pub state: &'static str,
    pub reason: String,
    /// The aliases naming this version.
    pub aliases: Vec<String>,
    /// The last use of an on-demand version (loaded or evicted).
    pub last_use: Option<SystemTime>,
    /// What an on-demand version's last load measured, in bytes: what the memory budget counts for it.
    pub cost: Option<u64>,
}

#[derive(Debug, Clone, Error)]
pub enum LookupError {
    #[error("unknown model '{model}'")]
    ModelNotFound { model: String },
    #[error("model '{model}' has no version '{version}'")]
    VersionNotFound { model: String, version: String },
    #[error("model '{model}' is not available: {reason}")]
    Unavailable { model: String, reason: String },
    #[error("model '{model}' follows the MLflow Model Registry: move its aliases in MLflow to change what it serves")]
    Followed { model: String },
    /// An on-demand version that is not loaded: the request loads it ([`ModelTable::load_on_demand`]).
    #[error("model '{model}' version {version} is not loaded")]
    NotLoaded { model: String, version: u64 },
    /// An on-demand version that cannot answer yet: its load failed and backs off, or it did not load (or find
    /// room under the budget) before the request's deadline.
    #[error("model '{model}' is not available yet: {reason}")]
    LoadPending { model: String, reason: String, retry_after: Duration },
}
