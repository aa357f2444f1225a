//! The table of served models and the states of their versions.
//!
//! Each model's versions are one [`VersionSet`] value behind an `ArcSwap`: a change builds a new set and stores
//! it in one step, and a request holds the `Arc<ServingVersion>` it started on until it has been answered.

mod mlflow;
mod traffic;

pub use mlflow::{MlflowFollower, MlflowStatus};
pub use traffic::Routed;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use thiserror::Error;

use crate::backend::{BackendError, Backends, Device, Signature};
use crate::config::RequestLimits;
use crate::repository::local::{FileStamp, ModelFingerprint};
use crate::repository::{
    self, DeclaredSignature, DistributionChoice, ModelConfig, ModelListing, ModelSpec, MonitoringConfig,
};
use crate::scheduler::{BatchPolicy, Scheduler, SchedulerConfig, Warmup};
use crate::telemetry::{
    DEFAULT_SCORE_BUCKETS, Distribution, DriftMonitor, MAX_CLASSES, MonitorSpec, Reference, Telemetry, VersionMetrics,
};
use crate::tensor::{DataType, Tensor};
use crate::traffic::rollout::TrafficState;

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

/// Where one version stands.
#[derive(Debug, Clone)]
pub enum VersionState {
    Loading,
    /// Loaded; its instances run the warm-up inferences before it takes traffic.
    WarmingUp,
    Ready(Arc<ServingVersion>),
    Failed(String),
    /// Taken out of service by the repository API; requests in flight on it finish.
    Unloaded,
}

impl VersionState {
    /// The state's name in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            VersionState::Loading => "loading",
            VersionState::WarmingUp => "warming_up",
            VersionState::Ready(_) => "ready",
            VersionState::Failed(_) => "failed",
            VersionState::Unloaded => "unloaded",
        }
    }

    /// "version 2 failed: ...", for error messages.
    pub fn describe(&self, version: u64) -> String {
        match self {
            VersionState::Loading => format!("version {version} is loading"),
            VersionState::WarmingUp => format!("version {version} is warming up"),
            VersionState::Failed(reason) => format!("version {version} failed: {reason}"),
            VersionState::Ready(_) => format!("version {version} is ready"),
            VersionState::Unloaded => format!("version {version} is unloaded"),
        }
    }
}

/// Every version of one model, swapped as a whole.
#[derive(Debug, Clone, Default)]
pub struct VersionSet {
    pub versions: BTreeMap<u64, VersionState>,
    /// Set when the model as a whole cannot be served (e.g. its model.toml is invalid).
    pub model_error: Option<String>,
    /// Names of versions (MLflow aliases): alias → version.
    pub aliases: BTreeMap<String, u64>,
    /// The version unversioned requests go to; `None`: the highest ready one.
    pub default_version: Option<u64>,
}

impl VersionSet {
    /// The version unversioned requests go to: the default version, or without one the highest ready version.
    pub fn default_ready(&self) -> Option<&Arc<ServingVersion>> {
        fn ready(state: &VersionState) -> Option<&Arc<ServingVersion>> {
            match state {
                VersionState::Ready(v) => Some(v),
                _ => None,
            }
        }
        match self.default_version {
            Some(version) => self.versions.get(&version).and_then(ready),
            None => self.versions.values().rev().find_map(ready),
        }
    }

    /// The aliases that name `version`.
    pub fn aliases_of(&self, version: u64) -> Vec<String> {
        self.aliases.iter().filter(|&(_, &v)| v == version).map(|(alias, _)| alias.clone()).collect()
    }

    fn unavailable_reason(&self) -> String {
        if let Some(error) = &self.model_error {
            return error.clone();
        }
        let reasons: Vec<String> = self.versions.iter().map(|(&v, state)| state.describe(v)).collect();
        if reasons.is_empty() { "no version is available".to_owned() } else { reasons.join("; ") }
    }
}

#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub versions: ArcSwap<VersionSet>,
    /// The traffic policy and rollout of the model's unpinned requests.
    pub traffic: Arc<TrafficState>,
    /// Versions taken out of service whose requests in flight still hold them.
    draining: Mutex<Vec<(u64, Weak<ServingVersion>)>>,
}

impl ModelEntry {
    fn new(name: &str, set: VersionSet) -> ModelEntry {
        ModelEntry {
            name: name.to_owned(),
            versions: ArcSwap::from_pointee(set),
            traffic: Arc::new(TrafficState::default()),
            draining: Mutex::new(Vec::new()),
        }
    }

    /// Records versions taken out of service, forgetting those already freed.
    fn drain(&self, versions: Vec<(u64, Weak<ServingVersion>)>) {
        let mut draining = self.draining.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        draining.retain(|(_, v)| v.strong_count() > 0);
        draining.extend(versions.into_iter().filter(|(_, v)| v.strong_count() > 0));
    }

