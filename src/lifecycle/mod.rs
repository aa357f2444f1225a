//! The table of served models and the states of their versions.
//!
//! Each model's versions are one [`VersionSet`] value behind an `ArcSwap`: a change builds a new set and stores
//! it in one step, and a request holds the `Arc<ServingVersion>` it started on until it has been answered.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use thiserror::Error;

use crate::backend::{BackendError, Backends, Device, Signature};
use crate::repository::local::{FileStamp, ModelFingerprint};
use crate::repository::{self, DistributionChoice, ModelConfig, ModelSpec, MonitoringConfig};
use crate::scheduler::{BatchPolicy, Scheduler, SchedulerConfig};
use crate::telemetry::{
    DEFAULT_SCORE_BUCKETS, Distribution, DriftMonitor, MAX_CLASSES, MonitorSpec, Reference, Telemetry, VersionMetrics,
};
use crate::tensor::{DataType, Tensor};

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
            VersionState::Ready(_) => "ready",
            VersionState::Failed(_) => "failed",
            VersionState::Unloaded => "unloaded",
        }
    }

    /// "version 2 failed: ...", for error messages.
    pub fn describe(&self, version: u64) -> String {
        match self {
            VersionState::Loading => format!("version {version} is loading"),
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
}

impl VersionSet {
    /// The highest ready version, which unversioned requests go to.
    pub fn latest_ready(&self) -> Option<&Arc<ServingVersion>> {
        self.versions.values().rev().find_map(|state| match state {
            VersionState::Ready(v) => Some(v),
            _ => None,
        })
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
}

/// One row of the repository index: a model, or one of its versions, with its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: Option<u64>,
    /// Triton's state names: READY, LOADING, UNAVAILABLE.
    pub state: &'static str,
    pub reason: String,
}

#[derive(Debug, Error)]
pub enum LookupError {
    #[error("unknown model '{model}'")]
    ModelNotFound { model: String },
    #[error("model '{model}' has no version '{version}'")]
    VersionNotFound { model: String, version: String },
    #[error("model '{model}' is not available: {reason}")]
    Unavailable { model: String, reason: String },
}

/// name → model, shared by every request.
#[derive(Debug)]
pub struct ModelTable {
    models: DashMap<String, Arc<ModelEntry>>,
    startup_complete: AtomicBool,
    telemetry: Arc<Telemetry>,
    backends: Arc<Backends>,
    repository: PathBuf,
    /// Serialises loads and unloads, so two changes of one model never interleave.
    control: tokio::sync::Mutex<()>,
}

impl ModelTable {
    pub fn new(telemetry: Arc<Telemetry>, backends: Arc<Backends>, repository: PathBuf) -> ModelTable {
        ModelTable {
            models: DashMap::new(),
            startup_complete: AtomicBool::new(false),
            telemetry,
            backends,
            repository,
            control: tokio::sync::Mutex::new(()),
        }
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
        self.startup_complete.load(Ordering::Acquire)
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

    /// The version a request goes to: the one named, or the highest ready one.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<ServingVersion>, LookupError> {
        let entry = self.entry(model)?;
        let set = entry.versions.load();
        let unavailable = |reason: String| LookupError::Unavailable { model: model.to_owned(), reason };
        if let Some(error) = &set.model_error {
            return Err(unavailable(error.clone()));
        }
        match version {
            None => set.latest_ready().cloned().ok_or_else(|| unavailable(set.unavailable_reason())),
            Some(text) => {
                let not_found = || LookupError::VersionNotFound { model: model.to_owned(), version: text.to_owned() };
                let number: u64 = text.parse().map_err(|_| not_found())?;
                match set.versions.get(&number).ok_or_else(not_found)? {
                    VersionState::Ready(v) => Ok(Arc::clone(v)),
                    state => Err(unavailable(state.describe(number))),
                }
            }
        }
    }

    /// Loads every model of a local repository folder. Broken models and versions are logged and recorded with
    /// their reason; the others serve regardless. Marks the table ready when done.
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
        let mut to_load = Vec::new();
        for listing in listings {
            let mut set = VersionSet::default();
            match listing.versions {
                Err(e) => {
                    tracing::error!(model = %listing.name, error = %e, "model cannot be served");
                    set.model_error = Some(e.to_string());
                }
                Ok(versions) => {
                    for v in versions {
                        let state = match v.spec {
                            Ok(spec) => {
                                to_load.push(spec);
                                self.telemetry.set_version_state(&listing.name, v.version, "loading");
                                VersionState::Loading
                            }
                            Err(e) => {
                                tracing::error!(model = %listing.name, version = v.version, error = %e, "version cannot be served");
                                self.telemetry.set_version_state(&listing.name, v.version, "failed");
                                VersionState::Failed(e.to_string())
                            }
                        };
                        set.versions.insert(v.version, state);
                    }
                }
            }
            let entry = ModelEntry { name: listing.name.clone(), versions: ArcSwap::from_pointee(set) };
            self.models.insert(listing.name, Arc::new(entry));
        }
        for spec in to_load {
            let (name, version) = (spec.name.clone(), spec.version);
            let state = self.load_spec(spec).await;
            self.set_version_state(&name, version, state);
        }
        self.startup_complete.store(true, Ordering::Release);
        tracing::info!(models = self.models.len(), "model repository loaded");
    }

    /// Brings one model in line with the repository folder: every version its policy selects is loaded (with
    /// `reload`, even those already serving the same file), then the new set of versions replaces the old one in
    /// one store. A version whose new copy fails to load keeps serving the copy it had; versions no longer selected
    /// or whose folder is gone stop taking requests and are freed once their requests in flight are answered. A
    /// model whose folder is gone is unloaded.
    pub async fn sync_model(&self, name: &str, reload: bool) -> Result<(), LookupError> {
        let _control = self.control.lock().await;
        let (root, model) = (self.repository.clone(), name.to_owned());
        let listing =
            tokio::task::spawn_blocking(move || repository::local::scan_one(&root, &model)).await.ok().flatten();
        let previous = self.models.get(name).map(|entry| entry.versions.load_full());
        let Some(listing) = listing else {
            return match previous {
                Some(_) => self.unload_locked(name),
                None => Err(LookupError::ModelNotFound { model: name.to_owned() }),
            };
        };
        let mut set = VersionSet::default();
        match listing.versions {
            Err(e) => set.model_error = Some(e.to_string()),
            Ok(versions) => {
                for v in versions {
                    let current = previous.as_ref().and_then(|set| match set.versions.get(&v.version) {
                        Some(VersionState::Ready(serving)) => Some(Arc::clone(serving)),
                        _ => None,
                    });
                    let state = match v.spec {
                        Ok(spec) => match current {
                            Some(serving)
                                if !reload
                                    && serving.stamp.is_some()
                                    && serving.stamp == FileStamp::of(&spec.model_path)
                                    && same_serving_config(&serving.model_config, &spec.config) =>
                            {
                                VersionState::Ready(serving)
                            }
                            _ => {
                                self.telemetry.set_version_state(name, v.version, "loading");
                                match (self.load_spec(spec).await, current) {
                                    (VersionState::Failed(reason), Some(serving)) => {
                                        tracing::warn!(model = name, version = v.version, %reason, "the new copy failed to load; the loaded copy keeps serving");
                                        VersionState::Ready(serving)
                                    }
                                    (state, _) => state,
                                }
                            }
                        },
                        Err(e) => VersionState::Failed(e.to_string()),
                    };
                    set.versions.insert(v.version, state);
                }
            }
        }
        if let (Some(error), Some(previous)) = (&set.model_error, &previous)
            && previous.latest_ready().is_some()
        {
            tracing::warn!(model = name, %error, "the model's new configuration is invalid; the loaded versions keep serving");
            return Ok(());
        }
        // A broken version never replaces a working one: when none of the selected versions serves, the versions
        // that served before keep serving next to the failed ones.
        if set.latest_ready().is_none()
            && let Some(previous) = &previous
        {
            for (&version, state) in &previous.versions {
                if let VersionState::Ready(serving) = state
                    && !set.versions.contains_key(&version)
                {
                    tracing::warn!(model = name, version, "no selected version serves; this one keeps serving");
                    set.versions.insert(version, VersionState::Ready(Arc::clone(serving)));
                }
            }
        }
        if let Some(previous) = &previous {
            for (&version, state) in &previous.versions {
                if !set.versions.contains_key(&version) && matches!(state, VersionState::Ready(_)) {
                    tracing::info!(model = name, version, "version no longer selected; draining");
                    self.telemetry.set_version_state(name, version, "unloaded");
                }
            }
        }
        for (&version, state) in &set.versions {
            self.telemetry.set_version_state(name, version, state.name());
        }
        match self.models.get(name) {
            Some(entry) => entry.versions.store(Arc::new(set)),
            None => {
                let entry = ModelEntry { name: name.to_owned(), versions: ArcSwap::from_pointee(set) };
                self.models.insert(name.to_owned(), Arc::new(entry));
            }
        }
        tracing::info!(model = name, "model synchronised with the repository");
        Ok(())
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
        tokio::task::spawn_blocking(move || {
            let mut names = repository::local::model_names(&root).unwrap_or_default();
            names.extend(known);
            names.into_iter().map(|name| (name.clone(), ModelFingerprint::of(&root, &name))).collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Takes every version of a model out of service. Requests in flight finish on the version they started on.
    pub async fn unload_model(&self, name: &str) -> Result<(), LookupError> {
        let _control = self.control.lock().await;
        self.unload_locked(name)
    }

    fn unload_locked(&self, name: &str) -> Result<(), LookupError> {
        let entry = self.entry(name)?;
        let mut set = VersionSet::clone(&entry.versions.load());
        for (&version, state) in set.versions.iter_mut() {
            *state = VersionState::Unloaded;
            self.telemetry.set_version_state(name, version, "unloaded");
        }
        set.model_error = None;
        entry.versions.store(Arc::new(set));
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Every model of the repository folder and of the table, with each version's state and reason.
    pub fn index(&self) -> Vec<IndexEntry> {
        let mut names = repository::local::model_names(&self.repository).unwrap_or_default();
        names.extend(self.model_names());
        names.sort();
        names.dedup();
        let mut index = Vec::new();
        for name in names {
            let Ok(entry) = self.entry(&name) else {
                index.push(IndexEntry { name, version: None, state: "UNAVAILABLE", reason: "not loaded".to_owned() });
                continue;
            };
            let set = entry.versions.load();
            if let Some(error) = &set.model_error {
                index.push(IndexEntry {
                    name: name.clone(),
                    version: None,
                    state: "UNAVAILABLE",
                    reason: error.clone(),
                });
            }
            for (&version, state) in &set.versions {
                let (state, reason) = match state {
                    VersionState::Ready(_) => ("READY", String::new()),
                    VersionState::Loading => ("LOADING", String::new()),
                    VersionState::Failed(reason) => ("UNAVAILABLE", reason.clone()),
                    VersionState::Unloaded => ("UNAVAILABLE", "unloaded".to_owned()),
                };
                index.push(IndexEntry { name: name.clone(), version: Some(version), state, reason });
            }
        }
        index
    }

    async fn load_spec(&self, spec: ModelSpec) -> VersionState {
        let (name, version) = (spec.name.clone(), spec.version);
        let (telemetry, backends) = (Arc::clone(&self.telemetry), Arc::clone(&self.backends));
        match tokio::task::spawn_blocking(move || load_version(&spec, &backends, &telemetry)).await {
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
        self.startup_complete.store(true, Ordering::Release);
        tracing::info!(models = self.models.len(), "named models loaded");
    }

    fn set_version_state(&self, model: &str, version: u64, state: VersionState) {
        self.telemetry.set_version_state(model, version, state.name());
        if let Some(entry) = self.models.get(model) {
            entry.versions.rcu(|set| {
                let mut next = VersionSet::clone(set);
                next.versions.insert(version, state.clone());
                next
            });
        }
    }
}

/// Loads, checks and starts one version; blocking, run off the async workers.
fn load_version(spec: &ModelSpec, backends: &Backends, telemetry: &Telemetry) -> Result<ServingVersion, BackendError> {
    let started = Instant::now();
    let stamp = FileStamp::of(&spec.model_path);
    repository::local::verify_checksum(&spec.model_path)
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let backend = backends.load(&spec.model_path, &spec.config)?;
    let config = &spec.config;
    check_batchable(backend.signature(), config.max_batch_size)
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let label = format!("{}-{}", spec.name, spec.version);
    let monitors = monitor_plan(backend.signature(), &config.monitoring)
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let drift = drift_monitor(spec, backend.signature(), &monitors, telemetry.window())
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let metrics = telemetry.version(&spec.name, spec.version, &monitors, drift);
    let scheduling = scheduler_config(config, backend.signature())
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
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
    let policy_free = |c: &ModelConfig| ModelConfig { version_policy: repository::VersionPolicy::All, ..c.clone() };
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
            runs => Some((warmup_inputs(signature)?, runs)),
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
