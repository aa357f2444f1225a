//! Response encoding: KServe v2 JSON, with the outputs asked for in binary after it.

use serde::Serialize;

use super::OutputFormat;
use crate::api::{ApiError, InferResponse, NamedTensor};
use crate::tensor::{DataType, JsonData};

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
    parameters: Option<OutputParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

/// Where an output's bytes are when they are binary data after the JSON. An output written into a shared-memory
/// region has neither `data` nor parameters, as Triton answers it: its C++ client reads any output parameters as
/// the binary data's size.
#[derive(Serialize)]
struct OutputParameters {
    binary_data_size: usize,
}

/// How one output travels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    Json,
    Binary,
    Shared,
}

/// Bytes reserved for a response's JSON before it is written (it grows if needed).
const RESPONSE_HEADER_ROOM: usize = 512;

/// An encoded response body; `header_length` is set when binary outputs follow the JSON.
#[derive(Debug)]
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// Encodes an inference response as KServe v2 JSON, with the outputs `format` asks for in binary after it; the
/// outputs that name a shared-memory region are written into it first.
pub fn encode_response(response: &InferResponse, format: &OutputFormat) -> Result<EncodedResponse, ApiError> {
    let placement: Vec<Placement> = response
        .outputs
        .iter()
        .map(|o| match (format.shared(&o.name), format.binary(&o.name)) {
            (Some(target), _) => target.write(&o.tensor).map(|()| Placement::Shared),
            (None, true) => Ok(Placement::Binary),
            (None, false) => Ok(Placement::Json),
        })
        .collect::<Result<_, _>>()?;
    let body = ResponseBody {
        model_name: &response.model_name,
        model_version: &response.model_version,
        id: response.id.as_deref(),
        parameters: response.variant.as_deref().map(|variant| ResponseParameters { variant }),
        outputs: response
            .outputs
            .iter()
            .zip(&placement)
            .map(|(o, &placement)| OutputTensor {
                name: &o.name,
                datatype: o.tensor.dtype(),
                shape: o.tensor.shape(),
                parameters: (placement == Placement::Binary)
                    .then(|| OutputParameters { binary_data_size: o.tensor.data().len() }),
                data: (placement == Placement::Json).then_some(JsonData(&o.tensor)),
            })
            .collect(),
    };
    let binary = |(_, placement): &(&NamedTensor, &Placement)| **placement == Placement::Binary;
    let tail: usize = response.outputs.iter().zip(&placement).filter(binary).map(|(o, _)| o.tensor.data().len()).sum();
    // Room for a typical JSON header and the binary tensors, so that the body is allocated once.
    let mut bytes = Vec::with_capacity(RESPONSE_HEADER_ROOM + tail);
    serde_json::to_writer(&mut bytes, &body)
        .map_err(|e| ApiError::Inference(format!("cannot encode the response: {e}")))?;
    if !placement.contains(&Placement::Binary) {
        return Ok(EncodedResponse { body: bytes, header_length: None });
    }
    let header_length = bytes.len();
    bytes.reserve_exact(tail);
    for (output, _) in response.outputs.iter().zip(&placement).filter(binary) {
        bytes.extend_from_slice(output.tensor.data());
    }
    Ok(EncodedResponse { body: bytes, header_length: Some(header_length) })
}
