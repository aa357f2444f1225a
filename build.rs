//! Generates the gRPC services (the server side, and a client over any transport for load-tests and tools) and their
//! messages from proto/inference.proto and proto/health.proto (the standard health service), with the protoc that
//! the protoc-bin-vendored crate carries, so no system protoc is needed. `bytes` fields become `bytes::Bytes`, so raw tensor contents are never copied out of the request
//! buffer.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    tonic_prost_build::configure().build_client(true).build_transport(false).build_server(true).compile_with_config(
        config,
        &["proto/inference.proto", "proto/health.proto"],
        &["proto"],
    )?;
    Ok(())
}
