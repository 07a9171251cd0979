fn main() -> Result<(), Box<dyn std::error::Error>> {
    // No system protoc: the vendored binary keeps fresh machines and CI free of it.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=lehr/v1/coordinator.proto");
    tonic_prost_build::configure()
        // status views and `--json` print these messages as JSON
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_protos(&["lehr/v1/coordinator.proto"], &["."])?;
    Ok(())
}
