use super::*;

/// One stump per mode: node 0 compares feature 0 with 1.0; leaf 1 (true) votes 1.0, leaf 2 (false) votes 2.0.
fn stump(mode: Mode, missing_true: bool) -> TreeAttributes {
    TreeAttributes {
        tree_ids: vec![0, 0, 0],
        node_ids: vec![0, 1, 2],
        feature_ids: vec![0, 0, 0],
        modes: vec![mode, Mode::Leaf, Mode::Leaf],
        values: vec![1.0, 0.0, 0.0],
        true_ids: vec![1, 0, 0],
        false_ids: vec![2, 0, 0],
        missing_tracks_true: vec![missing_true, false, false],
        leaf_tree_ids: vec![0, 0],
        leaf_node_ids: vec![1, 2],
        leaf_targets: vec![0, 0],
        leaf_weights: vec![1.0, 2.0],
    }
}

fn regress(attrs: &TreeAttributes, x: f32) -> f32 {
    let model = Regressor::new(attrs, 1, vec![], PostTransform::None, Aggregate::Sum).unwrap();
    model.predict(&[x], 1, 1).unwrap()[0]
}

#[test]
fn every_branch_mode_compares_as_named() {
    let cases = [
        (Mode::Leq, [(0.5, 1.0), (1.0, 1.0), (1.5, 2.0)]),
        (Mode::Lt, [(0.5, 1.0), (1.0, 2.0), (1.5, 2.0)]),
        (Mode::Gte, [(0.5, 2.0), (1.0, 1.0), (1.5, 1.0)]),
        (Mode::Gt, [(0.5, 2.0), (1.0, 2.0), (1.5, 1.0)]),
        (Mode::Eq, [(0.5, 2.0), (1.0, 1.0), (1.5, 2.0)]),
        (Mode::Neq, [(0.5, 1.0), (1.0, 2.0), (1.5, 1.0)]),
    ];
    for (mode, expected) in cases {
        for (x, want) in expected {
            assert_eq!(regress(&stump(mode, false), x), want, "{mode:?} x={x}");
        }
    }
}

#[test]
fn missing_values_follow_the_track() {
    assert_eq!(regress(&stump(Mode::Leq, true), f32::NAN), 1.0);
    assert_eq!(regress(&stump(Mode::Leq, false), f32::NAN), 2.0);
}

#[test]
fn cycles_and_dangling_children_are_refused() {
    let mut cyclic = stump(Mode::Leq, false);
    cyclic.modes[1] = Mode::Leq;
    cyclic.true_ids[1] = 0;
    cyclic.false_ids[1] = 2;
    cyclic.leaf_node_ids = vec![2];
    cyclic.leaf_tree_ids = vec![0];
    cyclic.leaf_targets = vec![0];
    cyclic.leaf_weights = vec![1.0];
    let err = Ensemble::build(&cyclic, 1).unwrap_err();
    assert!(err.contains("cycle"), "{err}");

    let mut dangling = stump(Mode::Leq, false);
    dangling.false_ids[0] = 7;
    assert!(Ensemble::build(&dangling, 1).unwrap_err().contains("no node 7"));

    assert!(Ensemble::build(&stump(Mode::Leq, false), MAX_OUTPUTS + 1).unwrap_err().contains("at most"));

    let mut bad_target = stump(Mode::Leq, false);
    bad_target.leaf_targets[0] = 3;
    assert!(Ensemble::build(&bad_target, 2).unwrap_err().contains("output 3"));
}

#[test]
fn narrow_input_is_an_error_not_a_panic() {
    let mut attrs = stump(Mode::Leq, false);
    attrs.feature_ids[0] = 4;
    let model = Regressor::new(&attrs, 1, vec![], PostTransform::None, Aggregate::Sum).unwrap();
    assert!(model.predict(&[1.0, 2.0], 1, 2).unwrap_err().contains("5 features"));
}

