//! ggml-cpu's vectorised `expf` and SiLU, reproduced lane by lane.
//!
//! ggml evaluates SiLU (and with it SwiGLU) with a polynomial `exp` ("adapted from arm limited
//! optimized routine", ggml-cpu/vec.h `ggml_v_expf`) over full SIMD vectors and with the C
//! library's `expf` for the leftover tail. The polynomial's rounding differs between the
//! AVX-512, AVX2+FMA and SSE2 builds, and llama.cpp loads the libggml-cpu variant that fits the
//! CPU, so [`Flavor::detect`] picks the same build here. Every lane is computed independently
//! with the same IEEE operations (fused where ggml fuses), so a scalar loop gives the same bits.

pub use crate::cpu::Flavor;

// Constants of the routine (vec.h).
const SHIFT: f32 = 12582912.0; // 0x1.8p23
const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
const C1: f32 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
const C2: f32 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
const C3: f32 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
const C4: f32 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
const C5: f32 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7

/// `a * b + c`, fused when `FMA` (the matrix-product kernels share it).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `c - a * b`, fused when `FMA`.
#[inline(always)]
fn nmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        (-a).mul_add(b, c)
    } else {
        c - a * b
    }
}

/// One lane of the AVX-512 `ggml_v_expf`.
#[inline(always)]
fn exp_avx512(x: f32) -> f32 {
    let z = x.mul_add(LOG2E, SHIFT);
    let n = z - SHIFT;
    let b = nmadd::<true>(n, LN2_LO, nmadd::<true>(n, LN2_HI, x));
    let u = b * b;
    let j = C5
        .mul_add(b, C4)
        .mul_add(u, C3.mul_add(b, C2))
        .mul_add(u, C1.mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // _mm512_scalef_ps(j, n) = j * 2^n, rounded once (exact unless the result is subnormal
    // or overflows): the product in f64 is exact, the conversion rounds once.
    let ni = n as i32;
    if (-126..=127).contains(&ni) {
        j * f32::from_bits(((ni + 127) as u32) << 23)
    } else {
        (j as f64 * 2f64.powi(ni)) as f32
    }
}

/// One lane of the AVX2 (`FMA`) or SSE2 `ggml_v_expf`.
#[inline(always)]
fn exp_avx2<const FMA: bool>(x: f32) -> f32 {
    let z = madd::<FMA>(x, LOG2E, SHIFT);
    let n = z - SHIFT;
    let b = nmadd::<FMA>(n, LN2_LO, nmadd::<FMA>(n, LN2_HI, x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = madd::<FMA>(
        madd::<FMA>(madd::<FMA>(C5, b, C4), u, madd::<FMA>(C3, b, C2)),
        u,
        C1 * b,
    );
    if n.abs() <= 126.0 {
        return madd::<FMA>(k, j, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        madd::<FMA>(s2, j, s2) * s1
    }
}

#[inline(always)]
fn vexp<const F: u8>(x: f32) -> f32 {
    match F {
        0 => exp_avx512(x),
        1 => exp_avx2::<true>(x),
        2 => exp_avx2::<false>(x),
        _ => x.exp(),
    }
}

#[inline(always)]
fn swiglu_with<const F: u8>(lanes: usize, gate: &mut [f32], up: &[f32]) {
    let n = gate.len();
    let full = if lanes > 1 { n / lanes * lanes } else { 0 };
    for (g, &u) in gate[..full].iter_mut().zip(up) {
        let x = *g;
        *g = x / (1.0 + vexp::<F>(0.0 - x)) * u;
    }
    // ggml_silu_f32 on the tail: the C library's expf
    for (g, &u) in gate[full..].iter_mut().zip(&up[full..]) {
        let x = *g;
        *g = x / (1.0 + (-x).exp()) * u;
    }
}

/// `gate = silu(gate) * up` as ggml_vec_swiglu_f32 computes it for `flavor`.
pub fn swiglu(flavor: Flavor, gate: &mut [f32], up: &[f32]) {
    match flavor {
        #[cfg(target_arch = "x86_64")]
        Flavor::Avx512 | Flavor::Avx2 if crate::cpu::avx2_fma_hardware() => {
            #[target_feature(enable = "fma")]
            unsafe fn fused(flavor: Flavor, gate: &mut [f32], up: &[f32]) {
                if flavor == Flavor::Avx512 {
                    swiglu_with::<0>(16, gate, up)
                } else {
                    swiglu_with::<1>(8, gate, up)
                }
            }
            // SAFETY: AVX2 and FMA were detected at runtime.
            unsafe { fused(flavor, gate, up) }
        }
        Flavor::Avx512 => swiglu_with::<0>(16, gate, up),
        Flavor::Avx2 => swiglu_with::<1>(8, gate, up),
        Flavor::Sse2 => swiglu_with::<2>(4, gate, up),
        Flavor::Scalar => swiglu_with::<3>(1, gate, up),
    }
}

/// One value of ggml's vector `exp` for `flavor` (the C library's `expf` for
/// [`Flavor::Scalar`]).
#[inline(always)]
pub fn exp(flavor: Flavor, x: f32) -> f32 {
    match flavor {
        Flavor::Avx512 => exp_avx512(x),
        Flavor::Avx2 => exp_avx2::<true>(x),
        Flavor::Sse2 => exp_avx2::<false>(x),
        Flavor::Scalar => x.exp(),
    }
}

/// ggml's AVX-512 `ggml_v_expf` on whole registers: the same operations as [`exp_avx512`]'s
/// lanes (fused multiply-adds, `scalef`, the blend past |n| > 192), so the same bits.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{C1, C2, C3, C4, C5, LN2_HI, LN2_LO, LOG2E, SHIFT};

    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let r = _mm512_set1_ps(SHIFT);
        let z = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), r);
        let n = _mm512_sub_ps(z, r);
        let b = _mm512_fnmadd_ps(
            n,
            _mm512_set1_ps(LN2_LO),
            _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x),
        );
        let d = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
        let u = _mm512_mul_ps(b, b);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(
                _mm512_fmadd_ps(_mm512_set1_ps(C5), b, _mm512_set1_ps(C4)),
                u,
                _mm512_fmadd_ps(_mm512_set1_ps(C3), b, _mm512_set1_ps(C2)),
            ),
            u,
            _mm512_fmadd_ps(_mm512_set1_ps(C1), b, _mm512_set1_ps(1.0)),
        );
        let res = _mm512_scalef_ps(j, n);
        if d == 0 {
            return res;
        }
        let zero = _mm512_setzero_ps();
        let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, zero);
        let alt = _mm512_mask_blend_ps(le, _mm512_set1_ps(f32::INFINITY), zero);
        _mm512_mask_blend_ps(d, res, alt)
    }

    /// `c[i] = exp(c[i] - max)` for the 16 values of `c`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp_minus_16(c: &mut [f32; 16], max: f32) {
        // SAFETY: `c` holds 16 floats.
        unsafe {
            let x = _mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), _mm512_set1_ps(max));
            _mm512_storeu_ps(c.as_mut_ptr(), exp16(x));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_hex_floats() {
        assert!((LOG2E as f64 - std::f64::consts::LOG2_E).abs() < 1e-7);
        assert_eq!(SHIFT, 1.5 * 8388608.0);
        assert!((LN2_HI as f64 + LN2_LO as f64 - std::f64::consts::LN_2).abs() < 1e-12);
        assert!((C1 - 1.0).abs() < 1e-5 && (C2 - 0.5).abs() < 1e-4);
    }

    /// The register form gives each lane's bits (overflow, underflow, -inf and NaN included).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_registers_match_the_lanes() {
        if !crate::cpu::simd512() {
            return;
        }
        let special = [
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -0.0,
            88.7,
            -103.9,
        ];
        let xs: Vec<f32> = (-2000..900)
            .map(|i| i as f32 * 0.1 + 0.013)
            .chain(special)
            .collect();
        for c in xs.chunks(16) {
            let mut v = [0f32; 16];
            v[..c.len()].copy_from_slice(c);
            let want: Vec<u32> = v.iter().map(|&x| exp_avx512(x - 0.5).to_bits()).collect();
            // SAFETY: AVX-512F was detected.
            unsafe { avx512::exp_minus_16(&mut v, 0.5) };
            let got: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, want, "{c:?}");
        }
    }

    #[test]
    fn every_flavor_is_close_to_exp() {
        for f in [Flavor::Avx512, Flavor::Avx2, Flavor::Sse2] {
            for i in -2000..900 {
                let x = i as f32 * 0.1;
                let (a, b) = (exp(f, x), (x as f64).exp());
                if b < 1e-37 {
                    assert!(a < 1e-36, "{f:?} {x}");
                } else if b > 3e38 {
                    assert!(a.is_infinite() || a > 1e38, "{f:?} {x}");
                } else {
                    assert!(((a as f64 - b) / b).abs() < 4e-7, "{f:?} {x}: {a} vs {b}");
                }
            }
        }
    }
}
