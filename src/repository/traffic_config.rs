//! `[traffic]` and `[rollout]` of `model.toml`; the same shapes are what the traffic management API takes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_valid_model_name;

/// `[traffic]`: how requests that pin no version are split across variants, and what is copied to a shadow.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// `[[traffic.variants]]`: the named shares of the requests; their weights sum to 100.
    pub variants: Vec<VariantConfig>,
    /// `[traffic.shadow]`: where a copy of some requests goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowConfig>,
}

/// Where a variant's requests go: a version of this model, or a model with the same signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Another model with the same signature; this model when absent.
    pub model: Option<String>,
    /// A version of that model; the version its unpinned requests go to when absent.
    pub version: Option<u64>,
}

/// One named share of the traffic: `model` (another model with the same signature; this one when absent) and
/// `version` (its unpinned default when absent).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// The variant's name, in metrics, the `x-infergate-variant` header and `[rollout]`.
    pub name: String,
    /// Another model with the same signature [default: this model]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A version of that model [default: the version its unpinned requests go to]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Percent of the requests; the weights of a policy sum to 100.
    pub weight: u32,
}

/// A copy of `percent` of the requests goes to the shadow; its answers are recorded and discarded.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// The shadow's name, in metrics.
    pub name: String,
    /// Another model with the same signature [default: this model]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A version of that model [default: the version its unpinned requests go to]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Percent of the requests copied to the shadow.
    pub percent: f64,
}

impl VariantConfig {
    pub fn target(&self) -> Target {
        Target { model: self.model.clone(), version: self.version }
    }
}

impl ShadowConfig {
    pub fn target(&self) -> Target {
        Target { model: self.model.clone(), version: self.version }
    }
}

/// `[rollout]`: the candidate variant's share grows step by step while it compares well with the baseline; a
/// breach sets it to 0, passing the last step below 100 promotes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// The variant the candidate is compared with (required).
    pub baseline: String,
    /// The variant whose share grows step by step (required).
    pub candidate: String,
    /// The candidate's share of the two variants' traffic at each step, in percent, rising to 100.
    pub steps: Vec<u32>,
    /// How long each step is held (once both variants have `min_requests`).
    pub step_secs: f64,
    /// How often the comparison runs during a step.
    pub check_secs: f64,
    /// Answers each variant needs in a step before it is judged.
    pub min_requests: u64,
    /// Largest candidate error rate above the baseline's (0.01 = one point).
    pub max_error_rate_increase: f64,
    /// Largest candidate p99 latency as a multiple of the baseline's.
    pub max_p99_ratio: f64,
    /// Largest population stability index between the two variants' predictions.
    pub max_psi: f64,
    /// Largest drop of the candidate's accuracy below the baseline's (0.05 = five points), judged on the labels
    /// sent as feedback; unset, accuracy is not compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_accuracy_drop: Option<f64>,
    /// Labels each variant needs in a step before its accuracy is judged; a step with `max_accuracy_drop` does not
    /// pass without them [default: 100]
    // Left out of the serialized form at its default, like `max_accuracy_drop` when unset, so that a rollout saved
    // before these keys existed is still the same rollout.
    #[serde(skip_serializing_if = "is_default_min_feedback")]
    pub min_feedback: u64,
}

const DEFAULT_MIN_FEEDBACK: u64 = 100;

fn is_default_min_feedback(value: &u64) -> bool {
    *value == DEFAULT_MIN_FEEDBACK
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            baseline: String::new(),
            candidate: String::new(),
            steps: vec![5, 25, 50, 100],
            step_secs: 300.0,
            check_secs: 1.0,
            min_requests: 200,
            max_error_rate_increase: 0.01,
            max_p99_ratio: 1.5,
            max_psi: 0.2,
            max_accuracy_drop: None,
            min_feedback: DEFAULT_MIN_FEEDBACK,
        }
    }
}

impl TrafficConfig {
    /// What can be checked without the model table: names, weights and the shadow's share.
    pub fn validate(&self) -> Result<(), String> {
        if self.variants.is_empty() {
            return Err("[traffic] names no variant".to_owned());
        }
        let mut names: Vec<&str> = Vec::new();
        let shadow = self.shadow.as_ref().map(|s| (&s.name, &s.model));
        for (name, model) in self.variants.iter().map(|v| (&v.name, &v.model)).chain(shadow) {
            if !is_valid_model_name(name) {
                return Err(format!("variant name '{name}' must be letters, digits, '.', '_' or '-'"));
            }
            if names.contains(&name.as_str()) {
                return Err(format!("variant '{name}' is named twice"));
            }
            names.push(name);
            if let Some(model) = model
                && !is_valid_model_name(model)
            {
                return Err(format!("variant '{name}': '{model}' is not a valid model name"));
            }
        }
        let total: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
        if total != 100 {
            return Err(format!("variant weights must sum to 100, got {total}"));
        }
        if let Some(shadow) = &self.shadow
            && !(0.0..=100.0).contains(&shadow.percent)
        {
            return Err(format!("shadow percent must be between 0 and 100, got {}", shadow.percent));
        }
        Ok(())
    }

    pub fn variant(&self, name: &str) -> Option<&VariantConfig> {
        self.variants.iter().find(|v| v.name == name)
    }
}

/// A week: longer steps are typos (and would overflow a timer).
const MAX_STEP_SECS: f64 = 7.0 * 24.0 * 3600.0;

