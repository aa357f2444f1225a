//! A REST inference request with the binary tensor data extension: the first two bytes (little-endian, modulo the
//! body's length + 1) are the Inference-Header-Content-Length, the rest is the body: a JSON header followed by raw
//! tensors.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((length, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let header_length = usize::from(u16::from_le_bytes(*length)) % (body.len() + 1);
    // Shared memory on, with no region registered: a request naming one must fail cleanly too.
    let shared_memory = infergate::api::SharedMemory::new(true, 1 << 20);
    let _ = infergate::api::http::decode_request(&Bytes::copy_from_slice(body), Some(header_length), &shared_memory);
});
