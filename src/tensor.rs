//! Our own tensor type: a datatype, a shape and contiguous little-endian bytes.
//!
//! Every transport decodes into [`Tensor`] and every backend computes on it, so the request path never boxes
//! individual elements. BYTES tensors hold their elements as the KServe binary layout does: each element is a
//! 4-byte little-endian length followed by that many bytes.

use std::fmt;

use bytes::Bytes;
use thiserror::Error;

/// The KServe v2 tensor datatypes infergate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 12] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's name for the datatype ("FP32", "INT64", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|dt| dt.as_str() == name)
    }

    /// Bytes per element, or `None` for BYTES whose elements vary in size.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl serde::Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TensorError {
    #[error("shape {shape:?} has too many elements")]
    ShapeOverflow { shape: Vec<usize> },
    #[error("shape {shape:?} holds {expected} elements but {actual} were given")]
    ElementCount { shape: Vec<usize>, expected: usize, actual: usize },
    #[error("{dtype} data of shape {shape:?} needs {expected} bytes but {actual} were given")]
    ByteLength { dtype: DataType, shape: Vec<usize>, expected: usize, actual: usize },
    #[error("cannot batch: {0}")]
    Batch(&'static str),
    #[error("BOOL data must hold only the bytes 0 and 1")]
    InvalidBool,
    #[error("BYTES data is malformed: {0}")]
    MalformedBytes(&'static str),
}

/// "FP32 [2,4]": a datatype and a shape (fixed or with -1 for free dimensions), for error messages.
pub fn describe<D: fmt::Display>(datatype: DataType, shape: &[D]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("{datatype} [{}]", dims.join(","))
}

/// Number of elements of a shape, refusing shapes whose product overflows.
pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| TensorError::ShapeOverflow { shape: shape.to_vec() })
}

/// A dense tensor. Construction checks that the bytes match the datatype and shape, so a `Tensor` is always
/// well formed.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DataType,
    shape: Vec<usize>,
    data: Bytes,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl Tensor {
    pub fn new(dtype: DataType, shape: Vec<usize>, data: Bytes) -> Result<Tensor, TensorError> {
        let count = element_count(&shape)?;
        match dtype.element_size() {
            Some(size) => {
                let expected =
                    count.checked_mul(size).ok_or_else(|| TensorError::ShapeOverflow { shape: shape.clone() })?;
                if expected != data.len() {
                    return Err(TensorError::ByteLength { dtype, shape, expected, actual: data.len() });
                }
                if dtype == DataType::Bool && data.iter().any(|&b| b > 1) {
                    return Err(TensorError::InvalidBool);
                }
            }
            None => {
                let actual = count_bytes_elements(&data)?;
                if actual != count {
                    return Err(TensorError::ElementCount { shape, expected: count, actual });
                }
            }
        }
        Ok(Tensor { dtype, shape, data })
    }

    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub fn element_count(&self) -> usize {
        // Checked at construction.
        self.shape.iter().product()
    }

    /// The elements of a BYTES tensor, each without its length prefix.
    pub fn bytes_elements(&self) -> BytesElements<'_> {
        BytesElements { rest: if self.dtype == DataType::Bytes { &self.data } else { &[] } }
    }
}

/// Stacks tensors along dimension 0 with one copy of each part's bytes. The parts must share the datatype and
/// the dimensions after the first (the batcher only stacks such requests).
pub fn concat_rows(parts: &[&Tensor]) -> Result<Tensor, TensorError> {
    let first = parts.first().ok_or(TensorError::Batch("nothing to stack"))?;
    if first.shape.is_empty() {
        return Err(TensorError::Batch("a scalar has no rows to stack"));
    }
    let mut rows = 0usize;
    let mut len = 0usize;
    for part in parts {
        if part.dtype != first.dtype || part.shape.get(1..) != first.shape.get(1..) {
            return Err(TensorError::Batch("parts differ in datatype or in dimensions after the first"));
        }
        rows += part.shape[0];
        len += part.data.len();
    }
    let mut data = Vec::with_capacity(len);
    for part in parts {
        data.extend_from_slice(&part.data);
    }
    let mut shape = first.shape.clone();
    shape[0] = rows;
    Tensor::new(first.dtype, shape, Bytes::from(data))
}

