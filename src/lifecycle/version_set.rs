//! Every version of one model as one value, and the rules of a swap as pure functions on it: which versions
//! stay, what aliases and the default version name, and what drains. `sync` only loads and stores; the rules
//! here are unit-tested without a runtime (generic over what a ready version holds).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ServingVersion;
pub use super::listed::Listed;
use crate::repository::{ModelConfig, VersionPolicy};

/// A ready version's handle: compared by identity, so a swap can tell a version kept from a new copy of it.
pub trait Served: Clone {
    fn same(&self, other: &Self) -> bool;
}

impl<T> Served for Arc<T> {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

/// Where one version stands.
#[derive(Debug, Clone)]
pub enum VersionState<V = Arc<ServingVersion>> {
    Loading,
    /// Loaded; its instances run the warm-up inferences before it takes traffic.
    WarmingUp,
    Ready(V),
    Failed(String),
    /// Taken out of service by the repository API; requests in flight on it finish.
    Unloaded,
    /// Known, not loaded: an on-demand version loads on its first request, and comes back here when evicted.
    Listed(Listed),
}

impl<V> VersionState<V> {
    /// The state's name in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            VersionState::Loading => "loading",
            VersionState::WarmingUp => "warming_up",
            VersionState::Ready(_) => "ready",
            VersionState::Failed(_) => "failed",
            VersionState::Unloaded => "unloaded",
            VersionState::Listed(listed) if listed.failed.is_some() => "failed",
            VersionState::Listed(_) => "listed",
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
            VersionState::Listed(listed) => listed.describe(version),
        }
    }

    fn ready(&self) -> Option<&V> {
        match self {
            VersionState::Ready(v) => Some(v),
            _ => None,
        }
    }

    /// Ready, or listed on demand and free to load now.
    fn servable(&self) -> bool {
        match self {
            VersionState::Ready(_) => true,
            VersionState::Listed(listed) => listed.may_load_now(),
            _ => false,
        }
    }
}

/// Every version of one model, swapped as a whole.
#[derive(Debug, Clone)]
pub struct VersionSet<V = Arc<ServingVersion>> {
    pub versions: BTreeMap<u64, VersionState<V>>,
    /// Set when the model as a whole cannot be served (e.g. its model.toml is invalid).
    pub model_error: Option<String>,
    /// Names of versions (MLflow aliases): alias → version.
    pub aliases: BTreeMap<String, u64>,
    /// The version unversioned requests go to; `None`: the highest ready one.
    pub default_version: Option<u64>,
}

impl<V> Default for VersionSet<V> {
    fn default() -> Self {
        VersionSet { versions: BTreeMap::new(), model_error: None, aliases: BTreeMap::new(), default_version: None }
    }
}

impl<V: Served> VersionSet<V> {
    /// The version unversioned requests go to: the default version, or without one the highest ready version.
    pub fn default_ready(&self) -> Option<&V> {
        self.default_ready_entry().map(|(_, serving)| serving)
    }

    /// [`VersionSet::default_ready`] with its version number.
    pub fn default_ready_entry(&self) -> Option<(u64, &V)> {
        match self.default_version {
            Some(version) => self.versions.get(&version).and_then(VersionState::ready).map(|s| (version, s)),
            None => self.versions.iter().rev().find_map(|(&version, state)| state.ready().map(|s| (version, s))),
        }
    }

    /// The version unversioned requests go to, loaded or not: the default version, or without one the highest
    /// version that is ready or may load on demand now (one whose last load failed waits out its back-off).
    pub fn default_servable(&self) -> Option<(u64, &VersionState<V>)> {
        match self.default_version {
            Some(version) => self.versions.get(&version).filter(|state| state.servable()).map(|state| (version, state)),
            None => {
                self.versions.iter().rev().find(|(_, state)| state.servable()).map(|(&version, state)| (version, state))
            }
        }
    }

    /// Whether `version` takes requests, loaded or on demand.
    pub fn servable(&self, version: u64) -> bool {
        self.versions.get(&version).is_some_and(VersionState::servable)
    }

    /// Whether `version` takes requests.
    pub fn serves(&self, version: u64) -> bool {
        matches!(self.versions.get(&version), Some(VersionState::Ready(_)))
    }

    /// The aliases that name `version`.
    pub fn aliases_of(&self, version: u64) -> Vec<String> {
        self.aliases.iter().filter(|&(_, &v)| v == version).map(|(alias, _)| alias.clone()).collect()
    }

