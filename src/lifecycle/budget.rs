//! The memory budget's arithmetic, as pure functions: whether a load of an estimated cost fits, and if not which
//! idle versions to evict, least recently used first. Versions drained (evicted with requests in flight, or
//! swapped out) still count until their instances have let go of them. `on_demand` applies the plan; the tests
//! here need no runtime. Also how a load's cost is measured: the process's resident memory before and after.

/// `--max-loaded-bytes` and `--max-loaded-models`; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: Option<u64>,
    pub max_versions: Option<usize>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.max_bytes.is_none() && self.max_versions.is_none()
    }

    fn fits(&self, bytes: u64, versions: usize) -> bool {
        self.max_bytes.is_none_or(|max| bytes <= max) && self.max_versions.is_none_or(|max| versions <= max)
    }
}

/// A loaded version, as the budget sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    pub model: String,
    pub version: u64,
    pub cost: u64,
    /// Milliseconds since the Unix epoch of its last use.
    pub last_use: u64,
    /// On demand and not kept loaded.
    pub evictable: bool,
    /// Requests hold it now: evicted, it would drain before its memory is freed.
    pub busy: bool,
}

/// What is loaded now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub residents: Vec<Resident>,
    /// Versions out of service whose memory is not freed yet.
    pub draining_bytes: u64,
    pub draining_versions: usize,
}

impl Snapshot {
    /// Bytes and versions loaded, those draining included.
    pub fn loaded(&self) -> (u64, usize) {
        let bytes = self.residents.iter().map(|r| r.cost).sum::<u64>() + self.draining_bytes;
        (bytes, self.residents.len() + self.draining_versions)
    }

    /// What a version never loaded is guessed to cost: the mean of the on-demand versions loaded (models pinned or
    /// loaded at start may be of another size altogether), else `fallback`.
    pub fn typical_cost(&self, fallback: u64) -> u64 {
        let costs = self.residents.iter().filter(|r| r.evictable).map(|r| r.cost);
        let (total, count) = costs.fold((0u64, 0u64), |(total, count), cost| (total + cost, count + 1));
        total.checked_div(count).unwrap_or(fallback)
    }
}

/// What to do before a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It fits now.
    Fits,
    /// It fits once these versions (model, version) are evicted.
    Evict(Vec<(String, u64)>),
    /// It fits once what drains is freed, or nothing can be evicted now: wait and plan again.
    Wait,
}

/// How to fit one more version of `estimate` bytes under `limits`. Victims are the evictable versions, idle ones
/// first, least recently used first; no more are chosen than needed, and none while what already drains would
/// make room by itself.
pub fn plan(snapshot: &Snapshot, estimate: u64, limits: Limits) -> Plan {
    plan_room(snapshot, estimate, 1, limits)
}

/// The idle versions to evict so that what is loaded fits the budget again, when a load measured more than was
/// guessed; neither the version just loaded (`keep`) nor one that requests hold is among them.
pub fn trim(snapshot: &Snapshot, keep: (&str, u64), limits: Limits) -> Vec<(String, u64)> {
    let mut snapshot = snapshot.clone();
    for resident in snapshot.residents.iter_mut().filter(|r| r.busy || (r.model.as_str(), r.version) == keep) {
        resident.evictable = false;
    }
    match plan_room(&snapshot, 0, 0, limits) {
        Plan::Evict(victims) => victims,
        Plan::Fits | Plan::Wait => Vec::new(),
    }
}

/// [`plan`] for `extra_versions` more versions of `estimate` bytes in all.
fn plan_room(snapshot: &Snapshot, estimate: u64, extra_versions: usize, limits: Limits) -> Plan {
    let (bytes, versions) = snapshot.loaded();
    if limits.fits(bytes.saturating_add(estimate), versions + extra_versions) {
        return Plan::Fits;
    }
    let live_bytes = bytes - snapshot.draining_bytes;
    let live_versions = versions - snapshot.draining_versions;
    if limits.fits(live_bytes.saturating_add(estimate), live_versions + extra_versions) {
        return Plan::Wait;
    }
    let mut candidates: Vec<&Resident> = snapshot.residents.iter().filter(|r| r.evictable).collect();
    candidates.sort_by_key(|r| (r.busy, r.last_use));
    let (mut bytes, mut versions) = (live_bytes, live_versions);
    let mut victims = Vec::new();
    for victim in candidates {
        victims.push((victim.model.clone(), victim.version));
        bytes -= victim.cost;
        versions -= 1;
        if limits.fits(bytes.saturating_add(estimate), versions + extra_versions) {
            return Plan::Evict(victims);
        }
    }
    Plan::Wait
}

