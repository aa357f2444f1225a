//! The embedded backend: tract-onnx, pure Rust, nothing to install.
//!
//! tract needs a symbol for every dimension that is not fixed; ONNX exporters (skl2onnx among them) often leave
//! the batch dimension unnamed, so each dynamic input dimension gets its declared name, or `N` for an unnamed
//! leading (batch) dimension, before the model is optimised.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tract_onnx::prelude::{
    DatumType, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue, IntoTensor, TDim, TValue, TVec,
    TypedSimplePlan, TypedSimpleState,
};

use super::onnx_file::OnnxFile;
use super::signature::{TensorSpec, resolve_free_dims};
use super::{Backend, BackendError, Device, Session, Signature};
use crate::tensor::{DataType, Tensor, push_bytes_element};

/// A model version optimised by tract, ready to spawn sessions.
pub struct TractBackend {
    plan: Arc<TypedSimplePlan>,
    signature: Signature,
}

impl std::fmt::Debug for TractBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractBackend").field("signature", &self.signature).finish_non_exhaustive()
    }
}

impl TractBackend {
    /// Reads, checks and optimises an ONNX file. Every failure names the file and the reason.
    pub fn load(path: &Path, device: Device, max_model_bytes: u64) -> Result<TractBackend, BackendError> {
        let fail = |reason: String| BackendError::Load { path: path.display().to_string(), reason };
        if device != Device::Cpu {
            return Err(fail(format!(
                "device = \"{device}\": the tract backend computes on the CPU only; use backend = \"ort\""
            )));
        }
        let OnnxFile { proto, inputs, notes, .. } = OnnxFile::read(path, max_model_bytes)?;
        let graph = proto.graph.as_ref().ok_or_else(|| fail("the ONNX file holds no graph".to_owned()))?;
        let output_names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();

        let dir = path.parent().and_then(Path::to_str);
        let parsed = onnx().parse(&proto, dir).map_err(|e| fail(format!("{e:#}")))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(fail(format!("the graph uses undefined values {:?}", parsed.unresolved_inputs)));
        }
        let mut model = parsed.model;
        let mut inputs = inputs;
        for (ix, spec) in inputs.iter_mut().enumerate() {
            let node_name = model
                .input_outlets()
                .ok()
                .and_then(|outlets| outlets.get(ix))
                .map(|outlet| model.node(outlet.node).name.clone());
            if node_name.as_deref() != Some(spec.name.as_str()) {
                return Err(fail(format!("graph input {ix} should be '{}', tract found {node_name:?}", spec.name)));
            }
            resolve_free_dims(spec);
            let dims: TVec<TDim> = spec
                .shape
                .iter()
                .zip(&spec.dim_names)
                .map(|(&dim, name)| match name {
                    Some(name) if dim < 0 => TDim::Sym(model.symbols.sym(name)),
                    _ => TDim::Val(dim),
                })
                .collect();
            let fact = InferenceFact::dt_shape(tract_datum(spec.datatype), dims);
            model.set_input_fact(ix, fact).map_err(|e| fail(format!("{e:#}")))?;
        }
        let typed = model.into_optimized().map_err(|e| fail(format!("{e:#}")))?;

        let mut outputs = Vec::with_capacity(output_names.len());
        for (ix, name) in output_names.into_iter().enumerate() {
            let fact = typed.output_fact(ix).map_err(|e| fail(format!("output '{name}': {e:#}")))?;
            let datatype = our_datatype(fact.datum_type)
                .ok_or_else(|| fail(format!("output '{name}' has type {:?}, which is not served", fact.datum_type)))?;
            let shape = fact.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect::<Vec<_>>();
            let dim_names = fact.shape.iter().map(dim_symbol).collect();
            outputs.push(TensorSpec { name, datatype, shape, dim_names });
        }
        let plan = typed.into_runnable().map_err(|e| fail(format!("{e:#}")))?;
        Ok(TractBackend { plan, signature: Signature { inputs, outputs, notes } })
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn session(&self) -> Result<Box<dyn Session>, BackendError> {
        let state = TypedSimpleState::new(&self.plan).map_err(|e| BackendError::Compute(format!("{e:#}")))?;
        Ok(Box::new(TractSession { state }))
    }
}

struct TractSession {
    state: TypedSimpleState,
}

impl Session for TractSession {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let values = inputs.iter().map(to_tract).collect::<Result<TVec<TValue>, _>>()?;
        let outputs = self.state.run(values).map_err(|e| BackendError::Compute(format!("{e:#}")))?;
        outputs.iter().map(|value| from_tract(value)).collect()
    }
}

/// tract's ONNX front end with our tree ensemble operators in place of its own.
fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    super::trees::tract_op::register(&mut onnx.op_register);
    onnx
}

/// The name of a free dimension ("N", or an expression such as "2*N"); `None` for a fixed one.
fn dim_symbol(dim: &TDim) -> Option<String> {
    match dim {
        TDim::Val(_) => None,
        other => Some(other.to_string()),
    }
}

fn tract_datum(datatype: DataType) -> DatumType {
    match datatype {
        DataType::Bool => DatumType::Bool,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Fp32 => DatumType::F32,
        DataType::Fp64 => DatumType::F64,
        DataType::Bytes => DatumType::String,
    }
}

/// tract computes some int64 values (a cast label, a shape) as symbolic dimensions; they are served as INT64.
fn our_datatype(datum: DatumType) -> Option<DataType> {
    if datum == DatumType::TDim {
        return Some(DataType::Int64);
    }
    DataType::ALL.into_iter().find(|&dt| tract_datum(dt) == datum)
}

fn compute_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::Compute(e.to_string())
}

fn to_tract(tensor: &Tensor) -> Result<TValue, BackendError> {
    if tensor.dtype() == DataType::Bytes {
        let strings = tensor
            .bytes_elements()
            .map(|element| String::from_utf8(element.to_vec()))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|_| compute_error("BYTES input is not valid UTF-8, which string models need"))?;
        let array = tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(tensor.shape(), strings)
            .map_err(compute_error)?;
        return Ok(array.into_tensor().into_tvalue());
    }
    let mut value =
        tract_onnx::prelude::Tensor::zero_dt(tract_datum(tensor.dtype()), tensor.shape()).map_err(compute_error)?;
    value.as_bytes_mut().copy_from_slice(tensor.data());
    Ok(value.into_tvalue())
}

fn from_tract(value: &tract_onnx::prelude::Tensor) -> Result<Tensor, BackendError> {
    if value.datum_type() == DatumType::TDim {
        return from_tract(&*value.cast_to::<i64>().map_err(compute_error)?);
    }
    let datatype = our_datatype(value.datum_type())
        .ok_or_else(|| compute_error(format!("the model produced {:?}, which is not served", value.datum_type())))?;
    let data = if datatype == DataType::Bytes {
        let mut buf = Vec::new();
        for s in value.to_plain_array_view::<String>().map_err(compute_error)?.iter() {
            push_bytes_element(&mut buf, s.as_bytes()).map_err(compute_error)?;
        }
        Bytes::from(buf)
    } else {
        Bytes::copy_from_slice(value.as_bytes())
    };
    Tensor::new(datatype, value.shape().to_vec(), data).map_err(compute_error)
}
