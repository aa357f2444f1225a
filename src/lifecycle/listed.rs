//! A version known but not loaded: what an on-demand version is until its first request, and again once evicted.
//! It keeps what its next load needs (the spec), what its last load measured (the cost the budget counts), its
//! statistics across evictions, and the back-off of a load that failed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::repository::ModelSpec;
use crate::telemetry::Statistics;

/// The first wait after a failed load; each further failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Listed {
    /// What its load reads.
    pub spec: Arc<ModelSpec>,
    /// Bytes its last load measured.
    pub cost: Option<u64>,
    /// Set once it was loaded and evicted.
    pub evicted: Option<Evicted>,
    /// Its last load failed: it is not tried again before the back-off ends (or its files change, which lists it
    /// afresh).
    pub failed: Option<LoadFailure>,
    /// A request is loading it now; the others asking for it wait for that load.
    pub loading: bool,
}

/// What an evicted version leaves behind.
#[derive(Debug, Clone)]
pub struct Evicted {
    /// The last request it answered (or was chosen for).
    pub last_use: SystemTime,
    /// Its counts, carried into its next load so the statistics endpoint keeps counting.
    pub statistics: Arc<Statistics>,
}

#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub reason: String,
    /// Failed loads in a row.
    pub attempts: u32,
    /// When it may be tried again.
    pub retry_at: Instant,
}

impl Listed {
    pub fn new(spec: ModelSpec) -> Listed {
        Listed { spec: Arc::new(spec), cost: None, evicted: None, failed: None, loading: false }
    }

    /// Whether a request may load it now: never failed, or its back-off is over.
    pub fn may_load_now(&self) -> bool {
        self.failed.as_ref().is_none_or(|failed| Instant::now() >= failed.retry_at)
    }

    /// The same version after one more failed load.
    pub fn failed(mut self, reason: String) -> Listed {
        let attempts = self.failed.as_ref().map_or(0, |f| f.attempts) + 1;
        let retry_at = Instant::now() + backoff(attempts);
        self.failed = Some(LoadFailure { reason, attempts, retry_at });
        self.loading = false;
        self
    }

    /// "version 2 is not loaded yet", for error messages and the repository index.
    pub fn describe(&self, version: u64) -> String {
        match (&self.failed, &self.evicted) {
            (Some(failed), _) => {
                let wait = failed.retry_at.saturating_duration_since(Instant::now()).as_secs_f64().ceil();
                format!(
                    "version {version} failed to load ({} time(s) in a row): {}; tried again in {wait} s, or \
                     when its files change",
                    failed.attempts, failed.reason
                )
            }
            (None, Some(_)) => format!("version {version} was evicted; it loads on its next request"),
            (None, None) => format!("version {version} is not loaded; it loads on its first request"),
        }
    }

    /// Seconds until it may be tried again, for `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.failed.as_ref().map(|failed| failed.retry_at.saturating_duration_since(Instant::now()))
    }
}

/// The wait after `attempts` failed loads in a row.
fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::ModelConfig;

    fn listed() -> Listed {
        Listed::new(ModelSpec {
            name: "m".into(),
            version: 1,
            model_path: "m/1/model.onnx".into(),
            config: Arc::new(ModelConfig::default()),
            declared: None,
        })
    }

    #[test]
    fn failures_back_off_doubling_up_to_a_bound() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), MAX_BACKOFF);
        let once = listed().failed("corrupt".into());
        assert!(!once.may_load_now());
        let twice = once.failed("corrupt".into());
        assert_eq!(twice.failed.as_ref().map(|f| f.attempts), Some(2));
        let text = twice.describe(1);
        assert!(text.contains("(2 time(s) in a row): corrupt") && text.contains("when its files change"), "{text}");
        assert!(listed().may_load_now());
    }
}
