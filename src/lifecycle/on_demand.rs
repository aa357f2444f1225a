//! On-demand loading: a listed version loads on its first request, which waits for it. The requests for one
//! version share one pending load; loads run one at a time under the table's control lock, so each load's memory
//! is measured alone. Before a load, idle versions are evicted, least recently used first, to fit the
//! budget (`budget::plan`); an evicted version goes back to [`Listed`] with its cost and statistics, and drains
//! like an unloaded one when requests still hold it.

use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::budget::{self, Limits, Plan, Snapshot};
use super::listed::{Evicted, Listed};
use super::loader::{LoadOptions, load_spec};
use super::{LookupError, ModelEntry, ModelTable, ServingVersion, VersionSet, VersionState};
use crate::repository::{ModelConfig, ModelSpec};

/// How often a load waiting for room under the budget looks again (what drains is freed within moments).
const ROOM_POLL: Duration = Duration::from_millis(5);
/// What a caller refused for want of room is told to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What came of an on-demand load: the version, loaded, or why not.
pub type LoadOutcome = Result<Arc<ServingVersion>, LookupError>;

/// Loads under way: the requests for one version share its load's outcome.
pub(super) type PendingLoads =
    std::sync::Mutex<std::collections::HashMap<(String, u64), watch::Receiver<Option<LoadOutcome>>>>;

/// How a request's wait for a load ended.
enum Waited {
    Answered(Option<LoadOutcome>),
    /// The load's task ended without an answer.
    Stopped,
    TimedOut,
}

/// Whether room was made for a load.
enum Room {
    Made,
    /// Not now: what drains is not freed yet, or nothing idle can be evicted.
    NotYet,
}

impl ModelTable {
    /// Whether a model of this `model.toml` loads on demand: its `on_demand`, else the server's mode; a model kept
    /// loaded never does.
    pub(super) fn is_on_demand(&self, config: &ModelConfig) -> bool {
        !config.keep_loaded && config.on_demand.unwrap_or(self.on_demand.all)
    }

    pub(super) fn limits(&self) -> Limits {
        let settings = &self.on_demand.settings;
        Limits { max_bytes: settings.max_loaded_bytes, max_versions: settings.max_loaded_models }
    }

    /// How long a request without a deadline of its own waits for its version to load.
    pub fn cold_start_timeout(&self) -> Duration {
        self.on_demand.settings.cold_start_timeout
    }

