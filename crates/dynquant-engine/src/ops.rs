//! Element-wise and per-row operations with ggml-cpu's numerics: RMSNorm (double sum),
//! RoPE (iterated f32 angles), SwiGLU and GeGLU (GELU through an f16 table), softmax.

use half::f16;
use rayon::prelude::*;

/// RMSNorm of each `n`-value row of `x` in place, then multiplied by `weight`:
/// `x * 1/sqrt(mean(x^2) + eps)` with the f32 squares summed in f64
/// (ggml_compute_forward_rms_norm_f32).
pub fn rms_norm(x: &mut [f32], n: usize, weight: &[f32], eps: f32) {
    let norm_row = |row: &mut [f32]| {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    };
    // a batch's rows over the thread pool (each row by one task, in the same order), so the
    // norms around every block do not run on one thread; a token's heads stay on the caller
    if x.len() >= PAR_MIN_VALUES {
        x.par_chunks_exact_mut(n).for_each(norm_row);
    } else {
        x.chunks_exact_mut(n).for_each(norm_row);
    }
}

/// Element-wise work on at least this many values is spread over the thread pool.
pub(crate) const PAR_MIN_VALUES: usize = 1 << 14;

/// `x[i] += y[i]` (the residual adds), over the thread pool for large batches.
pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    if x.len() >= PAR_MIN_VALUES {
        x.par_iter_mut()
            .with_min_len(PAR_MIN_VALUES / 4)
            .zip(y)
            .for_each(|(a, b)| *a += b);
    } else {
        x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
    }
}

/// Which elements RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeKind {
    /// Adjacent pairs (x[2i], x[2i+1]) (llama).
    Normal,
    /// Halves (x[i], x[i + n_rot/2]) (GPT-NeoX: qwen2, qwen3, gemma3).
    Neox,
}

/// Rotary position embedding parameters of one layer.
#[derive(Debug, Clone)]
pub struct Rope {
    /// Pairing.
    pub kind: RopeKind,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// Frequency base.
    pub freq_base: f32,
    /// Position scale (1 / linear scaling factor).
    pub freq_scale: f32,
    /// Per-pair frequency divisors (`rope_freqs.weight`, llama 3), if any.
    pub freq_factors: Option<Vec<f32>>,
    /// YaRN extrapolation mix and magnitude scaling; `None` for plain RoPE.
    pub yarn: Option<Yarn>,
}

/// YaRN RoPE parameters as ggml's `rope_ext` takes them (`ext_factor`, `attn_factor`,
/// `beta_fast`, `beta_slow`, `n_ctx_orig`), with `attn_factor` already holding llama.cpp's
/// context-level adjustments (llama-context.cpp: `cparams.yarn_attn_factor`).
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    /// Weight of the extrapolated angle in the ramp region (1 for YaRN models).
    pub ext_factor: f32,
    /// Multiplier of cos and sin (before YaRN's own `1 + 0.1 ln(1/freq_scale)`).
    pub attn_factor: f32,
    /// Rotations per original context above which dimensions are extrapolated.
    pub beta_fast: f32,
    /// Rotations per original context below which dimensions are interpolated.
    pub beta_slow: f32,
    /// Original (pre-scaling) training context.
    pub n_ctx_orig: usize,
}

impl Yarn {
    /// First and last correction dimensions (ggml.c `ggml_rope_yarn_corr_dims`): where
    /// `n_dims * ln(n_ctx_orig / (beta * 2 pi)) / (2 ln base)` falls for beta_fast (floored) and
    /// beta_slow (ceiled), clamped to `0..=n_dims-1`.
    pub fn corr_dims(&self, n_dims: usize, freq_base: f32) -> [f32; 2] {
        let dim = |beta: f32| {
            n_dims as f32 * (self.n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * freq_base.ln())
        };
        let start = dim(self.beta_fast).floor();
        let end = dim(self.beta_slow).ceil();
        [start.max(0.0), end.min(n_dims as f32 - 1.0)]
    }
}

