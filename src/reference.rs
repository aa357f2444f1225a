//! `infergate reference`: runs sample traffic through a model version and writes the `reference.json` that drift
//! detection compares live traffic with.

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::backend::tract::TractBackend;
use crate::lifecycle::{REFERENCE_FILE, monitor_plan};
use crate::repository::local::read_model_config;
use crate::telemetry::{Reference, build_reference};

/// Loads the version's model, runs the samples (a KServe v2 inference request body) through it and computes the
/// reference; the model's `model.toml` (two folders up) says which outputs are watched.
pub fn reference_for(model_path: &Path, samples: &Path, buckets: usize) -> Result<Reference, String> {
    let backend = TractBackend::load(model_path, crate::backend::Device::Cpu, crate::backend::DEFAULT_MAX_MODEL_BYTES)
        .map_err(|e| e.to_string())?;
    let body = std::fs::read(samples).map_err(|e| format!("cannot read {}: {e}", samples.display()))?;
    let (request, _) = crate::api::http::decode_request(&bytes::Bytes::from(body), None, &Default::default())
        .map_err(|e| format!("{}: {e}", samples.display()))?;
    let model_dir = model_path.parent().and_then(Path::parent).ok_or("the model path has no model folder")?;
    let config = read_model_config(model_dir).map_err(|e| e.to_string())?;
    let signature = backend.signature();
    let inputs = crate::api::order_inputs(signature, "samples", request.inputs).map_err(|e| e.to_string())?;
    let monitors = monitor_plan(signature, &config.monitoring)?;
    let named: Vec<(String, &crate::tensor::Tensor)> =
        signature.inputs.iter().map(|spec| spec.name.clone()).zip(inputs.iter()).collect();
    let mut session = backend.session().map_err(|e| e.to_string())?;
    let outputs = session.run(inputs.clone()).map_err(|e| e.to_string())?;
    Ok(build_reference(&monitors, &named, &outputs, buckets))
}

/// Where the reference goes when no `--output` is given: beside the model file.
pub fn default_output(model_path: &Path) -> PathBuf {
    model_path.with_file_name(REFERENCE_FILE)
}
