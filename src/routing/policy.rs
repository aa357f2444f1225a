//! A traffic policy at run time: which variant answers a request (weighted rendezvous hashing of a routing key,
//! or a random draw) and which requests are copied to the shadow.

use std::cell::Cell;
use std::sync::Arc;

use super::window::VariantWindow;
use crate::repository::{Target, TrafficConfig};

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

/// A uniform draw in [0, 1) from the per-thread generator.
pub fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// 64 random bits from a per-thread generator (splitmix64, seeded from the clock and the thread): no lock, no
/// shared state on the request path. Not for secrets.
pub fn random_u64() -> u64 {
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
        splitmix64(next)
    })
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
}
