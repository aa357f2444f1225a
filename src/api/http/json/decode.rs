//! Request decoding: the JSON body, each input's `data` parsed straight into tensor bytes, and binary tensors.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::api::shared_memory::{OutputTarget, SharedMemory, SharedRef};
use crate::api::{ApiError, InferRequest, NamedTensor};
use crate::tensor::{DataType, Tensor, element_count, push_bytes_element};

#[derive(Deserialize)]
struct RequestBody<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<InputBody<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputBody>>,
    #[serde(default)]
    parameters: RequestParameters,
}

/// Request parameters we act on; others are accepted and ignored, as the protocol allows.
#[derive(Default, Deserialize)]
struct RequestParameters {
    /// The request's deadline in microseconds, as Triton's clients send it; 0 means none.
    #[serde(default)]
    timeout: Option<u64>,
    /// Every output in binary unless it says otherwise.
    #[serde(default)]
    binary_data_output: Option<bool>,
    /// Requests with the same key go to the same traffic variant.
    #[serde(default)]
    routing_key: Option<String>,
}

#[derive(Deserialize)]
struct InputBody<'a> {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    parameters: InputParameters,
}

#[derive(Default, Deserialize)]
struct InputParameters {
    /// The input's data is this many bytes of the binary section instead of JSON `data`.
    #[serde(default)]
    binary_data_size: Option<u64>,
    // Triton's system shared-memory parameters (also of requested outputs), named in place rather than
    // flattened: a flattened struct would buffer every parameter of every binary request.
    #[serde(default)]
    shared_memory_region: Option<String>,
    #[serde(default)]
    shared_memory_offset: Option<u64>,
    #[serde(default)]
    shared_memory_byte_size: Option<u64>,
}

/// The region a tensor's parameters name, if any.
macro_rules! region_of {
    ($parameters:expr, $what:expr) => {
        SharedRef::from_parameters(
            $what,
            $parameters.shared_memory_region,
            $parameters.shared_memory_offset,
            $parameters.shared_memory_byte_size,
        )
    };
}

#[derive(Deserialize)]
struct OutputBody {
    name: String,
    #[serde(default)]
    parameters: OutputParameters,
}

#[derive(Default, Deserialize)]
struct OutputParameters {
    #[serde(default)]
    binary_data: Option<bool>,
    #[serde(default)]
    shared_memory_region: Option<String>,
    #[serde(default)]
    shared_memory_offset: Option<u64>,
    #[serde(default)]
    shared_memory_byte_size: Option<u64>,
}

/// How the caller wants each output: as JSON, as binary data after it, or written into a shared-memory region.
#[derive(Debug, Default, Clone)]
pub struct OutputFormat {
    all_binary: bool,
    per_output: HashMap<String, bool>,
    shared: Vec<OutputTarget>,
}

impl OutputFormat {
    pub fn binary(&self, output: &str) -> bool {
        self.per_output.get(output).copied().unwrap_or(self.all_binary)
    }

    /// The region the output is written into, when it names one.
    pub fn shared(&self, output: &str) -> Option<&OutputTarget> {
        crate::api::shared_memory::target_of(&self.shared, output)
    }
}

