//! What a block (attention, feed-forward, mixture of experts) needs besides its own weights:
//! the configuration, the numerics, the batch's positions and the observer of matrix products.
//! Blocks see only this context, never the [`crate::Model`] that holds them, so each can be
//! built and run alone (their unit tests do).

use crate::config::Config;
use crate::error::Result;
use crate::matmul::{matmul, Numerics, Weight};

/// Sees the input of every matrix product with a stored weight (imatrix collection).
pub trait MatmulObserver: Sync {
    /// `x` holds `n_tok` rows of `w.cols` f32 activations about to be multiplied by `w`.
    fn observe(&self, w: &Weight<'_>, x: &[f32], n_tok: usize);

    /// As [`observe`](Self::observe) for expert `expert` of the `n_expert` experts stored in
    /// the 3-D tensor `w.name` (llama.cpp's `mul_mat_id`): `x` holds the `n_tok` rows routed
    /// to this expert.
    fn observe_expert(
        &self,
        w: &Weight<'_>,
        expert: usize,
        n_expert: usize,
        x: &[f32],
        n_tok: usize,
    );

    /// As [`observe`](Self::observe) for matrix `mat` of the `n_mat` matrices of the 3-D tensor
    /// `w.name` multiplied as one batched product (llama.cpp's `mul_mat` with a batch
    /// dimension, as deepseek2's per-head `attn_k_b` / `attn_v_b`): `x` holds the `n_tok` rows
    /// multiplied by that matrix. llama-imatrix keeps one token count for such a tensor.
    /// Defaults to [`observe_expert`](Self::observe_expert).
    fn observe_batched(&self, w: &Weight<'_>, mat: usize, n_mat: usize, x: &[f32], n_tok: usize) {
        self.observe_expert(w, mat, n_mat, x, n_tok)
    }
}

/// Both observers see every product (one pass collecting two things).
impl<A: MatmulObserver, B: MatmulObserver> MatmulObserver for (A, B) {
    fn observe(&self, w: &Weight<'_>, x: &[f32], n_tok: usize) {
        self.0.observe(w, x, n_tok);
        self.1.observe(w, x, n_tok);
    }

    fn observe_expert(
        &self,
        w: &Weight<'_>,
        expert: usize,
        n_expert: usize,
        x: &[f32],
        n_tok: usize,
    ) {
        self.0.observe_expert(w, expert, n_expert, x, n_tok);
        self.1.observe_expert(w, expert, n_expert, x, n_tok);
    }

    fn observe_batched(&self, w: &Weight<'_>, mat: usize, n_mat: usize, x: &[f32], n_tok: usize) {
        self.0.observe_batched(w, mat, n_mat, x, n_tok);
        self.1.observe_batched(w, mat, n_mat, x, n_tok);
    }
}

/// One sequence's rows of a batch: `n` tokens at positions `p0..p0 + n` of its own KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// Position of the sequence's first token in this batch.
    pub p0: usize,
    /// Tokens of the sequence in this batch.
    pub n: usize,
}

/// The context of one batch through one block.
#[derive(Clone, Copy)]
pub(crate) struct BlockCtx<'c> {
    /// Hyper-parameters and conventions.
    pub config: &'c Config,
    /// Activation rounding of the matrix products.
    pub numerics: Numerics,
    /// Position of the batch's first token (of its first sequence).
    pub p0: usize,
    /// Tokens in the batch (of all its sequences).
    pub n_tok: usize,
    /// The batch's sequences in row order, each with its own KV cache; one span
    /// (`p0`, `n_tok`) for an ordinary batch.
    pub spans: &'c [Span],
    /// Sees every matrix product's input (imatrix collection).
    pub obs: Option<&'c dyn MatmulObserver>,
}

