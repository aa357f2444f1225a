//! Backends compute on [`Tensor`]s. A [`Backend`] is one loaded model version; it hands out [`Session`]s, one
//! per instance thread, so per-run scratch state is reused without locks.
//!
//! [`Backends`] is what this process can use, found once at start: tract always, ONNX Runtime when its library
//! loads. A model's `backend` setting picks one; `auto` prefers ONNX Runtime.

pub mod onnx_file;
pub mod onnxruntime;
pub mod signature;
pub mod tract;
pub mod trees;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

/// Where a version computes, as its `model.toml` says.
pub use crate::repository::Device;
pub use signature::{Signature, TensorSpec};

use crate::repository::{BackendChoice, CudaConfig, ModelConfig};
use crate::tensor::Tensor;

/// One loaded, optimised model version, shared by its instance threads.
pub trait Backend: Send + Sync + 'static {
    /// Short name of the backend ("tract", "ort"), reported in model metadata.
    fn name(&self) -> &'static str;
    fn signature(&self) -> &Signature;
    /// Where the version computes.
    fn device(&self) -> Device;
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

/// Whether a backend can be used in this process, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub name: &'static str,
    pub available: bool,
    /// Library path and version, or the reason it is unavailable.
    pub detail: String,
    pub execution_providers: Vec<ProviderStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    pub name: &'static str,
    pub available: bool,
    pub detail: String,
}

/// The memory budget of a version's weights when neither the server nor its model.toml sets one.
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 8 << 30;

/// The backends this process can use.
#[derive(Debug)]
pub struct Backends {
    ort: Result<Arc<onnxruntime::OrtRuntime>, String>,
    /// The weights' memory budget of versions whose model.toml sets none.
    max_model_bytes: u64,
}

impl Backends {
    /// Finds ONNX Runtime (see [`onnxruntime::OrtRuntime::discover`]). An explicitly named library that does not load is an
    /// error; a library merely not found leaves ONNX Runtime unavailable.
    pub fn discover(ort_library: Option<&Path>) -> Result<Backends, String> {
        let ort = match onnxruntime::OrtRuntime::discover(ort_library) {
            Ok(runtime) => Ok(runtime),
            Err(onnxruntime::DiscoverError::Explicit(reason)) => return Err(reason),
            Err(onnxruntime::DiscoverError::NotFound(reason)) => Err(reason),
        };
        Ok(Backends { ort, max_model_bytes: DEFAULT_MAX_MODEL_BYTES })
    }

    /// Versions whose model.toml sets no `max_model_bytes` get this budget.
    pub fn with_max_model_bytes(self, max_model_bytes: u64) -> Backends {
        Backends { max_model_bytes, ..self }
    }

    pub fn ort(&self) -> Result<&Arc<onnxruntime::OrtRuntime>, &str> {
        self.ort.as_ref().map_err(String::as_str)
    }

    /// Loads a version with the backend its config asks for.
    pub fn load(&self, path: &Path, config: &ModelConfig) -> Result<Arc<dyn Backend>, BackendError> {
        let fail = |reason: String| BackendError::Load { path: path.display().to_string(), reason };
        let options = onnxruntime::SessionOptions {
            device: config.device,
            intra_op_threads: config.intra_op_threads,
            cuda: CudaConfig { cudnn_conv_algo_search: Some(config.conv_search()), ..config.cuda.unwrap_or_default() },
            max_model_bytes: config.max_model_bytes.unwrap_or(self.max_model_bytes),
        };
        Ok(match (config.backend, &self.ort) {
            (BackendChoice::Tract, _) | (BackendChoice::Auto, Err(_)) => {
                Arc::new(tract::TractBackend::load(path, config.device, options.max_model_bytes)?)
            }
            (BackendChoice::Ort | BackendChoice::Auto, Ok(runtime)) => {
                Arc::new(onnxruntime::OrtBackend::load(Arc::clone(runtime), path, options)?)
            }
            (BackendChoice::Ort, Err(reason)) => {
                return Err(fail(format!("backend = \"ort\", but ONNX Runtime is not available: {reason}")));
            }
        })
    }

    /// Every backend, for `infergate backends` and the start-up log; `probe_providers` also tries each optional
    /// execution provider (the command does, the server does not: it would load the CUDA libraries for a log line).
    pub fn statuses(&self, probe_providers: bool) -> Vec<BackendStatus> {
        let tract = BackendStatus {
            name: "tract",
            available: true,
            detail: "embedded (tract-onnx), with native tree ensembles".to_owned(),
            execution_providers: vec![ProviderStatus { name: "cpu", available: true, detail: String::new() }],
        };
        let ort = match &self.ort {
            Ok(runtime) => runtime.status(probe_providers),
            Err(reason) => {
                BackendStatus { name: "ort", available: false, detail: reason.clone(), execution_providers: Vec::new() }
            }
        };
        vec![tract, ort]
    }
}
