//! Generates the gRPC client of the KServe v2 service from the server's own proto file, with the protoc that the
//! protoc-bin-vendored crate carries.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/inference.proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    tonic_prost_build::configure().build_client(true).build_server(false).compile_with_config(
        config,
        &["../proto/inference.proto"],
        &["../proto"],
    )?;
    Ok(())
}