/// Splits a tensor along dimension 0 into consecutive parts of the given row counts, without copying.
pub fn split_rows(tensor: &Tensor, rows: &[usize]) -> Result<Vec<Tensor>, TensorError> {
    let total: usize = rows.iter().sum();
    if tensor.shape.first() != Some(&total) {
        return Err(TensorError::Batch("the first dimension does not hold the batch's rows"));
    }
    let per_row = element_count(&tensor.shape[1..])?;
    let row_offsets = byte_offsets_of_rows(tensor, per_row, total)?;
    let mut parts = Vec::with_capacity(rows.len());
    let mut start_row = 0;
    for &n in rows {
        let (start, end) = (row_offsets[start_row], row_offsets[start_row + n]);
        let mut shape = tensor.shape.clone();
        shape[0] = n;
        parts.push(Tensor { dtype: tensor.dtype, shape, data: tensor.data.slice(start..end) });
        start_row += n;
    }
    Ok(parts)
}

/// Byte offset of the start of each row, plus the end: `rows + 1` entries.
fn byte_offsets_of_rows(tensor: &Tensor, per_row: usize, rows: usize) -> Result<Vec<usize>, TensorError> {
    if let Some(size) = tensor.dtype.element_size() {
        let row_bytes = per_row * size;
        return Ok((0..=rows).map(|r| r * row_bytes).collect());
    }
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0);
    let mut rest: &[u8] = &tensor.data;
    let mut offset = 0;
    for _ in 0..rows {
        for _ in 0..per_row {
            let (len, after) =
                split_length_prefix(rest)?.ok_or(TensorError::MalformedBytes("fewer elements than the shape"))?;
            rest = &after[len..];
            offset += 4 + len;
        }
        offsets.push(offset);
    }
    Ok(offsets)
}

/// Iterates the elements of a length-prefixed BYTES buffer (already validated by [`Tensor::new`]).
#[derive(Debug)]
pub struct BytesElements<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BytesElements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = split_length_prefix(self.rest).ok()??;
        let (element, rest) = rest.split_at(len);
        self.rest = rest;
        Some(element)
    }
}

/// Splits one length prefix off a BYTES buffer: `Ok(None)` at the end, an error when truncated.
fn split_length_prefix(buf: &[u8]) -> Result<Option<(usize, &[u8])>, TensorError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let (prefix, rest) = buf.split_first_chunk::<4>().ok_or(TensorError::MalformedBytes("truncated length prefix"))?;
    let len = u32::from_le_bytes(*prefix) as usize;
    if len > rest.len() {
        return Err(TensorError::MalformedBytes("element longer than the remaining data"));
    }
    Ok(Some((len, rest)))
}

fn count_bytes_elements(mut buf: &[u8]) -> Result<usize, TensorError> {
    let mut count = 0;
    while let Some((len, rest)) = split_length_prefix(buf)? {
        buf = &rest[len..];
        count += 1;
    }
    Ok(count)
}

