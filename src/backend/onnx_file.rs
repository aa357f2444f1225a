//! Reading an ONNX file once for every backend: the decoded graph, its caller-fed inputs, and the rewrites applied
//! before a backend sees it.
//!
//! The one rewrite today: scikit-learn exports (skl2onnx's default) end classifiers in a `ZipMap`, which turns the
//! probability tensor into a sequence of maps, a type no tensor protocol can carry. The ZipMap becomes an
//! `Identity`, so its output is the FP32 `[N, classes]` probability tensor that fed it, under the same name; the
//! model metadata says so.
//!
//! Before any backend sees a file, its weights are checked: tensors stored in external files must name files
//! inside the version's folder, and the weights (and any fully fixed input or output) must fit the version's
//! memory budget, so a hostile or mistaken file is refused with a reason instead of exhausting the server.

use std::path::{Component, Path};

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
    /// Reads and decodes the file, checks its weights against `max_bytes`, then applies the rewrites. Every
    /// failure names the file and the reason.
    pub fn read(path: &Path, max_bytes: u64) -> Result<OnnxFile, BackendError> {
        let fail = |reason: String| BackendError::Load { path: path.display().to_string(), reason };
        // Read the whole file rather than mapping it: a file truncated under a map would crash the process.
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        OnnxFile::from_bytes(bytes, path.parent().unwrap_or(Path::new(".")), max_bytes).map_err(fail)
    }

    /// [`OnnxFile::read`] of a file already read; `folder` is where its external data may be.
    pub fn from_bytes(bytes: Vec<u8>, folder: &Path, max_bytes: u64) -> Result<OnnxFile, String> {
        let mut proto = pb::ModelProto::decode(bytes.as_slice()).map_err(|e| format!("not a valid ONNX file: {e}"))?;
        let graph = proto.graph.as_mut().ok_or_else(|| "the ONNX file holds no graph".to_owned())?;
        check_memory(graph, folder, max_bytes)?;
        let inputs = graph_inputs(graph)?;
        let batch_dim = inputs.first().and_then(|input| input.dim_names.first().cloned().flatten());
        let notes = replace_zipmaps(graph, batch_dim.as_deref())?;
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

/// Refuses a graph whose weights would need more than `max_bytes`, whose external data lies outside `folder`, or
/// whose fixed-shape inputs or outputs alone would exceed the budget.
fn check_memory(graph: &pb::GraphProto, folder: &Path, max_bytes: u64) -> Result<(), String> {
    let weights = weight_bytes(graph, folder)?;
    if weights > max_bytes {
        return Err(format!(
            "its weights need {weights} bytes, more than the budget of {max_bytes} (max_model_bytes in model.toml, \
             or --max-model-bytes)"
        ));
    }
    for value in graph.input.iter().chain(&graph.output) {
        let Some(pb::type_proto::Value::TensorType(tensor)) = value.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            continue;
        };
        let dims = tensor.shape.iter().flat_map(|shape| &shape.dim).map(|dim| match dim.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(size)) => Some(size),
            _ => None,
        });
        // A free dimension is sized by the request, which --max-tensor-elements bounds.
        let Some(dims) = dims.collect::<Option<Vec<i64>>>() else { continue };
        let bytes = tensor_bytes(&dims, tensor.elem_type)
            .ok_or_else(|| format!("'{}' declares an impossible shape {dims:?}", value.name))?;
        if bytes > max_bytes {
            return Err(format!(
                "'{}' declares a fixed shape {dims:?} of {bytes} bytes, more than the budget of {max_bytes}",
                value.name
            ));
        }
    }
    Ok(())
}

