//! The SIMD kernels a run exercises depend on the CPU (gemm, matrixmultiply
//! and macerator pick theirs at run time), so a run that is meant to cover one
//! kind of CPU says so in `HOOKS_EXPECT_CPU` and this test holds it to that:
//! `.ci/avx2-tests` sets `avx2` and runs the suite under QEMU's `-cpu max`
//! (AVX2 and FMA, no AVX-512).

#[cfg(target_arch = "x86_64")]
#[test]
fn the_cpu_is_the_kind_the_run_asks_for() {
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    let kind = if avx512 {
        "avx512"
    } else if avx2 {
        "avx2"
    } else {
        "older than avx2"
    };
    eprintln!("CPU kind of this run: {kind}");
    if let Ok(expected) = std::env::var("HOOKS_EXPECT_CPU") {
        assert_eq!(
            kind, expected,
            "HOOKS_EXPECT_CPU asks for {expected} kernels, but the CPU reports {kind}"
        );
    }
}
