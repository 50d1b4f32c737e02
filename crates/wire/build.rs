//! Compiles the protobuf schema with `protox` (pure Rust), so the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/chapar.proto", "proto/content.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        // Messages that carry secret keys get a redacting Debug (src/secret_debug.rs), so a
        // stray `{:?}` cannot print a key.
        .skip_debug([
            "chapar.content.v1.ArchiveKey",
            "chapar.content.v1.AccountSecrets",
            "chapar.content.v1.LinkApprovalBody",
            "chapar.content.v1.File",
        ])
        .compile_fds(descriptors)?;
    Ok(())
}