/// Decodes an inference request: JSON only, or (with `header_length`) a JSON header followed by binary tensors;
/// inputs that name a shared-memory region are read from it.
pub fn decode_request(
    body: &Bytes,
    header_length: Option<usize>,
    shared_memory: &SharedMemory,
) -> Result<(InferRequest, OutputFormat), ApiError> {
    let (header, mut binary) = match header_length {
        Some(len) if len <= body.len() => (body.slice(..len), body.slice(len..)),
        Some(len) => {
            return Err(ApiError::malformed(format!(
                "Inference-Header-Content-Length is {len}, but the body has only {} bytes",
                body.len()
            )));
        }
        None => (body.clone(), Bytes::new()),
    };
    let request: RequestBody<'_> =
        serde_json::from_slice(&header).map_err(|e| ApiError::malformed(format!("invalid inference request: {e}")))?;
    let inputs = request
        .inputs
        .into_iter()
        .map(|input| decode_input(input, &mut binary, shared_memory))
        .collect::<Result<Vec<_>, _>>()?;
    if !binary.is_empty() {
        return Err(ApiError::malformed(format!(
            "{} bytes of binary data follow the inputs' binary_data_size",
            binary.len()
        )));
    }
    let mut format =
        OutputFormat { all_binary: request.parameters.binary_data_output.unwrap_or(false), ..Default::default() };
    let outputs = request
        .outputs
        .map(|outputs| {
            outputs
                .into_iter()
                .map(|o| {
                    if let Some(binary) = o.parameters.binary_data {
                        format.per_output.insert(o.name.clone(), binary);
                    }
                    if let Some(at) = region_of!(o.parameters, ("output", o.name.as_str()))? {
                        format.shared.push(shared_memory.output_target(o.name.clone(), &at)?);
                    }
                    Ok(o.name)
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .transpose()?;
    let timeout = request.parameters.timeout.filter(|&us| us > 0).map(Duration::from_micros);
    let routing_key = request.parameters.routing_key;
    Ok((InferRequest { id: request.id, inputs, outputs, timeout, routing_key }, format))
}

fn decode_input(
    input: InputBody<'_>,
    binary: &mut Bytes,
    shared_memory: &SharedMemory,
) -> Result<NamedTensor, ApiError> {
    let name = input.name;
    let binary_data_size = input.parameters.binary_data_size;
    if let Some(at) = region_of!(input.parameters, ("input", name.as_str()))? {
        if input.data.is_some() || binary_data_size.is_some() {
            return Err(ApiError::malformed(format!(
                "input '{name}' names a shared memory region and also has data or binary_data_size"
            )));
        }
        let (datatype, shape) = datatype_and_shape(&name, &input.datatype, &input.shape)?;
        return shared_memory.read_input(name, datatype, shape, &at);
    }
    let data = match (input.data, binary_data_size) {
        (Some(data), None) => data,
        (None, Some(size)) => return binary_input(name, &input.datatype, &input.shape, size, binary),
        (Some(_), Some(_)) => {
            return Err(ApiError::malformed(format!("input '{name}' has both data and binary_data_size")));
        }
        (None, None) => {
            return Err(ApiError::malformed(format!("input '{name}' has neither data nor binary_data_size")));
        }
    };
    let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
        let known: Vec<&str> = DataType::ALL.iter().map(|dt| dt.as_str()).collect();
        ApiError::malformed(format!(
            "input '{name}' has unknown datatype '{}'; expected one of {}",
            input.datatype,
            known.join(", ")
        ))
    })?;
    let count_error =
        |given: String| ApiError::malformed(format!("input '{name}' has shape {:?} but {given} given", input.shape));
    let shape = input.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<usize>, _>>();
    let expected = shape.as_deref().ok().and_then(|shape| element_count(shape).ok());
    // A shape too large for this machine is refused the same way as any shape the data does not fill.
    let (Ok(shape), Some(expected)) = (shape, expected) else {
        return Err(count_error("its data cannot fill it".to_owned()));
    };

    let raw = data.get();
    // Every JSON element but the last takes at least two characters ("0,"): a bound on what the data can hold.
    let capacity = expected.min(raw.len() / 2 + 1) * datatype.element_size().unwrap_or(8);
    let mut sink = TensorSink { datatype, out: Vec::with_capacity(capacity), count: 0, limit: expected };
    let mut parser = serde_json::Deserializer::from_str(raw);
    let parsed = parser.deserialize_any(Flatten(&mut sink));
    if sink.count > expected {
        return Err(count_error(format!("more than {expected} data elements were")));
    }
    parsed.map_err(|e| ApiError::malformed(format!("input '{name}' ({datatype}): {e}")))?;
    if sink.count != expected {
        let plural = if sink.count == 1 { "was" } else { "were" };
        return Err(count_error(format!(
            "{} data element{} {plural}",
            sink.count,
            if sink.count == 1 { "" } else { "s" }
        )));
    }
    let tensor = Tensor::new(datatype, shape, Bytes::from(sink.out))
        .map_err(|e| ApiError::malformed(format!("input '{name}': {e}")))?;
    Ok(NamedTensor { name, tensor })
}

/// An input whose data is the next `size` bytes of the binary section: taken without copying.
fn binary_input(
    name: String,
    datatype: &str,
    shape: &[u64],
    size: u64,
    binary: &mut Bytes,
) -> Result<NamedTensor, ApiError> {
    let (datatype, shape) = datatype_and_shape(&name, datatype, shape)?;
    let size = usize::try_from(size).ok().filter(|&size| size <= binary.len()).ok_or_else(|| {
        ApiError::malformed(format!(
            "input '{name}' has binary_data_size {size}, but only {} bytes of binary data are left",
            binary.len()
        ))
    })?;
    let data = binary.split_to(size);
    let tensor =
        Tensor::new(datatype, shape, data).map_err(|e| ApiError::malformed(format!("input '{name}' (binary): {e}")))?;
    Ok(NamedTensor { name, tensor })
}

/// The datatype and shape of an input whose bytes come whole (binary data or shared memory).
fn datatype_and_shape(name: &str, datatype: &str, shape: &[u64]) -> Result<(DataType, Vec<usize>), ApiError> {
    let datatype = DataType::parse(datatype)
        .ok_or_else(|| ApiError::malformed(format!("input '{name}' has unknown datatype '{datatype}'")))?;
    let shape = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| ApiError::malformed(format!("input '{name}' has shape {shape:?}, too large")))?;
    Ok((datatype, shape))
}

/// One JSON scalar of a `data` array, as the parser met it.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a str),
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Uint(u) => write!(f, "{u}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl Scalar<'_> {
    fn integer(self) -> Option<i128> {
        match self {
            Scalar::Int(i) => Some(i128::from(i)),
            Scalar::Uint(u) => Some(i128::from(u)),
            _ => None,
        }
    }

    fn float(self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(i as f64),
            Scalar::Uint(u) => Some(u as f64),
            Scalar::Float(x) => Some(x),
            _ => None,
        }
    }
}

