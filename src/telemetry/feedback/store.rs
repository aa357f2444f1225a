//! Recent predictions, by model and request id, so that a label sent later finds what was predicted, by which
//! version and variant. Bounded by count, age and memory (the server's feedback settings); an entry pushed out
//! leaves a tombstone (a hash of its key) so that late feedback for it is told apart from an id never seen.
//! Sharded so that requests of different ids rarely wait on one another.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{FeedbackSettings, Prediction};

/// Most shards; a small store has fewer, so that its bounds hold closely (each shard keeps its share).
const SHARDS: usize = 16;
/// Entries a shard is meant to hold at least before the store is split further.
const PER_SHARD: usize = 4096;
/// Tombstones a shard keeps at least (8 bytes of hash each, and their set's slot), so a small store still tells
/// late feedback apart from an id never seen for a while; a shard keeps as many as it keeps entries when that is
/// more.
const MIN_TOMBSTONES: usize = 1024;
/// What an entry costs besides its key and predictions: the map slot, the order entry, the entry itself.
const ENTRY_OVERHEAD: usize = 128;

/// What was predicted for a request, as the store kept it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub version: u64,
    pub variant: Option<Arc<str>>,
    pub prediction: Prediction,
    /// A label was already joined to it.
    pub labelled: bool,
}

/// What the store knows of an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Kept),
    /// Seen, but pushed out by age, count or memory.
    Expired,
    Unknown,
}

#[derive(Debug)]
struct Entry {
    kept: Kept,
    at: Instant,
    size: usize,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Arc<str>, Entry>,
    /// Keys in the order they were stored, with the time that tells a stale position from the entry's own.
    order: VecDeque<(Arc<str>, Instant)>,
    bytes: usize,
    tombstones: HashSet<u64>,
    tombstone_order: VecDeque<u64>,
}

#[derive(Debug)]
pub struct PredictionStore {
    shards: Box<[Mutex<Shard>]>,
    settings: FeedbackSettings,
}

impl PredictionStore {
    pub fn new(settings: FeedbackSettings) -> PredictionStore {
        let shards = (settings.max_predictions / PER_SHARD).clamp(1, SHARDS);
        PredictionStore { shards: (0..shards).map(|_| Mutex::default()).collect(), settings }
    }

    pub fn settings(&self) -> &FeedbackSettings {
        &self.settings
    }

    /// Keeps what a version predicted for request `id` of `model` (a reused id replaces the earlier entry).
    pub fn remember(&self, model: &str, id: &str, version: u64, variant: Option<Arc<str>>, prediction: Prediction) {
        let key: Arc<str> = key(model, id).into();
        let size = ENTRY_OVERHEAD + key.len() + prediction.bytes();
        let now = Instant::now();
        let mut shard = self.shard(&key);
        let kept = Kept { version, variant, prediction, labelled: false };
        if let Some(old) = shard.entries.insert(Arc::clone(&key), Entry { kept, at: now, size }) {
            shard.bytes -= old.size;
        }
        shard.bytes += size;
        shard.order.push_back((key, now));
        self.evict(&mut shard, now);
    }

    /// What the store knows of request `id` of `model`.
    pub fn lookup(&self, model: &str, id: &str) -> Lookup {
        let key = key(model, id);
        let mut shard = self.shard(&key);
        let now = Instant::now();
        match shard.entries.get(key.as_str()) {
            Some(entry) if now.duration_since(entry.at) < self.settings.max_age => Lookup::Found(entry.kept.clone()),
            Some(_) => {
                self.evict(&mut shard, now);
                Lookup::Expired
            }
            None if shard.tombstones.contains(&hash(&key)) => Lookup::Expired,
            None => Lookup::Unknown,
        }
    }