    /// (version, requests holding it) of every version still draining. Counting takes no reference, so looking
    /// never delays the free.
    pub fn draining(&self) -> Vec<(u64, usize)> {
        let mut draining = self.draining.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        draining.retain(|(_, v)| v.strong_count() > 0);
        draining.iter().map(|(version, v)| (*version, v.strong_count())).filter(|&(_, n)| n > 0).collect()
    }
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

/// name → model, shared by every request.
#[derive(Debug)]
pub struct ModelTable {
    models: DashMap<String, Arc<ModelEntry>>,
    /// Loaders (the repository's, MLflow's) still doing their first pass.
    startup_pending: AtomicUsize,
    /// Models that follow the MLflow Model Registry; the local repository's folders of those names are ignored.
    followed: HashSet<String>,
    mlflow_status: ArcSwapOption<MlflowStatus>,
    telemetry: Arc<Telemetry>,
    backends: Arc<Backends>,
    repository: PathBuf,
    /// Where rollout states are kept across restarts; `None` keeps them in memory only.
    state_dir: Option<PathBuf>,
    /// Serialises loads and unloads, so two changes of one model never interleave.
    control: tokio::sync::Mutex<()>,
    /// What one inference request may ask for.
    request_limits: RequestLimits,
}

impl ModelTable {
    pub fn new(telemetry: Arc<Telemetry>, backends: Arc<Backends>, repository: PathBuf) -> ModelTable {
        ModelTable {
            models: DashMap::new(),
            startup_pending: AtomicUsize::new(1),
            followed: HashSet::new(),
            mlflow_status: ArcSwapOption::empty(),
            telemetry,
            backends,
            repository,
            state_dir: None,
            control: tokio::sync::Mutex::new(()),
            request_limits: RequestLimits::default(),
        }
    }

    /// Requests past these limits are refused before they are queued.
    pub fn with_request_limits(mut self, limits: RequestLimits) -> ModelTable {
        self.request_limits = limits;
        self
    }

    pub fn request_limits(&self) -> &RequestLimits {
        &self.request_limits
    }

    /// Keeps rollout states and API traffic policies in `dir`, so a restart resumes them; `None` keeps them in
    /// memory only.
    pub fn with_state_dir(mut self, dir: Option<PathBuf>) -> ModelTable {
        self.state_dir = dir;
        self
    }

    /// These models follow the MLflow Model Registry (see [`ModelTable::follow_mlflow`]), whose first pass also
    /// holds readiness back.
    pub fn with_mlflow_models(mut self, names: impl IntoIterator<Item = String>) -> ModelTable {
        self.followed.extend(names);
        if !self.followed.is_empty() {
            self.startup_pending.fetch_add(1, Ordering::AcqRel);
        }
        self
    }

    fn is_followed(&self, name: &str) -> bool {
        self.followed.contains(name)
    }

    fn startup_done(&self) {
        let _ = self.startup_pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// What the MLflow follower last saw; `None` without MLflow.
    pub fn mlflow_status(&self) -> Option<Arc<MlflowStatus>> {
        self.mlflow_status.load_full()
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Every version serving now.
    pub fn serving_versions(&self) -> Vec<Arc<ServingVersion>> {
        let mut serving = Vec::new();
        for entry in self.models.iter() {
            for state in entry.versions.load().versions.values() {
                if let VersionState::Ready(v) = state {
                    serving.push(Arc::clone(v));
                }
            }
        }
        serving
    }

    /// True once every model the repository asked for at start has been loaded or has failed.
    pub fn is_ready(&self) -> bool {
        self.startup_pending.load(Ordering::Acquire) == 0
    }

    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.models.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    pub fn entry(&self, model: &str) -> Result<Arc<ModelEntry>, LookupError> {
        self.models
            .get(model)
            .map(|e| Arc::clone(e.value()))
            .ok_or_else(|| LookupError::ModelNotFound { model: model.to_owned() })
    }

    /// The version a request goes to: the one named (by number or alias), or the default one.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<ServingVersion>, LookupError> {
        let entry = self.entry(model)?;
        let set = entry.versions.load();
        let unavailable = |reason: String| LookupError::Unavailable { model: model.to_owned(), reason };
        if let Some(error) = &set.model_error {
            return Err(unavailable(error.clone()));
        }
        match version {
            None => set.default_ready().cloned().ok_or_else(|| unavailable(set.unavailable_reason())),
            Some(text) => {
                let not_found = || LookupError::VersionNotFound { model: model.to_owned(), version: text.to_owned() };
                let number: u64 = match text.parse() {
                    Ok(number) => number,
                    Err(_) => *set.aliases.get(text).ok_or_else(not_found)?,
                };
                match set.versions.get(&number).ok_or_else(not_found)? {
                    VersionState::Ready(v) => Ok(Arc::clone(v)),
                    state => Err(unavailable(state.describe(number))),
                }
            }
        }
    }

    /// Loads every model of a local repository folder. Broken models and versions are logged and recorded with
    /// their reason; the others serve regardless. Every model is listed (as loading) before the first one loads.
    pub async fn load_local_repository(self: &Arc<Self>) {
        let root = self.repository.clone();
        let listings = match tokio::task::spawn_blocking(move || repository::local::scan(&root)).await {
            Ok(Ok(listings)) => listings,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot scan the model repository");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "the repository scan failed");
                Vec::new()
            }
        };
        let listings: Vec<ModelListing> = listings.into_iter().filter(|l| !self.is_followed(&l.name)).collect();
        for listing in &listings {
            let mut set = VersionSet::default();
            if let Ok(versions) = &listing.versions {
                for v in versions.iter().filter(|v| v.spec.is_ok()) {
                    set.versions.insert(v.version, VersionState::Loading);
                    self.telemetry.set_version_state(&listing.name, v.version, "loading");
                }
            }
            self.models.insert(listing.name.clone(), Arc::new(ModelEntry::new(&listing.name, set)));
        }
        for listing in listings {
            let _control = self.control.lock().await;
            self.apply_listing(listing, true).await;
        }
        self.startup_done();
        tracing::info!(models = self.models.len(), "model repository loaded");
    }

