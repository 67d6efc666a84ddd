//! Multi-head / grouped-query attention with separate q, k, v projections (llama, qwen2,
//! qwen3, gemma3): optional biases and per-head q/k norms, RoPE, then [`attend`] over the f16
//! KV cache.

use rayon::prelude::*;

use crate::attention::{attend, KvCache};
use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::matmul::Weight;
use crate::model::{Ctx, Loader};
use crate::ops::{rms_norm, Rope};

/// The attention weights of one block.
#[derive(Debug)]
pub(crate) struct GqaAttention<'a> {
    wq: Weight<'a>,
    wk: Weight<'a>,
    wv: Weight<'a>,
    wo: Weight<'a>,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    rope: Rope,
    window: Option<usize>,
}

impl<'a> GqaAttention<'a> {
    pub(crate) fn load(
        ld: &Loader<'a>,
        c: &Config,
        il: usize,
        rope_freqs: &Option<Vec<f32>>,
    ) -> Result<Self> {
        let n = |s: &str| format!("blk.{il}.{s}");
        let (qd, kvd, vd) = (
            c.n_head * c.head_dim_k,
            c.n_head_kv * c.head_dim_k,
            c.n_head_kv * c.head_dim_v,
        );
        let swa = c.swa.as_ref().filter(|s| s.layers[il]);
        let rope = Rope {
            kind: c.rope_kind,
            n_rot: c.n_rot,
            freq_base: swa.map_or(c.rope_base, |s| s.rope_base),
            freq_scale: swa.map_or(c.rope_scale, |s| s.rope_scale),
            freq_factors: rope_freqs.clone(),
            yarn: c.yarn.clone(),
        };
        let head_norm = |s: &str| -> Result<Option<Vec<f32>>> {
            if c.qk_norm {
                ld.vector(&n(s), c.head_dim_k).map(Some)
            } else {
                Ok(None)
            }
        };
        let a = GqaAttention {
            wq: ld.weight(&n("attn_q.weight"), c.n_embd, qd)?,
            wk: ld.weight(&n("attn_k.weight"), c.n_embd, kvd)?,
            wv: ld.weight(&n("attn_v.weight"), c.n_embd, vd)?,
            wo: ld.weight(&n("attn_output.weight"), c.n_head * c.head_dim_v, c.n_embd)?,
            bq: ld.vector_opt(&n("attn_q.bias"), qd)?,
            bk: ld.vector_opt(&n("attn_k.bias"), kvd)?,
            bv: ld.vector_opt(&n("attn_v.bias"), vd)?,
            q_norm: head_norm("attn_q_norm.weight")?,
            k_norm: head_norm("attn_k_norm.weight")?,
            rope,
            window: swa.map(|s| s.window),
        };
        if c.qkv_bias && a.bq.is_none() {
            return Err(EngineError::MissingTensor(n("attn_q.bias")));
        }
        Ok(a)
    }

    pub(crate) fn weights(&self) -> Vec<&Weight<'a>> {
        vec![&self.wq, &self.wk, &self.wv, &self.wo]
    }

    /// Attention output (before the output norm and residual) of the normed input `h`.
    pub(crate) fn forward(
        &self,
        ctx: &Ctx<'_, 'a>,
        h: &[f32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let c = ctx.config();
        let mut q = ctx.mm(&self.wq, h)?;
        let mut k = ctx.mm(&self.wk, h)?;
        let mut v = ctx.mm(&self.wv, h)?;
        for (t, b) in [(&mut q, &self.bq), (&mut k, &self.bk), (&mut v, &self.bv)] {
            if let Some(b) = b {
                for row in t.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                }
            }
        }
        let (hk, qd, kd) = (
            c.head_dim_k,
            c.n_head * c.head_dim_k,
            c.n_head_kv * c.head_dim_k,
        );
        let p0 = ctx.p0;
        q.par_chunks_mut(qd)
            .zip(k.par_chunks_mut(kd))
            .enumerate()
            .for_each(|(t, (qr, kr))| {
                if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
                    rms_norm(qr, hk, qn, c.rms_eps);
                    rms_norm(kr, hk, kn, c.rms_eps);
                }
                let rc = self.rope.cache(p0 + t);
                self.rope.apply(qr, hk, &rc);
                self.rope.apply(kr, hk, &rc);
                if c.q_scale != 1.0 {
                    qr.iter_mut().for_each(|v| *v *= c.q_scale);
                }
            });
        let exact = ctx.exact();
        cache.append(&k, &v, exact);
        let att = attend(c, &q, cache, p0, ctx.n_tok, self.window, exact);
        ctx.mm(&self.wo, &att)
    }
}
