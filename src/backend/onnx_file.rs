//! Reading an ONNX file once for every backend: the decoded graph, its caller-fed inputs, and the rewrites applied
//! before a backend sees it.
//!
//! The one rewrite today: scikit-learn exports (skl2onnx's default) end classifiers in a `ZipMap`, which turns the
//! probability tensor into a sequence of maps, a type no tensor protocol can carry. The ZipMap becomes an
//! `Identity`, so its output is the FP32 `[N, classes]` probability tensor that fed it, under the same name; the
//! model metadata says so.

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

use super::BackendError;
use super::signature::{TensorSpec, graph_inputs};

/// A decoded model file.
#[derive(Debug)]
pub struct OnnxFile {
    pub proto: pb::ModelProto,
    /// The inputs the caller feeds, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// What was changed to serve the model, for its metadata ("output 'p' is ...").
    pub notes: Vec<String>,
    /// The file as read, handed on as is when nothing was rewritten.
    source: Vec<u8>,
}

impl OnnxFile {
    /// Reads and decodes the file, then applies the rewrites. Every failure names the file and the reason.
    pub fn read(path: &Path) -> Result<OnnxFile, BackendError> {
        let fail = |reason: String| BackendError::Load { path: path.display().to_string(), reason };
        // Read the whole file rather than mapping it: a file truncated under a map would crash the process.
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let mut proto =
            pb::ModelProto::decode(bytes.as_slice()).map_err(|e| fail(format!("not a valid ONNX file: {e}")))?;
        let graph = proto.graph.as_mut().ok_or_else(|| fail("the ONNX file holds no graph".to_owned()))?;
        let inputs = graph_inputs(graph).map_err(fail)?;
        let batch_dim = inputs.first().and_then(|input| input.dim_names.first().cloned().flatten());
        let notes = replace_zipmaps(graph, batch_dim.as_deref()).map_err(fail)?;
        if !notes.is_empty() {
            ensure_default_opset(&mut proto);
        }
        Ok(OnnxFile { proto, inputs, notes, source: bytes })
    }

    /// The model for backends that load from bytes: the file as read, or encoded again when it was rewritten.
    pub fn take_model_bytes(&mut self) -> Vec<u8> {
        if self.notes.is_empty() { std::mem::take(&mut self.source) } else { self.proto.encode_to_vec() }
    }
}

/// Turns every ZipMap into an Identity and declares its output as the FP32 `[N, classes]` tensor it now is.
fn replace_zipmaps(graph: &mut pb::GraphProto, batch_dim: Option<&str>) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for node in graph.node.iter_mut().filter(|node| node.op_type == "ZipMap") {
        let classes = node
            .attribute
            .iter()
            .find(|a| a.name == "classlabels_int64s" || a.name == "classlabels_strings")
            .map(|a| a.ints.len().max(a.strings.len()))
            .ok_or_else(|| format!("ZipMap node '{}' has no class labels", node.name))?;
        let (Some(input), Some(output)) = (node.input.first().cloned(), node.output.first().cloned()) else {
            return Err(format!("ZipMap node '{}' needs one input and one output", node.name));
        };
        node.op_type = "Identity".to_owned();
        node.domain = String::new();
        node.attribute.clear();
        if let Some(declared) = graph.output.iter_mut().find(|o| o.name == output) {
            declared.r#type = Some(float_matrix(batch_dim, classes as i64));
        }
        notes.push(format!(
            "output '{output}' is the FP32 [N,{classes}] class probability tensor ('{input}') that fed a ZipMap; \
             column i is class label i"
        ));
    }
    Ok(notes)
}

/// `tensor(float)` of shape `[batch, columns]`, the batch dimension named like the model's first input's.
fn float_matrix(batch_dim: Option<&str>, columns: i64) -> pb::TypeProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    let batch = match batch_dim {
        Some(name) => dimension::Value::DimParam(name.to_owned()),
        None => dimension::Value::DimParam(String::new()),
    };
    let dim = |value| Dimension { value: Some(value), ..Default::default() };
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: 1,
            shape: Some(pb::TensorShapeProto { dim: vec![dim(batch), dim(dimension::Value::DimValue(columns))] }),
        })),
        ..Default::default()
    }
}

/// Identity lives in the default ONNX domain; a pure ONNX-ML model may not import it.
fn ensure_default_opset(proto: &mut pb::ModelProto) {
    if !proto.opset_import.iter().any(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
        proto.opset_import.push(pb::OperatorSetIdProto { domain: String::new(), version: 13 });
    }
}
