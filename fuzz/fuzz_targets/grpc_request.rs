//! A gRPC ModelInferRequest as protobuf bytes, then its conversion to an inference request.
#![no_main]

use infergate::api::grpc::{convert, proto};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = proto::ModelInferRequest::decode(data) {
        let _ = convert::infer_request(request);
    }
});