    /// Why no version answers, for error messages.
    pub fn unavailable_reason(&self) -> String {
        if let Some(error) = &self.model_error {
            return error.clone();
        }
        let reasons: Vec<String> = self.versions.iter().map(|(&v, state)| state.describe(v)).collect();
        if reasons.is_empty() { "no version is available".to_owned() } else { reasons.join("; ") }
    }
}

/// A version's new state, unless it failed while a loaded copy of it serves: that copy keeps serving.
pub fn keep_serving<V>(model: &str, version: u64, state: VersionState<V>, serving: Option<V>) -> VersionState<V> {
    match (state, serving) {
        (VersionState::Failed(reason), Some(serving)) => {
            tracing::warn!(model, version, %reason, "the new copy is unusable; the loaded copy keeps serving");
            VersionState::Ready(serving)
        }
        (state, _) => state,
    }
}

/// Whether a set whose listing was unusable (`model_error`) may replace `previous`: not while `previous` serves
/// (or would load on demand).
pub fn replaces<V: Served>(previous: Option<&VersionSet<V>>, next: &VersionSet<V>) -> bool {
    next.model_error.is_none() || previous.is_none_or(|previous| previous.default_servable().is_none())
}

/// Finishes the set that replaces `previous`, and returns the ready versions of `previous` that leave service
/// (they drain: freed once their requests in flight are answered). A broken version never replaces a working
/// one (ready, or listed to load on demand): an alias moved to a version that does not serve keeps naming the one it named, and the version that
/// answered unversioned requests keeps answering them while the new default does not serve. Versions unloaded
/// before stay listed as unloaded.
pub fn settle<V: Served>(model: &str, previous: &VersionSet<V>, next: &mut VersionSet<V>) -> Vec<(u64, V)> {
    let aliases: Vec<(String, u64)> = next.aliases.iter().map(|(a, &v)| (a.clone(), v)).collect();
    for (alias, version) in aliases {
        if next.servable(version) {
            continue;
        }
        let Some(&before) = previous.aliases.get(&alias) else { continue };
        let Some(state) = previous.versions.get(&before).filter(|state| state.servable()) else { continue };
        tracing::warn!(model, %alias, version, kept = before, "the alias's new version does not serve; it keeps naming the one it named");
        next.versions.insert(before, state.clone());
        next.aliases.insert(alias, before);
        if next.default_version == Some(version) {
            next.default_version = Some(before);
        }
    }
    if let Some((version, before)) = previous.default_servable() {
        let new_default_serves = match next.default_version {
            Some(v) => next.servable(v),
            None => next.default_servable().is_some(),
        };
        if !new_default_serves {
            tracing::warn!(
                model,
                version,
                "the version that should answer unversioned requests does not serve; this one keeps answering them"
            );
            if !next.servable(version) {
                next.versions.insert(version, before.clone());
            }
            next.default_version = Some(version);
        }
    }
    let mut draining = Vec::new();
    for (&version, state) in &previous.versions {
        if matches!(state, VersionState::Unloaded) {
            next.versions.entry(version).or_insert(VersionState::Unloaded);
        }
        let VersionState::Ready(old) = state else { continue };
        let kept = matches!(next.versions.get(&version), Some(VersionState::Ready(new)) if new.same(old));
        if !kept {
            tracing::info!(model, version, "version taken out of service; draining");
            draining.push((version, old.clone()));
            next.versions.entry(version).or_insert(VersionState::Unloaded);
        }
    }
    draining
}

/// Every version out of service: what an unload stores, with the ready versions that drain.
pub fn unload_all<V: Served>(set: &VersionSet<V>) -> (VersionSet<V>, Vec<(u64, V)>) {
    let mut next = set.clone();
    let mut draining = Vec::new();
    for (&version, state) in next.versions.iter_mut() {
        if let VersionState::Ready(serving) = state {
            draining.push((version, serving.clone()));
        }
        *state = VersionState::Unloaded;
    }
    next.model_error = None;
    (next, draining)
}

/// Whether a version loaded with `loaded` can keep serving under `new`: everything but the version policy and the
/// traffic settings (which only decide which versions serve and who gets which requests) and when it is loaded and
/// evicted must be the same.
pub fn same_serving_config(loaded: &ModelConfig, new: &ModelConfig) -> bool {
    let policy_free = |c: &ModelConfig| ModelConfig {
        version_policy: VersionPolicy::All,
        traffic: None,
        rollout: None,
        on_demand: None,
        keep_loaded: false,
        ..c.clone()
    };
    policy_free(loaded) == policy_free(new)
}

#[cfg(test)]
mod tests;
