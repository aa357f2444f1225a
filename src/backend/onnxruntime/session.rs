//! One model version on ONNX Runtime: its sessions, one per instance thread, and running them.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ::ort::session::Session as OrtSession;
use ::ort::value::{DynValue, ValueType};

use super::OrtRuntime;
use super::convert::{from_ort, our_datatype, to_ort};
use crate::backend::onnx_file::OnnxFile;
use crate::backend::signature::resolve_free_dims;
use crate::backend::{Backend, BackendError, Device, Session, Signature, TensorSpec};
use crate::repository::CudaConfig;
use crate::tensor::Tensor;

/// Per-version settings from `model.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    pub device: Device,
    pub intra_op_threads: usize,
    /// CUDA provider options (defaults unless `[cuda]` says otherwise).
    pub cuda: CudaConfig,
    /// Most bytes the weights may need.
    pub max_model_bytes: u64,
}

/// One model version on ONNX Runtime.
pub struct OrtBackend {
    runtime: Arc<OrtRuntime>,
    model: Vec<u8>,
    options: SessionOptions,
    signature: Signature,
    /// The session made while loading (to check the model and read its outputs), kept for the first instance.
    spare: Mutex<Option<OrtSession>>,
}

impl std::fmt::Debug for OrtBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtBackend").field("options", &self.options).field("signature", &self.signature).finish()
    }
}

impl OrtBackend {
    pub fn load(runtime: Arc<OrtRuntime>, path: &Path, options: SessionOptions) -> Result<OrtBackend, BackendError> {
        let fail = |reason: String| BackendError::Load { path: path.display().to_string(), reason };
        let mut file = OnnxFile::read(path, options.max_model_bytes)?;
        let model = file.take_model_bytes();
        let session =
            runtime.builder(options).map_err(&fail)?.commit_from_memory(&model).map_err(|e| fail(e.to_string()))?;

        let mut inputs = file.inputs;
        inputs.iter_mut().for_each(resolve_free_dims);
        let batch = inputs.first().and_then(|i| i.dim_names.first().cloned().flatten());
        let outputs = session
            .outputs()
            .iter()
            .map(|outlet| output_spec(outlet.name(), outlet.dtype(), batch.as_deref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let signature = Signature { inputs, outputs, notes: file.notes };
        Ok(OrtBackend { runtime, model, options, signature, spare: Mutex::new(Some(session)) })
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn device(&self) -> Device {
        self.options.device
    }

    fn session(&self) -> Result<Box<dyn Session>, BackendError> {
        let spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let session = match spare {
            Some(session) => session,
            None => self
                .runtime
                .builder(self.options)
                .map_err(BackendError::Compute)?
                .commit_from_memory(&self.model)
                .map_err(|e| BackendError::Compute(e.to_string()))?,
        };
        let input_names = self.signature.inputs.iter().map(|i| i.name.clone()).collect();
        let output_names = self.signature.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(Box::new(OrtInstance { session, input_names, output_names }))
    }
}

struct OrtInstance {
    session: OrtSession,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl Session for OrtInstance {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let values = inputs
            .iter()
            .zip(&self.input_names)
            .map(|(tensor, name)| Ok((name.as_str(), to_ort(tensor)?)))
            .collect::<Result<Vec<(&str, DynValue)>, BackendError>>()?;
        let outputs = self.session.run(values).map_err(|e| BackendError::Compute(e.to_string()))?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(name)
                    .ok_or_else(|| BackendError::Compute(format!("the model produced no '{name}'")))?;
                from_ort(value)
            })
            .collect()
    }
}

/// A spec for an output as ONNX Runtime declares it. A free first dimension without a name is taken to be the batch.
fn output_spec(name: &str, dtype: &ValueType, batch: Option<&str>) -> Result<TensorSpec, String> {
    let ValueType::Tensor { ty, shape, dimension_symbols } = dtype else {
        return Err(format!("output '{name}' is a {dtype}, not a tensor, which is not served"));
    };
    let datatype = our_datatype(*ty).ok_or_else(|| format!("output '{name}' has type {ty}, which is not served"))?;
    let dims: Vec<i64> = shape.iter().map(|&d| if d >= 0 { d } else { -1 }).collect();
    let dim_names = dims
        .iter()
        .enumerate()
        .map(|(axis, &d)| match (d, dimension_symbols.get(axis).filter(|s| !s.is_empty())) {
            (d, _) if d >= 0 => None,
            (_, Some(symbol)) => Some(symbol.clone()),
            (_, None) if axis == 0 => Some(batch.unwrap_or("N").to_owned()),
            (_, None) => Some(format!("{name}_{axis}")),
        })
        .collect();
    Ok(TensorSpec { name: name.to_owned(), datatype, shape: dims, dim_names })
}
