//! A model's traffic state: the policy in force, the rollout's status, and what `model.toml` said last.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::policy::Policy;
use super::rollout::RolloutStatus;
use crate::repository::{RolloutConfig, TrafficConfig};
use crate::telemetry::TrafficMetrics;

/// `model.toml`'s `[traffic]` and `[rollout]`, if any.
type FileTraffic = Option<(TrafficConfig, Option<RolloutConfig>)>;

/// A model's traffic: the policy in force, the rollout's status, and what `model.toml` said last.
#[derive(Debug, Default)]
pub struct TrafficState {
    pub policy: ArcSwapOption<Policy>,
    pub rollout: ArcSwapOption<RolloutStatus>,
    /// `None` until the file is first applied.
    file: Mutex<Option<FileTraffic>>,
    /// The running rollout's task and generation; a rollout changes weights only while its generation is current,
    /// checked under this lock, which `stop_rollout` takes too.
    task: Mutex<(Option<tokio::task::AbortHandle>, u64)>,
    /// Serialises policy changes (API calls, file applications) so that the saved policy is the one in force.
    pub changes: Mutex<()>,
}

impl TrafficState {
    /// Puts `policy` in force (or none) and publishes its weights.
    pub fn store(&self, model: &str, policy: Option<Policy>, metrics: &TrafficMetrics) {
        if let Some(old) = self.policy.load().as_ref() {
            for v in &old.variants {
                metrics.weight.with_label_values(&[model, &v.name]).set(0);
            }
        }
        if let Some(policy) = &policy {
            for v in &policy.variants {
                metrics.weight.with_label_values(&[model, &v.name]).set(i64::from(v.weight));
            }
        }
        self.policy.store(policy.map(Arc::new));
    }

    /// Whether `model.toml`'s traffic differs from what was applied from it last; records it as applied.
    pub fn file_changed(&self, traffic: Option<&TrafficConfig>, rollout: Option<&RolloutConfig>) -> bool {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let now = Some(traffic.map(|t| (t.clone(), rollout.cloned())));
        if *file == now {
            return false;
        }
        *file = now;
        true
    }

    /// What `model.toml` said when last applied, as text: the key under which an API change is saved.
    pub fn file_fingerprint(&self) -> String {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_string(&*file).unwrap_or_default()
    }

    /// Forgets what the file said, so that the next listing applies it again (after a refusal).
    pub fn forget_file(&self) {
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Stops the rollout that runs, if any (a new policy from the file or the API replaces it): from here on it
    /// can change nothing, even if it is between two awaits.
    pub fn stop_rollout(&self) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        task.1 += 1;
        if let Some(handle) = task.0.take() {
            handle.abort();
        }
        self.rollout.store(None);
    }

    /// Registers a new rollout's task; returns its generation.
    pub(super) fn set_task(&self, handle: tokio::task::AbortHandle) -> u64 {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        task.1 += 1;
        if let Some(old) = task.0.replace(handle) {
            old.abort();
        }
        task.1
    }

    /// Runs `change` if `generation` is still the current rollout's.
    pub(super) fn if_current(&self, generation: u64, change: impl FnOnce()) -> bool {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.1 == generation {
            change();
        }
        task.1 == generation
    }
}