impl Rope {
    /// (cos, sin) per rotated pair at position `pos` (ggml_rope_cache_init: theta multiplied by
    /// `freq_base^(-2/n_rot)` step by step in f32; with YaRN, ggml-cpu's `rope_yarn`: pair `i`
    /// mixes the interpolated and extrapolated angles by a ramp over the correction dimensions,
    /// and cos and sin are scaled by `attn_factor * (1 + 0.1 ln(1/freq_scale))`).
    pub fn cache(&self, pos: usize) -> Vec<(f32, f32)> {
        let theta_scale = self.freq_base.powf(-2.0 / self.n_rot as f32);
        // ggml-cpu's FMA builds contract `a*b + c` here as well (`rope_yarn`): the first
        // product of each sum is fused
        let fused = crate::cpu::fused();
        let yarn = self.yarn.as_ref().filter(|y| y.ext_factor != 0.0).map(|y| {
            let corr = y.corr_dims(self.n_rot, self.freq_base);
            let ln = (1.0 / self.freq_scale).ln();
            let boost = if fused {
                0.1f32.mul_add(ln, 1.0)
            } else {
                1.0 + 0.1 * ln
            };
            (y.ext_factor, corr, y.attn_factor * boost)
        });
        let mut theta = pos as f32;
        (0..self.n_rot / 2)
            .map(|i| {
                let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
                let extrap = theta / ff;
                let interp = self.freq_scale * extrap;
                theta *= theta_scale;
                match yarn {
                    None => {
                        let m = self.yarn.as_ref().map_or(1.0, |y| y.attn_factor);
                        (interp.cos() * m, interp.sin() * m)
                    }
                    Some((ext, [lo, hi], mscale)) => {
                        let y = (i as f32 - lo) / (hi - lo).max(0.001);
                        let mix = (1.0 - y.clamp(0.0, 1.0)) * ext;
                        let t = if fused {
                            interp.mul_add(1.0 - mix, extrap * mix)
                        } else {
                            interp * (1.0 - mix) + extrap * mix
                        };
                        (t.cos() * mscale, t.sin() * mscale)
                    }
                }
            })
            .collect()
    }

    /// Rotates every head (`head_dim` values each) of one token's `x` with `cache`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, cache: &[(f32, f32)]) {
        let half = self.n_rot / 2;
        let fused = crate::cpu::fused();
        for h in x.chunks_exact_mut(head_dim) {
            for (i, &(c, s)) in cache.iter().enumerate() {
                let (a, b) = match self.kind {
                    RopeKind::Normal => (2 * i, 2 * i + 1),
                    RopeKind::Neox => (i, i + half),
                };
                let (x0, x1) = (h[a], h[b]);
                if fused {
                    // ggml-cpu's FMA builds contract `x0*c - x1*s`: the first product is fused
                    h[a] = x0.mul_add(c, -(x1 * s));
                    h[b] = x0.mul_add(s, x1 * c);
                } else {
                    h[a] = x0 * c - x1 * s;
                    h[b] = x0 * s + x1 * c;
                }
            }
        }
    }
}

/// Gated activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// silu(gate) * up.
    SwiGlu,
    /// gelu_tanh(gate) * up, GELU evaluated as ggml-cpu does (f16 input, f16 table).
    GeGlu,
    /// gpt-oss's clamped SwiGLU (ggml's `swiglu_oai`, alpha 1.702, limit 7):
    /// `x * sigmoid(alpha * x) * (y + 1)` with `x = min(gate, limit)`, `y = clamp(up, ±limit)`.
    SwigluOai,
}

/// `swiglu_oai`'s alpha and limit (llama.cpp hard-codes them for gpt-oss).
const OAI_ALPHA: f32 = 1.702;
const OAI_LIMIT: f32 = 7.0;

fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    // ggml-cpu's FMA builds contract `1 + A*x*x` into one fused multiply-add (it decides
    // one entry of the f16 table, x = -1.999).
    let inner = if crate::cpu::fused() {
        (COEF_A * x).mul_add(x, 1.0)
    } else {
        1.0 + COEF_A * x * x
    };
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// ggml-cpu's GELU (GGML_GELU_FP16): 0 below -10, identity above 10, otherwise the input
/// rounded to f16, GELU'd in f32, the result rounded to f16.
pub fn gelu_ggml(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let xh = f16::from_f32(x).to_f32();
        f16::from_f32(gelu_f32(xh)).to_f32()
    }
}