    /// Brings one model in line with the repository folder (see [`ModelTable::apply_listing`]); with `reload`,
    /// even versions already serving the same file are loaded afresh. A model whose folder is gone is unloaded.
    pub async fn sync_model(&self, name: &str, reload: bool) -> Result<(), LookupError> {
        if self.is_followed(name) {
            return Err(LookupError::Followed { model: name.to_owned() });
        }
        let _control = self.control.lock().await;
        let (root, model) = (self.repository.clone(), name.to_owned());
        let listing =
            tokio::task::spawn_blocking(move || repository::local::scan_one(&root, &model)).await.ok().flatten();
        match listing {
            Some(listing) => {
                self.apply_listing(listing, reload).await;
                Ok(())
            }
            None if self.models.contains_key(name) => self.unload_locked(name),
            None => Err(LookupError::ModelNotFound { model: name.to_owned() }),
        }
    }

    /// Makes a source's listing of one model what is served: every listed version is loaded (with `reload`, even
    /// those already serving the same file), then the new set of versions replaces the old one in one store. A
    /// version whose new copy fails to load keeps serving the copy it had; versions no longer listed stop taking
    /// requests and drain (they are freed once their requests in flight are answered). A broken version never
    /// replaces a working one: when the version that would answer unversioned requests does not serve, the one
    /// that answered them before keeps doing so. The caller holds `control`.
    async fn apply_listing(&self, listing: ModelListing, reload: bool) {
        let name = listing.name.as_str();
        let entry = self.models.get(name).map(|e| Arc::clone(e.value()));
        let previous = entry.as_ref().map(|entry| entry.versions.load_full());
        let entry = match entry {
            Some(entry) => entry,
            None => {
                let entry = Arc::new(ModelEntry::new(name, VersionSet::default()));
                self.models.insert(name.to_owned(), Arc::clone(&entry));
                entry
            }
        };
        let serving_before = |version: u64| {
            previous.as_ref().and_then(|set| match set.versions.get(&version) {
                Some(VersionState::Ready(serving)) => Some(Arc::clone(serving)),
                _ => None,
            })
        };
        let file_traffic = listing.versions.as_ref().ok().and_then(|versions| {
            let spec = versions.iter().find_map(|v| v.spec.as_ref().ok())?;
            Some((spec.config.traffic.clone(), spec.config.rollout.clone()))
        });
        let mut set =
            VersionSet { aliases: listing.aliases, default_version: listing.default_version, ..Default::default() };
        match listing.versions {
            Err(e) => {
                tracing::error!(model = name, error = %e, "model cannot be served");
                set.model_error = Some(e.to_string());
            }
            Ok(versions) => {
                let mut to_load = Vec::new();
                for v in versions {
                    let current = serving_before(v.version);
                    match v.spec {
                        Err(e) => {
                            tracing::error!(model = name, version = v.version, error = %e, "version cannot be served");
                            let state = keep_serving(name, v.version, VersionState::Failed(e.to_string()), current);
                            set.versions.insert(v.version, state);
                        }
                        Ok(spec) => match current {
                            Some(serving)
                                if !reload
                                    && serving.stamp.is_some()
                                    && serving.stamp == FileStamp::of(&spec.model_path)
                                    && same_serving_config(&serving.model_config, &spec.config) =>
                            {
                                set.versions.insert(v.version, VersionState::Ready(serving));
                            }
                            current => to_load.push((spec, current)),
                        },
                    }
                }
                // What is about to load shows as loading (a copy that serves keeps serving meanwhile).
                let loading: Vec<u64> =
                    to_load.iter().filter(|(_, current)| current.is_none()).map(|(spec, _)| spec.version).collect();
                publish_states(&entry, &self.telemetry, &loading, &VersionState::Loading);
                for (spec, current) in to_load {
                    let version = spec.version;
                    let state = keep_serving(name, version, self.load_spec(spec, Arc::clone(&entry)).await, current);
                    set.versions.insert(version, state);
                }
            }
        }
        if let (Some(error), Some(previous)) = (&set.model_error, &previous)
            && previous.default_ready().is_some()
        {
            tracing::warn!(model = name, %error, "the model's new listing is unusable; the loaded versions keep serving");
            return;
        }
        // An alias moved to a version that does not serve keeps naming the version it named, while that one serves.
        if let Some(previous) = &previous {
            let aliases: Vec<(String, u64)> = set.aliases.iter().map(|(a, &v)| (a.clone(), v)).collect();
            for (alias, version) in aliases {
                if matches!(set.versions.get(&version), Some(VersionState::Ready(_))) {
                    continue;
                }
                let Some(&before) = previous.aliases.get(&alias) else { continue };
                let Some(VersionState::Ready(serving)) = previous.versions.get(&before) else { continue };
                tracing::warn!(model = name, %alias, version, kept = before, "the alias's new version does not serve; it keeps naming the one it named");
                set.versions.insert(before, VersionState::Ready(Arc::clone(serving)));
                set.aliases.insert(alias, before);
                if set.default_version == Some(version) {
                    set.default_version = Some(before);
                }
            }
        }
        // The version unversioned requests went to keeps answering them when the new one does not serve.
        if let Some(previous) = &previous
            && let Some(before) = previous.default_ready()
        {
            let new_default_serves = match set.default_version {
                Some(v) => matches!(set.versions.get(&v), Some(VersionState::Ready(_))),
                None => set.default_ready().is_some(),
            };
            if !new_default_serves {
                tracing::warn!(
                    model = name,
                    version = before.version,
                    "the version that should answer unversioned requests does not serve; this one keeps answering them"
                );
                if !matches!(set.versions.get(&before.version), Some(VersionState::Ready(_))) {
                    set.versions.insert(before.version, VersionState::Ready(Arc::clone(before)));
                }
                set.default_version = Some(before.version);
            }
        }
        if let Some(previous) = &previous {
            let mut draining = Vec::new();
            for (&version, state) in &previous.versions {
                if matches!(state, VersionState::Unloaded) {
                    set.versions.entry(version).or_insert(VersionState::Unloaded);
                }
                let VersionState::Ready(old) = state else { continue };
                let kept =
                    matches!(set.versions.get(&version), Some(VersionState::Ready(new)) if Arc::ptr_eq(new, old));
                if !kept {
                    tracing::info!(model = name, version, "version taken out of service; draining");
                    draining.push((version, Arc::downgrade(old)));
                    set.versions.entry(version).or_insert(VersionState::Unloaded);
                }
            }
            entry.drain(draining);
        }
        for (&version, state) in &set.versions {
            self.telemetry.set_version_state(name, version, state.name());
        }
        entry.versions.store(Arc::new(set));
        tracing::info!(model = name, "model versions updated");
        if let Some((traffic, rollout)) = file_traffic {
            self.apply_file_traffic(&entry, traffic, rollout);
        }
    }