    /// Loads `model`'s listed `version` for a request that waits until `deadline` (else the cold-start timeout),
    /// and returns it loaded. Every request for a version shares its one load (a task of its own, given the
    /// cold-start timeout): a caller that gives up (deadline, disconnect) leaves it to finish, and the next request
    /// finds the version ready.
    pub async fn load_on_demand(
        self: &Arc<Self>,
        model: &str,
        version: u64,
        deadline: Option<Instant>,
    ) -> Result<Arc<ServingVersion>, LookupError> {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.cold_start_timeout());
        let mut outcome = self.start_load(model, version);
        let answered = match tokio::time::timeout_at(deadline.into(), outcome.wait_for(Option::is_some)).await {
            Ok(Ok(result)) => Waited::Answered(result.clone()),
            Ok(Err(_)) => Waited::Stopped,
            Err(_) => Waited::TimedOut,
        };
        match answered {
            Waited::Answered(result) => result.unwrap_or_else(|| Err(timed_out(model, version))),
            Waited::Stopped => {
                // The load's task ended without an answer (it panicked): forgotten, so the next request tries again.
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                let key = (model.to_owned(), version);
                if pending.get(&key).is_some_and(|other| other.same_channel(&outcome)) {
                    pending.remove(&key);
                }
                Err(LookupError::Unavailable {
                    model: model.to_owned(),
                    reason: format!("the load of version {version} stopped without an answer"),
                })
            }
            Waited::TimedOut => Err(timed_out(model, version)),
        }
    }

    /// Starts loading `model`'s listed `version` unless a load of it is under way; returns where its outcome
    /// appears. For a shadow's version, which loads in the background.
    pub fn start_load(self: &Arc<Self>, model: &str, version: u64) -> watch::Receiver<Option<LoadOutcome>> {
        let key = (model.to_owned(), version);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = pending.get(&key) {
            return outcome.clone();
        }
        let (sender, outcome) = watch::channel(None);
        pending.insert(key.clone(), outcome.clone());
        let table = Arc::clone(self);
        let deadline = Instant::now() + self.cold_start_timeout();
        tokio::spawn(async move {
            let result = table.demand(&key.0, key.1, deadline).await;
            // Forgotten before it is told, so a request arriving in between starts afresh (and finds it loaded).
            table.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            sender.send_replace(Some(result));
        });
        outcome
    }

    /// Loads the version `version` names (else the one unversioned requests reach) when it is on demand and not
    /// loaded, waiting up to the cold-start timeout: for the calls that describe a version (metadata, its
    /// configuration). Other lookup errors are left to the call's own lookup.
    pub async fn ensure_loaded(self: &Arc<Self>, model: &str, version: Option<&str>) -> Result<(), LookupError> {
        if let Err(LookupError::NotLoaded { version, .. }) = self.resolve(model, version) {
            self.load_on_demand(model, version, None).await?;
        }
        Ok(())
    }

    async fn demand(&self, model: &str, version: u64, deadline: Instant) -> LoadOutcome {
        loop {
            let control = tokio::time::timeout_at(deadline.into(), self.control.lock())
                .await
                .map_err(|_| timed_out(model, version))?;
            let entry = self.entry(model)?;
            let listed = match entry.versions.load().versions.get(&version) {
                Some(VersionState::Ready(serving)) => return Ok(Arc::clone(serving)),
                Some(VersionState::Listed(listed)) if listed.may_load_now() => listed.clone(),
                Some(VersionState::Listed(listed)) => return Err(pending(model, version, listed)),
                Some(state) => {
                    return Err(LookupError::Unavailable { model: model.to_owned(), reason: state.describe(version) });
                }
                None => {
                    return Err(LookupError::VersionNotFound { model: model.to_owned(), version: version.to_string() });
                }
            };
            if Instant::now() >= deadline {
                return Err(timed_out(model, version));
            }
            let snapshot = self.snapshot();
            let limits = self.limits();
            if let Some(cost) = listed.cost
                && !budget::can_ever_fit(&snapshot, cost, limits)
            {
                let reason = format!(
                    "version {version} needs {cost} bytes (measured at its last load), more than the budget leaves \
                     beside the models kept loaded (--max-loaded-bytes, --max-loaded-models)"
                );
                return Err(LookupError::Unavailable { model: model.to_owned(), reason });
            }
            let estimate = estimate(listed.cost, &listed.spec.model_path, &snapshot);
            if let Room::NotYet = self.make_room(snapshot, estimate, None) {
                drop(control);
                if Instant::now() + ROOM_POLL >= deadline {
                    return Err(timed_out(model, version));
                }
                tokio::time::sleep(ROOM_POLL).await;
                continue;
            }
            return self.load_listed(&entry, version, listed).await;
        }
    }

    /// Loads a listed version and stores what came of it: ready, or listed again with its failure (backing off).
    /// The caller holds `control` and made room.
    async fn load_listed(&self, entry: &Arc<ModelEntry>, version: u64, listed: Listed) -> LoadOutcome {
        let model = entry.name.as_str();
        // Listed still, so that requests arriving meanwhile wait for this load rather than being refused.
        put_state(entry, version, VersionState::Listed(Listed { loading: true, ..listed.clone() }));
        self.telemetry.set_version_state(model, version, "loading");
        let spec = ModelSpec::clone(&listed.spec);
        let options = LoadOptions {
            evictable: self.is_on_demand(&spec.config),
            statistics: listed.evicted.as_ref().map(|evicted| Arc::clone(&evicted.statistics)),
            previous_cost: listed.cost,
        };
        let warming = {
            let (name, telemetry) = (entry.name.clone(), Arc::clone(&self.telemetry));
            move || telemetry.set_version_state(&name, version, "warming_up")
        };
        let (state, result) = match load_spec(spec, &self.backends, &self.telemetry, warming, options).await {
            VersionState::Ready(serving) => (VersionState::Ready(Arc::clone(&serving)), Ok(serving)),
            VersionState::Failed(reason) => {
                let failed = listed.failed(reason);
                let error = pending(model, version, &failed);
                (VersionState::Listed(failed), Err(error))
            }
            other => {
                let reason = other.describe(version);
                (other, Err(LookupError::Unavailable { model: model.to_owned(), reason }))
            }
        };
        self.telemetry.on_demand.load(result.is_ok());
        self.telemetry.set_version_state(model, version, state.name());
        put_state(entry, version, state);
        if result.is_ok() {
            // It measured more than was guessed: idle versions make up the difference.
            for (victim, victim_version) in budget::trim(&self.snapshot(), (model, version), self.limits()) {
                self.evict(&victim, victim_version);
            }
        }
        self.publish_budget();
        result
    }

    /// Evicts idle versions (least recently used first) until a load of `estimate` bytes fits, as `snapshot` (taken
    /// under `control`) shows what is loaded; `NotYet` when what drains must be freed first, or nothing can be
    /// evicted now. `applying`: a model whose listing is being applied, whose versions are not evicted, and the
    /// costs of those it loaded that are not stored yet. The caller holds `control`.
    fn make_room(&self, snapshot: Snapshot, estimate: u64, applying: Option<(&str, &[u64])>) -> Room {
        let limits = self.limits();
        if limits.is_unlimited() {
            return Room::Made;
        }
        let adjusted = |mut snapshot: Snapshot| {
            if let Some((model, loaded)) = applying {
                snapshot.residents.iter_mut().filter(|r| r.model == model).for_each(|r| r.evictable = false);
                snapshot.residents.extend(loaded.iter().map(|&cost| budget::Resident {
                    model: model.to_owned(),
                    version: 0,
                    cost,
                    last_use: 0,
                    evictable: false,
                    busy: true,
                }));
            }
            snapshot
        };
        match budget::plan(&adjusted(snapshot), estimate, limits) {
            Plan::Fits => Room::Made,
            Plan::Wait => Room::NotYet,
            Plan::Evict(victims) => {
                for (model, version) in victims {
                    self.evict(&model, version);
                }
                self.publish_budget();
                // The victims' memory is freed once their instances have stopped; planning again waits for it.
                match budget::plan(&adjusted(self.snapshot()), estimate, limits) {
                    Plan::Fits => Room::Made,
                    Plan::Wait | Plan::Evict(_) => Room::NotYet,
                }
            }
        }
    }

    /// Makes room for a load that does not wait (a new version of a loaded model, a start), as the listing of
    /// `model` is applied (`loaded`: the costs of the versions it loaded so far): evicts what the plan says, never
    /// a version of `model`; a load that still does not fit goes ahead over the budget, with a warning. The caller
    /// holds `control`.
    pub(super) fn make_room_now(&self, model: &str, version: u64, model_path: &Path, loaded: &[u64]) {
        let snapshot = self.snapshot();
        let estimate = estimate(None, model_path, &snapshot);
        if let Room::NotYet = self.make_room(snapshot, estimate, Some((model, loaded))) {
            tracing::warn!(model, version, "no idle version can be evicted now; this load goes over the memory budget");
        }
    }

    /// Takes a ready version out of service back to listed, keeping its cost, last use and statistics; requests
    /// holding it finish on it (it drains). The caller holds `control`.
    fn evict(&self, model: &str, version: u64) {
        let Ok(entry) = self.entry(model) else { return };
        let set = entry.versions.load_full();
        let Some(VersionState::Ready(serving)) = set.versions.get(&version) else { return };
        let serving = Arc::clone(serving);
        let listed = Listed {
            spec: Arc::clone(&serving.spec),
            cost: Some(serving.cost),
            evicted: Some(Evicted {
                last_use: serving.last_use().unwrap_or_else(std::time::SystemTime::now),
                statistics: Arc::clone(&serving.metrics.statistics),
            }),
            failed: None,
            loading: false,
        };
        drop(set);
        put_state(&entry, version, VersionState::Listed(listed));
        self.telemetry.set_version_state(model, version, "listed");
        self.telemetry.on_demand.evictions.inc();
        tracing::info!(model, version, cost = serving.cost, "version evicted to fit the memory budget");
        entry.drain(vec![(version, serving)]);
    }

    /// Every loaded version as the budget sees it, and what drains.
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for entry in self.models.iter() {
            let set = entry.versions.load();
            for (&version, state) in &set.versions {
                if let VersionState::Ready(serving) = state {
                    snapshot.residents.push(budget::Resident {
                        model: entry.name.clone(),
                        version,
                        cost: serving.cost,
                        last_use: serving.last_use_millis(),
                        evictable: serving.evictable,
                        busy: Arc::strong_count(serving) > 1,
                    });
                }
            }
            let (bytes, versions) = entry.draining_cost();
            snapshot.draining_bytes += bytes;
            snapshot.draining_versions += versions;
        }
        snapshot
    }

    /// The budget's gauges: what is loaded, and the limits.
    pub(super) fn publish_budget(&self) {
        let (bytes, versions) = self.snapshot().loaded();
        let metrics = &self.telemetry.on_demand;
        metrics.loaded_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        metrics.loaded_versions.set(i64::try_from(versions).unwrap_or(i64::MAX));
        let limits = self.limits();
        metrics.max_loaded_bytes.set(limits.max_bytes.map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)));
        metrics.max_loaded_versions.set(limits.max_versions.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)));
    }
}