impl<'c> BlockCtx<'c> {
    /// The context of sequence `span` alone (rows of that sequence only).
    pub fn one_sequence<'s>(&self, span: &'s Span) -> BlockCtx<'s>
    where
        'c: 's,
    {
        BlockCtx {
            p0: span.p0,
            n_tok: span.n,
            spans: std::slice::from_ref(span),
            ..*self
        }
    }

    /// Whether the exact f32 numerics are asked for (f32 KV cache, unrounded activations).
    pub fn exact(&self) -> bool {
        self.numerics == Numerics::Exact
    }

    /// `w` times the `n_tok` rows of `x` (reported to the observer first).
    pub fn mm(&self, w: &Weight<'_>, x: &[f32]) -> Result<Vec<f32>> {
        self.mm_rows(w, x, self.n_tok)
    }

    /// `w` times `n` rows of `x` (reported to the observer first).
    pub fn mm_rows(&self, w: &Weight<'_>, x: &[f32], n: usize) -> Result<Vec<f32>> {
        if let Some(o) = self.obs {
            o.observe(w, x, n);
        }
        matmul(w, x, n, self.numerics)
    }

    /// Expert `expert` (of `n_expert`) times the `n` rows of `x` routed to it, reported to the
    /// observer as that expert.
    pub fn mm_expert(
        &self,
        w: &Weight<'_>,
        expert: usize,
        n_expert: usize,
        x: &[f32],
        n: usize,
    ) -> Result<Vec<f32>> {
        if let Some(o) = self.obs {
            o.observe_expert(w, expert, n_expert, x, n);
        }
        crate::matmul::matmul_expert(w, x, n, self.numerics)
    }

    /// Matrix `mat` (of `n_mat`) of a per-head 3-D tensor times the `n_tok` rows of `x`,
    /// reported to the observer as part of one batched product.
    pub fn mm_batched(
        &self,
        w: &Weight<'_>,
        mat: usize,
        n_mat: usize,
        x: &[f32],
    ) -> Result<Vec<f32>> {
        if let Some(o) = self.obs {
            o.observe_batched(w, mat, n_mat, x, self.n_tok);
        }
        matmul(w, x, self.n_tok, self.numerics)
    }
}

/// Hand-built blocks for unit tests: F32 weights from a seeded generator, a small
/// configuration, and the plain f64 operations the reference computations are written in.
#[cfg(test)]
pub(crate) mod testing {
    use std::borrow::Cow;

    use dynquant_gguf::GgmlType;

    use super::{BlockCtx, Span};
    use crate::config::Config;
    use crate::matmul::{Numerics, Weight};
    use crate::ops::{Activation, RopeKind};

    /// `n` values in about [-scale, scale] (xorshift, so every run builds the same block).
    pub(crate) fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// A dense matrix of `rows` x `cols` values (row-major), for the reference side.
    pub(crate) struct Matrix {
        pub rows: usize,
        pub cols: usize,
        pub v: Vec<f32>,
    }

    impl Matrix {
        pub(crate) fn random(rows: usize, cols: usize, seed: u64) -> Matrix {
            let scale = 1.0 / (cols as f32).sqrt();
            Matrix {
                rows,
                cols,
                v: values(rows * cols, seed, scale),
            }
        }

        /// The same values as an F32 engine weight named `name`.
        pub(crate) fn weight(&self, name: &str) -> Weight<'static> {
            let bytes = self.v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Weight::new(name, GgmlType::F32, self.cols, self.rows, Cow::Owned(bytes))
                .expect("an F32 weight")
        }

