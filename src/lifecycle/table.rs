//! The model table: name → model, shared by every request. Lookups (a request's version), readiness and the
//! repository index; the changes are in `sync`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;

use super::{
    IndexEntry, Listed, ListingObserver, LookupError, MlflowStatus, ModelEntry, ServingVersion, VersionSet,
    VersionState,
};
use crate::backend::Backends;
use crate::config::OnDemandSettings;
use crate::repository;
use crate::telemetry::Telemetry;

/// Which models load on demand, and the budget.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OnDemand {
    /// `--model-control-mode on-demand`: every model unless its `model.toml` says otherwise.
    pub all: bool,
    pub settings: OnDemandSettings,
}

/// name → model, shared by every request.
#[derive(Debug)]
pub struct ModelTable {
    pub(super) models: DashMap<String, Arc<ModelEntry>>,
    /// Loaders (the repository's, MLflow's) still doing their first pass.
    startup_pending: AtomicUsize,
    /// Models that follow the MLflow Model Registry; the local repository's folders of those names are ignored.
    followed: HashSet<String>,
    pub(super) mlflow_status: ArcSwapOption<MlflowStatus>,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) backends: Arc<Backends>,
    pub(super) repository: PathBuf,
    /// Hears of every listing applied (the traffic table applies `model.toml`'s traffic settings so).
    pub(super) observer: Option<Arc<dyn ListingObserver>>,
    /// Serialises loads and unloads, so two changes of one model never interleave (and on-demand loads, so that
    /// concurrent first requests share one load and each load's memory is measured alone).
    pub(super) control: tokio::sync::Mutex<()>,
    pub(super) on_demand: OnDemand,
    /// On-demand loads under way, each shared by the requests waiting for it.
    pub(super) pending: super::on_demand::PendingLoads,
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
            observer: None,
            control: tokio::sync::Mutex::new(()),
            on_demand: OnDemand::default(),
            pending: Default::default(),
        }
    }

    /// Loads models on demand: every model when `all` (else those whose `model.toml` says `on_demand = true`),
    /// within `settings`' budget.
    pub fn with_on_demand(mut self, all: bool, settings: OnDemandSettings) -> ModelTable {
        self.on_demand = OnDemand { all, settings };
        self.publish_budget();
        self
    }

    /// `observer` hears of every listing the table applies.
    pub fn with_listing_observer(mut self, observer: Arc<dyn ListingObserver>) -> ModelTable {
        self.observer = Some(observer);
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

    pub(super) fn is_followed(&self, name: &str) -> bool {
        self.followed.contains(name)
    }

    pub(super) fn followed(&self) -> &HashSet<String> {
        &self.followed
    }

    pub(super) fn startup_done(&self) {
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
        let entry = self.models.get(model).ok_or_else(|| LookupError::ModelNotFound { model: model.to_owned() })?;
        let set = entry.versions.load();
        let unavailable = |reason: String| LookupError::Unavailable { model: model.to_owned(), reason };
        if let Some(error) = &set.model_error {
            return Err(unavailable(error.clone()));
        }
        let (number, state) = match version {
            None => set.default_servable().ok_or_else(|| none_servable(model, &set))?,
            Some(text) => {
                let not_found = || LookupError::VersionNotFound { model: model.to_owned(), version: text.to_owned() };
                let number: u64 = match text.parse() {
                    Ok(number) => number,
                    Err(_) => *set.aliases.get(text).ok_or_else(not_found)?,
                };
                (number, set.versions.get(&number).ok_or_else(not_found)?)
            }
        };
        match state {
            VersionState::Ready(v) => Ok(Arc::clone(v)),
            VersionState::Listed(listed) => Err(not_loaded(model, number, listed)),
            state => Err(unavailable(state.describe(number))),
        }
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
                last_use: None,
                cost: None,
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
                // On-demand versions only, as their last use: what the budget's evictions are decided on.
                let cost = match state {
                    VersionState::Ready(v) => v.evictable.then_some(v.cost),
                    VersionState::Listed(listed) => listed.cost,
                    _ => None,
                };
                let (state, reason, last_use) = match state {
                    VersionState::Ready(v) => ("READY", String::new(), v.last_use()),
                    VersionState::Loading => ("LOADING", String::new(), None),
                    VersionState::WarmingUp => ("LOADING", "warming up".to_owned(), None),
                    VersionState::Failed(reason) => ("UNAVAILABLE", reason.clone(), None),
                    // Its draining copy gets its own row below.
                    VersionState::Unloaded if draining.iter().any(|&(v, _)| v == version) => continue,
                    VersionState::Unloaded => ("UNAVAILABLE", "unloaded".to_owned(), None),
                    VersionState::Listed(listed) => {
                        let last_use = listed.evicted.as_ref().map(|evicted| evicted.last_use);
                        match (&listed.failed, &listed.evicted) {
                            _ if listed.loading => ("LOADING", "loading on demand".to_owned(), last_use),
                            (Some(_), _) => ("UNAVAILABLE", listed.describe(version), last_use),
                            (None, Some(_)) => ("UNLOADED", "evicted".to_owned(), last_use),
                            (None, None) => ("UNLOADED", "not loaded yet; loads on its first request".to_owned(), None),
                        }
                    }
                };
                index.push(IndexEntry { last_use, cost, ..row(Some(version), state, reason, set.aliases_of(version)) });
            }
            for (version, holders) in draining {
                let reason = format!("draining: {holders} request(s) in flight");
                index.push(row(Some(version), "UNLOADING", reason, Vec::new()));
            }
        }
        index
    }
}

/// The error for an unversioned request when no version can answer: a pending load's when a listed version backs
/// off after a failed load (worth retrying once the back-off is over), else why none is available.
fn none_servable(model: &str, set: &VersionSet) -> LookupError {
    let retry_after = set
        .versions
        .values()
        .filter_map(|state| match state {
            VersionState::Listed(listed) => listed.retry_after(),
            _ => None,
        })
        .min();
    let reason = set.unavailable_reason();
    match retry_after {
        Some(retry_after) => LookupError::LoadPending { model: model.to_owned(), reason, retry_after },
        None => LookupError::Unavailable { model: model.to_owned(), reason },
    }
}

/// The error for a request to a listed version: load it, unless its last load failed and backs off.
fn not_loaded(model: &str, version: u64, listed: &Listed) -> LookupError {
    match listed.may_load_now() {
        true => LookupError::NotLoaded { model: model.to_owned(), version },
        false => super::on_demand::pending(model, version, listed),
    }
}