    /// Marks request `id` labelled; `false` when it already was, or is no longer kept.
    pub fn mark_labelled(&self, model: &str, id: &str) -> bool {
        let key = key(model, id);
        let mut shard = self.shard(&key);
        match shard.entries.get_mut(key.as_str()) {
            Some(entry) if !entry.kept.labelled => {
                entry.kept.labelled = true;
                true
            }
            _ => false,
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let shard = &self.shards[(hash(key) % self.shards.len() as u64) as usize];
        shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Pushes out the oldest entries while the shard holds too many, too much or too old.
    fn evict(&self, shard: &mut Shard, now: Instant) {
        let max_entries = (self.settings.max_predictions / self.shards.len()).max(1);
        let max_bytes = self.settings.max_bytes / self.shards.len();
        while let Some((key, at)) = shard.order.front() {
            let over = shard.entries.len() > max_entries || shard.bytes > max_bytes;
            let stale_positions = shard.order.len() > 2 * max_entries;
            if !over && !stale_positions && now.duration_since(*at) < self.settings.max_age {
                break;
            }
            let (key, at) = (Arc::clone(key), *at);
            shard.order.pop_front();
            // A key stored again later has a newer position: this older one is only skipped.
            if shard.entries.get(&key).is_some_and(|entry| entry.at == at) {
                let entry = shard.entries.remove(&key).expect("present above");
                shard.bytes -= entry.size;
                let tombstone = hash(&key);
                if shard.tombstones.insert(tombstone) {
                    shard.tombstone_order.push_back(tombstone);
                }
                while shard.tombstone_order.len() > max_entries.max(MIN_TOMBSTONES) {
                    if let Some(old) = shard.tombstone_order.pop_front() {
                        shard.tombstones.remove(&old);
                    }
                }
            }
        }
    }
}

/// Model names cannot hold NUL, so the pair is one unambiguous key.
fn key(model: &str, id: &str) -> String {
    let mut key = String::with_capacity(model.len() + id.len() + 1);
    key.push_str(model);
    key.push('\0');
    key.push_str(id);
    key
}

/// A hash that is the same for the same key across the store's life (the default hasher with its fixed keys).
fn hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn make(max_predictions: usize, max_age: Duration) -> PredictionStore {
        PredictionStore::new(FeedbackSettings { max_predictions, max_age, ..FeedbackSettings::default() })
    }

    fn label(class: i64) -> Prediction {
        Prediction::Classes(vec![class])
    }

    #[test]
    fn kept_predictions_are_found_once_labelled_and_old_ones_expire() {
        let store = make(1000, Duration::from_secs(60));
        store.remember("iris", "a", 1, Some("canary".into()), label(2));
        let Lookup::Found(kept) = store.lookup("iris", "a") else { panic!("kept") };
        assert_eq!((kept.version, kept.variant.as_deref(), kept.labelled), (1, Some("canary"), false));
        assert_eq!(store.lookup("other", "a"), Lookup::Unknown);
        assert!(store.mark_labelled("iris", "a"));
        assert!(!store.mark_labelled("iris", "a"), "a second label is a duplicate");
        assert_eq!(store.lookup("iris", "never"), Lookup::Unknown);
    }

    #[test]
    fn entries_pushed_out_by_count_or_age_are_expired_not_unknown() {
        // A small store is one shard: exactly the newest 10 are kept.
        let store = make(10, Duration::from_secs(60));
        for i in 0..200 {
            store.remember("m", &i.to_string(), 1, None, label(0));
        }
        let found: Vec<usize> =
            (0..200).filter(|i| matches!(store.lookup("m", &i.to_string()), Lookup::Found(_))).collect();
        assert_eq!(found, (190..200).collect::<Vec<_>>());
        assert!((0..190).all(|i| store.lookup("m", &i.to_string()) == Lookup::Expired));
        // A large one is split, each shard keeping its share.
        let store = make(SHARDS * PER_SHARD, Duration::from_secs(60));
        assert_eq!(store.shards.len(), SHARDS);

        let store = make(1000, Duration::from_millis(20));
        store.remember("m", "old", 1, None, label(0));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(store.lookup("m", "old"), Lookup::Expired);
        assert_eq!(store.lookup("m", "old"), Lookup::Expired, "still told apart once pushed out");
    }

    #[test]
    fn memory_is_capped() {
        let settings = FeedbackSettings { max_bytes: SHARDS * 1024, ..FeedbackSettings::default() };
        assert_eq!(PredictionStore::new(settings).shards.len(), SHARDS);
        let store = PredictionStore::new(settings);
        for i in 0..10_000 {
            store.remember("m", &format!("{i:08}"), 1, None, Prediction::Values(vec![0.0; 4]));
        }
        let bytes: usize = store.shards.iter().map(|s| s.lock().unwrap().bytes).sum();
        assert!(bytes <= SHARDS * 1024, "{bytes}");
    }
}
