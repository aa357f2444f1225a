//! A decoded request against the version's signature: inputs put in signature order, outputs picked by name,
//! each mistake refused with both sides named.

use super::ApiError;
use super::pipeline::NamedTensor;
use crate::backend::Signature;
use crate::tensor::{Tensor, describe};

/// Puts the inputs in signature order, refusing missing, repeated, unknown or ill-fitting ones.
pub fn order_inputs(signature: &Signature, model: &str, inputs: Vec<NamedTensor>) -> Result<Vec<Tensor>, ApiError> {
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    for input in inputs {
        let Some(ix) = signature.inputs.iter().position(|spec| spec.name == input.name) else {
            return Err(ApiError::invalid_input(format!(
                "unknown input '{}'; model '{model}' takes {}",
                input.name,
                list_specs(signature)
            )));
        };
        let spec = &signature.inputs[ix];
        if slots[ix].is_some() {
            return Err(ApiError::invalid_input(format!("input '{}' is given more than once", spec.name)));
        }
        if !spec.accepts(input.tensor.dtype(), input.tensor.shape()) {
            return Err(ApiError::invalid_input(format!(
                "input '{}' expects {}, got {}",
                spec.name,
                spec.describe(),
                describe(input.tensor.dtype(), input.tensor.shape())
            )));
        }
        slots[ix] = Some(input.tensor);
    }
    slots
        .into_iter()
        .zip(&signature.inputs)
        .map(|(slot, spec)| {
            slot.ok_or_else(|| {
                ApiError::invalid_input(format!(
                    "missing input '{}' ({}); model '{model}' takes {}",
                    spec.name,
                    spec.describe(),
                    list_specs(signature)
                ))
            })
        })
        .collect()
}

/// Indices of the requested outputs, in the order asked; all outputs when none are named.
pub(super) fn select_outputs(
    signature: &Signature,
    model: &str,
    wanted: Option<&[String]>,
) -> Result<Vec<usize>, ApiError> {
    let Some(wanted) = wanted else {
        return Ok((0..signature.outputs.len()).collect());
    };
    let mut indices = Vec::with_capacity(wanted.len());
    for name in wanted {
        let ix = signature.output_index(name).ok_or_else(|| {
            let names: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
            ApiError::invalid_input(format!("unknown output '{name}'; model '{model}' outputs {}", names.join(", ")))
        })?;
        if indices.contains(&ix) {
            return Err(ApiError::invalid_input(format!("output '{name}' is requested more than once")));
        }
        indices.push(ix);
    }
    Ok(indices)
}

fn list_specs(signature: &Signature) -> String {
    let specs: Vec<String> =
        signature.inputs.iter().map(|spec| format!("'{}' {}", spec.name, spec.describe())).collect();
    specs.join(", ")
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::api::pipeline::zeros as input;

    use crate::backend::TensorSpec;
    use crate::tensor::DataType;

    fn signature() -> Signature {
        let spec = |name: &str, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            dim_names: vec![None; shape.len()],
            shape,
        };
        Signature {
            inputs: vec![spec("a", vec![-1, 2]), spec("b", vec![1])],
            outputs: vec![spec("y", vec![-1])],
            notes: vec![],
        }
    }

    #[test]
    fn orders_inputs_by_signature() {
        let ordered = order_inputs(&signature(), "m", vec![input("b", vec![1]), input("a", vec![3, 2])]).unwrap();
        assert_eq!(ordered[0].shape(), [3, 2]);
        assert_eq!(ordered[1].shape(), [1]);
    }

    #[test]
    fn names_the_input_and_both_signatures() {
        let err = order_inputs(&signature(), "m", vec![input("a", vec![2, 5]), input("b", vec![1])]).unwrap_err();
        assert_eq!(err.to_string(), "input 'a' expects FP32 [-1,2], got FP32 [2,5]");
        let err = order_inputs(&signature(), "m", vec![input("a", vec![2, 2])]).unwrap_err();
        assert_eq!(err.to_string(), "missing input 'b' (FP32 [1]); model 'm' takes 'a' FP32 [-1,2], 'b' FP32 [1]");
        let err = order_inputs(&signature(), "m", vec![input("c", vec![1])]).unwrap_err();
        assert!(err.to_string().starts_with("unknown input 'c'"), "{err}");
        let err = order_inputs(&signature(), "m", vec![input("b", vec![1]), input("b", vec![1])]).unwrap_err();
        assert_eq!(err.to_string(), "input 'b' is given more than once");
    }

    #[test]
    fn selects_outputs() {
        assert_eq!(select_outputs(&signature(), "m", None).unwrap(), [0]);
        assert_eq!(select_outputs(&signature(), "m", Some(&["y".into()])).unwrap(), [0]);
        assert!(select_outputs(&signature(), "m", Some(&["z".into()])).is_err());
        assert!(select_outputs(&signature(), "m", Some(&["y".into(), "y".into()])).is_err());
    }
}