/// Receives the scalars of one input in row-major order and appends them in the tensor's layout.
struct TensorSink {
    datatype: DataType,
    out: Vec<u8>,
    count: usize,
    /// Elements the shape holds; one more stops the parse.
    limit: usize,
}

/// Appends one integer scalar, refusing non-integers and values outside the type's range.
macro_rules! push_integer {
    ($out:expr, $scalar:ident, $fail:ident, $datatype:expr, $ty:ty) => {{
        let wide = $scalar.integer().ok_or_else(|| $fail("an integer"))?;
        let value = <$ty>::try_from(wide).map_err(|_| $fail(&format!("in the {} range", $datatype)))?;
        $out.extend_from_slice(&value.to_le_bytes());
    }};
}

impl TensorSink {
    fn push(&mut self, scalar: Scalar<'_>) -> Result<(), String> {
        let ix = self.count;
        self.count += 1;
        if self.count > self.limit {
            return Err("more data elements than the shape holds".to_owned());
        }
        let fail = |what: &str| format!("element {ix} is {scalar}, which is not {what}");
        let datatype = self.datatype;
        match datatype {
            DataType::Bool => match scalar {
                Scalar::Bool(b) => self.out.push(u8::from(b)),
                _ => return Err(fail("a boolean")),
            },
            DataType::Uint8 => push_integer!(self.out, scalar, fail, datatype, u8),
            DataType::Uint16 => push_integer!(self.out, scalar, fail, datatype, u16),
            DataType::Uint32 => push_integer!(self.out, scalar, fail, datatype, u32),
            DataType::Uint64 => push_integer!(self.out, scalar, fail, datatype, u64),
            DataType::Int8 => push_integer!(self.out, scalar, fail, datatype, i8),
            DataType::Int16 => push_integer!(self.out, scalar, fail, datatype, i16),
            DataType::Int32 => push_integer!(self.out, scalar, fail, datatype, i32),
            DataType::Int64 => push_integer!(self.out, scalar, fail, datatype, i64),
            DataType::Fp32 => {
                let wide = scalar.float().ok_or_else(|| fail("a number"))?;
                let narrow = wide as f32;
                if wide.is_finite() && !narrow.is_finite() {
                    return Err(fail("in the FP32 range"));
                }
                self.out.extend_from_slice(&narrow.to_le_bytes());
            }
            DataType::Fp64 => {
                self.out.extend_from_slice(&scalar.float().ok_or_else(|| fail("a number"))?.to_le_bytes())
            }
            DataType::Bytes => match scalar {
                Scalar::Str(s) => push_bytes_element(&mut self.out, s.as_bytes()).map_err(|e| e.to_string())?,
                _ => return Err(fail("a string")),
            },
        }
        Ok(())
    }
}

/// Walks nested arrays, handing every scalar to the sink.
struct Flatten<'s>(&'s mut TensorSink);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Flatten<'_> {
    fn push<E: de::Error>(self, scalar: Scalar<'_>) -> Result<(), E> {
        self.0.push(scalar).map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers, booleans or strings")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Scalar::Uint(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Scalar::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}
