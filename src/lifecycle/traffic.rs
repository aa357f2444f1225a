//! Routing of unpinned requests by a model's traffic policy, and the policy's checks against what is served.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{LookupError, ModelEntry, ModelTable, ServingVersion, VersionSet};
use crate::backend::{Signature, TensorSpec};
use crate::repository::{RolloutConfig, Target, TrafficConfig};
use crate::traffic::{Policy, rollout};

/// Where a request goes: the version, and the variant of the policy that chose it.
#[derive(Debug)]
pub struct Routed {
    pub serving: Arc<ServingVersion>,
    pub variant: Option<Arc<str>>,
    /// The policy that routed the request (its windows record the answer).
    pub policy: Option<Arc<Policy>>,
}

impl ModelTable {
    /// The version a request goes to. A pinned version (number or alias) bypasses the traffic policy; otherwise
    /// the policy picks a variant (by `key` when given), the next variant answers when the chosen one cannot,
    /// and without a policy, or when no variant can answer, the model's default version does.
    pub fn route(&self, model: &str, version: Option<&str>, key: Option<&str>) -> Result<Routed, LookupError> {
        let plain = |serving| Routed { serving, variant: None, policy: None };
        if version.is_some() {
            return self.resolve(model, version).map(plain);
        }
        let entry = self.entry(model)?;
        let Some(policy) = entry.traffic.policy.load_full() else {
            return self.resolve(model, None).map(plain);
        };
        for variant in policy.order(key) {
            if let Ok(serving) = self.resolve_target(model, &variant.target) {
                let name = Arc::clone(&variant.name);
                return Ok(Routed { serving, variant: Some(name), policy: Some(policy) });
            }
        }
        self.resolve(model, None).map(plain)
    }

    /// The shadow's version for a request routed by `routed`'s policy, when this request is drawn for a copy.
    pub fn shadow(&self, model: &str, routed: &Routed) -> Option<(Arc<str>, Arc<ServingVersion>)> {
        let variant = routed.policy.as_ref()?.shadow_draw()?;
        let serving = self.resolve_target(model, &variant.target).ok()?;
        Some((Arc::clone(&variant.name), serving))
    }

    fn resolve_target(&self, model: &str, target: &Target) -> Result<Arc<ServingVersion>, LookupError> {
        let version = target.version.map(|v| v.to_string());
        self.resolve(target.model.as_deref().unwrap_or(model), version.as_deref())
    }

    /// Puts a policy in force for `entry`'s model (from the management API): checked against what the table
    /// serves, and refused with the reason otherwise, the old policy staying. A rollout in progress stops.
    pub fn set_traffic(&self, entry: &ModelEntry, config: Option<TrafficConfig>) -> Result<(), String> {
        let model = entry.name.as_str();
        if let Some(config) = &config {
            config.validate()?;
            self.check_traffic(entry, &entry.versions.load(), config, true)?;
        }
        let _change = entry.traffic.changes.lock().unwrap_or_else(|e| e.into_inner());
        entry.traffic.stop_rollout();
        self.save_api_policy(model, entry, config.as_ref());
        entry.traffic.store(model, config.map(Policy::new), &self.telemetry.traffic);
        tracing::info!(model, "traffic policy set through the management API");
        Ok(())
    }

    fn api_policy_path(&self, model: &str) -> Option<PathBuf> {
        Some(self.state_dir.as_ref()?.join("traffic").join(format!("{model}.json")))
    }

    /// Keeps a policy set through the API, with what `model.toml` said then, so that a restart restores it as long
    /// as the file has not changed since (a changed file is the newer intent).
    fn save_api_policy(&self, model: &str, entry: &ModelEntry, config: Option<&TrafficConfig>) {
        let Some(path) = self.api_policy_path(model) else { return };
        let saved = SavedPolicy { file: entry.traffic.file_fingerprint(), policy: config.cloned() };
        let bytes = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        if let Err(e) = crate::durable::write_atomically(&path, &bytes) {
            tracing::error!(model, path = %path.display(), error = %e, "cannot save the traffic policy; a restart reverts to model.toml's");
        }
    }

