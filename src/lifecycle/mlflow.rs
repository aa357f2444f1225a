//! Following the MLflow Model Registry.
//!
//! Every poll (and at once when a webhook delivery names a model) each followed model's aliases are resolved; when
//! its alias → version map changed, the versions are fetched into the cache and swapped in like a local repository
//! change ([`ModelTable::apply_listing`]). MLflow being unreachable changes nothing that is served: the follower
//! retries with backoff and says so in the readiness detail and the metrics.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{ModelEntry, ModelTable, VersionSet};
use crate::repository::mlflow::{Fetched, MlflowClient, MlflowError, MlflowModel};
use crate::repository::{ModelListing, ModelSpec, RepositoryError, VersionListing};

/// Longest wait between two tries while MLflow is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest wait before a failed download is tried again.
const DOWNLOAD_RETRY: Duration = Duration::from_secs(5);

/// What the follower needs.
#[derive(Debug)]
pub struct MlflowFollower {
    pub client: MlflowClient,
    pub models: Vec<MlflowModel>,
    pub cache: PathBuf,
    pub poll: Duration,
}

/// What the follower last saw, for the readiness detail.
#[derive(Debug, Clone, Serialize)]
pub struct MlflowStatus {
    pub uri: String,
    /// Whether MLflow answered the last look.
    pub reachable: bool,
    /// The last look's error, if it had one (MLflow down, or a model it could not follow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds since the Unix epoch of the last look MLflow answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_unix: Option<u64>,
    pub consecutive_failures: u32,
    /// served model → alias → version, as last resolved.
    pub aliases: BTreeMap<String, BTreeMap<String, u64>>,
}

