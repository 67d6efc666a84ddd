//! Multi-head / grouped-query attention with separate q, k, v projections (llama, qwen2,
//! qwen3, gemma3, gpt-oss): optional biases (q, k, v, and output for gpt-oss), per-head q/k
//! norms, RoPE, then [`attend_with_sinks`] over the f16 KV cache, with per-head sinks when the
//! model has them (gpt-oss).

use rayon::prelude::*;

use crate::attention::{attend_with_sinks, KvCache};
use crate::block::BlockCtx;
use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::loader::Loader;
use crate::matmul::Weight;
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
    bo: Option<Vec<f32>>,
    sinks: Option<Vec<f32>>,
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
            } else if c.qk_norm_optional {
                ld.vector_opt(&n(s), c.head_dim_k)
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
            bo: ld.vector_opt(&n("attn_output.bias"), c.n_embd)?,
            sinks: ld.vector_opt(&n("attn_sinks.weight"), c.n_head)?,
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

    /// Attention output (before the output norm and residual) of the normed input `h`: the
    /// projections over every row of the batch, then each sequence (`ctx.spans[i]`) over its
    /// own cache `caches[i]`.
    pub(crate) fn forward(
        &self,
        ctx: &BlockCtx<'_>,
        h: &[f32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<f32>> {
        let c = ctx.config;
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
        let (hk, qd, kd, vd) = (
            c.head_dim_k,
            c.n_head * c.head_dim_k,
            c.n_head_kv * c.head_dim_k,
            c.n_head_kv * c.head_dim_v,
        );
        let positions: Vec<usize> = ctx.spans.iter().flat_map(|s| s.p0..s.p0 + s.n).collect();
        q.par_chunks_mut(qd)
            .zip(k.par_chunks_mut(kd))
            .zip(&positions)
            .for_each(|((qr, kr), &pos)| {
                if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
                    rms_norm(qr, hk, qn, c.rms_eps);
                    rms_norm(kr, hk, kn, c.rms_eps);
                }
                let rc = self.rope.cache(pos);
                self.rope.apply(qr, hk, &rc);
                self.rope.apply(kr, hk, &rc);
                if c.q_scale != 1.0 {
                    qr.iter_mut().for_each(|v| *v *= c.q_scale);
                }
            });
        let exact = ctx.exact();
        let sinks = self.sinks.as_deref();
        let att = if let [cache] = caches {
            cache.append(&k, &v, exact);
            attend_with_sinks(c, &q, cache, ctx.p0, ctx.n_tok, self.window, sinks, exact)
        } else {
            let mut first = Vec::with_capacity(ctx.spans.len());
            let mut row = 0;
            for s in ctx.spans {
                first.push(row);
                row += s.n;
            }
            let parts: Vec<Vec<f32>> = caches
                .par_iter_mut()
                .zip(ctx.spans)
                .zip(&first)
                .map(|((cache, s), &r)| {
                    cache.append(
                        &k[r * kd..(r + s.n) * kd],
                        &v[r * vd..(r + s.n) * vd],
                        exact,
                    );
                    attend_with_sinks(
                        c,
                        &q[r * qd..(r + s.n) * qd],
                        cache,
                        s.p0,
                        s.n,
                        self.window,
                        sinks,
                        exact,
                    )
                })
                .collect();
            parts.concat()
        };
        let mut o = ctx.mm(&self.wo, &att)?;
        if let Some(b) = &self.bo {
            for row in o.chunks_exact_mut(b.len()) {
                row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::testing::{self, Matrix};
    use crate::ops::RopeKind;

    /// Four query heads over two key/value heads with q, k, v biases, run as a batch of three
    /// tokens then a batch of two (the second reads the first's keys from the cache), against
    /// plain attention in f64.
    #[test]
    fn matches_plain_grouped_query_attention() {
        let (nh, nkv, d) = (4, 2, 8);
        let c = testing::config(nh, nkv, d, 32);
        let e = c.n_embd;
        let (wq, wk, wv, wo) = (
            Matrix::random(nh * d, e, 1),
            Matrix::random(nkv * d, e, 2),
            Matrix::random(nkv * d, e, 3),
            Matrix::random(e, nh * d, 4),
        );
        let (bq, bk, bv) = (
            testing::values(nh * d, 5, 0.5),
            testing::values(nkv * d, 6, 0.5),
            testing::values(nkv * d, 7, 0.5),
        );
        let attn = GqaAttention {
            wq: wq.weight("attn_q"),
            wk: wk.weight("attn_k"),
            wv: wv.weight("attn_v"),
            wo: wo.weight("attn_output"),
            bq: Some(bq.clone()),
            bk: Some(bk.clone()),
            bv: Some(bv.clone()),
            bo: None,
            sinks: None,
            q_norm: None,
            k_norm: None,
            rope: Rope {
                kind: RopeKind::Normal,
                n_rot: d,
                freq_base: c.rope_base,
                freq_scale: 1.0,
                freq_factors: None,
                yarn: None,
            },
            window: None,
        };
        let h = testing::values(5 * e, 8, 2.0);
        let mut cache = KvCache::new(nkv * d, nkv * d);
        let mut ours = attn
            .forward(&testing::ctx(&c, 0, 3), &h[..3 * e], &mut [&mut cache])
            .expect("first batch");
        ours.extend(
            attn.forward(&testing::ctx(&c, 3, 2), &h[3 * e..], &mut [&mut cache])
                .expect("second batch"),
        );

        let add = |x: Vec<f64>, b: &[f32]| -> Vec<f64> {
            x.iter().zip(b).map(|(x, &b)| x + b as f64).collect()
        };
        let hs = testing::rows(&h, e);
        let head = |v: &[f64], i: usize| v[i * d..(i + 1) * d].to_vec();
        let mut keys = vec![Vec::new(); nkv];
        let mut values = vec![Vec::new(); nkv];
        let mut reference = Vec::new();
        for (pos, x) in hs.iter().enumerate() {
            let (q, k, v) = (
                add(wq.apply(x), &bq),
                add(wk.apply(x), &bk),
                add(wv.apply(x), &bv),
            );
            for g in 0..nkv {
                let mut kh = head(&k, g);
                testing::rope(&mut kh, pos, c.rope_base);
                keys[g].push(kh);
                values[g].push(head(&v, g));
            }
            let mut o = Vec::new();
            for hd in 0..nh {
                let mut qh = head(&q, hd);
                testing::rope(&mut qh, pos, c.rope_base);
                let g = hd / (nh / nkv);
                o.extend(testing::attend(
                    &qh,
                    &keys[g],
                    &values[g],
                    1.0 / (d as f64).sqrt(),
                ));
            }
            reference.extend(wo.apply(&o));
        }
        testing::assert_close(&ours, &reference, 1e-4, "attention output");
    }
}
