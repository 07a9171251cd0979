pub mod pb {
    tonic::include_proto!("lehr.v1");
}