#[test]
fn regressor_aggregates_and_base_values() {
    // Two stumps on the same feature: votes 1/2 and 1/2 again.
    let one = stump(Mode::Leq, false);
    let mut two = one.clone();
    for ids in [&mut two.tree_ids, &mut two.leaf_tree_ids] {
        ids.iter_mut().for_each(|t| *t = 1);
    }
    two.leaf_weights = vec![3.0, 5.0];
    let mut attrs = one.clone();
    for field in [
        (&mut attrs.tree_ids, &two.tree_ids),
        (&mut attrs.node_ids, &two.node_ids),
        (&mut attrs.feature_ids, &two.feature_ids),
        (&mut attrs.true_ids, &two.true_ids),
        (&mut attrs.false_ids, &two.false_ids),
        (&mut attrs.leaf_tree_ids, &two.leaf_tree_ids),
        (&mut attrs.leaf_node_ids, &two.leaf_node_ids),
        (&mut attrs.leaf_targets, &two.leaf_targets),
    ] {
        field.0.extend_from_slice(field.1);
    }
    attrs.modes.extend_from_slice(&two.modes);
    attrs.values.extend_from_slice(&two.values);
    attrs.missing_tracks_true.extend_from_slice(&two.missing_tracks_true);
    attrs.leaf_weights.extend_from_slice(&two.leaf_weights);
    let run = |aggregate, base: Vec<f32>| {
        Regressor::new(&attrs, 1, base, PostTransform::None, aggregate).unwrap().predict(&[0.0], 1, 1).unwrap()[0]
    };
    assert_eq!(run(Aggregate::Sum, vec![]), 4.0);
    assert_eq!(run(Aggregate::Sum, vec![0.5]), 4.5);
    assert_eq!(run(Aggregate::Average, vec![]), 2.0);
    assert_eq!(run(Aggregate::Min, vec![]), 1.0);
    assert_eq!(run(Aggregate::Max, vec![10.0]), 13.0);
}

#[test]
fn binary_classifier_with_one_scored_class_derives_the_other() {
    // Probabilities for class 1 only (all weights positive): [1 - p, p], no transform.
    let mut attrs = stump(Mode::Leq, false);
    attrs.leaf_weights = vec![0.8, 0.3];
    let model = Classifier::new(&attrs, 2, vec![], PostTransform::None).unwrap();
    let (labels, scores) = model.predict(&[0.0, 5.0], 2, 1).unwrap();
    assert_eq!(labels, vec![1, 0]);
    assert!((scores[0] - 0.2).abs() < 1e-6 && (scores[1] - 0.8).abs() < 1e-6, "{scores:?}");
    assert!((scores[2] - 0.7).abs() < 1e-6 && (scores[3] - 0.3).abs() < 1e-6, "{scores:?}");

    // Margins (mixed signs) with LOGISTIC: [σ(-s), σ(s)].
    attrs.leaf_weights = vec![1.5, -2.0];
    let model = Classifier::new(&attrs, 2, vec![0.5], PostTransform::Logistic).unwrap();
    let (labels, scores) = model.predict(&[0.0, 5.0], 2, 1).unwrap();
    assert_eq!(labels, vec![1, 0]);
    assert!((scores[1] - logistic(2.0)).abs() < 1e-6 && (scores[0] - logistic(-2.0)).abs() < 1e-6);
    assert!((scores[3] - logistic(-1.5)).abs() < 1e-6);
}

#[test]
fn multiclass_softmax_and_argmax() {
    let mut attrs = stump(Mode::Leq, false);
    attrs.leaf_node_ids = vec![1, 1, 2];
    attrs.leaf_tree_ids = vec![0, 0, 0];
    attrs.leaf_targets = vec![0, 2, 1];
    attrs.leaf_weights = vec![1.0, 3.0, 2.0];
    let model = Classifier::new(&attrs, 3, vec![], PostTransform::Softmax).unwrap();
    let (labels, scores) = model.predict(&[0.0], 1, 1).unwrap();
    assert_eq!(labels, vec![2]);
    let sum: f32 = scores.iter().sum();
    assert!((sum - 1.0).abs() < 1e-6 && scores[2] > scores[0] && scores[0] > scores[1], "{scores:?}");
}

#[test]
fn probit_and_logistic_are_sane() {
    assert!(probit(0.5).abs() < 1e-6);
    assert!((probit(0.975) - 1.96).abs() < 0.01, "{}", probit(0.975));
    assert!((logistic(0.0) - 0.5).abs() < 1e-7);
    assert!(logistic(-100.0) >= 0.0 && logistic(100.0) <= 1.0);
}