/// Whether a version of `cost` bytes can ever fit beside the versions that are never evicted.
pub fn can_ever_fit(snapshot: &Snapshot, cost: u64, limits: Limits) -> bool {
    let pinned: Vec<&Resident> = snapshot.residents.iter().filter(|r| !r.evictable).collect();
    let pinned_bytes = pinned.iter().map(|r| r.cost).sum::<u64>();
    limits.fits(pinned_bytes.saturating_add(cost), pinned.len() + 1)
}

/// The process's resident memory in bytes (Linux: `VmRSS` of `/proc/self/status`); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident(model: &str, cost: u64, last_use: u64, evictable: bool, busy: bool) -> Resident {
        Resident { model: model.into(), version: 1, cost, last_use, evictable, busy }
    }

    fn snapshot(residents: Vec<Resident>) -> Snapshot {
        Snapshot { residents, draining_bytes: 0, draining_versions: 0 }
    }

    const BYTES: Limits = Limits { max_bytes: Some(100), max_versions: None };

    #[test]
    fn a_load_that_fits_evicts_nothing_and_no_limit_always_fits() {
        let s = snapshot(vec![resident("a", 40, 1, true, false)]);
        assert_eq!(plan(&s, 60, BYTES), Plan::Fits);
        assert_eq!(plan(&s, 1 << 40, Limits::default()), Plan::Fits);
        assert!(Limits::default().is_unlimited());
    }

    #[test]
    fn idle_versions_go_first_least_recently_used_first_and_no_more_than_needed() {
        let s = snapshot(vec![
            resident("busy-old", 30, 1, true, true),
            resident("idle-new", 30, 9, true, false),
            resident("idle-old", 30, 5, true, false),
        ]);
        assert_eq!(plan(&s, 30, BYTES), Plan::Evict(vec![("idle-old".into(), 1)]));
        assert_eq!(plan(&s, 60, BYTES), Plan::Evict(vec![("idle-old".into(), 1), ("idle-new".into(), 1)]));
        // Only once every idle one is gone is a busy one chosen: it drains.
        let all = vec![("idle-old".into(), 1), ("idle-new".into(), 1), ("busy-old".into(), 1)];
        assert_eq!(plan(&s, 100, BYTES), Plan::Evict(all));
    }

    #[test]
    fn pinned_versions_are_never_chosen_and_an_impossible_load_waits() {
        let s = snapshot(vec![resident("pinned", 80, 0, false, false), resident("a", 10, 1, true, false)]);
        assert_eq!(plan(&s, 20, BYTES), Plan::Evict(vec![("a".into(), 1)]));
        assert_eq!(plan(&s, 30, BYTES), Plan::Wait);
        assert!(can_ever_fit(&s, 20, BYTES));
        assert!(!can_ever_fit(&s, 21, BYTES));
    }

    #[test]
    fn what_drains_is_waited_for_rather_than_evicting_more() {
        let mut s = snapshot(vec![resident("a", 50, 1, true, false)]);
        s.draining_bytes = 40;
        s.draining_versions = 1;
        assert_eq!(s.loaded(), (90, 2));
        assert_eq!(plan(&s, 30, BYTES), Plan::Wait);
        assert_eq!(plan(&s, 60, BYTES), Plan::Evict(vec![("a".into(), 1)]));
    }

    #[test]
    fn the_version_count_limit_counts_draining_versions_too() {
        let limits = Limits { max_bytes: None, max_versions: Some(2) };
        let mut s = snapshot(vec![resident("a", 1, 2, true, false), resident("b", 1, 1, true, false)]);
        assert_eq!(plan(&s, 0, limits), Plan::Evict(vec![("b".into(), 1)]));
        s.residents.pop();
        s.draining_versions = 1;
        assert_eq!(plan(&s, 0, limits), Plan::Wait);
        s.draining_versions = 0;
        assert_eq!(plan(&s, 0, limits), Plan::Fits);
    }

    #[test]
    fn a_load_that_measured_more_than_guessed_trims_idle_versions_but_not_itself() {
        let s = snapshot(vec![
            resident("old", 30, 1, true, false),
            resident("busy", 30, 0, true, true),
            Resident { version: 2, ..resident("new", 60, 9, true, false) },
        ]);
        assert_eq!(trim(&s, ("new", 2), BYTES), vec![("old".to_owned(), 1)]);
        let within = snapshot(vec![resident("a", 50, 1, true, false)]);
        assert!(trim(&within, ("a", 1), BYTES).is_empty());
    }

    #[test]
    fn a_new_versions_cost_is_guessed_from_those_loaded() {
        let s = snapshot(vec![
            resident("a", 10, 1, true, false),
            resident("b", 30, 1, true, false),
            resident("pinned", 900, 1, false, false),
        ]);
        assert_eq!(s.typical_cost(7), 20);
        assert_eq!(snapshot(vec![]).typical_cost(7), 7);
        assert!(resident_bytes().is_some_and(|bytes| bytes > 0));
    }
}
