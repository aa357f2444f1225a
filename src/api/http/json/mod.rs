//! KServe v2 JSON bodies: decoding requests into [`InferRequest`](crate::api::InferRequest) and encoding
//! [`InferResponse`](crate::api::InferResponse)s, with Triton's binary tensor data extension: when the
//! `Inference-Header-Content-Length` header is set, the body is that many bytes of JSON followed by the raw tensors of
//! the inputs that carry a `binary_data_size` parameter, in input order (little-endian; BYTES elements each with a
//! 4-byte length). Outputs asked for with `binary_data` (or every output, with the request's `binary_data_output`) come
//! back the same way.
//!
//! Each input's `data` is kept as raw JSON until its datatype and shape are known, then parsed straight into
//! the tensor's little-endian bytes: no intermediate value per element, so a body never expands beyond the
//! tensor it describes. `data` may be flat or nested row-major; values that do not fit the datatype are refused
//! rather than wrapped or rounded away.

mod decode;
mod encode;

pub use decode::{OutputFormat, decode_request};
pub use encode::{EncodedResponse, encode_response};

/// The header that announces binary tensor data after a JSON header of this many bytes (requests and responses).
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[cfg(test)]
mod tests;
