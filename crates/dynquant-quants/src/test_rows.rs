//! Test inputs shared by the families' unit tests.

/// A smooth, heavy-tailed test signal of `n` values.
pub(crate) fn signal(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.731).sin() * 1.3).powi(3))
        .collect()
}

/// Rows of 256 of varied shape: smooth, uniform, heavy-tailed, outliers, zero, tiny,
/// subnormal, huge, constant; and importance vectors: random, with zeros, all zero.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn varied_rows() -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut x = Vec::new();
    for kind in 0..12 {
        for j in 0..256 {
            let r = next();
            x.push(match kind {
                0 => ((j as f32 * 0.731).sin() * 1.3).powi(3),
                1 | 2 => r,
                3 | 4 => r.powi(5) * 3.0,
                5 => (r * 8.0).round() * 0.125 + if j == 9 { 4.0 } else { 0.0 },
                6 => 0.0,
                7 => r * 1e-30,
                8 => r * 1e-40,
                9 => r * 6e4,
                10 => 0.25,
                _ => r * r * r * 0.02,
            });
        }
    }
    let w_rand: Vec<f32> = (0..256).map(|_| next().abs() * 3.0).collect();
    let w_zeros: Vec<f32> = (0..256)
        .map(|j| if j % 3 == 0 { 0.0 } else { 0.5 + next().abs() })
        .collect();
    (x, vec![w_rand, w_zeros, vec![0.0; 256], vec![1.0; 256]])
}

/// FNV-1a (64-bit) of `bytes`: a stored reference for the portable quantizer paths, so the
/// tests that compare the AVX2 builds with the portable ones still check the portable bytes
/// on a CPU without AVX2.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether the CPU has AVX2; says on stderr, once per caller, what is skipped without it.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2(what: &str) -> bool {
    let yes = std::arch::is_x86_feature_detected!("avx2");
    if !yes {
        eprintln!("skipped: {what}: no AVX2 on this CPU (the portable path is still checked against its stored fingerprint)");
    }
    yes
}
