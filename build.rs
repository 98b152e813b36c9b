//! Generates the device-plugin API v1beta1 messages and grpcio services from `proto/api.proto`
//! without a `protoc` binary.
//!
//! protobuf-codegen 3 parses the file with its pure-Rust parser and writes the messages.
//! grpcio-compiler 0.13 writes the service code, but it takes protobuf 2.x descriptor types,
//! so the parsed descriptor is re-encoded into those types first. Both outputs carry inner
//! attributes, so `src/api.rs` includes the generated `mod.rs` rather than the files.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use protobuf::Message;

const PROTO_DIR: &str = "proto";
const PROTO_FILE: &str = "proto/api.proto";

fn main() {
    if let Err(error) = generate() {
        eprintln!("failed to generate the device-plugin API from {PROTO_FILE}: {error}");
        std::process::exit(1);
    }
}

fn generate() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_FILE}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?).join("api");
    fs::create_dir_all(&out_dir)?;

    protobuf_codegen::Codegen::new()
        .pure()
        .include(PROTO_DIR)
        .input(PROTO_FILE)
        .out_dir(&out_dir)
        .customize(protobuf_codegen::Customize::default().gen_mod_rs(false))
        .run()?;

    generate_services(&out_dir)?;

    fs::write(out_dir.join("mod.rs"), "pub mod api;\npub mod api_grpc;\n")?;
    Ok(())
}

/// Writes `api_grpc.rs`, the grpcio client and service code for every service in the file.
fn generate_services(out_dir: &Path) -> Result<(), Box<dyn Error>> {
    let parsed = protobuf_parse::Parser::new()
        .pure()
        .include(PROTO_DIR)
        .input(PROTO_FILE)
        .parse_and_typecheck()?;

    let mut descriptors = Vec::with_capacity(parsed.file_descriptors.len());
    for descriptor in &parsed.file_descriptors {
        let bytes = descriptor.write_to_bytes()?;
        descriptors.push(
            <protobuf2::descriptor::FileDescriptorProto as protobuf2::Message>::parse_from_bytes(
                &bytes,
            )?,
        );
    }
    let targets: Vec<String> = parsed
        .relative_paths
        .iter()
        .map(|path| path.to_str().to_owned())
        .collect();

    for file in grpcio_compiler::codegen::gen(&descriptors, &targets) {
        fs::write(out_dir.join(&file.name), &file.content)?;
    }
    Ok(())
}
