//! Quantizer for the microscaling type MXFP4.
//!
//! It minimises the importance-weighted squared error `Σ w_j (x_j − x̂_j)²` (`w` = imatrix
//! column, or ones) of exactly the reconstruction ggml's dequantizer produces. ggml's own
//! quantizer for this type ignores the imatrix.
//!
//! **MXFP4** (32 elements, `x̂ = kvalues_mxfp4[q]·2^(e−128)`, E8M0 `e`). For a fixed
//! exponent, the nearest level per element is optimal whatever the weights, so the search is
//! over `e` only: ggml's choice `e₀ = ⌊log2 amax⌋ − 2 + 127` (exact, from the bits) and its
//! neighbours `e₀ ± 1` (which also covers ggml's `log2f` rounding up at powers of two),
//! keeping the lowest weighted error. With `u = |x|/2^(e₀−128)` (exact), all level
//! midpoints are multiples of 1/2, so the nearest level for `e₀ − 1`, `e₀`, `e₀ + 1` is a
//! table lookup on `⌊4u⌋`, `⌊2u⌋`, `⌊u⌋`; `e₀` and `e₀ − 1` share one pass. `e₀ + 1`'s
//! levels up to 12·d₀ are a subset of `e₀`'s, so it is only evaluated when some
//! `|x| > 14·d₀`. Exponents stay in 0..=252, where every level is finite; `e = 255` (E8M0
//! NaN, rejected by ggml) is never produced.
//!
//! Deterministic, single-threaded.

/// `block_mxfp4`: `e: u8`, `qs[16]`.
const MX_BYTES: usize = 17;
const MX_QK: usize = 32;

/// Level magnitudes of `kvalues_mxfp4[0..8]` (doubled E2M1).
const MX_MAG: [f32; 8] = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0];

/// `MX_IDX[k]`: the magnitude index nearest to `u ∈ [k/2, (k+1)/2)` (`u = |x|/d`). The
/// midpoints between magnitudes (0.5, 1.5, 2.5, 3.5, 5, 7, 10) are multiples of 1/2, so
/// `⌊2u⌋` decides; entries from 20 on are the top level.
const MX_IDX: [u8; 32] = {
    let mut t = [7u8; 32];
    let mids2 = [1, 3, 5, 7, 10, 14, 20];
    let mut k = 0;
    while k < 32 {
        let mut n = 0;
        let mut i = 0;
        while i < 7 {
            if mids2[i] <= k {
                n += 1;
            }
            i += 1;
        }
        t[k] = n;
        k += 1;
    }
    t
};

/// Index of the magnitude nearest to `v/2` for `v = 2u ≥ 0`: `⌊v⌋` from the float bits of
/// `(v − 1/2) + 1.5·2^23` (the subtraction is exact; an integer `v` may round down, but
/// then `v/2` is a midpoint, where both neighbours are equally near).
#[inline(always)]
fn mx_index(v: f32) -> usize {
    let k = ((v.min(20.0) - 0.5) + 12_582_912.0).to_bits() & 31;
    usize::from(MX_IDX[k as usize])
}

/// `2^(e − 128)`: ggml's `GGML_E8M0_TO_FP32_HALF(e)`.
#[cfg(test)]
fn e8m0_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000u32 << e)
    } else {
        f32::from_bits(u32::from(e - 1) << 23)
    }
}

/// `2^k` for `−126 ≤ k ≤ 127`.
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// Largest exponent tried: `12·2^(252−128)` is the largest level that stays finite.
const MX_E_MAX: i32 = 252;

