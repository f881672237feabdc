//! Build script: with the `mpi` feature, compiles the one-function C shim that exports
//! `MPI_IN_PLACE` using the MPI compiler wrapper (`$MPICC`, default `mpicc`). Without the feature it
//! does nothing, so the crate builds on machines without MPI.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "mpi")]
    mpi_shim();
}

#[cfg(feature = "mpi")]
fn mpi_shim() {
    println!("cargo:rerun-if-changed=csrc/in_place.c");
    println!("cargo:rerun-if-env-changed=MPICC");
    let mpicc = std::env::var("MPICC").unwrap_or_else(|_| "mpicc".to_owned());
    cc::Build::new()
        .compiler(&mpicc)
        .file("csrc/in_place.c")
        .warnings(true)
        .compile("sparknet_mpi_shim");
}
