//! Tensor conversion between our [`Tensor`] (little-endian bytes) and ONNX Runtime values.

use ::ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use bytes::Bytes;

use crate::backend::BackendError;
use crate::tensor::{DataType, Tensor, push_bytes_element};

pub(super) fn our_datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn compute_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::Compute(e.to_string())
}

/// Matches a datatype: `$body` runs with `$t` the Rust type of a fixed-size number; BOOL and BYTES have their own
/// arms.
macro_rules! by_datatype {
    ($datatype:expr, $t:ident => $body:expr, bool => $bool:expr, bytes => $bytes:expr $(,)?) => {
        match $datatype {
            DataType::Uint8 => {
                type $t = u8;
                $body
            }
            DataType::Uint16 => {
                type $t = u16;
                $body
            }
            DataType::Uint32 => {
                type $t = u32;
                $body
            }
            DataType::Uint64 => {
                type $t = u64;
                $body
            }
            DataType::Int8 => {
                type $t = i8;
                $body
            }
            DataType::Int16 => {
                type $t = i16;
                $body
            }
            DataType::Int32 => {
                type $t = i32;
                $body
            }
            DataType::Int64 => {
                type $t = i64;
                $body
            }
            DataType::Fp32 => {
                type $t = f32;
                $body
            }
            DataType::Fp64 => {
                type $t = f64;
                $body
            }
            DataType::Bool => $bool,
            DataType::Bytes => $bytes,
        }
    };
}

/// Decodes our little-endian bytes into an owned ONNX Runtime tensor (one copy).
pub(super) fn to_ort(tensor: &Tensor) -> Result<DynValue, BackendError> {
    let shape: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
    let data = tensor.data();
    by_datatype!(tensor.dtype(),
        T => {
            let values: Vec<T> = data
                .chunks_exact(std::mem::size_of::<T>())
                .map(|c| T::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            OrtTensor::from_array((shape, values)).map(|t| t.into_dyn()).map_err(compute_error)
        },
        bool => {
            let values: Vec<bool> = data.iter().map(|&b| b != 0).collect();
            OrtTensor::from_array((shape, values)).map(|t| t.into_dyn()).map_err(compute_error)
        },
        bytes => {
            let strings = tensor
                .bytes_elements()
                .map(|element| String::from_utf8(element.to_vec()))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|_| compute_error("BYTES input is not valid UTF-8, which string models need"))?;
            OrtTensor::from_string_array((shape, strings.as_slice())).map(|t| t.into_dyn()).map_err(compute_error)
        },
    )
}

/// Copies an ONNX Runtime output into our little-endian bytes.
pub(super) fn from_ort(value: &DynValue) -> Result<Tensor, BackendError> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(compute_error(format!("the model produced a {}, which is not served", value.dtype())));
    };
    let datatype =
        our_datatype(*ty).ok_or_else(|| compute_error(format!("the model produced {ty}, which is not served")))?;
    let (shape, data) = by_datatype!(datatype,
        T => {
            let (shape, values) = value.try_extract_tensor::<T>().map_err(compute_error)?;
            let mut bytes = Vec::with_capacity(std::mem::size_of_val(values));
            values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            (shape.to_vec(), Bytes::from(bytes))
        },
        bool => {
            let (shape, values) = value.try_extract_tensor::<bool>().map_err(compute_error)?;
            (shape.to_vec(), Bytes::from(values.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>()))
        },
        bytes => {
            let (shape, strings) = value.try_extract_strings().map_err(compute_error)?;
            let mut buf = Vec::new();
            for s in &strings {
                push_bytes_element(&mut buf, s.as_bytes()).map_err(compute_error)?;
            }
            (shape.to_vec(), Bytes::from(buf))
        },
    );
    let shape = shape.iter().map(|&d| usize::try_from(d).map_err(compute_error)).collect::<Result<Vec<_>, _>>()?;
    Tensor::new(datatype, shape, data).map_err(compute_error)
}