        /// `self * x` for one vector of `cols` values, in f64.
        pub(crate) fn apply(&self, x: &[f64]) -> Vec<f64> {
            assert_eq!(x.len(), self.cols);
            self.v
                .chunks_exact(self.cols)
                .map(|r| r.iter().zip(x).map(|(&w, &x)| w as f64 * x).sum())
                .collect()
        }
    }

    /// A one-layer llama-like configuration: `n_head` heads of `d` (keys and values),
    /// `n_head_kv` key/value heads, adjacent-pair RoPE over the whole head, SwiGLU.
    pub(crate) fn config(n_head: usize, n_head_kv: usize, d: usize, n_ff: usize) -> Config {
        Config {
            arch: "llama".into(),
            n_embd: n_head * d,
            n_layer: 1,
            n_head,
            n_head_kv,
            head_dim_k: d,
            head_dim_v: d,
            n_ff,
            n_ctx_train: 4096,
            rms_eps: 1e-5,
            rope_kind: RopeKind::Normal,
            n_rot: d,
            rope_base: 10000.0,
            rope_scale: 1.0,
            act: Activation::SwiGlu,
            qk_norm: false,
            qk_norm_optional: false,
            qkv_bias: false,
            post_norms: false,
            embd_scale: None,
            q_scale: 1.0,
            kq_scale: 1.0 / (d as f32).sqrt(),
            swa: None,
            yarn: None,
            mla: None,
            moe: None,
        }
    }

    /// The context of a batch of `n_tok` tokens from position `p0`, exact numerics (f32
    /// activations and cache), no observer.
    pub(crate) fn ctx(config: &Config, p0: usize, n_tok: usize) -> BlockCtx<'_> {
        // one sequence; leaked so the context can borrow it (a few bytes per test call)
        let spans: &'static [Span] = Box::leak(Box::new([Span { p0, n: n_tok }]));
        BlockCtx {
            config,
            numerics: Numerics::Exact,
            p0,
            n_tok,
            spans,
            obs: None,
        }
    }

    /// Rows of `x` as f64 vectors of `n`.
    pub(crate) fn rows(x: &[f32], n: usize) -> Vec<Vec<f64>> {
        x.chunks_exact(n)
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect()
    }

    /// RMSNorm times `weight`.
    pub(crate) fn rms_norm(x: &[f64], weight: &[f32], eps: f32) -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + eps as f64).sqrt();
        x.iter()
            .zip(weight)
            .map(|(v, &w)| v * s * w as f64)
            .collect()
    }

    /// Adjacent-pair RoPE of one head's `x` at `pos`: pair `i` turned by
    /// `pos * base^(-2i / len)`.
    pub(crate) fn rope(x: &mut [f64], pos: usize, base: f32) {
        let n = x.len();
        for i in 0..n / 2 {
            let a = pos as f64 * (base as f64).powf(-2.0 * i as f64 / n as f64);
            let (c, s) = (a.cos(), a.sin());
            let (x0, x1) = (x[2 * i], x[2 * i + 1]);
            x[2 * i] = x0 * c - x1 * s;
            x[2 * i + 1] = x0 * s + x1 * c;
        }
    }

    /// Softmax-weighted sum of `values` by `scale * q . keys[j]`.
    pub(crate) fn attend(
        q: &[f64],
        keys: &[Vec<f64>],
        values: &[Vec<f64>],
        scale: f64,
    ) -> Vec<f64> {
        let scores: Vec<f64> = keys
            .iter()
            .map(|k| scale * q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
        let p: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = p.iter().sum();
        let mut out = vec![0.0; values[0].len()];
        for (pj, v) in p.iter().zip(values) {
            for (o, x) in out.iter_mut().zip(v) {
                *o += pj / sum * x;
            }
        }
        out
    }

    /// `silu(gate) * up`.
    pub(crate) fn swiglu(gate: &[f64], up: &[f64]) -> Vec<f64> {
        gate.iter()
            .zip(up)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect()
    }

    /// Asserts that every value of `ours` is within `tol` (relative to the largest reference
    /// magnitude) of `reference`.
    pub(crate) fn assert_close(ours: &[f32], reference: &[f64], tol: f64, what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: lengths");
        let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
        for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
            assert!(
                (a as f64 - b).abs() <= tol * scale,
                "{what}[{i}]: engine {a}, reference {b} (scale {scale})"
            );
        }
    }
}
