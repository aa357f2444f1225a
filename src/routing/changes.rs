//! Changes of a model's traffic policy: from the management API (saved across restarts) and from `model.toml`
//! whenever the lifecycle applied a listing; each checked against what the model table serves.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::policy::Policy;
use super::state::TrafficState;
use super::{TrafficTable, resolve_target, rollout};
use crate::lifecycle::{ListingObserver, ModelEntry, ModelTable, VersionSet};
use crate::repository::{ModelConfig, RolloutConfig, TrafficConfig};

impl TrafficTable {
    /// Puts a policy in force for `entry`'s model (from the management API): checked against what the table
    /// serves, and refused with the reason otherwise, the old policy staying. A rollout in progress stops.
    pub fn set_traffic(
        &self,
        table: &ModelTable,
        entry: &ModelEntry,
        config: Option<TrafficConfig>,
    ) -> Result<(), String> {
        let model = entry.name.as_str();
        if let Some(config) = &config {
            config.validate()?;
            check_traffic(table, entry, &entry.versions.load(), config, true)?;
        }
        let traffic = self.state_or_new(model);
        let _change = traffic.changes.lock().unwrap_or_else(|e| e.into_inner());
        traffic.stop_rollout();
        self.save_api_policy(model, &traffic, config.as_ref());
        traffic.store(model, config.map(Policy::new), &self.metrics);
        tracing::info!(model, "traffic policy set through the management API");
        Ok(())
    }

    fn api_policy_path(&self, model: &str) -> Option<PathBuf> {
        Some(self.state_dir.as_ref()?.join("traffic").join(format!("{model}.json")))
    }

    /// Keeps a policy set through the API, with what `model.toml` said then, so that a restart restores it as long
    /// as the file has not changed since (a changed file is the newer intent).
    fn save_api_policy(&self, model: &str, traffic: &TrafficState, config: Option<&TrafficConfig>) {
        let Some(path) = self.api_policy_path(model) else { return };
        let saved = SavedPolicy { file: traffic.file_fingerprint(), policy: config.cloned() };
        let bytes = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        if let Err(e) = crate::durable::write_atomically(&path, &bytes) {
            tracing::error!(model, path = %path.display(), error = %e, "cannot save the traffic policy; a restart reverts to model.toml's");
        }
    }

    /// The policy an API call set before a restart, if the file is still what it was then; forgets it otherwise.
    fn restored_api_policy(&self, model: &str, traffic: &TrafficState) -> Option<Option<TrafficConfig>> {
        let path = self.api_policy_path(model)?;
        let saved: SavedPolicy = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        if saved.file == traffic.file_fingerprint() {
            return Some(saved.policy);
        }
        tracing::info!(model, "model.toml's traffic changed since the API set a policy; the file's applies");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Applies `model.toml`'s `[traffic]` and `[rollout]` when they changed since last applied.
    fn apply_file_traffic(
        &self,
        table: &ModelTable,
        entry: &ModelEntry,
        traffic: Option<TrafficConfig>,
        rollout: Option<RolloutConfig>,
    ) {
        let name = entry.name.as_str();
        let state = self.state_or_new(name);
        let _change = state.changes.lock().unwrap_or_else(|e| e.into_inner());
        if !state.file_changed(traffic.as_ref(), rollout.as_ref()) {
            return;
        }
        if let Some(policy) = self.restored_api_policy(name, &state) {
            let set = entry.versions.load();
            match policy.as_ref().map(|p| check_traffic(table, entry, &set, p, false)).transpose() {
                Ok(_) => {
                    state.stop_rollout();
                    state.store(name, policy.map(Policy::new), &self.metrics);
                    tracing::info!(model = name, "the traffic policy set through the management API is restored");
                    return;
                }
                Err(reason) => {
                    tracing::error!(model = name, %reason, "the saved API policy no longer fits; model.toml's applies")
                }
            }
        }
        let Some(traffic) = traffic else {
            state.stop_rollout();
            state.store(name, None, &self.metrics);
            return;
        };
        // Other models may not be loaded yet at start: only this model's versions are checked here.
        if let Err(reason) = check_traffic(table, entry, &entry.versions.load(), &traffic, false) {
            tracing::error!(model = name, %reason, "[traffic] refused; the policy in force stays");
            // Looked at again with the next listing (a version it names may arrive later).
            state.forget_file();
            return;
        }
        state.stop_rollout();
        state.store(name, Some(Policy::new(traffic.clone())), &self.metrics);
        tracing::info!(model = name, "traffic policy set from model.toml");
        if let Some(rollout) = rollout {
            rollout::start(name, Arc::clone(&state), traffic, rollout, self.state_dir.clone(), self.metrics.clone());
        }
    }
}

impl ListingObserver for TrafficTable {
    fn listing_applied(&self, table: &ModelTable, entry: &ModelEntry, config: &ModelConfig) {
        self.apply_file_traffic(table, entry, config.traffic.clone(), config.rollout.clone());
    }
}

/// Every variant names a version this model lists, or (with `strict`) a model the table has whose signature is
/// the same.
fn check_traffic(
    table: &ModelTable,
    entry: &ModelEntry,
    set: &VersionSet,
    config: &TrafficConfig,
    strict: bool,
) -> Result<(), String> {
    let own = set.default_ready().map(|v| v.signature.clone());
    let shadow = config.shadow.as_ref().map(|s| (&s.name, s.target()));
    for (name, target) in config.variants.iter().map(|v| (&v.name, v.target())).chain(shadow) {
        match target.model.as_deref().filter(|&m| m != entry.name) {
            None => {
                if let Some(version) = target.version
                    && !set.versions.contains_key(&version)
                {
                    return Err(format!("variant '{name}': model '{}' has no version {version}", entry.name));
                }
            }
            Some(other) if strict => {
                let serving =
                    resolve_target(table, &entry.name, &target).map_err(|e| format!("variant '{name}': {e}"))?;
                let Some(own) = &own else {
                    return Err(format!(
                        "variant '{name}': model '{}' serves no version to compare signatures with",
                        entry.name
                    ));
                };
                if !own.same_tensors(&serving.signature) {
                    return Err(format!(
                        "variant '{name}': model '{other}' has another signature than '{}'",
                        entry.name
                    ));
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A policy set through the management API, saved with the file's traffic settings of that moment.
#[derive(Serialize, Deserialize)]
struct SavedPolicy {
    file: String,
    policy: Option<TrafficConfig>,
}