impl ModelTable {
    /// Follows the registry until `stop`. `nudges` carries registered model names to look at now (from webhook
    /// deliveries).
    pub async fn follow_mlflow(
        self: Arc<Self>,
        follower: MlflowFollower,
        mut nudges: tokio::sync::mpsc::Receiver<String>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let uri = follower.client.uri().to_owned();
        for model in &follower.models {
            let waiting = VersionSet {
                model_error: Some(format!("waiting for the first answer from MLflow at {uri}")),
                ..Default::default()
            };
            self.models
                .entry(model.serve_as.clone())
                .or_insert_with(|| Arc::new(ModelEntry::new(&model.serve_as, waiting)));
        }
        let mut status = MlflowStatus {
            uri,
            reachable: false,
            error: None,
            last_success_unix: None,
            consecutive_failures: 0,
            aliases: BTreeMap::new(),
        };
        for model in &follower.models {
            crate::repository::mlflow::remove_unfinished(&follower.cache, &model.serve_as).await;
        }
        let mut applied: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
        let mut only: Option<String> = None;
        let mut first = true;
        loop {
            let mut outage = None;
            let mut model_error = None;
            let mut incomplete = false;
            for model in follower.models.iter().filter(|m| only.as_ref().is_none_or(|name| *name == m.registered)) {
                match self.follow_one(&follower, model, &mut applied).await {
                    Ok((resolved, complete)) => {
                        incomplete |= !complete;
                        status.aliases.insert(model.serve_as.clone(), resolved);
                    }
                    Err(e) => {
                        tracing::warn!(model = %model.serve_as, error = %e, "cannot follow the model in MLflow");
                        self.telemetry.count_mlflow_error();
                        self.note_unserved(&model.serve_as, &e);
                        if e.is_outage() {
                            outage = Some(e.to_string());
                            break;
                        }
                        model_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            if first && outage.is_some() {
                for model in &follower.models {
                    if !applied.contains_key(&model.serve_as)
                        && let Some(aliases) = self.serve_cached(&follower, model).await
                    {
                        status.aliases.insert(model.serve_as.clone(), aliases);
                    }
                }
            }
            status.reachable = outage.is_none();
            status.error = outage.or(model_error);
            if status.reachable {
                status.consecutive_failures = 0;
                status.last_success_unix =
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
            } else {
                status.consecutive_failures = status.consecutive_failures.saturating_add(1);
            }
            self.telemetry.set_mlflow_up(status.reachable);
            self.mlflow_status.store(Some(Arc::new(status.clone())));
            if std::mem::take(&mut first) {
                self.startup_done();
            }
            let delay = match (status.reachable, incomplete) {
                (false, _) => backoff(status.consecutive_failures),
                (true, true) => follower.poll.min(DOWNLOAD_RETRY),
                (true, false) => follower.poll,
            };
            only = None;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                Some(name) = nudges.recv() => {
                    tracing::info!(model = %name, "MLflow webhook: looking now");
                    only = Some(name);
                }
                _ = stop.wait_for(|&stop| stop) => return,
            }
        }
    }

    /// Resolves one model's aliases and, when they moved, fetches and swaps its versions. Returns alias → version,
    /// and whether every version could be fetched.
    async fn follow_one(
        &self,
        follower: &MlflowFollower,
        model: &MlflowModel,
        applied: &mut HashMap<String, BTreeMap<String, u64>>,
    ) -> Result<(BTreeMap<String, u64>, bool), MlflowError> {
        let resolved = follower.client.resolve(model).await?;
        for (alias, &version) in &resolved {
            self.telemetry.set_mlflow_alias(&model.serve_as, alias, version);
        }
        if applied.get(&model.serve_as) == Some(&resolved) {
            return Ok((resolved, true));
        }
        let mut versions: Vec<u64> = resolved.values().copied().collect();
        versions.sort_unstable();
        versions.dedup();
        let mut listings = Vec::new();
        let mut complete = true;
        for version in versions {
            let spec = match follower.client.fetch(model, version, &follower.cache).await {
                Ok(fetched) => Ok(spec(model, version, fetched)),
                Err(e) if e.is_outage() => return Err(e),
                Err(e) => {
                    // Looked at again next time: a download can fail for passing reasons.
                    complete = false;
                    Err(RepositoryError::Source(e.to_string()))
                }
            };
            listings.push(VersionListing { version, spec });
        }
        let versions = if listings.is_empty() {
            Err(RepositoryError::Source(format!(
                "none of the aliases [{}] of registered model '{}' is set in MLflow",
                model.aliases.join(", "),
                model.registered
            )))
        } else {
            Ok(listings)
        };
        tracing::info!(model = %model.serve_as, aliases = ?resolved, "MLflow aliases changed");
        self.apply_aliases(model, versions, resolved.clone()).await;
        if complete {
            applied.insert(model.serve_as.clone(), resolved.clone());
            if let Err(e) = follower.client.remember_aliases(model, &resolved, &follower.cache).await {
                tracing::warn!(model = %model.serve_as, error = %e, "cannot keep the aliases in the cache");
            }
        }
        Ok((resolved, complete))
    }

    /// At a start while MLflow is unreachable: serves the versions of the aliases last served, from the cache.
    /// Returns those aliases when any version could be served.
    async fn serve_cached(&self, follower: &MlflowFollower, model: &MlflowModel) -> Option<BTreeMap<String, u64>> {
        let (aliases, fetched) = follower.client.cached(model, &follower.cache).await?;
        if fetched.is_empty() {
            return None;
        }
        let versions = fetched
            .into_iter()
            .map(|(version, fetched)| VersionListing { version, spec: Ok(spec(model, version, fetched)) })
            .collect();
        tracing::warn!(model = %model.serve_as, aliases = ?aliases, "MLflow is unreachable: serving the cached versions of the aliases last served");
        self.apply_aliases(model, Ok(versions), aliases.clone()).await;
        Some(aliases)
    }

    /// Serves `versions` for `model` with its aliases; requests naming no version go to its first alias's.
    async fn apply_aliases(
        &self,
        model: &MlflowModel,
        versions: Result<Vec<VersionListing>, RepositoryError>,
        aliases: BTreeMap<String, u64>,
    ) {
        let default_version = model.aliases.iter().find_map(|alias| aliases.get(alias)).copied();
        let listing = ModelListing { name: model.serve_as.clone(), versions, aliases, default_version };
        let _control = self.control.lock().await;
        self.apply_listing(listing, false).await;
    }

    /// A model that serves nothing says why (MLflow down, registered model missing); one that serves, or would
    /// load a cached version on demand, keeps doing so.
    fn note_unserved(&self, name: &str, error: &MlflowError) {
        let Ok(entry) = self.entry(name) else { return };
        if entry.versions.load().default_servable().is_some() {
            return;
        }
        entry.versions.rcu(|set| VersionSet { model_error: Some(error.to_string()), ..VersionSet::clone(set) });
    }
}

/// The spec of a version of `model` fetched into the cache.
fn spec(model: &MlflowModel, version: u64, fetched: Fetched) -> ModelSpec {
    ModelSpec {
        name: model.serve_as.clone(),
        version,
        model_path: fetched.model_path,
        config: Arc::clone(&model.config),
        declared: fetched.declared.map(Arc::new),
    }
}

/// 1 s, 2 s, 4 s, ... up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