/// Appends one BYTES element (length prefix, then content) to a buffer.
pub fn push_bytes_element(buf: &mut Vec<u8>, element: &[u8]) -> Result<(), TensorError> {
    let len = u32::try_from(element.len()).map_err(|_| TensorError::MalformedBytes("element longer than 4 GiB"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(element);
    Ok(())
}

/// Serialises a tensor's elements as a flat JSON array without building an intermediate vector.
#[derive(Debug)]
pub struct JsonData<'a>(pub &'a Tensor);

macro_rules! serialize_le {
    ($seq:ident, $data:expr, $ty:ty) => {
        for chunk in $data.chunks_exact(std::mem::size_of::<$ty>()) {
            let mut raw = [0u8; std::mem::size_of::<$ty>()];
            raw.copy_from_slice(chunk);
            $seq.serialize_element(&<$ty>::from_le_bytes(raw))?;
        }
    };
}

impl serde::Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tensor = self.0;
        let data = tensor.data();
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(tensor.element_count()))?;
        match tensor.dtype() {
            DataType::Bool => {
                for &b in data.iter() {
                    seq.serialize_element(&(b != 0))?;
                }
            }
            DataType::Uint8 => serialize_le!(seq, data, u8),
            DataType::Uint16 => serialize_le!(seq, data, u16),
            DataType::Uint32 => serialize_le!(seq, data, u32),
            DataType::Uint64 => serialize_le!(seq, data, u64),
            DataType::Int8 => serialize_le!(seq, data, i8),
            DataType::Int16 => serialize_le!(seq, data, i16),
            DataType::Int32 => serialize_le!(seq, data, i32),
            DataType::Int64 => serialize_le!(seq, data, i64),
            DataType::Fp32 => serialize_le!(seq, data, f32),
            DataType::Fp64 => serialize_le!(seq, data, f64),
            DataType::Bytes => {
                for element in tensor.bytes_elements() {
                    seq.serialize_element(&String::from_utf8_lossy(element))?;
                }
            }
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
        }
        assert_eq!(DataType::parse("FP16X"), None);
    }

    #[test]
    fn new_checks_byte_length() {
        let ok = Tensor::new(DataType::Fp32, vec![2, 2], Bytes::from(vec![0u8; 16]));
        assert!(ok.is_ok());
        let err = Tensor::new(DataType::Fp32, vec![2, 2], Bytes::from(vec![0u8; 12])).unwrap_err();
        assert!(matches!(err, TensorError::ByteLength { expected: 16, actual: 12, .. }));
    }

    #[test]
    fn huge_shapes_are_refused_without_allocating() {
        let err = Tensor::new(DataType::Fp64, vec![usize::MAX / 2, 4], Bytes::new()).unwrap_err();
        assert!(matches!(err, TensorError::ShapeOverflow { .. }));
        let err = Tensor::new(DataType::Fp32, vec![1_000_000_000_000, 4], Bytes::new()).unwrap_err();
        assert!(matches!(err, TensorError::ByteLength { .. }));
    }

    #[test]
    fn bytes_elements_round_trip() {
        let mut buf = Vec::new();
        for s in ["a", "", "hello"] {
            push_bytes_element(&mut buf, s.as_bytes()).unwrap();
        }
        let t = Tensor::new(DataType::Bytes, vec![3], Bytes::from(buf)).unwrap();
        let elements: Vec<&[u8]> = t.bytes_elements().collect();
        assert_eq!(elements, vec![&b"a"[..], b"", b"hello"]);
    }

    fn fp32(shape: Vec<usize>, values: &[f32]) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(DataType::Fp32, shape, Bytes::from(data)).unwrap()
    }

    #[test]
    fn concat_then_split_gives_each_part_back() {
        let a = fp32(vec![1, 2], &[1.0, 2.0]);
        let b = fp32(vec![2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let stacked = concat_rows(&[&a, &b]).unwrap();
        assert_eq!(stacked, fp32(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert_eq!(split_rows(&stacked, &[1, 2]).unwrap(), vec![a, b]);
        assert!(split_rows(&stacked, &[1, 1]).is_err());
        assert!(concat_rows(&[&fp32(vec![1, 2], &[0.0, 0.0]), &fp32(vec![1, 1], &[0.0])]).is_err());
    }

    #[test]
    fn bytes_tensors_split_on_element_boundaries() {
        let make = |items: &[&str], rows: usize| {
            let mut buf = Vec::new();
            for s in items {
                push_bytes_element(&mut buf, s.as_bytes()).unwrap();
            }
            Tensor::new(DataType::Bytes, vec![rows, 2], Bytes::from(buf)).unwrap()
        };
        let a = make(&["a", "bb"], 1);
        let b = make(&["", "dddd", "e", "ffffff"], 2);
        let stacked = concat_rows(&[&a, &b]).unwrap();
        assert_eq!(stacked.shape(), [3, 2]);
        assert_eq!(split_rows(&stacked, &[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let err = Tensor::new(DataType::Bytes, vec![1], Bytes::from_static(&[9, 0, 0, 0, 1])).unwrap_err();
        assert!(matches!(err, TensorError::MalformedBytes(_)));
        let err = Tensor::new(DataType::Bytes, vec![1], Bytes::from_static(&[1, 0])).unwrap_err();
        assert!(matches!(err, TensorError::MalformedBytes(_)));
        let err = Tensor::new(DataType::Bytes, vec![2], Bytes::from_static(&[0, 0, 0, 0])).unwrap_err();
        assert!(matches!(err, TensorError::ElementCount { expected: 2, actual: 1, .. }));
    }
}