/// The bytes every initializer and constant of the graph (subgraphs included) takes once loaded.
fn weight_bytes(graph: &pb::GraphProto, folder: &Path) -> Result<u64, String> {
    let attributes = graph.node.iter().flat_map(|node| &node.attribute);
    let tensors = graph.initializer.iter().chain(attributes.clone().flat_map(|a| a.t.iter().chain(&a.tensors)));
    let mut total: u64 = 0;
    for tensor in tensors {
        total = total.saturating_add(stored_bytes(tensor, folder)?);
    }
    // Backends make sparse initializers dense.
    for sparse in graph.sparse_initializer.iter().chain(attributes.clone().flat_map(|a| &a.sparse_tensors)) {
        let values = sparse.values.as_ref();
        let dense = tensor_bytes(&sparse.dims, values.map_or(1, |v| v.data_type))
            .ok_or_else(|| format!("a sparse tensor declares an impossible shape {:?}", sparse.dims))?;
        total = total.saturating_add(dense);
    }
    for subgraph in attributes.flat_map(|a| a.g.iter().chain(&a.graphs)) {
        total = total.saturating_add(weight_bytes(subgraph, folder)?);
    }
    Ok(total)
}

/// What one tensor takes in memory: its declared shape times its element size, or what it stores when larger.
fn stored_bytes(tensor: &pb::TensorProto, folder: &Path) -> Result<u64, String> {
    let declared = tensor_bytes(&tensor.dims, tensor.data_type)
        .ok_or_else(|| format!("tensor '{}' declares an impossible shape {:?}", tensor.name, tensor.dims))?;
    let inline = (tensor.raw_data.len() + tensor.string_data.iter().map(Vec::len).sum::<usize>()) as u64;
    let external = if tensor.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        external_bytes(tensor, folder)?
    } else {
        0
    };
    Ok(declared.max(inline).max(external))
}

/// Bytes of a tensor of `dims` and ONNX element type `elem_type`; `None` for a negative or overflowing shape.
fn tensor_bytes(dims: &[i64], elem_type: i32) -> Option<u64> {
    let element = match elem_type {
        2 | 3 | 9 | 17..=23 => 1, // (u)int8, bool, float8 and 4-bit types (rounded up)
        4 | 5 | 10 | 16 => 2,     // (u)int16, float16, bfloat16
        1 | 6 | 12 => 4,          // float, (u)int32
        14 => 8,                  // complex64
        15 => 16,                 // complex128
        _ => 8,                   // (u)int64, double, and strings' pointers; unknown types counted large
    };
    dims.iter().try_fold(element, |bytes: u64, &dim| bytes.checked_mul(u64::try_from(dim).ok()?))
}

/// The size of a tensor's external data, after checking that its file lies inside the version's folder.
fn external_bytes(tensor: &pb::TensorProto, folder: &Path) -> Result<u64, String> {
    let field = |key: &str| tensor.external_data.iter().find(|entry| entry.key == key).map(|e| e.value.as_str());
    let location =
        field("location").ok_or_else(|| format!("tensor '{}' is external but names no location", tensor.name))?;
    let relative = Path::new(location);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "tensor '{}' keeps its data in '{}', outside the version's folder; external data must be a file \
             beside model.onnx",
            tensor.name,
            location.escape_debug()
        ));
    }
    let file = folder.join(relative);
    // A link inside the folder may still point out of it.
    let (real_file, real_folder) = (std::fs::canonicalize(&file), std::fs::canonicalize(folder));
    if let (Ok(real_file), Ok(real_folder)) = (&real_file, &real_folder)
        && !real_file.starts_with(real_folder)
    {
        return Err(format!(
            "tensor '{}' keeps its data in '{location}', which links outside the version's folder",
            tensor.name
        ));
    }
    let number = |key: &str| -> Result<Option<u64>, String> {
        field(key)
            .map(|text| text.trim().parse::<u64>())
            .transpose()
            .map_err(|_| format!("tensor '{}' has an invalid external data {key}", tensor.name))
    };
    match number("length")? {
        Some(length) => Ok(length),
        None => {
            let size = std::fs::metadata(&file)
                .map_err(|e| format!("tensor '{}' keeps its data in '{location}': {e}", tensor.name))?
                .len();
            Ok(size.saturating_sub(number("offset")?.unwrap_or(0)))
        }
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
