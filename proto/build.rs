fn main() -> Result<(), Box<dyn std::error::Error>> {
    // No system protoc: the vendored binary keeps fresh machines and CI free of it.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=lehr/v1/coordinator.proto");
    tonic_prost_build::configure()
        // status views and `--json` print these messages as JSON
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // enums print as their names in JSON (proto/src/wire.rs)
        .field_attribute("lehr.v1.JobStatus.state", "#[serde(serialize_with = \"crate::wire::job_state\")]")
        .field_attribute("lehr.v1.StageStatus.state", "#[serde(serialize_with = \"crate::wire::stage_state\")]")
        .field_attribute("lehr.v1.TaskStatus.state", "#[serde(serialize_with = \"crate::wire::task_state\")]")
        .field_attribute("lehr.v1.AttemptInfo.outcome", "#[serde(serialize_with = \"crate::wire::attempt_outcome\")]")
        .field_attribute(
            "lehr.v1.ReportTaskResponse.disposition",
            "#[serde(serialize_with = \"crate::wire::disposition\")]",
        )
        .compile_protos(&["lehr/v1/coordinator.proto"], &["."])?;
    Ok(())
}
