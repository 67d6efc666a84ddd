//! Error feedback across a row's blocks (GPTQ, Frantar et al. 2022, with ggml's blocks as its
//! units): the blocks of a row are quantized left to right, and after each the columns not yet
//! quantized are moved to cancel, as well as the input covariance allows, the change the
//! block's rounding made to the row's output. Every block is still quantized by the type's own
//! quantizer with its importance weights, so the bytes are an ordinary ggml row; only the
//! values it is given differ.
//!
//! With `H` the input's second moment (`E[x xᵀ]`, damped) and the rounded block `B` fixed,
//! the change `δ_R` of the remaining columns `R` that minimizes the output error
//! `(δ_B, δ_R) H (δ_B, δ_R)ᵀ` is `δ_R = -δ_B H_BR H_RR⁻¹`. Over the blocks in order this is
//! `δ_R = δ_B U_BB⁻¹ U_BR`, where `U` is the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`):
//! the rows of `U` from `B` on factor the inverse of `H` restricted to the columns not yet
//! quantized. One factorization per matrix serves every row.

use dynquant_gguf::types::GgmlType;
use dynquant_quants::{dequantize, quantize_rows, QuantError};

/// Damping: a fraction of the mean diagonal added to the diagonal, so that columns the
/// calibration never moved (and a rank-deficient `H` from few tokens) stay stable. GPTQ uses
/// 1%; on `smollm2-moe-routed` with 16 calibration chunks 5% measured best of 1%, 5% and 15%
/// (docs/benchmarks.md, "Error feedback from the input covariance").
pub const DEFAULT_DAMPING: f64 = 0.05;

/// The per-block feedback matrices of one weight matrix.
#[derive(Debug, Clone)]
pub struct Feedback {
    n: usize,
    block: usize,
    /// Block `b`: `block x (n - (b + 1)·block)` values, row-major (`U_BB⁻¹ U_BR`).
    maps: Vec<Vec<f32>>,
}

