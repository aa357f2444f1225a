//! Model signatures: input and output names, datatypes and shapes, read from the ONNX graph.

use serde::Serialize;
use tract_onnx::pb;

use crate::tensor::{DataType, describe};

/// One input or output of a model. A dimension of `-1` accepts any size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    /// The symbol of each free dimension (as the graph names it, or as the backend resolved it); `None` when fixed.
    #[serde(skip)]
    pub dim_names: Vec<Option<String>>,
}

impl TensorSpec {
    /// Whether a tensor of this datatype and shape fits the spec.
    pub fn accepts(&self, datatype: DataType, shape: &[usize]) -> bool {
        datatype == self.datatype
            && shape.len() == self.shape.len()
            && shape.iter().zip(&self.shape).all(|(&got, &want)| want < 0 || u64::try_from(want) == Ok(got as u64))
    }

    /// "FP32 [-1,4]", as error messages show it.
    pub fn describe(&self) -> String {
        describe(self.datatype, &self.shape)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// What was changed to serve the model (see `onnx_file`), shown in its metadata.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Signature {
    /// Same inputs and outputs: names, datatypes and shapes (dimension names aside).
    pub fn same_tensors(&self, other: &Signature) -> bool {
        let same = |x: &[TensorSpec], y: &[TensorSpec]| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(x, y)| x.name == y.name && x.datatype == y.datatype && x.shape == y.shape)
        };
        same(&self.inputs, &other.inputs) && same(&self.outputs, &other.outputs)
    }

    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|spec| spec.name == name)
    }

    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|spec| spec.name == name)
    }
}

/// Names every free dimension of an input: its declared name, `N` for an unnamed first (batch) dimension, or
/// `<input>_<axis>` for any other unnamed one. Batching needs every first dimension to be the same symbol.
pub fn resolve_free_dims(spec: &mut TensorSpec) {
    for (axis, (&dim, name)) in spec.shape.iter().zip(spec.dim_names.iter_mut()).enumerate() {
        if dim >= 0 || name.is_some() {
            continue;
        }
        *name = Some(if axis == 0 { "N".to_owned() } else { format!("{}_{axis}", spec.name) });
    }
}

/// ONNX `TensorProto.DataType` codes to our datatypes; `None` for types we do not serve.
pub fn datatype_from_onnx(code: i32) -> Option<DataType> {
    Some(match code {
        1 => DataType::Fp32,
        2 => DataType::Uint8,
        3 => DataType::Int8,
        4 => DataType::Uint16,
        5 => DataType::Int16,
        6 => DataType::Int32,
        7 => DataType::Int64,
        8 => DataType::Bytes,
        9 => DataType::Bool,
        11 => DataType::Fp64,
        12 => DataType::Uint32,
        13 => DataType::Uint64,
        _ => return None,
    })
}

/// The graph inputs that are fed by the caller (initializers listed as inputs are not).
pub fn graph_inputs(graph: &pb::GraphProto) -> Result<Vec<TensorSpec>, String> {
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|input| !initializers.contains(input.name.as_str()))
        .map(|input| value_info_spec(input, "input"))
        .collect()
}

fn value_info_spec(info: &pb::ValueInfoProto, role: &str) -> Result<TensorSpec, String> {
    let name = &info.name;
    let tensor = match info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(tensor)) => tensor,
        _ => return Err(format!("{role} '{name}' is not a tensor")),
    };
    let datatype = datatype_from_onnx(tensor.elem_type)
        .ok_or_else(|| format!("{role} '{name}' has ONNX element type {}, which is not served", tensor.elem_type))?;
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| format!("{role} '{name}' declares no shape; its rank must be known to serve it"))?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    let mut dim_names = Vec::with_capacity(shape.dim.len());
    for dim in &shape.dim {
        match &dim.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                dims.push(*v);
                dim_names.push(None);
            }
            Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                dims.push(-1);
                dim_names.push(Some(p.clone()));
            }
            _ => {
                dims.push(-1);
                dim_names.push(None);
            }
        }
    }
    Ok(TensorSpec { name: name.clone(), datatype, shape: dims, dim_names })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Vec<i64>) -> TensorSpec {
        let dim_names = vec![None; shape.len()];
        TensorSpec { name: "x".into(), datatype: DataType::Fp32, shape, dim_names }
    }

    #[test]
    fn accepts_dynamic_and_fixed_dims() {
        let s = spec(vec![-1, 4]);
        assert!(s.accepts(DataType::Fp32, &[7, 4]));
        assert!(!s.accepts(DataType::Fp32, &[7, 5]));
        assert!(!s.accepts(DataType::Fp64, &[7, 4]));
        assert!(!s.accepts(DataType::Fp32, &[28]));
        assert_eq!(s.describe(), "FP32 [-1,4]");
    }
}
