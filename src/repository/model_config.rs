//! The per-model `model.toml`. Unknown keys are refused, so a typo never silently falls back to a default.

use serde::Deserialize;

/// Which backend computes a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// The best backend available for the model; today that is tract.
    #[default]
    Auto,
    /// tract-onnx, embedded.
    Tract,
}

/// Which of a model's versions are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    /// The N highest version numbers.
    Latest(u32),
    /// Exactly these versions.
    Specific(Vec<u64>),
    /// Every version found.
    All,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve among those present (sorted ascending), and the named versions that are absent.
    pub fn select(&self, present: &[u64]) -> (Vec<u64>, Vec<u64>) {
        match self {
            VersionPolicy::Latest(n) => {
                let keep = present.len().saturating_sub(*n as usize);
                (present[keep..].to_vec(), Vec::new())
            }
            VersionPolicy::Specific(wanted) => {
                let mut wanted = wanted.clone();
                wanted.sort_unstable();
                wanted.dedup();
                wanted.into_iter().partition(|v| present.contains(v))
            }
            VersionPolicy::All => (present.to_vec(), Vec::new()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub backend: BackendChoice,
    #[serde(default)]
    pub version_policy: VersionPolicy,
}

impl ModelConfig {
    pub fn parse(text: &str) -> Result<ModelConfig, String> {
        let config: ModelConfig = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        match &config.version_policy {
            VersionPolicy::Latest(0) => Err("version_policy latest must be at least 1".to_owned()),
            VersionPolicy::Specific(v) if v.is_empty() => Err("version_policy specific lists no version".to_owned()),
            _ => Ok(config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_policy_form() {
        assert_eq!(ModelConfig::parse("").unwrap(), ModelConfig::default());
        let c = ModelConfig::parse("backend = \"tract\"\nversion_policy = { latest = 2 }").unwrap();
        assert_eq!(c.backend, BackendChoice::Tract);
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        let c = ModelConfig::parse("version_policy = { specific = [3, 1] }").unwrap();
        assert_eq!(c.version_policy, VersionPolicy::Specific(vec![3, 1]));
        let c = ModelConfig::parse("version_policy = \"all\"").unwrap();
        assert_eq!(c.version_policy, VersionPolicy::All);
    }

    #[test]
    fn refuses_typos_and_nonsense() {
        assert!(ModelConfig::parse("backnd = \"tract\"").unwrap_err().contains("backnd"));
        assert!(ModelConfig::parse("backend = \"tensorflow\"").unwrap_err().contains("tensorflow"));
        assert!(ModelConfig::parse("version_policy = { latest = 0 }").is_err());
        assert!(ModelConfig::parse("version_policy = { specific = [] }").is_err());
        assert!(ModelConfig::parse("version_policy = { latest = -1 }").is_err());
    }

    #[test]
    fn selects_versions() {
        let present = [1, 2, 5];
        assert_eq!(VersionPolicy::Latest(1).select(&present), (vec![5], vec![]));
        assert_eq!(VersionPolicy::Latest(9).select(&present), (vec![1, 2, 5], vec![]));
        assert_eq!(VersionPolicy::Specific(vec![5, 3, 1, 1]).select(&present), (vec![1, 5], vec![3]));
        assert_eq!(VersionPolicy::All.select(&present), (vec![1, 2, 5], vec![]));
    }
}