impl RolloutConfig {
    pub fn validate(&self, traffic: Option<&TrafficConfig>) -> Result<(), String> {
        let traffic = traffic.ok_or("[rollout] needs a [traffic] section naming its variants")?;
        for name in [&self.baseline, &self.candidate] {
            if traffic.variant(name).is_none() {
                return Err(format!("[rollout] names variant '{name}', which [traffic] does not have"));
            }
        }
        let pool: u32 =
            [&self.baseline, &self.candidate].iter().filter_map(|n| traffic.variant(n)).map(|v| v.weight).sum();
        if pool == 0 {
            return Err("[rollout] baseline and candidate have no weight between them to share".to_owned());
        }
        if self.baseline == self.candidate {
            return Err("[rollout] baseline and candidate must be different variants".to_owned());
        }
        if self.steps.is_empty() || self.steps.windows(2).any(|w| w[0] >= w[1]) || self.steps.last() != Some(&100) {
            return Err(format!("[rollout] steps must rise strictly and end at 100, got {:?}", self.steps));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let duration = |x: f64| positive(x) && x <= MAX_STEP_SECS;
        if !duration(self.step_secs) || !duration(self.check_secs) {
            return Err(format!("[rollout] step_secs and check_secs must be above 0 and at most {MAX_STEP_SECS}"));
        }
        if !(positive(self.max_p99_ratio) && self.max_psi.is_finite() && self.max_psi >= 0.0) {
            return Err("[rollout] max_p99_ratio must be positive and max_psi at least 0".to_owned());
        }
        if !(0.0..=1.0).contains(&self.max_error_rate_increase) {
            return Err("[rollout] max_error_rate_increase is a fraction between 0 and 1".to_owned());
        }
        if self.min_requests == 0 || self.min_feedback == 0 {
            return Err("[rollout] min_requests and min_feedback must be at least 1".to_owned());
        }
        if self.max_accuracy_drop.is_some_and(|drop| !(0.0..=1.0).contains(&drop)) {
            return Err("[rollout] max_accuracy_drop is a fraction between 0 and 1".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrafficConfig, String> {
        let config: TrafficConfig = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn variants_of_versions_and_models_with_a_shadow() {
        let config = parse(
            "variants = [{ name = \"a\", version = 1, weight = 90 }, { name = \"b\", model = \"other\", weight = 10 }]\n\
             shadow = { name = \"s\", version = 3, percent = 12.5 }",
        )
        .unwrap();
        assert_eq!(config.variants[0].target(), Target { model: None, version: Some(1) });
        assert_eq!(config.variants[1].target(), Target { model: Some("other".into()), version: None });
        assert_eq!(config.shadow.unwrap().percent, 12.5);
    }

    #[test]
    fn refuses_bad_weights_names_and_shares() {
        let err = parse("variants = [{ name = \"a\", weight = 90 }, { name = \"b\", weight = 20 }]").unwrap_err();
        assert_eq!(err, "variant weights must sum to 100, got 110");
        let err = parse("variants = [{ name = \"a\", weight = 50 }, { name = \"a\", weight = 50 }]").unwrap_err();
        assert_eq!(err, "variant 'a' is named twice");
        assert!(parse("variants = [{ name = \"../a\", weight = 100 }]").is_err());
        assert!(parse("variants = [{ name = \"a\", model = \"../x\", weight = 100 }]").is_err());
        assert!(
            parse("variants = [{ name = \"a\", weight = 100 }]\nshadow = { name = \"s\", percent = 101 }").is_err()
        );
        assert!(parse("variants = []").is_err());
        assert!(parse("variants = [{ name = \"a\", weight = 100, colour = 1 }]").is_err());
    }

    #[test]
    fn rollouts_need_their_variants_and_rising_steps() {
        let traffic = parse("variants = [{ name = \"a\", weight = 100 }, { name = \"b\", weight = 0 }]").unwrap();
        let rollout = |text: &str| -> Result<(), String> {
            let config: RolloutConfig = toml::from_str(text).map_err(|e| e.message().to_owned())?;
            config.validate(Some(&traffic))
        };
        rollout("baseline = \"a\"\ncandidate = \"b\"").unwrap();
        assert!(rollout("baseline = \"a\"\ncandidate = \"c\"").unwrap_err().contains("'c'"));
        assert!(rollout("baseline = \"a\"\ncandidate = \"b\"\nsteps = [50, 25, 100]").is_err());
        assert!(rollout("baseline = \"a\"\ncandidate = \"b\"\nsteps = [5, 50]").is_err());
        assert!(rollout("baseline = \"a\"\ncandidate = \"a\"").is_err());
        assert!(rollout("baseline = \"a\"\ncandidate = \"b\"\nmax_accuracy_drop = 0.05\nmin_feedback = 20").is_ok());
        assert!(rollout("baseline = \"a\"\ncandidate = \"b\"\nmax_accuracy_drop = 1.5").is_err());
        assert!(rollout("baseline = \"a\"\ncandidate = \"b\"\nmin_feedback = 0").is_err());
        assert!(rollout("baseline = \"a\"\ncandidate = \"b\"\nstep_secs = 1e20").unwrap_err().contains("at most"));
        let lone: RolloutConfig = toml::from_str("baseline = \"a\"\ncandidate = \"b\"").unwrap();
        assert!(lone.validate(None).is_err());
    }
}