/// What loading a version is guessed to cost: its last load's measure (`cost`), else the mean of the on-demand
/// versions loaded, and at least its model file's size.
fn estimate(cost: Option<u64>, model_path: &Path, snapshot: &Snapshot) -> u64 {
    cost.unwrap_or_else(|| {
        let file = std::fs::metadata(model_path).map_or(0, |m| m.len());
        snapshot.typical_cost(file).max(file)
    })
}

/// Stores `state` as `version`'s in `entry`'s set. The caller holds `control`.
fn put_state(entry: &ModelEntry, version: u64, state: VersionState) {
    entry.versions.rcu(|set| {
        let mut next = VersionSet::clone(set);
        next.versions.insert(version, state.clone());
        next
    });
}

/// A listed version whose last load failed: not tried again before its back-off ends.
pub(super) fn pending(model: &str, version: u64, listed: &Listed) -> LookupError {
    LookupError::LoadPending {
        model: model.to_owned(),
        reason: listed.describe(version),
        retry_after: listed.retry_after().unwrap_or(RETRY_AFTER),
    }
}

fn timed_out(model: &str, version: u64) -> LookupError {
    LookupError::LoadPending {
        model: model.to_owned(),
        reason: format!(
            "version {version} did not load before the request's deadline (its load, or room for it under the \
             memory budget, is still awaited)"
        ),
        retry_after: RETRY_AFTER,
    }
}
