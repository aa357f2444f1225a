//! Traffic policies at run time: which variant answers a request (weighted rendezvous hashing of a routing key,
//! or a random draw), which requests are copied to the shadow, and what each variant's answers looked like since
//! the policy was set (the rollout compares those windows).

pub mod rollout;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::repository::{Target, TrafficConfig};
use crate::telemetry::{for_each_class, for_each_value};
use crate::tensor::{DataType, Tensor};

/// A validated policy with the windows of its variants; replaced whole (one `ArcSwap` store) on every change.
#[derive(Debug)]
pub struct Policy {
    pub config: TrafficConfig,
    pub variants: Vec<Variant>,
    pub shadow: Option<Variant>,
    /// Seconds since the Unix epoch when the policy was set.
    pub since_unix: u64,
}

/// One variant: where it sends requests, its weight, and its answers since the policy was set.
#[derive(Debug)]
pub struct Variant {
    pub name: Arc<str>,
    pub target: Target,
    pub weight: u32,
    pub window: VariantWindow,
}

impl Policy {
    /// Builds the run-time policy of a configuration that passed `TrafficConfig::validate`.
    pub fn new(config: TrafficConfig) -> Policy {
        let variant = |name: &str, target: Target, weight: u32| Variant {
            name: Arc::from(name),
            target,
            weight,
            window: VariantWindow::default(),
        };
        let variants = config.variants.iter().map(|v| variant(&v.name, v.target(), v.weight)).collect();
        let shadow = config.shadow.as_ref().map(|s| variant(&s.name, s.target(), 0));
        let since_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Policy { config, variants, shadow, since_unix }
    }

    /// The variants in the order a request tries them: the chosen one first, then the others with weight, so a
    /// variant that cannot answer now hands its requests on. With a routing key the choice is weighted rendezvous
    /// hashing: the same key lands on the same variant while the weights stay, and when they change only the keys
    /// that must move do. Without one it is a random draw.
    pub fn order(&self, key: Option<&str>) -> Vec<&Variant> {
        let mut weighted: Vec<&Variant> = self.variants.iter().filter(|v| v.weight > 0).collect();
        match key {
            Some(key) => {
                let key_hash = fnv1a(key.as_bytes());
                let score = |v: &Variant| rendezvous_score(key_hash, &v.name, v.weight);
                weighted.sort_by(|a, b| score(b).total_cmp(&score(a)));
            }
            None => {
                let total: u32 = weighted.iter().map(|v| v.weight).sum();
                if total > 0 {
                    let mut draw = (random_unit() * f64::from(total)) as u32;
                    let chosen = weighted
                        .iter()
                        .position(|v| {
                            let hit = draw < v.weight;
                            draw = draw.saturating_sub(v.weight);
                            hit
                        })
                        .unwrap_or(0);
                    weighted.swap(0, chosen);
                }
            }
        }
        weighted
    }

    /// Whether this request is copied to the shadow.
    pub fn shadow_draw(&self) -> Option<&Variant> {
        let shadow = self.shadow.as_ref()?;
        let percent = self.config.shadow.as_ref().map_or(0.0, |s| s.percent);
        (random_unit() * 100.0 < percent).then_some(shadow)
    }

    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().chain(&self.shadow).find(|v| &*v.name == name)
    }
}

