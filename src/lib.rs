//! infergate: a model serving gateway for ONNX models, speaking the KServe v2 / Open Inference Protocol.
//!
//! The request path: `api` decodes into our own types, `lifecycle` resolves the model version, `scheduler` queues
//! the request for the version's instance thread and `backend` computes. See DESIGN.md for the map.

#[cfg(target_endian = "big")]
compile_error!("infergate hands tensors to backends as little-endian bytes and needs a little-endian target");

pub mod api;
pub mod backend;
pub mod config;
pub mod durable;
pub mod lifecycle;
pub mod reference;
pub mod repository;
pub mod scheduler;
pub mod server;
pub mod telemetry;
pub mod tensor;
pub mod traffic;

pub use config::Config;
pub use server::Server;