impl Feedback {
    /// The feedback of a matrix with `n` input columns, quantized in blocks of `block`
    /// columns, from its input's mean second moment `h` (`n x n`, row-major). `None` when `h`
    /// cannot be factored even with extra damping.
    pub fn new(h: &[f64], n: usize, block: usize, damping: f64) -> Option<Feedback> {
        if n == 0 || block == 0 || !n.is_multiple_of(block) || h.len() != n * n {
            return None;
        }
        let mut hd = h.to_vec();
        // A column no token moved: unit diagonal, as GPTQ does.
        for i in 0..n {
            if hd[i * n + i] <= 0.0 {
                hd[i * n + i] = 1.0;
            }
        }
        let mean_diag = (0..n).map(|i| hd[i * n + i]).sum::<f64>() / n as f64;
        let mut lambda = damping * mean_diag;
        // H = R Rᵀ with R upper: the lower Cholesky factor of H with its order reversed.
        // Then H⁻¹ = R⁻ᵀ R⁻¹, so U = R⁻¹ and U⁻¹ = R.
        let r = loop {
            let mut rev = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    rev[i * n + j] = hd[(n - 1 - i) * n + (n - 1 - j)];
                }
                rev[i * n + i] += lambda;
            }
            if let Some(l) = cholesky_lower(&mut rev, n) {
                let mut r = vec![0f64; n * n];
                for i in 0..n {
                    for j in 0..n {
                        r[i * n + j] = l[(n - 1 - i) * n + (n - 1 - j)];
                    }
                }
                break r;
            }
            lambda = if lambda > 0.0 { lambda * 10.0 } else { 1e-6 };
            if lambda > 1e6 * mean_diag.max(1e-30) {
                return None;
            }
        };
        let u = upper_inverse(&r, n);
        let nb = n / block;
        let maps = (0..nb)
            .map(|b| {
                let s = b * block;
                let e = s + block;
                let rest = n - e;
                let mut m = vec![0f32; block * rest];
                // (U_BB)⁻¹ = R_BB (the diagonal block of an upper triangular inverse).
                for i in 0..block {
                    for k in i..block {
                        let rik = r[(s + i) * n + s + k];
                        if rik == 0.0 {
                            continue;
                        }
                        let urow = &u[(s + k) * n + e..(s + k) * n + n];
                        for (dst, &v) in m[i * rest..(i + 1) * rest].iter_mut().zip(urow) {
                            *dst += (rik * v) as f32;
                        }
                    }
                }
                m
            })
            .collect();
        Some(Feedback { n, block, maps })
    }

    /// Quantizes one row of `n` values to `ty` into `dst` (one row of `ty`), block by block
    /// with feedback. `weights` are the row's importance weights, given to each block's
    /// quantizer as they are. (Weighting each block by the diagonal of its own conditional
    /// error metric instead, `R_BB R_BBᵀ`, was measured worse: docs/benchmarks.md.)
    pub fn quantize_row(
        &self,
        ty: GgmlType,
        row: &[f32],
        weights: Option<&[f32]>,
        dst: &mut [u8],
    ) -> Result<(), QuantError> {
        let n = self.n;
        let bs = self.block;
        let block_bytes = ty.row_bytes(bs as u64).unwrap_or(0) as usize;
        let mut w = row.to_vec();
        let mut q = vec![0f32; bs];
        for (b, out) in dst.chunks_exact_mut(block_bytes).enumerate().take(n / bs) {
            let s = b * bs;
            let e = s + bs;
            quantize_rows(ty, &w[s..e], bs, weights.map(|x| &x[s..e]), out)?;
            let rest = n - e;
            if rest == 0 {
                break;
            }
            dequantize(ty, out, &mut q)?;
            let m = &self.maps[b];
            let (done, tail) = w.split_at_mut(e);
            for (i, (&qi, &wi)) in q.iter().zip(&done[s..e]).enumerate() {
                let d = qi - wi;
                if d != 0.0 {
                    for (t, &mv) in tail.iter_mut().zip(&m[i * rest..(i + 1) * rest]) {
                        *t += d * mv;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Lower Cholesky factor of the symmetric `a` (`n x n`, row-major), or `None` when `a` is not
/// positive definite.
fn cholesky_lower(a: &mut [f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let (li, lj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let s = a[i * n + j] - li.iter().zip(lj).map(|(x, y)| x * y).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of the upper triangular `r` (`n x n`, row-major, nonzero diagonal).
fn upper_inverse(r: &[f64], n: usize) -> Vec<f64> {
    // Solve R X = I one column of X at a time, bottom up; X is upper triangular. Columns are
    // kept as rows of `xt` so each sum runs over contiguous memory.
    let mut xt = vec![0f64; n * n];
    for c in 0..n {
        let col = &mut xt[c * n..(c + 1) * n];
        col[c] = 1.0 / r[c * n + c];
        for i in (0..c).rev() {
            let s: f64 = r[i * n + i + 1..i * n + c + 1]
                .iter()
                .zip(&col[i + 1..c + 1])
                .map(|(a, b)| a * b)
                .sum();
            col[i] = -s / r[i * n + i];
        }
    }
    let mut x = vec![0f64; n * n];
    for c in 0..n {
        for i in 0..=c {
            x[i * n + c] = xt[c * n + i];
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    /// A correlated second moment from `t` random tokens.
    fn second_moment(n: usize, t: usize, seed: &mut u64) -> (Vec<f64>, Vec<Vec<f32>>) {
        let xs: Vec<Vec<f32>> = (0..t)
            .map(|_| {
                let common = lcg(seed);
                (0..n)
                    .map(|i| (lcg(seed) + 0.8 * common * (1.0 + (i % 3) as f64)) as f32)
                    .collect()
            })
            .collect();
        let mut h = vec![0f64; n * n];
        for x in &xs {
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += f64::from(x[i]) * f64::from(x[j]) / t as f64;
                }
            }
        }
        (h, xs)
    }

    #[test]
    fn factors_invert() {
        let mut seed = 7;
        let n = 24;
        let (h, _) = second_moment(n, 64, &mut seed);
        let mut a = h.clone();
        let l = cholesky_lower(&mut a, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let v: f64 = (0..n).map(|k| l[i * n + k] * l[j * n + k]).sum();
                assert!((v - h[i * n + j]).abs() < 1e-9);
            }
        }
        let mut r = vec![0f64; n * n];
        for i in 0..n {
            for j in i..n {
                r[i * n + j] = l[j * n + i];
            }
        }
        let x = upper_inverse(&r, n);
        for i in 0..n {
            for j in 0..n {
                let v: f64 = (0..n).map(|k| r[i * n + k] * x[k * n + j]).sum();
                assert!(
                    (v - f64::from(u8::from(i == j))).abs() < 1e-9,
                    "{i} {j} {v}"
                );
            }
        }
    }

    /// On correlated inputs the feedback row gives a smaller output error than quantizing
    /// each block alone, and its first block is the plain quantizer's.
    #[test]
    fn feedback_lowers_output_error() {
        let mut seed = 11;
        let n = 256 * 4;
        let (h, xs) = second_moment(n, 2048, &mut seed);
        // 1% (GPTQ's damping): these inputs are well determined (2,048 tokens for 1,024
        // columns), and the test is about the feedback, not the default's regularization.
        let fb = Feedback::new(&h, n, 256, 0.01).unwrap();
        let ty = GgmlType::Q2_K;
        let rb = ty.row_bytes(n as u64).unwrap() as usize;
        let mut worse = 0;
        for _ in 0..8 {
            let row: Vec<f32> = (0..n).map(|_| lcg(&mut seed) as f32).collect();
            let weights: Vec<f32> = (0..n).map(|i| h[i * n + i] as f32).collect();
            let (mut plain, mut fed) = (vec![0u8; rb], vec![0u8; rb]);
            quantize_rows(ty, &row, n, Some(&weights), &mut plain).unwrap();
            fb.quantize_row(ty, &row, Some(&weights), &mut fed).unwrap();
            let bb = rb / 4;
            assert_eq!(plain[..bb], fed[..bb]);
            let err = |bytes: &[u8]| {
                let mut q = vec![0f32; n];
                dequantize(ty, bytes, &mut q).unwrap();
                xs.iter()
                    .map(|x| {
                        let d: f64 = x
                            .iter()
                            .zip(q.iter().zip(&row))
                            .map(|(&xi, (&qi, &wi))| f64::from(xi) * f64::from(qi - wi))
                            .sum();
                        d * d
                    })
                    .sum::<f64>()
            };
            if err(&fed) >= err(&plain) {
                worse += 1;
            }
        }
        assert_eq!(worse, 0);
    }
}
