//! Backends compute on [`Tensor`]s. A [`Backend`] is one loaded model version; it hands out [`Session`]s, one
//! per instance thread, so per-run scratch state is reused without locks.

pub mod signature;
pub mod tract;

use thiserror::Error;

pub use signature::{Signature, TensorSpec};

use crate::tensor::Tensor;

/// One loaded, optimised model version, shared by its instance threads.
pub trait Backend: Send + Sync + 'static {
    /// Short name of the backend ("tract"), reported in model metadata.
    fn name(&self) -> &'static str;
    fn signature(&self) -> &Signature;
    /// A session for one instance thread. Sessions are not shared between threads.
    fn session(&self) -> Result<Box<dyn Session>, BackendError>;
}

/// Runs inferences for one instance thread.
pub trait Session {
    /// Runs the model on inputs given in signature order; returns every output in signature order.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError>;
}

#[derive(Debug, Error)]
pub enum BackendError {
    /// The model file cannot be served; the message says why (unreadable, invalid ONNX, unsupported op, ...).
    #[error("cannot load {path}: {reason}")]
    Load { path: String, reason: String },
    /// The computation failed for these inputs.
    #[error("inference failed: {0}")]
    Compute(String),
}
