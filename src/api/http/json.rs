//! KServe v2 JSON bodies: decoding requests into [`InferRequest`] and encoding [`InferResponse`]s, with Triton's
//! binary tensor data extension: when the `Inference-Header-Content-Length` header is set, the body is that many
//! bytes of JSON followed by the raw tensors of the inputs that carry a `binary_data_size` parameter, in input order
//! (little-endian; BYTES elements each with a 4-byte length). Outputs asked for with `binary_data` (or every output,
//! with the request's `binary_data_output`) come back the same way.
//!
//! Each input's `data` is kept as raw JSON until its datatype and shape are known, then parsed straight into
//! the tensor's little-endian bytes: no intermediate value per element, so a body never expands beyond the
//! tensor it describes. `data` may be flat or nested row-major; values that do not fit the datatype are refused
//! rather than wrapped or rounded away.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::api::{ApiError, InferRequest, InferResponse, NamedTensor};
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
}

/// The header that announces binary tensor data after a JSON header of this many bytes (requests and responses).
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Which outputs the caller wants as binary data rather than JSON.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OutputFormat {
    all_binary: bool,
    per_output: HashMap<String, bool>,
}

impl OutputFormat {
    pub fn binary(&self, output: &str) -> bool {
        self.per_output.get(output).copied().unwrap_or(self.all_binary)
    }
}

/// Decodes an inference request: JSON only, or (with `header_length`) a JSON header followed by binary tensors.
pub fn decode_request(body: &Bytes, header_length: Option<usize>) -> Result<(InferRequest, OutputFormat), ApiError> {
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
    let inputs =
        request.inputs.into_iter().map(|input| decode_input(input, &mut binary)).collect::<Result<Vec<_>, _>>()?;
    if !binary.is_empty() {
        return Err(ApiError::malformed(format!(
            "{} bytes of binary data follow the inputs' binary_data_size",
            binary.len()
        )));
    }
    let mut format =
        OutputFormat { all_binary: request.parameters.binary_data_output.unwrap_or(false), ..Default::default() };
    let outputs = request.outputs.map(|outputs| {
        outputs
            .into_iter()
            .map(|o| {
                if let Some(binary) = o.parameters.binary_data {
                    format.per_output.insert(o.name.clone(), binary);
                }
                o.name
            })
            .collect()
    });
    let timeout = request.parameters.timeout.filter(|&us| us > 0).map(Duration::from_micros);
    let routing_key = request.parameters.routing_key;
    Ok((InferRequest { id: request.id, inputs, outputs, timeout, routing_key }, format))
}

fn decode_input(input: InputBody<'_>, binary: &mut Bytes) -> Result<NamedTensor, ApiError> {
    let name = input.name;
    let data = match (input.data, input.parameters.binary_data_size) {
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
    let datatype = DataType::parse(datatype)
        .ok_or_else(|| ApiError::malformed(format!("input '{name}' has unknown datatype '{datatype}'")))?;
    let size = usize::try_from(size).ok().filter(|&size| size <= binary.len()).ok_or_else(|| {
        ApiError::malformed(format!(
            "input '{name}' has binary_data_size {size}, but only {} bytes of binary data are left",
            binary.len()
        ))
    })?;
    let shape = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| ApiError::malformed(format!("input '{name}' has shape {shape:?}, too large")))?;
    let data = binary.split_to(size);
    let tensor =
        Tensor::new(datatype, shape, data).map_err(|e| ApiError::malformed(format!("input '{name}' (binary): {e}")))?;
    Ok(NamedTensor { name, tensor })
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

#[derive(Serialize)]
struct ResponseBody<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<ResponseParameters<'a>>,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Serialize)]
struct ResponseParameters<'a> {
    /// The traffic variant that answered.
    variant: &'a str,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: DataType,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<TensorData<'a>>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

/// Serialises a tensor's elements as a flat JSON array without building an intermediate vector.
struct TensorData<'a>(&'a Tensor);

macro_rules! serialize_le {
    ($seq:ident, $data:expr, $ty:ty) => {
        for chunk in $data.chunks_exact(std::mem::size_of::<$ty>()) {
            let mut raw = [0u8; std::mem::size_of::<$ty>()];
            raw.copy_from_slice(chunk);
            $seq.serialize_element(&<$ty>::from_le_bytes(raw))?;
        }
    };
}

impl Serialize for TensorData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tensor = self.0;
        let data = tensor.data();
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

/// Bytes reserved for a response's JSON before it is written (it grows if needed).
const RESPONSE_HEADER_ROOM: usize = 512;

