//! infergate: a model serving gateway for ONNX models, speaking the KServe v2 / Open Inference Protocol.
//!
//! The request path: a transport (`api::http`, `api::grpc`) decodes into our own types and calls
//! `api::pipeline`, which checks the limits, asks `routing` which version of the `lifecycle` table answers, queues
//! the request in the version's `scheduler` and lets its `backend` compute; `docs/architecture.md` is the map.

#[cfg(target_endian = "big")]
compile_error!("infergate hands tensors to backends as little-endian bytes and needs a little-endian target");

pub mod api;
pub mod backend;
pub mod config;
pub mod durable;
pub mod lifecycle;
pub mod reference;
pub mod repository;
pub mod routing;
pub mod scheduler;
pub mod server;
pub mod telemetry;
pub mod tensor;

pub use config::Config;
pub use server::Server;
