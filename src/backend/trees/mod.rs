//! Tree ensembles: the ONNX-ML `TreeEnsembleClassifier` and `TreeEnsembleRegressor` operators, evaluated natively.
//!
//! Random forests and gradient-boosted trees are the most common production tabular models; tract's own
//! classifier walks its leaf list on every lookup, so the embedded backend evaluates them here instead
//! ([`tract_op`] registers this in place of tract's operator).
//!
//! Layout: every tree's nodes sit in one flat vector of 20-byte nodes, children by absolute index, and every leaf
//! points at a contiguous run of `(output, weight)` pairs. A row walks each tree from its root to a leaf and adds
//! the leaf's weights. A batch is evaluated tree-major (each tree for every row, then the next tree): at batch 32
//! that measured 1.6x faster than row-major on the bundled forests and gradient-boosted trees (benches/backends.rs).
//!
//! Where the ONNX specification is vague (two classes with one score, base values, post transforms on a single
//! score), the results follow ONNX Runtime's kernels, since models are exported and checked against it.

mod attributes;
mod classifier;
mod ensemble;
mod post_transform;
mod regressor;
pub mod tract_op;

pub use attributes::{Aggregate, Mode, TreeAttributes};
pub use classifier::Classifier;
pub use ensemble::{Ensemble, MAX_OUTPUTS};
pub use post_transform::{PostTransform, logistic, probit};
pub use regressor::Regressor;

#[cfg(test)]
mod tests;
