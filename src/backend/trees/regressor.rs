//! The `TreeEnsembleRegressor` operator: one or more target values per row.

use super::ensemble::check_input;
use super::post_transform::write_scores;
use super::{Aggregate, Ensemble, PostTransform, TreeAttributes, probit};

/// A `TreeEnsembleRegressor`: `n_targets` values per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Regressor {
    pub ensemble: Ensemble,
    pub base_values: Vec<f32>,
    pub post_transform: PostTransform,
    pub aggregate: Aggregate,
}

impl Regressor {
    pub fn new(
        attrs: &TreeAttributes,
        n_targets: usize,
        base_values: Vec<f32>,
        post_transform: PostTransform,
        aggregate: Aggregate,
    ) -> Result<Regressor, String> {
        if n_targets == 0 {
            return Err("n_targets must be at least 1".to_owned());
        }
        Ok(Regressor { ensemble: Ensemble::build(attrs, n_targets)?, base_values, post_transform, aggregate })
    }

    pub fn n_targets(&self) -> usize {
        self.ensemble.n_outputs()
    }

    /// Evaluates `rows` rows of `width` features: `rows × targets` values.
    pub fn predict(&self, x: &[f32], rows: usize, width: usize) -> Result<Vec<f32>, String> {
        check_input(&self.ensemble, x, rows, width)?;
        let targets = self.n_targets();
        let n_trees = self.ensemble.n_trees() as f32;
        let mut scores = vec![0.0f32; rows * targets];
        let mut has = vec![false; rows * targets];
        self.ensemble.accumulate_rows(x, width, self.aggregate, targets == 1, &mut scores, &mut has);
        if targets == 1 {
            // One target: base_values[0] only when it is the only one, and no transform but PROBIT.
            let origin = if self.base_values.len() == 1 { self.base_values[0] } else { 0.0 };
            for (score, &seen) in scores.iter_mut().zip(&has) {
                let value = match self.aggregate {
                    Aggregate::Sum => *score + origin,
                    Aggregate::Average => *score / n_trees + origin,
                    Aggregate::Min | Aggregate::Max if seen => *score + origin,
                    Aggregate::Min | Aggregate::Max => origin,
                };
                *score = if self.post_transform == PostTransform::Probit { probit(value) } else { value };
            }
            return Ok(scores);
        }
        let use_base = self.base_values.len() == targets;
        let mut out = vec![0.0f32; rows * targets];
        for (z, (row, seen)) in
            out.chunks_exact_mut(targets).zip(scores.chunks_exact_mut(targets).zip(has.chunks_exact(targets)))
        {
            for (k, score) in row.iter_mut().enumerate() {
                let base = if use_base { self.base_values[k] } else { 0.0 };
                *score = match self.aggregate {
                    Aggregate::Sum => *score + base,
                    Aggregate::Average => *score / n_trees + base,
                    Aggregate::Min | Aggregate::Max if seen[k] => *score + base,
                    Aggregate::Min | Aggregate::Max => base,
                };
            }
            write_scores(row, self.post_transform, z);
        }
        Ok(out)
    }
}
