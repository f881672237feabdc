//! Deterministic mutations of a seed input, for the smoke tests that run the fuzz bodies in a
//! plain `cargo test`: truncations, single-bit and whole-byte flips, and seeded random edits
//! (overwrite, insert, delete, duplicate a run), the kinds of change libFuzzer makes first.

/// A small, fixed-seed generator (SplitMix64), so the mutated set is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Up to `budget` mutations of `seed` (fewer for a tiny seed): every `step`-th truncation, flips
/// of bit 0, bit 7 and the whole byte at every `step`-th position, then random edits to fill the
/// budget, where `step` keeps the systematic kinds within half of the budget.
pub fn mutations(seed: &[u8], budget: usize, rng_seed: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(budget);
    let step = (seed.len() * 8 / budget.max(1)).max(1);
    for cut in (0..seed.len()).step_by(step) {
        out.push(seed[..cut].to_vec());
    }
    for i in (0..seed.len()).step_by(step) {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = seed.to_vec();
            b[i] ^= mask;
            out.push(b);
        }
    }
    let mut rng = Rng(rng_seed);
    const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, b'{', b'"', b'\n'];
    while out.len() < budget {
        let mut b = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            let len = b.len();
            match rng.below(5) {
                0 if len > 0 => {
                    let at = rng.below(len);
                    b[at] = if rng.below(2) == 0 {
                        INTERESTING[rng.below(INTERESTING.len())]
                    } else {
                        rng.next() as u8
                    };
                }
                1 => {
                    let at = rng.below(len + 1);
                    b.insert(at, rng.next() as u8);
                }
                2 if len > 0 => {
                    let at = rng.below(len);
                    let n = 1 + rng.below((len - at).min(16));
                    b.drain(at..at + n);
                }
                3 if len > 0 => {
                    let at = rng.below(len);
                    let n = 1 + rng.below((len - at).min(16));
                    let run = b[at..at + n].to_vec();
                    let to = rng.below(len + 1);
                    b.splice(to..to, run);
                }
                _ if len >= 4 => {
                    // A 32-bit little- or big-endian field set to an extreme value.
                    let at = rng.below(len - 3);
                    let v: u32 = [0, 1, u32::MAX, 0x8000_0000, 0x7fff_ffff][rng.below(5)];
                    let bytes = if rng.below(2) == 0 { v.to_le_bytes() } else { v.to_be_bytes() };
                    b[at..at + 4].copy_from_slice(&bytes);
                }
                _ => {}
            }
        }
        out.push(b);
    }
    out
}
