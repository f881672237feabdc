//! The fuzz targets' bodies (`fuzz/src/data.rs`, the same file cargo-fuzz builds) run on a fixed
//! set of mutations of valid seeds, so a plain `cargo test` checks what the fuzzer checks: no
//! panic in the shard, manifest, IDX, CIFAR-10 and mean-file readers, and errors that name their
//! file. With `SPARKNET_FUZZ_SEEDS=DIR` the seeds are also written to `DIR/<target>/`, the
//! starting corpus for `cargo fuzz run` (see fuzz/README.md).

#[path = "../../../fuzz/src/data.rs"]
mod bodies;
#[path = "../../../fuzz/src/mutate.rs"]
mod mutate;

/// Mutations per seed.
const BUDGET: usize = 1500;

#[test]
fn data_fuzz_bodies_survive_mutated_seeds() {
    let seeds = bodies::seeds();
    if let Some(dir) = std::env::var_os("SPARKNET_FUZZ_SEEDS") {
        for (k, (target, bytes)) in seeds.iter().enumerate() {
            let sub = std::path::Path::new(&dir).join(target);
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("seed-{k}")), bytes).unwrap();
        }
    }
    let mut runs = 0;
    for (k, (target, seed)) in seeds.iter().enumerate() {
        let body: fn(&[u8]) = if *target == "shard" { bodies::shard } else { bodies::idx_cifar };
        body(seed);
        for input in mutate::mutations(seed, BUDGET, k as u64) {
            body(&input);
            runs += 1;
        }
    }
    assert!(runs >= 10 * BUDGET, "{runs} runs");
}