/// SiLU, x / (1 + e^-x).
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl Activation {
    /// `gate = act(gate) * up`, element-wise.
    pub fn apply(self, gate: &mut [f32], up: &[f32]) {
        match self {
            Activation::SwiGlu => crate::simd_exp::swiglu(crate::cpu::flavor(), gate, up),
            Activation::GeGlu => {
                for (g, u) in gate.iter_mut().zip(up) {
                    // ggml writes a plain 0 below -10 (not 0 * up, which may be -0)
                    *g = if *g <= -10.0 { 0.0 } else { gelu_ggml(*g) * u };
                }
            }
            Activation::SwigluOai => {
                for (g, &u) in gate.iter_mut().zip(up) {
                    let x = g.min(OAI_LIMIT);
                    let y = u.clamp(-OAI_LIMIT, OAI_LIMIT);
                    *g = x / (1.0 + (OAI_ALPHA * -x).exp()) * (y + 1.0);
                }
            }
        }
    }
}

/// Natural-log softmax of `logits` in f64 (llama-perplexity's log_softmax).
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|&v| v as f64 - lse).collect()
}

/// Entry `i` of [`log_softmax`]`(logits)`, the same bits, without the vocabulary-wide vector.
pub fn log_softmax_at(logits: &[f32], i: u32) -> f64 {
    logits[i as usize] as f64 - log_sum_exp(logits)
}

/// `max + ln(sum(exp(v - max)))` in f64, summed in index order.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's `swiglu_oai`: the gate clamped above at 7, the up at ±7, `x·σ(1.702x)·(y + 1)`.
    #[test]
    fn swiglu_oai_clamps_gate_and_up() {
        let mut g = [1.0f32, 9.0, -2.0];
        let up = [0.5f32, 20.0, -30.0];
        Activation::SwigluOai.apply(&mut g, &up);
        let f = |x: f64, y: f64| x / (1.0 + (-1.702 * x).exp()) * (y + 1.0);
        for (got, want) in g.iter().zip([f(1.0, 0.5), f(7.0, 7.0), f(-2.0, -7.0)]) {
            assert!(
                (f64::from(*got) - want).abs() < 1e-5 * want.abs().max(1.0),
                "{got} {want}"
            );
        }
    }

    #[test]
    fn rope_preserves_norm_and_pos0_is_identity() {
        let r = Rope {
            kind: RopeKind::Neox,
            n_rot: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: None,
            yarn: None,
        };
        let x0: Vec<f32> = (0..16).map(|i| i as f32 - 3.0).collect();
        let mut x = x0.clone();
        r.apply(&mut x, 8, &r.cache(0));
        assert_eq!(x, x0);
        r.apply(&mut x, 8, &r.cache(7));
        let n0: f32 = x0.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3);
    }

    #[test]
    fn yarn_extrapolates_fast_dimensions_and_interpolates_slow_ones() {
        let yarn = Yarn {
            ext_factor: 1.0,
            attn_factor: 1.0 / (1.0 + 0.1 * 4f32.ln()),
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 1024,
        };
        // 64 * ln(1024 / (beta * 2 pi)) / (2 ln 10000): 5.66 -> 5 and 17.70 -> 18
        assert_eq!(yarn.corr_dims(64, 10000.0), [5.0, 18.0]);
        let r = Rope {
            kind: RopeKind::Normal,
            n_rot: 64,
            freq_base: 10000.0,
            freq_scale: 0.25,
            freq_factors: None,
            yarn: Some(yarn),
        };
        let plain = Rope {
            yarn: None,
            ..r.clone()
        };
        let (c, p) = (r.cache(100), plain.cache(100));
        let angle = |(cos, sin): (f32, f32)| sin.atan2(cos);
        // fast pairs keep the unscaled angle (100 rad for pair 0), slow pairs the scaled one
        assert!((angle(c[0]) - angle((100f32.cos(), 100f32.sin()))).abs() < 1e-4);
        assert!((angle(c[31]) - angle(p[31])).abs() < 1e-6);
        // magnitude: attn_factor cancels YaRN's 1 + 0.1 ln(4)
        for &(cs, sn) in &c {
            assert!(((cs * cs + sn * sn).sqrt() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn gelu_table_form_is_close_to_gelu() {
        for i in -200..200 {
            let x = i as f32 * 0.07;
            assert!((gelu_ggml(x) - gelu_f32(x)).abs() < 2e-2, "{x}");
        }
    }
}