/// An encoded response body; `header_length` is set when binary outputs follow the JSON.
#[derive(Debug)]
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// Encodes an inference response as KServe v2 JSON, with the outputs `format` asks for in binary after it.
pub fn encode_response(response: &InferResponse, format: &OutputFormat) -> Result<EncodedResponse, ApiError> {
    let binary: Vec<bool> = response.outputs.iter().map(|o| format.binary(&o.name)).collect();
    let body = ResponseBody {
        model_name: &response.model_name,
        model_version: &response.model_version,
        id: response.id.as_deref(),
        parameters: response.variant.as_deref().map(|variant| ResponseParameters { variant }),
        outputs: response
            .outputs
            .iter()
            .zip(&binary)
            .map(|(o, &binary)| OutputTensor {
                name: &o.name,
                datatype: o.tensor.dtype(),
                shape: o.tensor.shape(),
                parameters: binary.then(|| BinaryParameters { binary_data_size: o.tensor.data().len() }),
                data: (!binary).then_some(TensorData(&o.tensor)),
            })
            .collect(),
    };
    let tail: usize =
        response.outputs.iter().zip(&binary).filter(|(_, b)| **b).map(|(o, _)| o.tensor.data().len()).sum();
    // Room for a typical JSON header and the binary tensors, so that the body is allocated once.
    let mut bytes = Vec::with_capacity(RESPONSE_HEADER_ROOM + tail);
    serde_json::to_writer(&mut bytes, &body)
        .map_err(|e| ApiError::Inference(format!("cannot encode the response: {e}")))?;
    if !binary.contains(&true) {
        return Ok(EncodedResponse { body: bytes, header_length: None });
    }
    let header_length = bytes.len();
    bytes.reserve_exact(tail);
    for (output, _) in response.outputs.iter().zip(&binary).filter(|(_, b)| **b) {
        bytes.extend_from_slice(output.tensor.data());
    }
    Ok(EncodedResponse { body: bytes, header_length: Some(header_length) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NamedTensor;

    fn decode_json(json: &str) -> Result<InferRequest, ApiError> {
        decode_request(&Bytes::copy_from_slice(json.as_bytes()), None).map(|(request, _)| request)
    }

    fn decode_one(json: &str) -> Result<Tensor, ApiError> {
        Ok(decode_json(json)?.inputs.remove(0).tensor)
    }

    fn input(datatype: &str, shape: &str, data: &str) -> String {
        format!(r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{datatype}","data":{data}}}]}}"#)
    }

    #[test]
    fn flat_and_nested_data_agree() {
        let flat = decode_one(&input("FP32", "[2,2]", "[1,2,3,4.5]")).unwrap();
        let nested = decode_one(&input("FP32", "[2,2]", "[[1,2],[3,4.5]]")).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(&flat.data()[12..], 4.5f32.to_le_bytes());
    }

    #[test]
    fn every_datatype_decodes_and_encodes() {
        let cases = [
            ("BOOL", "[true,false]"),
            ("UINT8", "[0,255]"),
            ("UINT16", "[0,65535]"),
            ("UINT32", "[0,4294967295]"),
            ("UINT64", "[0,18446744073709551615]"),
            ("INT8", "[-128,127]"),
            ("INT16", "[-32768,32767]"),
            ("INT32", "[-2147483648,2147483647]"),
            ("INT64", "[-9223372036854775808,9223372036854775807]"),
            ("FP32", "[-1.5,0.25]"),
            ("FP64", "[-1.5,1e300]"),
            ("BYTES", r#"["a","héllo"]"#),
        ];
        for (datatype, data) in cases {
            let tensor = decode_one(&input(datatype, "[2]", data)).unwrap();
            let response = InferResponse {
                model_name: "m".into(),
                model_version: "1".into(),
                id: None,
                outputs: vec![NamedTensor { name: "x".into(), tensor }],
                variant: None,
            };
            let encoded = encode_response(&response, &OutputFormat::default()).unwrap();
            assert_eq!(encoded.header_length, None);
            let json: serde_json::Value = serde_json::from_slice(&encoded.body).unwrap();
            let expected: serde_json::Value = serde_json::from_str(data).unwrap();
            assert_eq!(json["outputs"][0]["data"], expected, "{datatype}");
            assert_eq!(json["outputs"][0]["datatype"], datatype);
        }
    }

    #[test]
    fn out_of_range_and_wrong_kinds_are_refused() {
        for (datatype, data) in [
            ("UINT8", "[256]"),
            ("INT8", "[-129]"),
            ("UINT64", "[-1]"),
            ("INT32", "[1.5]"),
            ("FP32", "[1e300]"),
            ("FP32", r#"["1"]"#),
            ("BOOL", "[1]"),
            ("BYTES", "[1]"),
        ] {
            let err = decode_one(&input(datatype, "[1]", data)).unwrap_err();
            assert!(matches!(err, ApiError::MalformedRequest(_)), "{datatype} {data}: {err}");
        }
    }

    #[test]
    fn shape_and_data_must_agree() {
        let err = decode_one(&input("FP32", "[2,4]", "[1,2,3]")).unwrap_err();
        assert_eq!(err.to_string(), "input 'x' has shape [2, 4] but 3 data elements were given");
        let err = decode_one(&input("FP32", "[1,2]", "[1,2,3]")).unwrap_err();
        assert_eq!(err.to_string(), "input 'x' has shape [1, 2] but more than 2 data elements were given");
        let err = decode_one(&input("FP32", "[1]", "[[]]")).unwrap_err();
        assert_eq!(err.to_string(), "input 'x' has shape [1] but 0 data elements were given");
        assert!(decode_one(&input("FP32", "[1000000000000,4]", "[1,2,3,4]")).is_err());
        assert!(decode_one(&input("FP32", "[18446744073709551615,18446744073709551615]", "[1]")).is_err());
        assert!(decode_one(&input("FP32", "[1e12,4]", "[1]")).is_err());
        assert!(decode_one(&input("FP32", "[-1,4]", "[1]")).is_err());
        assert!(decode_one(&input("FP99", "[1]", "[1]")).is_err());
    }

    #[test]
    fn malformed_json_is_refused() {
        for body in ["", "{", "[]", "{\"inputs\": 3}", "{\"inputs\":[{\"name\":\"x\"}]}", &"[".repeat(10_000)] {
            assert!(matches!(decode_json(body), Err(ApiError::MalformedRequest(_))), "{body:.40}");
        }
    }

    #[test]
    fn outputs_id_and_timeout_are_read() {
        let body = r#"{"id":"42","inputs":[],"outputs":[{"name":"label","parameters":{"binary_data":false}}],
            "parameters":{"timeout":1500,"priority":1}}"#;
        let (request, format) = decode_request(&Bytes::copy_from_slice(body.as_bytes()), None).unwrap();
        assert!(!format.binary("label"));
        assert_eq!(request.timeout, Some(Duration::from_micros(1500)));
        assert_eq!(request.id.as_deref(), Some("42"));
        assert_eq!(request.outputs, Some(vec!["label".to_owned()]));
    }

    #[test]
    fn binary_inputs_and_outputs_round_trip() {
        let header = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},
            {"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":13}},
            {"name":"j","shape":[1],"datatype":"INT32","data":[7]}],
            "outputs":[{"name":"x","parameters":{"binary_data":true}},{"name":"j"}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.0f32).to_le_bytes());
        for s in ["abc", "de"] {
            push_bytes_element(&mut body, s.as_bytes()).unwrap();
        }
        let (request, format) = decode_request(&Bytes::from(body.clone()), Some(header.len())).unwrap();
        assert_eq!(request.inputs[0].tensor.data(), &body[header.len()..header.len() + 8]);
        let strings: Vec<&[u8]> = request.inputs[1].tensor.bytes_elements().collect();
        assert_eq!(strings, [b"abc".as_slice(), b"de".as_slice()]);
        assert!(format.binary("x") && !format.binary("j"));

        let response = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: None,
            outputs: request.inputs.into_iter().map(|i| NamedTensor { name: i.name, tensor: i.tensor }).collect(),
            variant: Some("b".into()),
        };
        let encoded = encode_response(&response, &format).unwrap();
        let len = encoded.header_length.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&encoded.body[..len]).unwrap();
        assert_eq!(json["parameters"]["variant"], "b", "the variant that answered is a response parameter");
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(json["outputs"][0].get("data").is_none());
        assert_eq!(json["outputs"][1]["data"], serde_json::json!(["abc", "de"]));
        assert_eq!(&encoded.body[len..], &body[header.len()..header.len() + 8]);
    }

    #[test]
    fn binary_sizes_must_add_up() {
        let header = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let with_tail = |tail: usize| {
            let mut body = header.to_vec();
            body.resize(header.len() + tail, 0);
            decode_request(&Bytes::from(body), Some(header.len())).map(|_| ())
        };
        assert!(with_tail(8).is_ok());
        for tail in [4, 12] {
            assert!(matches!(with_tail(tail), Err(ApiError::MalformedRequest(_))), "{tail}");
        }
        assert!(decode_request(&Bytes::from_static(b"{}"), Some(100)).is_err());
        let wrong_size =
            br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = wrong_size.to_vec();
        body.resize(wrong_size.len() + 8, 0);
        assert!(decode_request(&Bytes::from(body), Some(wrong_size.len())).is_err());
    }
}
