//! A gRPC ModelInferRequest as protobuf bytes, then its conversion to an inference request.
#![no_main]

use infergate::api::grpc::{convert, proto};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = proto::ModelInferRequest::decode(data) {
        // Shared memory on, with no region registered: a request naming one must fail cleanly too.
        let shared_memory = infergate::api::SharedMemory::new(true, 1 << 20);
        let _ = convert::infer_request(request, &shared_memory);
    }
});
