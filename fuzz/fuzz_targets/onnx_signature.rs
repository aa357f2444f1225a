//! An ONNX model file: decoding, the weight budget and external-data checks, the input signature and the ZipMap
//! rewrite. The version folder does not exist, so no external data file is ever found on disk.
#![no_main]

use std::path::Path;

use infergate::backend::onnx_file::OnnxFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = OnnxFile::from_bytes(data.to_vec(), Path::new("/nonexistent-fuzz-folder"), 1 << 30);
});
