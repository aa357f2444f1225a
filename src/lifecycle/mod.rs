//! The table of served models and the states of their versions.
//!
//! Each model's versions are one [`VersionSet`] value behind an `ArcSwap`: a change builds a new set and stores
//! it in one step, and a request holds the `Arc<ServingVersion>` it started on until it has been answered.
//! `table` looks up, `version_set` holds the rules of a swap, `sync` brings the table in line with a source's
//! listing (loads and stores only), `loader` loads, checks and warms up one version, `mlflow` follows the
//! registry. The lifecycle knows nothing of traffic: a [`ListingObserver`] hears of every listing applied.

mod loader;
mod mlflow;
mod sync;
mod table;
mod version_set;

pub use loader::{REFERENCE_FILE, monitor_plan};
pub use mlflow::{MlflowFollower, MlflowStatus};
pub use table::ModelTable;
pub use version_set::{VersionSet, VersionState};

use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use thiserror::Error;

use crate::backend::{Device, Signature};
use crate::repository::ModelConfig;
use crate::repository::local::FileStamp;
use crate::scheduler::Scheduler;
use crate::telemetry::VersionMetrics;

/// A loaded version that takes traffic.
#[derive(Debug)]
pub struct ServingVersion {
    pub name: String,
    pub version: u64,
    pub backend_name: &'static str,
    pub device: Device,
    /// The model's `model.toml` as the version was loaded with.
    pub model_config: Arc<ModelConfig>,
    /// The model file as it was when loaded; a different stamp later means a new copy to load.
    pub stamp: Option<FileStamp>,
    pub signature: Signature,
    pub scheduler: Scheduler,
    pub metrics: VersionMetrics,
}

#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub versions: ArcSwap<VersionSet>,
    /// Versions taken out of service whose requests in flight still hold them.
    draining: Mutex<Vec<(u64, Weak<ServingVersion>)>>,
}

impl ModelEntry {
    fn new(name: &str, set: VersionSet) -> ModelEntry {
        ModelEntry { name: name.to_owned(), versions: ArcSwap::from_pointee(set), draining: Mutex::new(Vec::new()) }
    }

    /// Records versions taken out of service, forgetting those already freed.
    fn drain(&self, versions: Vec<(u64, Arc<ServingVersion>)>) {
        let mut draining = self.draining.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        draining.retain(|(_, v)| v.strong_count() > 0);
        draining.extend(versions.into_iter().map(|(version, serving)| (version, Arc::downgrade(&serving))));
    }

    /// (version, requests holding it) of every version still draining. Counting takes no reference, so looking
    /// never delays the free.
    pub fn draining(&self) -> Vec<(u64, usize)> {
        let mut draining = self.draining.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        draining.retain(|(_, v)| v.strong_count() > 0);
        draining.iter().map(|(version, v)| (*version, v.strong_count())).filter(|&(_, n)| n > 0).collect()
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
}

#[derive(Debug, Error)]
pub enum LookupError {
    #[error("unknown model '{model}'")]
    ModelNotFound { model: String },
    #[error("model '{model}' has no version '{version}'")]
    VersionNotFound { model: String, version: String },
    #[error("model '{model}' is not available: {reason}")]
    Unavailable { model: String, reason: String },
    #[error("model '{model}' follows the MLflow Model Registry: move its aliases in MLflow to change what it serves")]
    Followed { model: String },
}