/// The score of weighted rendezvous hashing: `weight / -ln(u)` for `u` uniform in (0, 1) drawn from the key and
/// the variant's name. The highest score wins, and variant `i` wins with probability `w_i / sum(w)`.
fn rendezvous_score(key_hash: u64, name: &str, weight: u32) -> f64 {
    let h = splitmix64(key_hash ^ fnv1a(name.as_bytes()));
    // 53 random bits, shifted off zero: u in (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// FNV-1a: stable across builds and machines, so replicas route a key alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform draw in [0, 1) from a per-thread generator: no lock, no shared state on the request path.
fn random_unit() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    fn seed() -> u64 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let thread = fnv1a(format!("{:?}", std::thread::current().id()).as_bytes());
        splitmix64(nanos as u64 ^ thread)
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        (splitmix64(next) >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Upper bounds of the latency buckets of a window, in microseconds (about 19 % apart, 50 µs to 100 s).
fn latency_bucket(micros: u64) -> usize {
    let micros = micros.max(50) as f64 / 50.0;
    ((micros.ln() / 1.19f64.ln()).ceil() as usize).min(LATENCY_BUCKETS - 1)
}

fn bucket_upper_micros(bucket: usize) -> f64 {
    50.0 * 1.19f64.powi(bucket as i32)
}

const LATENCY_BUCKETS: usize = 84;
/// Prediction bins of a window: class indices (or integer labels) modulo this, or score bins.
pub const PREDICTION_BINS: usize = 32;

/// What a variant answered since its policy was set: counts, a latency histogram and a histogram of its
/// predictions (first output: the class of each row, or its score binned).
#[derive(Debug)]
pub struct VariantWindow {
    ok: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    predictions: [AtomicU64; PREDICTION_BINS],
}

impl Default for VariantWindow {
    fn default() -> Self {
        VariantWindow {
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            predictions: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A window read at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WindowSummary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
    #[serde(skip)]
    pub predictions: Vec<u64>,
}

impl VariantWindow {
    /// Counts an answer (`ok`) or a failure of the variant, with its latency.
    pub fn observe(&self, elapsed: Duration, ok: bool) {
        let counter = if ok { &self.ok } else { &self.errors };
        counter.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency[latency_bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Bins the rows of the model's first output (whatever outputs the caller asked for).
    pub fn observe_predictions(&self, first_output: &Tensor) {
        for_each_bin(first_output, |bin| {
            self.predictions[bin].fetch_add(1, Ordering::Relaxed);
        });
    }

    pub fn summary(&self) -> WindowSummary {
        let ok = self.ok.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let requests = ok + errors;
        let latency: Vec<u64> = self.latency.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = latency.iter().sum();
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        let p99_bucket = latency.iter().position(|&c| {
            seen += c;
            seen >= rank.max(1)
        });
        WindowSummary {
            requests,
            errors,
            error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
            p99_ms: p99_bucket.filter(|_| total > 0).map_or(0.0, |b| bucket_upper_micros(b) / 1000.0),
            predictions: self.predictions.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
        }
    }
}

/// Calls `f` with the bin of every row of a model's first output: the class of a float output of shape [N, K]
/// (its highest column), a float score of shape [N] or [N, 1] binned over [0, 1] (clamped), or the value of an
/// integer or boolean label, modulo the bins. BYTES outputs have nothing to bin.
fn for_each_bin(tensor: &Tensor, mut f: impl FnMut(usize)) {
    let bins = PREDICTION_BINS as f64;
    let float = matches!(tensor.dtype(), DataType::Fp32 | DataType::Fp64);
    let columns = tensor.shape().get(1).copied().unwrap_or(1);
    match (float, columns > 1) {
        (true, true) => for_each_class(tensor, true, |class| f(class as usize % PREDICTION_BINS)),
        (true, false) => for_each_value(tensor, |score| f((score.clamp(0.0, 1.0) * (bins - 1.0)) as usize)),
        (false, _) => for_each_value(tensor, |label| f(label.rem_euclid(bins) as usize)),
    }
}

/// Population stability index of `actual` against `expected` (bin counts); empty bins count as a small share,
/// so a class one side never predicts still weighs.
pub fn psi(expected: &[u64], actual: &[u64]) -> f64 {
    let (e_total, a_total) = (expected.iter().sum::<u64>() as f64, actual.iter().sum::<u64>() as f64);
    if e_total == 0.0 || a_total == 0.0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = ((e as f64 / e_total).max(1e-4), (a as f64 / a_total).max(1e-4));
            (a - e) * (a / e).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::VariantConfig;

    fn policy(weights: &[(&str, u32)]) -> Policy {
        let variants = weights
            .iter()
            .map(|&(name, weight)| VariantConfig { name: name.into(), model: None, version: None, weight })
            .collect();
        Policy::new(TrafficConfig { variants, shadow: None })
    }

    #[test]
    fn random_split_follows_the_weights() {
        let policy = policy(&[("a", 70), ("b", 20), ("c", 10), ("d", 0)]);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            *counts.entry(policy.order(None)[0].name.to_string()).or_insert(0) += 1;
        }
        for (name, share) in [("a", 0.7), ("b", 0.2), ("c", 0.1)] {
            let got = f64::from(counts[name]) / 100_000.0;
            assert!((got - share).abs() < 0.01, "{name}: {got}");
        }
        assert!(!counts.contains_key("d"));
    }

    #[test]
    fn keys_are_sticky_follow_the_weights_and_move_minimally() {
        let before = policy(&[("a", 90), ("b", 10)]);
        let after = policy(&[("a", 50), ("b", 50)]);
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let pick = |p: &Policy, key: &str| p.order(Some(key))[0].name.to_string();
        let (mut b_before, mut b_after, mut moved_back) = (0, 0, 0);
        for key in &keys {
            let (first, again, later) = (pick(&before, key), pick(&before, key), pick(&after, key));
            assert_eq!(first, again, "a key must land on the same variant");
            b_before += usize::from(first == "b");
            b_after += usize::from(later == "b");
            // Growing b's weight may move keys from a to b, never from b to a.
            moved_back += usize::from(first == "b" && later == "a");
        }
        let share = |n: usize| n as f64 / keys.len() as f64;
        assert!((share(b_before) - 0.10).abs() < 0.01, "{}", share(b_before));
        assert!((share(b_after) - 0.50).abs() < 0.015, "{}", share(b_after));
        assert_eq!(moved_back, 0);
    }

    #[test]
    fn windows_count_and_bin_predictions() {
        let window = VariantWindow::default();
        let probabilities: Vec<u8> = [0.1f32, 0.9, 0.8, 0.2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = Tensor::new(DataType::Fp32, vec![2, 2], bytes::Bytes::from(probabilities)).unwrap();
        window.observe(Duration::from_millis(2), true);
        window.observe_predictions(&tensor);
        window.observe(Duration::from_millis(30), false);
        let summary = window.summary();
        assert_eq!((summary.requests, summary.errors, summary.error_rate), (2, 1, 0.5));
        assert_eq!(&summary.predictions[..2], [1, 1]);
        assert!(summary.p99_ms >= 30.0 && summary.p99_ms < 36.0, "{}", summary.p99_ms);
    }

    #[test]
    fn psi_is_zero_for_equal_distributions_and_large_for_different_ones() {
        assert!(psi(&[50, 50, 0], &[500, 500, 0]) < 1e-9);
        assert!(psi(&[90, 10], &[10, 90]) > 1.0);
        assert!(psi(&[100, 0], &[95, 5]) > 0.02);
    }
}
