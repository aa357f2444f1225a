//! The load generator's parts: what to send ([`workload`]), where ([`endpoint`]: TCP or a Unix domain socket), how
//! to send it ([`caller`]: REST with JSON or binary tensors over a lean HTTP/1.1 client ([`http1`]), gRPC unary over
//! a lean HTTP/2 client ([`grpc_unary`]), gRPC streaming), when to send it ([`drive`]: closed loop, or open loop at
//! a constant or ramping arrival rate with latencies measured from the intended send time), scenario files with
//! assertions ([`scenario`]), two servers compared side by side ([`paired`]), the server process's resources over
//! time ([`process`]) and the report ([`report`]).

pub mod caller;
pub mod drive;
pub mod endpoint;
pub mod grpc_unary;
pub mod http1;
pub mod paired;
pub mod process;
pub mod report;
pub mod scenario;
pub mod workload;

/// The routing-key header (REST) and metadata key (gRPC) of sticky traffic splits.
pub const ROUTING_KEY: &str = "x-routing-key";
/// The response header and metadata naming the traffic variant that answered.
pub const VARIANT: &str = "x-infergate-variant";

/// The KServe v2 gRPC messages and client, generated with the server's.
pub use infergate::api::grpc::proto;
