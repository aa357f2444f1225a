//! A REST inference request body as JSON (KServe v2): decoding must fail cleanly, never panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Shared memory on, with no region registered: a request naming one must fail cleanly too.
    let shared_memory = infergate::api::SharedMemory::new(true, 1 << 20);
    let _ = infergate::api::http::decode_request(&Bytes::copy_from_slice(data), None, &shared_memory);
});
