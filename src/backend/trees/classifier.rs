//! The `TreeEnsembleClassifier` operator: class scores from the ensemble's votes, and the winning class.

use super::ensemble::check_input;
use super::post_transform::write_scores;
use super::{Aggregate, Ensemble, PostTransform, TreeAttributes, logistic, probit};

/// A `TreeEnsembleClassifier`: class labels (by index) and the probability or score of every class.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    pub ensemble: Ensemble,
    pub base_values: Vec<f32>,
    pub post_transform: PostTransform,
    /// Two classes whose votes all go to one of them: a single score, the other class's score derived from it.
    binary: bool,
    weights_all_positive: bool,
}

impl Classifier {
    pub fn new(
        attrs: &TreeAttributes,
        n_classes: usize,
        base_values: Vec<f32>,
        post_transform: PostTransform,
    ) -> Result<Classifier, String> {
        if n_classes < 2 {
            return Err(format!("a classifier needs at least two class labels, this one has {n_classes}"));
        }
        let ensemble = Ensemble::build(attrs, n_classes)?;
        let mut voted: Vec<i64> = attrs.leaf_targets.clone();
        voted.sort_unstable();
        voted.dedup();
        let binary = n_classes == 2 && voted.len() == 1;
        let weights_all_positive = attrs.leaf_weights.iter().all(|&w| w >= 0.0);
        Ok(Classifier { ensemble, base_values, post_transform, binary, weights_all_positive })
    }

    pub fn n_classes(&self) -> usize {
        self.ensemble.n_outputs()
    }

    /// Evaluates `rows` rows of `width` features: the index of each row's class in the labels, and its scores
    /// (`rows × classes`).
    pub fn predict(&self, x: &[f32], rows: usize, width: usize) -> Result<(Vec<usize>, Vec<f32>), String> {
        check_input(&self.ensemble, x, rows, width)?;
        let classes = self.n_classes();
        let mut scores = vec![0.0f32; rows * classes];
        let mut has = vec![false; rows * classes];
        self.ensemble.accumulate_rows(x, width, Aggregate::Sum, false, &mut scores, &mut has);
        let mut out = vec![0.0f32; rows * classes];
        let labels = out
            .chunks_exact_mut(classes)
            .zip(scores.chunks_exact_mut(classes).zip(has.chunks_exact_mut(classes)))
            .map(
                |(z, (scores, has))| {
                    if classes > 2 { self.finish_many(scores, has, z) } else { self.finish_two(scores, has, z) }
                },
            )
            .collect();
        Ok((labels, out))
    }

    fn finish_many(&self, scores: &mut [f32], has: &mut [bool], z: &mut [f32]) -> usize {
        for (k, &base) in self.base_values.iter().enumerate().take(scores.len()) {
            scores[k] = if has[k] { scores[k] + base } else { base };
            has[k] = true;
        }
        // The highest score among the classes that got one; the first on a tie.
        let mut best: Option<usize> = None;
        for k in 0..scores.len() {
            if has[k] && best.is_none_or(|b| scores[k] > scores[b]) {
                best = Some(k);
            }
        }
        write_scores(scores, self.post_transform, z);
        best.unwrap_or(0)
    }

    fn finish_two(&self, scores: &mut [f32], has: &[bool], z: &mut [f32]) -> usize {
        // One score when class 1 got no vote and at most one base value; otherwise both classes are scored.
        let single = !has[1] && self.base_values.len() <= 1;
        match self.base_values.len() {
            2 if has[1] => {
                scores[1] = self.base_values[1] + scores[0];
                scores[0] = -scores[1];
            }
            2 => {
                scores[1] += self.base_values[1];
                scores[0] += self.base_values[0];
            }
            1 => scores[0] += self.base_values[0],
            _ => {}
        }
        let positive = if has[1] && !single {
            scores[1]
        } else if has[0] {
            scores[0]
        } else {
            0.0
        };
        let (label, derive) = match (self.binary, self.weights_all_positive) {
            (true, true) => (usize::from(positive > 0.5), SecondClass::Complement),
            (true, false) => (usize::from(positive > 0.0), SecondClass::Mirror),
            (false, _) if self.base_values.is_empty() => (usize::from(positive > 0.0), SecondClass::Mirror),
            (false, _) => (usize::from(positive > 0.0), SecondClass::None),
        };
        if !single {
            write_scores(scores, self.post_transform, z);
            return label;
        }
        let s = scores[0];
        match (self.post_transform, derive) {
            (PostTransform::Probit, _) => z[0] = probit(s),
            (_, SecondClass::Complement) => (z[0], z[1]) = (1.0 - s, s),
            (PostTransform::Logistic, SecondClass::Mirror) => (z[0], z[1]) = (logistic(-s), logistic(s)),
            (_, SecondClass::Mirror) => (z[0], z[1]) = (-s, s),
            (_, SecondClass::None) => z[0] = s,
        }
        label
    }
}

/// How a two-class model that scores one class gets the other's score.
#[derive(Debug, Clone, Copy)]
enum SecondClass {
    /// Probabilities: the other class has 1 − p.
    Complement,
    /// Margins: the other class has −s (or σ(−s) after LOGISTIC).
    Mirror,
    None,
}
