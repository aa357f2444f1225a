use super::*;

/// A ready version in these tests: a handle compared by identity, like `Arc<ServingVersion>`.
type Handle = Arc<&'static str>;

fn ready(name: &'static str) -> VersionState<Handle> {
    VersionState::Ready(Arc::new(name))
}

fn set(versions: Vec<(u64, VersionState<Handle>)>) -> VersionSet<Handle> {
    VersionSet { versions: versions.into_iter().collect(), ..Default::default() }
}

fn drained(draining: &[(u64, Handle)]) -> Vec<u64> {
    draining.iter().map(|&(v, _)| v).collect()
}

#[test]
fn the_default_is_the_named_version_or_the_highest_ready_one() {
    let mut versions = set(vec![(1, ready("v1")), (2, ready("v2")), (3, VersionState::Loading)]);
    assert_eq!(versions.default_ready_entry().map(|(v, s)| (v, **s)), Some((2, "v2")));
    versions.default_version = Some(1);
    assert_eq!(versions.default_ready().map(|s| **s), Some("v1"));
    versions.default_version = Some(3);
    assert!(versions.default_ready().is_none());
    assert_eq!(versions.unavailable_reason(), "version 1 is ready; version 2 is ready; version 3 is loading");
    assert_eq!(VersionSet::<Handle>::default().unavailable_reason(), "no version is available");
}

#[test]
fn a_failed_new_copy_keeps_the_serving_one() {
    let serving: Handle = Arc::new("v1");
    let kept = keep_serving("m", 1, VersionState::Failed("bad".into()), Some(Arc::clone(&serving)));
    assert!(matches!(kept, VersionState::Ready(s) if s.same(&serving)));
    let failed = keep_serving::<Handle>("m", 1, VersionState::Failed("bad".into()), None);
    assert!(matches!(failed, VersionState::Failed(reason) if reason == "bad"));
}

#[test]
fn an_unusable_listing_never_replaces_a_serving_set() {
    let serving = set(vec![(1, ready("v1"))]);
    let broken = VersionSet { model_error: Some("invalid model.toml".into()), ..Default::default() };
    assert!(!replaces(Some(&serving), &broken));
    assert!(replaces(None, &broken));
    assert!(replaces(Some(&set(vec![(1, VersionState::Failed("x".into()))])), &broken));
    assert!(replaces(Some(&serving), &set(vec![(2, ready("v2"))])));
}

#[test]
fn versions_no_longer_listed_drain_and_show_as_unloaded() {
    let previous = set(vec![(1, ready("v1")), (2, ready("v2")), (3, VersionState::Unloaded)]);
    let kept = match &previous.versions[&2] {
        VersionState::Ready(v) => Arc::clone(v),
        _ => unreachable!(),
    };
    let mut next = set(vec![(2, VersionState::Ready(kept)), (4, ready("v4"))]);
    let draining = settle("m", &previous, &mut next);
    assert_eq!(drained(&draining), [1]);
    assert!(matches!(next.versions[&1], VersionState::Unloaded));
    assert!(matches!(next.versions[&3], VersionState::Unloaded));
    assert!(next.serves(2) && next.serves(4));
}

#[test]
fn a_reloaded_copy_replaces_and_drains_the_old_one() {
    let previous = set(vec![(1, ready("old copy"))]);
    let mut next = set(vec![(1, ready("new copy"))]);
    let draining = settle("m", &previous, &mut next);
    assert_eq!(draining.len(), 1);
    assert_eq!(*draining[0].1, "old copy");
    assert_eq!(next.default_ready().map(|s| **s), Some("new copy"));
}

#[test]
fn the_default_keeps_answering_while_its_successor_does_not_serve() {
    let previous = set(vec![(1, ready("v1"))]);
    let mut next = set(vec![(2, VersionState::Failed("corrupt".into()))]);
    let draining = settle("m", &previous, &mut next);
    assert!(draining.is_empty(), "the old default still serves");
    assert_eq!(next.default_version, Some(1));
    assert_eq!(next.default_ready().map(|s| **s), Some("v1"));
    // A successor that serves takes over, and the old default drains.
    let mut next = set(vec![(2, ready("v2"))]);
    assert_eq!(drained(&settle("m", &previous, &mut next)), [1]);
    assert_eq!(next.default_ready().map(|s| **s), Some("v2"));
}

#[test]
fn an_alias_moved_to_a_broken_version_keeps_naming_the_old_one() {
    let mut previous = set(vec![(1, ready("v1"))]);
    previous.aliases.insert("champion".into(), 1);
    previous.default_version = Some(1);
    let mut next = set(vec![(2, VersionState::Failed("corrupt".into()))]);
    next.aliases.insert("champion".into(), 2);
    next.default_version = Some(2);
    let draining = settle("m", &previous, &mut next);
    assert!(draining.is_empty());
    assert_eq!(next.aliases["champion"], 1);
    assert_eq!(next.default_version, Some(1));
    assert!(next.serves(1));
    assert_eq!(next.aliases_of(1), ["champion"]);
}

#[test]
fn unloading_takes_every_version_out_and_drains_the_ready_ones() {
    let mut versions = set(vec![(1, ready("v1")), (2, VersionState::Failed("x".into()))]);
    versions.model_error = Some("old error".into());
    let (next, draining) = unload_all(&versions);
    assert_eq!(drained(&draining), [1]);
    assert!(next.versions.values().all(|s| matches!(s, VersionState::Unloaded)));
    assert!(next.model_error.is_none());
}

#[test]
fn only_the_version_policy_and_traffic_may_change_under_a_serving_version() {
    let config = |text: &str| ModelConfig::parse(text).unwrap();
    let base = config("max_batch_size = 8");
    assert!(same_serving_config(&base, &config("max_batch_size = 8\nversion_policy = { latest = 1 }")));
    let traffic = "max_batch_size = 8\n[traffic]\nvariants = [{ name = \"a\", version = 1, weight = 100 }]";
    assert!(same_serving_config(&base, &config(traffic)));
    assert!(!same_serving_config(&base, &config("max_batch_size = 16")));
}

fn listed(version: u64) -> VersionState<Handle> {
    VersionState::Listed(Listed::new(crate::repository::ModelSpec {
        name: "m".into(),
        version,
        model_path: "m/1/model.onnx".into(),
        config: Arc::new(ModelConfig::default()),
        declared: None,
    }))
}

#[test]
fn a_version_listed_on_demand_counts_as_serving() {
    // The default: the highest version ready or free to load; one backing off after a failed load is passed over.
    let mut versions = set(vec![(1, ready("v1")), (2, listed(2))]);
    assert_eq!(versions.default_servable().map(|(v, _)| v), Some(2));
    let VersionState::Listed(two) = listed(2) else { unreachable!() };
    versions.versions.insert(2, VersionState::Listed(two.failed("corrupt".into())));
    assert_eq!(versions.default_servable().map(|(v, _)| v), Some(1));

    // An unusable listing does not replace a model that would load on demand.
    let previous = set(vec![(1, listed(1))]);
    let broken = VersionSet { model_error: Some("invalid model.toml".into()), ..Default::default() };
    assert!(!replaces(Some(&previous), &broken));

    // A broken new version leaves the listed one answering unversioned requests.
    let mut next = set(vec![(2, VersionState::Failed("corrupt".into()))]);
    assert!(settle("m", &previous, &mut next).is_empty());
    assert!(matches!(next.versions.get(&1), Some(VersionState::Listed(_))));
    assert_eq!(next.default_version, Some(1));
}
