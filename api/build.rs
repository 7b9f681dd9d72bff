//! Compiles `proto/` into Rust with protox (a pure-Rust protobuf compiler), so
//! a fresh machine builds with plain `cargo build` and no `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        "berth/v1/types.proto",
        "berth/v1/version.proto",
        "berth/v1/images.proto",
        "berth/v1/content.proto",
        "berth/v1/snapshots.proto",
        "berth/v1/containers.proto",
        "berth/v1/tasks.proto",
        "berth/v1/events.proto",
        "berth/v1/registry.proto",
        "berth/v1/build.proto",
        "berth/v1/networks.proto",
        "berth/v1/volumes.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("berth_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;
    // Maps as BTreeMap: no hashing per entry, and a stable order in every reply.
    tonic_prost_build::configure()
        .btree_map(".")
        // Written by hand (src/listing.rs): an agent sends containers it encoded before.
        .extern_path(".berth.v1.ListContainersResponse", "crate::listing::ListContainersResponse")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    // The Kubernetes CRI (upstream's file, unchanged): served on the agent's CRI socket.
    let cri = "cri/runtime/v1/api.proto";
    println!("cargo:rerun-if-changed={}", root.join(cri).display());
    let fds = protox::compile([cri], [&root])?;
    tonic_prost_build::configure().btree_map(".").build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
