//! Which version answers a request. Each model's traffic state lives in this module's own table, beside (not in)
//! the model table: the policy in force, weighted rendezvous hashing of routing keys, the shadow draw, the
//! variants' windows and the rollout controller that moves the weights. The lifecycle knows nothing of traffic:
//! it tells this table of every listing it applied ([`ListingObserver`]), and `model.toml`'s `[traffic]` and
//! `[rollout]` are applied from there.

mod changes;
mod policy;
mod rollout;
mod state;
mod window;

use std::path::PathBuf;
use std::sync::Arc;

use dashmap::DashMap;

pub use policy::{Policy, Variant, random_u64, random_unit};
pub use rollout::{Decision, RolloutStatus};
pub use window::{PREDICTION_BINS, VariantWindow, WindowSummary};

use crate::lifecycle::{LookupError, ModelTable, ServingVersion};
use crate::repository::Target;
use crate::telemetry::TrafficMetrics;
use state::TrafficState;

/// Where a request goes: the version, and the variant of the policy that chose it.
#[derive(Debug)]
pub struct Routed {
    pub serving: Arc<ServingVersion>,
    pub variant: Option<Arc<str>>,
    /// The policy that routed the request (its windows record the answer).
    pub policy: Option<Arc<Policy>>,
}

impl Routed {
    /// The window of the variant that answers, when a policy routed the request.
    pub fn window(&self) -> Option<&VariantWindow> {
        let (policy, variant) = (self.policy.as_ref()?, self.variant.as_deref()?);
        policy.variant(variant).map(|v| &v.window)
    }
}

/// A shadow copy drawn for a request: the shadow variant's name, its version, and its window.
#[derive(Debug)]
pub struct Shadow {
    pub name: Arc<str>,
    pub serving: Arc<ServingVersion>,
    /// The policy the shadow belongs to (its window records the copy's answer).
    pub policy: Arc<Policy>,
}

impl Shadow {
    pub fn window(&self) -> Option<&VariantWindow> {
        self.policy.variant(&self.name).map(|v| &v.window)
    }
}

/// name → the model's traffic state, for every model that ever had a policy.
#[derive(Debug)]
pub struct TrafficTable {
    models: DashMap<String, Arc<TrafficState>>,
    /// Where rollout states and API policies are kept across restarts; `None` keeps them in memory only.
    state_dir: Option<PathBuf>,
    metrics: TrafficMetrics,
}

impl TrafficTable {
    pub fn new(metrics: TrafficMetrics, state_dir: Option<PathBuf>) -> TrafficTable {
        TrafficTable { models: DashMap::new(), state_dir, metrics }
    }

    fn state_or_new(&self, model: &str) -> Arc<TrafficState> {
        Arc::clone(self.models.entry(model.to_owned()).or_default().value())
    }

    /// The version a request goes to. A pinned version (number or alias) bypasses the traffic policy; otherwise
    /// the policy picks a variant (by `key` when given), the next variant answers when the chosen one cannot,
    /// and without a policy, or when no variant can answer, the model's default version does.
    pub fn route(
        &self,
        table: &ModelTable,
        model: &str,
        version: Option<&str>,
        key: Option<&str>,
    ) -> Result<Routed, LookupError> {
        let plain = |serving| Routed { serving, variant: None, policy: None };
        if version.is_some() {
            return table.resolve(model, version).map(plain);
        }
        let Some(policy) = self.policy(model) else {
            return table.resolve(model, None).map(plain);
        };
        for variant in policy.order(key) {
            match resolve_target(table, model, &variant.target) {
                Ok(serving) => {
                    let name = Arc::clone(&variant.name);
                    return Ok(Routed { serving, variant: Some(name), policy: Some(policy) });
                }
                // An on-demand version is loaded for the variant, not passed over.
                Err(e @ LookupError::NotLoaded { .. }) => return Err(e),
                Err(_) => {}
            }
        }
        table.resolve(model, None).map(plain)
    }

    /// The shadow's version for a request routed by `routed`'s policy, when this request is drawn for a copy
    /// (`None` when it is not); an error when the shadow's version cannot take it.
    pub fn shadow(&self, table: &ModelTable, model: &str, routed: &Routed) -> Option<Result<Shadow, LookupError>> {
        let policy = routed.policy.as_ref()?;
        let variant = policy.shadow_draw()?;
        let shadow = resolve_target(table, model, &variant.target).map(|serving| Shadow {
            name: Arc::clone(&variant.name),
            serving,
            policy: Arc::clone(policy),
        });
        Some(shadow)
    }

    /// The route of a request to `model` whose chosen version was not loaded and has just been: under the variant
    /// that targets it (the first, when several do), unless the request pinned its version or no variant does (the
    /// default version was chosen).
    pub fn loaded(&self, model: &str, pinned: bool, serving: Arc<ServingVersion>) -> Routed {
        let policy = if pinned { None } else { self.policy(model) };
        let variant = policy.as_ref().and_then(|policy| {
            policy.variants.iter().find(|variant| {
                let target = &variant.target;
                target.model.as_deref().unwrap_or(model) == serving.name
                    && target.version.is_none_or(|version| version == serving.version)
            })
        });
        match variant {
            Some(variant) => Routed { variant: Some(Arc::clone(&variant.name)), serving, policy },
            None => Routed { serving, variant: None, policy: None },
        }
    }

    /// The policy in force for `model`, if any.
    pub fn policy(&self, model: &str) -> Option<Arc<Policy>> {
        self.models.get(model)?.policy.load_full()
    }

    /// The state of `model`'s rollout, if it has one.
    pub fn rollout(&self, model: &str) -> Option<Arc<RolloutStatus>> {
        self.models.get(model)?.rollout.load_full()
    }

    /// The metrics of traffic splitting, shadows and rollouts.
    pub fn metrics(&self) -> &TrafficMetrics {
        &self.metrics
    }
}

fn resolve_target(table: &ModelTable, model: &str, target: &Target) -> Result<Arc<ServingVersion>, LookupError> {
    let version = target.version.map(|v| v.to_string());
    table.resolve(target.model.as_deref().unwrap_or(model), version.as_deref())
}