/// Best E8M0 exponent and nibbles of one 32-block.
fn mxfp4_block(x: &[f32; MX_QK], w: &[f32; MX_QK]) -> (u8, [u8; MX_QK]) {
    let amax = x
        .iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    if amax == 0.0 {
        return (0, [0; MX_QK]);
    }
    // ⌊log2 amax⌋ from the bits (subnormals: from the leading mantissa bit).
    let bits = amax.to_bits();
    let exp = (bits >> 23) as i32;
    let log2 = if exp == 0 {
        -127 - (bits << 9).leading_zeros() as i32
    } else {
        exp - 127
    };
    let e0 = (log2 - 2 + 127).clamp(0, MX_E_MAX);
    // u = |x| / 2^(e0 − 128), exactly (two steps where 2^(128 − e0) is not a normal f32).
    let k = 128 - e0;
    let (s1, s2) = if k <= 127 {
        (pow2(k), 1.0)
    } else {
        (pow2(64), pow2(k - 64))
    };
    // Errors in units of d0² (d0 = 2^(e0 − 128)): candidate e0 (levels MX_MAG) and e0 − 1
    // (levels MX_MAG/2), in one pass.
    // Four partial sums each: independent dependency chains.
    let (mut err0, mut errm) = ([0f32; 4], [0f32; 4]);
    let (mut q0, mut qm) = ([0u8; MX_QK], [0u8; MX_QK]);
    for j0 in (0..MX_QK).step_by(4) {
        for l in 0..4 {
            let j = j0 + l;
            let u = (x[j].abs() * s1) * s2;
            let neg = u8::from(x[j] < 0.0) << 3;
            let i0 = mx_index(2.0 * u);
            let im = mx_index(4.0 * u);
            let r0 = u - MX_MAG[i0];
            let rm = u - 0.5 * MX_MAG[im];
            err0[l] += w[j] * r0 * r0;
            errm[l] += w[j] * rm * rm;
            // Negative levels are nibbles 9..15 (8 is a second zero, never produced).
            q0[j] = i0 as u8 | (neg * u8::from(i0 > 0));
            qm[j] = im as u8 | (neg * u8::from(im > 0));
        }
    }
    let err0 = (err0[0] + err0[1]) + (err0[2] + err0[3]);
    let errm = (errm[0] + errm[1]) + (errm[2] + errm[3]);
    let (mut best_e, mut best_q, mut best) = (e0, q0, err0);
    if e0 > 0 && errm < best {
        (best_e, best_q, best) = (e0 - 1, qm, errm);
    }
    // e0 + 1 has levels {0, 2, 4, 6, 8, 12, 16, 24}·d0, whose part up to 12 is a subset of
    // e0's: it can only win when some |x| is nearer to 16·d0 than to 12·d0.
    if (amax * s1) * s2 > 14.0 && e0 < MX_E_MAX {
        let (mut errp, mut qp) = (0f32, [0u8; MX_QK]);
        for j in 0..MX_QK {
            let u = (x[j].abs() * s1) * s2;
            let ip = mx_index(u);
            let rp = u - 2.0 * MX_MAG[ip];
            errp += w[j] * rp * rp;
            qp[j] = ip as u8 | ((u8::from(x[j] < 0.0) << 3) * u8::from(ip > 0));
        }
        if errp < best {
            (best_e, best_q) = (e0 + 1, qp);
        }
    }
    (best_e as u8, best_q)
}

/// MXFP4: one row.
pub(super) fn quantize_mxfp4(x: &[f32], w: &[f32], dst: &mut [u8]) {
    let ones = [1f32; MX_QK];
    for ((xb, wb), out) in x
        .chunks_exact(MX_QK)
        .zip(w.chunks_exact(MX_QK))
        .zip(dst.chunks_exact_mut(MX_BYTES))
    {
        let xb: &[f32; MX_QK] = xb.try_into().expect("block");
        let wb: &[f32; MX_QK] = if wb.iter().all(|&v| v == 0.0) {
            &ones
        } else {
            wb.try_into().expect("block")
        };
        let (e, q) = mxfp4_block(xb, wb);
        out[0] = e;
        for j in 0..16 {
            out[1 + j] = q[j] | (q[j + 16] << 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rows::signal;

    #[test]
    fn e8m0_half_is_ggmls() {
        assert_eq!(e8m0_half(127), 0.5);
        assert_eq!(e8m0_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_half(254), 2f32.powi(126));
    }

    #[test]
    fn extreme_blocks_do_not_panic() {
        for scale in [1e-44f32, 1e-40, 1e-30, 0.0, 1e4, 1e37] {
            let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) * scale).collect();
            for w in [vec![1f32; 256], vec![0f32; 256]] {
                let mut out = vec![0u8; 8 * MX_BYTES];
                quantize_mxfp4(&x, &w, &mut out);
                assert!(out.chunks_exact(MX_BYTES).all(|b| b[0] != 0xff));
                let mut y = vec![0f32; 256];
                super::super::dequant::dequantize_mxfp4(&out, &mut y);
                assert!(y.iter().all(|v| v.is_finite()), "{scale}");
            }
        }
    }

    #[test]
    fn mxfp4_roundtrip() {
        let x = signal(64);
        let w = vec![1f32; 64];
        let mut out = vec![0u8; 2 * MX_BYTES];
        quantize_mxfp4(&x, &w, &mut out);
        let mut y = vec![0f32; 64];
        super::super::dequant::dequantize_mxfp4(&out, &mut y);
        let e: f32 = x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum();
        let n: f32 = x.iter().map(|a| a * a).sum();
        assert!(e / n < 0.02, "{}", e / n);
    }
}