    /// The policy an API call set before a restart, if the file is still what it was then; forgets it otherwise.
    fn restored_api_policy(&self, entry: &ModelEntry) -> Option<Option<TrafficConfig>> {
        let path = self.api_policy_path(&entry.name)?;
        let saved: SavedPolicy = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        if saved.file == entry.traffic.file_fingerprint() {
            return Some(saved.policy);
        }
        tracing::info!(model = %entry.name, "model.toml's traffic changed since the API set a policy; the file's applies");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Applies `model.toml`'s `[traffic]` and `[rollout]` when they changed since last applied.
    pub(super) fn apply_file_traffic(
        &self,
        entry: &Arc<ModelEntry>,
        traffic: Option<TrafficConfig>,
        rollout: Option<RolloutConfig>,
    ) {
        let name = entry.name.as_str();
        let _change = entry.traffic.changes.lock().unwrap_or_else(|e| e.into_inner());
        if !entry.traffic.file_changed(traffic.as_ref(), rollout.as_ref()) {
            return;
        }
        if let Some(policy) = self.restored_api_policy(entry) {
            let set = entry.versions.load();
            match policy.as_ref().map(|p| self.check_traffic(entry, &set, p, false)).transpose() {
                Ok(_) => {
                    entry.traffic.stop_rollout();
                    entry.traffic.store(name, policy.map(Policy::new), &self.telemetry.traffic);
                    tracing::info!(model = name, "the traffic policy set through the management API is restored");
                    return;
                }
                Err(reason) => {
                    tracing::error!(model = name, %reason, "the saved API policy no longer fits; model.toml's applies")
                }
            }
        }
        let Some(traffic) = traffic else {
            entry.traffic.stop_rollout();
            entry.traffic.store(name, None, &self.telemetry.traffic);
            return;
        };
        // Other models may not be loaded yet at start: only this model's versions are checked here.
        if let Err(reason) = self.check_traffic(entry, &entry.versions.load(), &traffic, false) {
            tracing::error!(model = name, %reason, "[traffic] refused; the policy in force stays");
            // Looked at again with the next listing (a version it names may arrive later).
            entry.traffic.forget_file();
            return;
        }
        entry.traffic.stop_rollout();
        entry.traffic.store(name, Some(Policy::new(traffic.clone())), &self.telemetry.traffic);
        tracing::info!(model = name, "traffic policy set from model.toml");
        if let Some(rollout) = rollout {
            let metrics = self.telemetry.traffic.clone();
            rollout::start(name, Arc::clone(&entry.traffic), traffic, rollout, self.state_dir.clone(), metrics);
        }
    }

    /// Every variant names a version this model lists, or (with `strict`) a model this table has whose
    /// signature is the same.
    fn check_traffic(
        &self,
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
                        self.resolve_target(&entry.name, &target).map_err(|e| format!("variant '{name}': {e}"))?;
                    let Some(own) = &own else {
                        return Err(format!(
                            "variant '{name}': model '{}' serves no version to compare signatures with",
                            entry.name
                        ));
                    };
                    if !same_signature(own, &serving.signature) {
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
}

/// A policy set through the management API, saved with the file's traffic settings of that moment.
#[derive(Serialize, Deserialize)]
struct SavedPolicy {
    file: String,
    policy: Option<TrafficConfig>,
}

/// Same inputs and outputs: names, datatypes and shapes (dimension names aside).
fn same_signature(a: &Signature, b: &Signature) -> bool {
    let same = |x: &[TensorSpec], y: &[TensorSpec]| {
        x.len() == y.len()
            && x.iter().zip(y).all(|(x, y)| x.name == y.name && x.datatype == y.datatype && x.shape == y.shape)
    };
    same(&a.inputs, &b.inputs) && same(&a.outputs, &b.outputs)
}
