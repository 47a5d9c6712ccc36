//! Compiles `proto/*.proto` with protox (pure Rust): no system `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!: a build script binary can be reused by a
    // checkout at another path that shares the target directory.
    let dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&dir).join("../../proto");
    let file = root.join("cairn.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_build::configure()
        // Chunk payloads are `bytes::Bytes`: decoding slices the received buffer instead of
        // copying it, and a node hands the same bytes to every replica's request.
        .bytes([".cairn.v1.Chunk.data"])
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
