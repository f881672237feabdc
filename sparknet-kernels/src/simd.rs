//! Runtime instruction-set dispatch for the plain loops of the kernels.
//!
//! The crate is built for the baseline x86-64 target (SSE2), so an ordinary loop vectorises
//! four floats at a time. [`multiversion!`] defines a function that runs an `#[inline(always)]`
//! body compiled for AVX-512 or AVX2+FMA when the CPU has them (detected at run time; the
//! standard library caches the answer), so the same loops vectorise sixteen or eight floats at
//! a time; other CPUs and architectures run the baseline code. Results are identical either
//! way: the loops do the same IEEE operations element by element; only the vector width
//! changes, and the compiler never reassociates floating-point arithmetic.

/// `multiversion!(vis fn name(arg: Type, ...) -> Ret => body_fn);` defines `name`, which calls
/// `body_fn` (same arguments; it must be `#[inline(always)]`, so that it is compiled into each
/// copy) from a copy built for AVX-512, one built for AVX2+FMA, or the baseline, whichever is
/// the best the CPU supports.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? => $body:path;) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn v4($($a: $t),*) $(-> $r)? {
                    $body($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($a: $t),*) $(-> $r)? {
                    $body($($a),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: the CPU supports every feature `v4` is compiled for (checked just
                    // above), which is the only requirement of calling it.
                    return unsafe { v4($($a),*) };
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: as above, for `v3`'s features.
                    return unsafe { v3($($a),*) };
                }
            }
            $body($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// True when the CPU has the AVX-512 subset `multiversion!`'s widest copy is built for.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && has_avx2()
}

/// True when the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}
