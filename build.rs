//! Generates the gRPC services (the server side, and a client over any transport for load-tests and tools) and their
//! messages from proto/inference.proto and proto/health.proto (the standard health service), with the protoc that
//! the protoc-bin-vendored crate carries, so no system protoc is needed. `bytes` fields become `bytes::Bytes`, so raw
//! tensor contents are never copied out of the request buffer; messages go through our codec
//! (`src/api/grpc/codec.rs`: prost's encoding, buffers sized for small messages).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    // Typed contents are boxed: most clients send raw contents, and an unboxed one makes every tensor entry of a
    // request or answer 312 bytes instead of 128.
    config.boxed(".inference.ModelInferRequest.InferInputTensor.contents");
    config.boxed(".inference.ModelInferResponse.InferOutputTensor.contents");
    tonic_prost_build::configure()
        .codec_path("crate::api::grpc::codec::Codec")
        .build_client(true)
        .build_transport(false)
        .build_server(true)
        .compile_with_config(config, &["proto/inference.proto", "proto/health.proto"], &["proto"])?;
    Ok(())
}
