//! The fuzz targets' bodies (`fuzz/src/net.rs`, the same file cargo-fuzz builds) run on a fixed
//! set of mutations of valid seeds, so a plain `cargo test` checks what the fuzzer checks: no
//! panic in the prototxt, caffemodel, solverstate and binaryproto readers, and errors that name
//! their file. With `SPARKNET_FUZZ_SEEDS=DIR` the seeds are also written to `DIR/<target>/`,
//! the starting corpus for `cargo fuzz run` (see fuzz/README.md).

#[path = "../../../fuzz/src/net.rs"]
mod bodies;
#[path = "../../../fuzz/src/mutate.rs"]
mod mutate;

/// Mutations per seed.
const BUDGET: usize = 1500;

#[test]
fn net_fuzz_bodies_survive_mutated_seeds() {
    let mut seeds = bodies::seeds();
    // Real nets and solvers as prototxt seeds, when the shared assets are here.
    if let Some(assets) = sparknet_testkit::assets_dir("net_fuzz_smoke") {
        for f in [
            "models/lenet_mnist/lenet_train_test.prototxt",
            "models/lenet_mnist/lenet_solver.prototxt",
            "prototxt/bvlc_caffe/examples/mnist/mnist_autoencoder.prototxt",
        ] {
            seeds.push(("prototxt", std::fs::read(assets.join(f)).unwrap()));
        }
    }
    if let Some(dir) = std::env::var_os("SPARKNET_FUZZ_SEEDS") {
        for (k, (target, bytes)) in seeds.iter().enumerate() {
            let target = if *target == "solverstate" { "caffemodel" } else { target };
            let sub = std::path::Path::new(&dir).join(target);
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("seed-{k}")), bytes).unwrap();
        }
    }
    let mut runs = 0;
    for (k, (target, seed)) in seeds.iter().enumerate() {
        let body: fn(&[u8]) =
            if *target == "prototxt" { bodies::prototxt } else { bodies::caffemodel };
        body(seed);
        for input in mutate::mutations(seed, BUDGET, k as u64) {
            body(&input);
            runs += 1;
        }
    }
    assert!(runs >= 3 * BUDGET, "{runs} runs");
}
