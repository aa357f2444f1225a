//! Bringing the table in line with a source: a listing's versions are loaded (`loader`) and the new set is
//! stored in one step; the rules of what stays, what names what and what drains are `version_set`'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::listed::Listed;
use super::loader::{LoadOptions, load_spec};
use super::version_set::{self, keep_serving, same_serving_config};
use super::{LookupError, ModelEntry, ModelTable, VersionSet, VersionState};
use crate::repository::local::{FileStamp, FolderFollower, ModelFingerprint};
use crate::repository::{self, ModelListing};
use crate::telemetry::Telemetry;

impl ModelTable {
    /// Loads every model of a local repository folder (on-demand models are listed, not loaded). Broken models and
    /// versions are logged and recorded with their reason; the others serve regardless. Every model is listed (as
    /// loading, or not loaded) before the first one loads.
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
                for (version, spec) in versions.iter().filter_map(|v| v.spec.as_ref().ok().map(|s| (v.version, s))) {
                    let state = match self.is_on_demand(&spec.config) {
                        true => VersionState::Listed(Listed::new(spec.clone())),
                        false => VersionState::Loading,
                    };
                    self.telemetry.set_version_state(&listing.name, version, state.name());
                    set.versions.insert(version, state);
                }
            }
            self.models.insert(listing.name.clone(), Arc::new(ModelEntry::new(&listing.name, set)));
        }
        for listing in listings {
            let _control = self.control.lock().await;
            self.apply_listing(listing, false).await;
        }
        self.publish_budget();
        self.startup_done();
        tracing::info!(models = self.models.len(), "model repository loaded");
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

    /// Loads (or reloads) a model from the repository folder, every version afresh.
    pub async fn load_model(&self, name: &str) -> Result<(), LookupError> {
        self.sync_model(name, true).await
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
    /// those already serving the same file), then the new set of versions replaces the old one in one store
    /// (`version_set`'s rules decide what stays and what drains). An on-demand model none of whose versions is
    /// loaded is only listed (unless `reload` asks for a load); one that serves loads its new versions like any
    /// other, so a swap has no cold start. The caller holds `control`.
    pub(super) async fn apply_listing(&self, listing: ModelListing, reload: bool) {
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
        let listed_config = listing.versions.as_ref().ok().and_then(|versions| {
            versions.iter().find_map(|v| v.spec.as_ref().ok()).map(|spec| Arc::clone(&spec.config))
        });
        let serves =
            previous.as_ref().is_some_and(|set| set.versions.values().any(|s| matches!(s, VersionState::Ready(_))));
        // An on-demand model lists what it does not serve: everything while none of its versions is loaded, else
        // the versions listed before (a new version of a model that serves loads at once, so a swap has no cold
        // start). A reload (the load API) loads them all.
        let on_demand = !reload && listed_config.as_deref().is_some_and(|c| self.is_on_demand(c));
        let listed_before = |version: u64| match previous.as_ref().and_then(|set| set.versions.get(&version)) {
            Some(VersionState::Listed(listed)) => Some(listed.clone()),
            _ => None,
        };
        let mut set =
            VersionSet { aliases: listing.aliases, default_version: listing.default_version, ..Default::default() };
        let mut loads = false;
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
                        Ok(spec) => match (current, listed_before(v.version)) {
                            (Some(serving), _)
                                if !reload
                                    && serving.stamp.is_some()
                                    && serving.stamp == FileStamp::of(&spec.model_path)
                                    && same_serving_config(&serving.spec.config, &spec.config)
                                    && serving.evictable == self.is_on_demand(&spec.config) =>
                            {
                                set.versions.insert(v.version, VersionState::Ready(serving));
                            }
                            (None, before) if on_demand && (!serves || before.is_some()) => {
                                // What it measured and counted before carries over; a failure is tried afresh.
                                let listed = Listed {
                                    cost: before.as_ref().and_then(|b| b.cost),
                                    evicted: before.and_then(|b| b.evicted),
                                    ..Listed::new(spec)
                                };
                                set.versions.insert(v.version, VersionState::Listed(listed));
                            }
                            (current, _) => to_load.push((spec, current)),
                        },
                    }
                }
                // What is about to load shows as loading (a copy that serves keeps serving meanwhile).
                let loading: Vec<u64> =
                    to_load.iter().filter(|(_, current)| current.is_none()).map(|(spec, _)| spec.version).collect();
                publish_states(&entry, &self.telemetry, &loading, &VersionState::Loading);
                loads = !to_load.is_empty();
                // Costs of the versions loaded by this listing, not stored yet: the budget counts them.
                let mut loaded_here = Vec::new();
                for (spec, current) in to_load {
                    let version = spec.version;
                    let warming = {
                        let (entry, telemetry) = (Arc::clone(&entry), Arc::clone(&self.telemetry));
                        move || publish_states(&entry, &telemetry, &[version], &VersionState::WarmingUp)
                    };
                    let evictable = self.is_on_demand(&spec.config);
                    if !self.limits().is_unlimited() {
                        self.make_room_now(name, version, &spec.model_path, &loaded_here);
                    }
                    let options = LoadOptions { evictable, ..LoadOptions::default() };
                    let state = load_spec(spec, &self.backends, &self.telemetry, warming, options).await;
                    if let VersionState::Ready(serving) = &state {
                        loaded_here.push(serving.cost);
                    }
                    set.versions.insert(version, keep_serving(name, version, state, current));
                }
            }
        }
        if !version_set::replaces(previous.as_deref(), &set) {
            tracing::warn!(model = name, error = ?set.model_error, "the model's new listing is unusable; the loaded versions keep serving");
            return;
        }
        if let Some(previous) = &previous {
            entry.drain(version_set::settle(name, previous, &mut set));
        }
        for (&version, state) in &set.versions {
            self.telemetry.set_version_state(name, version, state.name());
        }
        entry.versions.store(Arc::new(set));
        if loads {
            self.publish_budget();
        }
        tracing::info!(model = name, "model versions updated");
        if let (Some(observer), Some(config)) = (&self.observer, listed_config) {
            observer.listing_applied(self, &entry, &config);
        }
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
        let (set, draining) = version_set::unload_all(&entry.versions.load());
        for &version in set.versions.keys() {
            self.telemetry.set_version_state(name, version, "unloaded");
        }
        entry.versions.store(Arc::new(set));
        entry.drain(draining);
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Watches the repository folder until `stop` (see [`repository::local::watch`]), syncing each model whose
    /// files changed and settled.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        settle: Duration,
        applied: HashMap<String, ModelFingerprint>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let root = self.repository.clone();
        repository::local::watch(&*self, &root, interval, settle, applied, stop).await;
    }

    /// The fingerprint of every model folder of the repository and of every model in the table (a model whose
    /// folder is gone fingerprints as empty).
    pub async fn fingerprints(&self) -> HashMap<String, ModelFingerprint> {
        let root = self.repository.clone();
        let known = self.model_names();
        let followed = self.followed().clone();
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
}

impl FolderFollower for ModelTable {
    async fn fingerprints(&self) -> HashMap<String, ModelFingerprint> {
        ModelTable::fingerprints(self).await
    }

    async fn changed(&self, model: &str) {
        if let Err(e) = self.sync_model(model, false).await {
            tracing::warn!(model, error = %e, "cannot sync the model");
        }
    }
}

/// Shows `versions` of `entry` in `state` (loading, warming up) in the live set and the metrics, except those
/// that serve now: a copy being replaced keeps serving until the new one is ready.
pub(super) fn publish_states(entry: &ModelEntry, telemetry: &Telemetry, versions: &[u64], state: &VersionState) {
    if versions.is_empty() {
        return;
    }
    entry.versions.rcu(|set| {
        let mut next = VersionSet::clone(set);
        for &version in versions {
            if !set.serves(version) {
                next.versions.insert(version, state.clone());
            }
        }
        next
    });
    let set = entry.versions.load();
    for &version in versions.iter().filter(|&&v| !set.serves(v)) {
        telemetry.set_version_state(&entry.name, version, state.name());
    }
}