    /// Loads (or reloads) a model from the repository folder, every version afresh.
    pub async fn load_model(&self, name: &str) -> Result<(), LookupError> {
        self.sync_model(name, true).await
    }

    /// Watches the repository folder until `stop`: file-system notifications, and a look every `interval` as the
    /// fallback (notifications are lost on some file systems, e.g. network mounts). A model whose files changed is
    /// synced once the change has settled: its files unchanged since the previous look and left alone for `settle`
    /// (a copy still being written keeps changing, so a half-written version is never loaded). A notification
    /// brings the next look forward to `settle` after it.
    ///
    /// `applied` is what the table was loaded from (fingerprinted before the initial load, so a change made during
    /// it is picked up).
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        settle: Duration,
        mut applied: HashMap<String, ModelFingerprint>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let (events, mut notified) = tokio::sync::mpsc::channel::<()>(1);
        let _watcher = notifications(&self.repository, events);
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
            let now = self.fingerprints().await;
            let mut pending = false;
            for (name, fingerprint) in &now {
                if applied.get(name) == Some(fingerprint) {
                    continue;
                }
                if last.get(name) == Some(fingerprint) && fingerprint.settled(settle) {
                    tracing::info!(model = %name, "model files changed");
                    if let Err(e) = self.sync_model(name, false).await {
                        tracing::warn!(model = %name, error = %e, "cannot sync the model");
                    }
                    applied.insert(name.clone(), fingerprint.clone());
                } else {
                    pending = true;
                }
            }
            last = now;
            next_look = tokio::time::Instant::now() + if pending { settle.min(interval) } else { interval };
        }
    }

    /// The fingerprint of every model folder of the repository and of every model in the table (a model whose
    /// folder is gone fingerprints as empty).
    pub async fn fingerprints(&self) -> HashMap<String, ModelFingerprint> {
        let root = self.repository.clone();
        let known = self.model_names();
        let followed = self.followed.clone();
        tokio::task::spawn_blocking(move || {
            let mut names = repository::local::model_names(&root).unwrap_or_default();
            names.extend(known);
            names
                .into_iter()
                .filter(|name| !followed.contains(name))
                .map(|name| (name.clone(), ModelFingerprint::of(&root, &name)))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Takes every version of a model out of service. Requests in flight finish on the version they started on.
    pub async fn unload_model(&self, name: &str) -> Result<(), LookupError> {
        if self.is_followed(name) {
            return Err(LookupError::Followed { model: name.to_owned() });
        }
        let _control = self.control.lock().await;
        self.unload_locked(name)
    }

    fn unload_locked(&self, name: &str) -> Result<(), LookupError> {
        let entry = self.entry(name)?;
        let mut set = VersionSet::clone(&entry.versions.load());
        let mut draining = Vec::new();
        for (&version, state) in set.versions.iter_mut() {
            if let VersionState::Ready(serving) = state {
                draining.push((version, Arc::downgrade(serving)));
            }
            *state = VersionState::Unloaded;
            self.telemetry.set_version_state(name, version, "unloaded");
        }
        set.model_error = None;
        entry.versions.store(Arc::new(set));
        entry.drain(draining);
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Every model of the repository folder and of the table, with each version's state and reason; versions
    /// taken out of service whose requests are still in flight are listed as UNLOADING.
    pub fn index(&self) -> Vec<IndexEntry> {
        let mut names = repository::local::model_names(&self.repository).unwrap_or_default();
        names.retain(|name| !self.is_followed(name));
        names.extend(self.model_names());
        names.sort();
        names.dedup();
        let mut index = Vec::new();
        for name in names {
            let row = |version, state, reason: String, aliases| IndexEntry {
                name: name.clone(),
                version,
                state,
                reason,
                aliases,
            };
            let Ok(entry) = self.entry(&name) else {
                index.push(row(None, "UNAVAILABLE", "not loaded".to_owned(), Vec::new()));
                continue;
            };
            let set = entry.versions.load();
            if let Some(error) = &set.model_error {
                index.push(row(None, "UNAVAILABLE", error.clone(), Vec::new()));
            }
            let draining = entry.draining();
            for (&version, state) in &set.versions {
                let (state, reason) = match state {
                    VersionState::Ready(_) => ("READY", String::new()),
                    VersionState::Loading => ("LOADING", String::new()),
                    VersionState::WarmingUp => ("LOADING", "warming up".to_owned()),
                    VersionState::Failed(reason) => ("UNAVAILABLE", reason.clone()),
                    // Its draining copy gets its own row below.
                    VersionState::Unloaded if draining.iter().any(|&(v, _)| v == version) => continue,
                    VersionState::Unloaded => ("UNAVAILABLE", "unloaded".to_owned()),
                };
                index.push(row(Some(version), state, reason, set.aliases_of(version)));
            }
            for (version, holders) in draining {
                let reason = format!("draining: {holders} request(s) in flight");
                index.push(row(Some(version), "UNLOADING", reason, Vec::new()));
            }
        }
        index
    }

    /// Loads one version of `entry`'s model, showing it as warming up in the entry while its instances warm up
    /// (unless a copy of it serves meanwhile).
    async fn load_spec(&self, spec: ModelSpec, entry: Arc<ModelEntry>) -> VersionState {
        let (name, version) = (spec.name.clone(), spec.version);
        let (telemetry, backends) = (Arc::clone(&self.telemetry), Arc::clone(&self.backends));
        let warming = {
            let telemetry = Arc::clone(&telemetry);
            move || publish_states(&entry, &telemetry, &[version], &VersionState::WarmingUp)
        };
        match tokio::task::spawn_blocking(move || load_version(&spec, &backends, &telemetry, &warming)).await {
            Ok(Ok(serving)) => VersionState::Ready(Arc::new(serving)),
            Ok(Err(e)) => {
                tracing::error!(model = %name, version, error = %e, "version failed to load");
                VersionState::Failed(e.to_string())
            }
            Err(e) => {
                tracing::error!(model = %name, version, error = %e, "version loader failed");
                VersionState::Failed(format!("the loader failed: {e}"))
            }
        }
    }

    /// Explicit mode's start: loads the named models, then reports ready.
    pub async fn load_named(&self, names: &[String]) {
        for name in names {
            if let Err(e) = self.sync_model(name, true).await {
                tracing::error!(model = %name, error = %e, "cannot load the model named by --load-model");
            }
        }
        self.startup_done();
        tracing::info!(models = self.models.len(), "named models loaded");
    }
}

/// A version's new state, unless it failed while a loaded copy of it serves: that copy keeps serving.
fn keep_serving(model: &str, version: u64, state: VersionState, serving: Option<Arc<ServingVersion>>) -> VersionState {
    match (state, serving) {
        (VersionState::Failed(reason), Some(serving)) => {
            tracing::warn!(model, version, %reason, "the new copy is unusable; the loaded copy keeps serving");
            VersionState::Ready(serving)
        }
        (state, _) => state,
    }
}

/// Shows `versions` of `entry` in `state` (loading, warming up) in the live set and the metrics, except those
/// that serve now: a copy being replaced keeps serving until the new one is ready.
fn publish_states(entry: &ModelEntry, telemetry: &Telemetry, versions: &[u64], state: &VersionState) {
    if versions.is_empty() {
        return;
    }
    let serves = |set: &VersionSet, version: u64| matches!(set.versions.get(&version), Some(VersionState::Ready(_)));
    entry.versions.rcu(|set| {
        let mut next = VersionSet::clone(set);
        for &version in versions {
            if !serves(set, version) {
                next.versions.insert(version, state.clone());
            }
        }
        next
    });
    let set = entry.versions.load();
    for &version in versions.iter().filter(|&&v| !serves(&set, v)) {
        telemetry.set_version_state(&entry.name, version, state.name());
    }
}

/// Loads, checks and starts one version; blocking, run off the async workers. `warming` is called once the
/// backend has loaded, before the instances run their warm-up inferences.
fn load_version(
    spec: &ModelSpec,
    backends: &Backends,
    telemetry: &Telemetry,
    warming: &dyn Fn(),
) -> Result<ServingVersion, BackendError> {
    let started = Instant::now();
    let stamp = FileStamp::of(&spec.model_path);
    repository::local::verify_checksum(&spec.model_path)
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let backend = backends.load(&spec.model_path, &spec.config)?;
    let config = &spec.config;
    let checked = match &spec.declared {
        Some(declared) => check_declared(declared, backend.signature()),
        None => Ok(()),
    };
    checked
        .and_then(|()| check_batchable(backend.signature(), config.max_batch_size))
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let label = format!("{}-{}", spec.name, spec.version);
    let monitors = monitor_plan(backend.signature(), &config.monitoring)
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let drift = drift_monitor(spec, backend.signature(), &monitors, telemetry.window())
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let metrics = telemetry.version(&spec.name, spec.version, &monitors, drift);
    let scheduling = scheduler_config(config, backend.signature())
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    if scheduling.warmup.is_some() {
        warming();
    }
    let scheduler = Scheduler::start(&label, Arc::clone(&backend), scheduling, metrics.clone())?;
    telemetry.set_load_duration(&spec.name, spec.version, started.elapsed());
    tracing::info!(
        model = %spec.name,
        version = spec.version,
        backend = backend.name(),
        device = %backend.device(),
        load_ms = started.elapsed().as_millis() as u64,
        "version ready"
    );
    Ok(ServingVersion {
        name: spec.name.clone(),
        version: spec.version,
        backend_name: backend.name(),
        device: backend.device(),
        model_config: Arc::clone(&spec.config),
        stamp,
        signature: backend.signature().clone(),
        scheduler,
        metrics,
    })
}

/// Checks the signature a source declares (MLflow's `MLmodel`) against the graph's: every declared tensor must
/// exist (by name, or by position when unnamed) with the same datatype and rank, and equal fixed dimensions.
fn check_declared(declared: &DeclaredSignature, signature: &Signature) -> Result<(), String> {
    let sides = [("input", &declared.inputs, &signature.inputs), ("output", &declared.outputs, &signature.outputs)];
    for (side, declared, actual) in sides {
        for (position, tensor) in declared.iter().enumerate() {
            let label = tensor.name.clone().unwrap_or_else(|| format!("#{position}"));
            let found = match &tensor.name {
                Some(name) => actual.iter().find(|spec| &spec.name == name),
                None => actual.get(position),
            };
            let Some(spec) = found else {
                let names: Vec<&str> = actual.iter().map(|spec| spec.name.as_str()).collect();
                return Err(format!(
                    "the MLmodel signature declares {side} '{label}', which the ONNX graph does not have (its \
                     {side}s: {})",
                    names.join(", ")
                ));
            };
            let dims_agree = tensor.shape.len() == spec.shape.len()
                && tensor.shape.iter().zip(&spec.shape).all(|(&d, &a)| d < 0 || a < 0 || d == a);
            if tensor.datatype != spec.datatype || !dims_agree {
                return Err(format!(
                    "the MLmodel signature declares {side} '{label}' as {} {:?}, but the ONNX graph has {}",
                    tensor.datatype.as_str(),
                    tensor.shape,
                    spec.describe()
                ));
            }
        }
    }
    Ok(())
}

/// Batching stacks requests along dimension 0 and splits outputs back by rows, so every input and output must
/// have the same free first dimension (the batch), not merely some free one.
fn check_batchable(signature: &Signature, max_batch_size: usize) -> Result<(), String> {
    if max_batch_size == 0 {
        return Ok(());
    }
    let batch_dim = |spec: &crate::backend::TensorSpec| spec.dim_names.first().cloned().flatten();
    let mut specs = signature.inputs.iter().chain(&signature.outputs);
    let batch = signature.inputs.first().and_then(batch_dim);
    let mismatch = specs.find(|spec| batch.is_none() || batch_dim(spec) != batch);
    match mismatch {
        Some(spec) => Err(format!(
            "max_batch_size = {max_batch_size} needs every input and output to share one free first (batch) \
             dimension, but '{}' is {} with first dimension {}",
            spec.name,
            spec.describe(),
            batch_dim(spec).unwrap_or_else(|| "fixed".to_owned())
        )),
        None => Ok(()),
    }
}

/// The version's `reference.json`, if its folder has one.
pub const REFERENCE_FILE: &str = "reference.json";

/// Drift trackers for what the version's `reference.json` describes; none without one.
fn drift_monitor(
    spec: &ModelSpec,
    signature: &Signature,
    monitors: &[MonitorSpec],
    window: Duration,
) -> Result<DriftMonitor, String> {
    let Some(path) = spec.model_path.parent().map(|dir| dir.join(REFERENCE_FILE)) else {
        return Ok(DriftMonitor::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DriftMonitor::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let reference: Reference = serde_json::from_str(&text).map_err(|e| format!("invalid {}: {e}", path.display()))?;
    let inputs: Vec<(String, Option<usize>)> = signature
        .inputs
        .iter()
        .map(|i| {
            let float = matches!(i.datatype, DataType::Fp32 | DataType::Fp64);
            let width = match i.shape.as_slice() {
                [_, f] if float && *f > 0 => usize::try_from(*f).ok(),
                _ => None,
            };
            (i.name.clone(), width)
        })
        .collect();
    DriftMonitor::new(&reference, monitors, &inputs, window).map_err(|e| format!("{}: {e}", path.display()))
}

/// Which outputs' predictions to count: those `[monitoring]` names, or, when it names none, every output that
/// looks like a classifier's (integer labels [N], or scores [N, K]) or a score ([N] or [N, 1]).
pub fn monitor_plan(signature: &Signature, monitoring: &MonitoringConfig) -> Result<Vec<MonitorSpec>, String> {
    if !monitoring.predictions {
        return Ok(Vec::new());
    }
    let is_integer = |dt: DataType| !matches!(dt, DataType::Fp32 | DataType::Fp64 | DataType::Bytes);
    if monitoring.outputs.is_empty() {
        let inferred = signature.outputs.iter().enumerate().filter_map(|(output, spec)| {
            let distribution = match (spec.datatype, spec.shape.as_slice()) {
                (DataType::Bytes, _) => return None,
                (dt, [_]) if is_integer(dt) => Distribution::Labels,
                (_, [_]) => Distribution::Histogram(DEFAULT_SCORE_BUCKETS.to_vec()),
                (dt, [_, 1]) if !is_integer(dt) => Distribution::Histogram(DEFAULT_SCORE_BUCKETS.to_vec()),
                (_, [_, k]) if (2..=MAX_CLASSES as i64).contains(k) => Distribution::Argmax,
                _ => return None,
            };
            Some(MonitorSpec { output, name: spec.name.clone(), distribution })
        });
        return Ok(inferred.collect());
    }
    monitoring
        .outputs
        .iter()
        .map(|watched| {
            let output = signature.output_index(&watched.name).ok_or_else(|| {
                format!("[monitoring] names output '{}', which the model does not have", watched.name)
            })?;
            let spec = &signature.outputs[output];
            let distribution = match watched.distribution {
                DistributionChoice::Classes if is_integer(spec.datatype) => Distribution::Labels,
                DistributionChoice::Classes if spec.shape.len() == 2 => Distribution::Argmax,
                DistributionChoice::Classes => {
                    return Err(format!(
                        "[monitoring] output '{}' is {}: classes need integer labels or a [N, K] score output",
                        spec.name,
                        spec.describe()
                    ));
                }
                DistributionChoice::Histogram if watched.buckets.is_empty() => {
                    Distribution::Histogram(DEFAULT_SCORE_BUCKETS.to_vec())
                }
                DistributionChoice::Histogram => Distribution::Histogram(watched.buckets.clone()),
            };
            Ok(MonitorSpec { output, name: spec.name.clone(), distribution })
        })
        .collect()
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

/// Whether a version loaded with `loaded` can keep serving under `new`: everything but the version policy (which
/// only decides which versions serve) must be the same.
fn same_serving_config(loaded: &ModelConfig, new: &ModelConfig) -> bool {
    let policy_free = |c: &ModelConfig| ModelConfig {
        version_policy: repository::VersionPolicy::All,
        traffic: None,
        rollout: None,
        ..c.clone()
    };
    policy_free(loaded) == policy_free(new)
}

/// One row of zeros (empty strings for BYTES) per input, every free dimension 1.
fn warmup_inputs(signature: &Signature) -> Result<Vec<Tensor>, String> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec.shape.iter().map(|&d| usize::try_from(d).unwrap_or(1).max(1)).collect();
            let elements: usize = shape.iter().product();
            let bytes = match spec.datatype.element_size() {
                Some(size) => vec![0u8; elements * size],
                None => vec![0u8; elements * 4],
            };
            Tensor::new(spec.datatype, shape, bytes::Bytes::from(bytes))
                .map_err(|e| format!("warm-up input '{}': {e}", spec.name))
        })
        .collect()
}

/// The batch sizes to warm up: as configured, else one row. (Warming every size of a batched conv model on ONNX
/// Runtime's CUDA provider was measured and did not help: it chooses its algorithms again on each change of shape.)
fn warmup_batch_sizes(config: &ModelConfig) -> Vec<usize> {
    match &config.warmup.batch_sizes[..] {
        [] => vec![1],
        sizes => sizes.to_vec(),
    }
}

fn scheduler_config(config: &ModelConfig, signature: &Signature) -> Result<SchedulerConfig, String> {
    let batching = &config.batching;
    let mut preferred_batch_sizes = batching.preferred_batch_sizes.clone();
    preferred_batch_sizes.sort_unstable();
    preferred_batch_sizes.dedup();
    Ok(SchedulerConfig {
        policy: BatchPolicy {
            max_batch_size: config.max_batch_size,
            max_queue_delay: Duration::from_micros(batching.max_queue_delay_us),
            preferred_batch_sizes,
            max_queue_size: batching.max_queue_size,
        },
        instances: batching.instances,
        default_timeout: (batching.default_timeout_ms > 0).then(|| Duration::from_millis(batching.default_timeout_ms)),
        warmup: match config.warmup.runs {
            0 => None,
            runs => Some(Warmup { row: warmup_inputs(signature)?, batch_sizes: warmup_batch_sizes(config), runs }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TensorSpec;
    use crate::tensor::DataType;

    fn spec(name: &str, shape: Vec<i64>, first: Option<&str>) -> TensorSpec {
        let mut dim_names = vec![None; shape.len()];
        dim_names[0] = first.map(str::to_owned);
        TensorSpec { name: name.into(), datatype: DataType::Fp32, dim_names, shape }
    }

    #[test]
    fn warm_up_covers_the_configured_batch_sizes() {
        let config = |text: &str| ModelConfig::parse(text).unwrap();
        assert_eq!(warmup_batch_sizes(&config("max_batch_size = 8")), vec![1]);
        assert_eq!(warmup_batch_sizes(&config("device = \"cuda:0\"\nmax_batch_size = 4")), vec![1]);
        let chosen = config("device = \"cuda:0\"\nmax_batch_size = 64\n[warmup]\nbatch_sizes = [1, 64]");
        assert_eq!(warmup_batch_sizes(&chosen), vec![1, 64]);
        let cpu = config("max_batch_size = 64\n[warmup]\nbatch_sizes = [16]");
        assert_eq!(warmup_batch_sizes(&cpu), vec![16]);
        let refused = ModelConfig::parse("max_batch_size = 4\n[warmup]\nbatch_sizes = [8]").unwrap_err();
        assert!(refused.contains("between 1 and max_batch_size (4), got 8"), "{refused}");
        assert!(ModelConfig::parse("[warmup]\nbatch_sizes = [2]").is_err());
    }

    #[test]
    fn batching_needs_one_shared_batch_dimension() {
        let ok = Signature {
            inputs: vec![spec("x", vec![-1, 4], Some("N"))],
            outputs: vec![spec("y", vec![-1], Some("N"))],
            notes: vec![],
        };
        assert!(check_batchable(&ok, 8).is_ok());
        let fixed = Signature {
            inputs: vec![spec("x", vec![-1, 4], Some("N"))],
            outputs: vec![spec("y", vec![3], None)],
            notes: vec![],
        };
        let err = check_batchable(&fixed, 8).unwrap_err();
        assert!(err.contains("'y' is FP32 [3] with first dimension fixed"), "{err}");
        assert!(check_batchable(&fixed, 0).is_ok());
        let other_symbol = Signature {
            inputs: vec![spec("x", vec![-1, 4], Some("N")), spec("table", vec![-1, 4], Some("M"))],
            outputs: vec![spec("y", vec![-1], Some("N"))],
            notes: vec![],
        };
        assert!(check_batchable(&other_symbol, 8).unwrap_err().contains("'table'"));
    }
}

#[cfg(test)]
mod monitoring_tests {
    use super::*;
    use crate::backend::TensorSpec;
    use crate::repository::OutputMonitoring;

    fn spec(name: &str, datatype: DataType, shape: Vec<i64>) -> TensorSpec {
        TensorSpec { name: name.into(), datatype, dim_names: vec![None; shape.len()], shape }
    }

    fn signature() -> Signature {
        Signature {
            inputs: vec![spec("x", DataType::Fp32, vec![-1, 4])],
            outputs: vec![
                spec("label", DataType::Int64, vec![-1]),
                spec("probabilities", DataType::Fp32, vec![-1, 3]),
                spec("score", DataType::Fp32, vec![-1, 1]),
                spec("embedding", DataType::Fp32, vec![-1, 1000]),
                spec("names", DataType::Bytes, vec![-1]),
            ],
            notes: vec![],
        }
    }

    #[test]
    fn classifier_and_score_outputs_are_inferred() {
        let plan = monitor_plan(&signature(), &MonitoringConfig::default()).unwrap();
        let kinds: Vec<(&str, &Distribution)> = plan.iter().map(|m| (m.name.as_str(), &m.distribution)).collect();
        assert_eq!(
            kinds,
            [
                ("label", &Distribution::Labels),
                ("probabilities", &Distribution::Argmax),
                ("score", &Distribution::Histogram(DEFAULT_SCORE_BUCKETS.to_vec())),
            ]
        );
        let off = MonitoringConfig { predictions: false, outputs: Vec::new() };
        assert!(monitor_plan(&signature(), &off).unwrap().is_empty());
    }

    #[test]
    fn configured_outputs_are_checked() {
        let watch = |name: &str, distribution| MonitoringConfig {
            predictions: true,
            outputs: vec![OutputMonitoring { name: name.into(), distribution, buckets: Vec::new() }],
        };
        assert!(
            monitor_plan(&signature(), &watch("nope", DistributionChoice::Classes)).unwrap_err().contains("'nope'")
        );
        assert!(monitor_plan(&signature(), &watch("names", DistributionChoice::Classes)).is_err());
        let plan = monitor_plan(&signature(), &watch("embedding", DistributionChoice::Classes)).unwrap();
        assert_eq!(plan[0].distribution, Distribution::Argmax);
        assert_eq!(plan[0].output, 3);
    }
}
