//! ONNX Runtime, through the `ort` crate with its library loaded at run time.
//!
//! The library is looked for once, at start, in this order: `--ort-library`, `ORT_DYLIB_PATH`, next to the
//! binary, the `onnxruntime` Python package (its `capi/libonnxruntime.so.*`; the wheel has no unversioned name),
//! then the system library path. `ort`'s own loader panics when the library is missing, so it is never used:
//! [`::ort::init_from`] is called on each candidate and its full error (`{:?}`: the Display text only says
//! "dlopen failed") is kept.
//!
//! Each instance thread owns its session (`Session::run` takes `&mut self`), with one intra-op thread by default:
//! a server scales by instances and batching, and intra-op threads of several instances would fight over the same
//! cores, which costs latency at every percentile instead of saving it.

mod convert;
mod discovery;
mod session;

pub use discovery::{DiscoverError, OrtRuntime};
pub use session::{OrtBackend, SessionOptions};
