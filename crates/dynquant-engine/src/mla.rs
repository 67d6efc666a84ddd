//! Multi-head latent attention (deepseek2), following llama.cpp's graph (src/models/deepseek2.cpp
//! at 80fb11ac) op by op, so that the same products see the same rounded activations:
//!
//! * queries: `attn_q_a` → RMSNorm (`attn_q_a_norm`) → `attn_q_b`, or one `attn_q` (lite);
//!   each head is `qk_nope` dimensions without RoPE then `qk_rope` with RoPE;
//! * keys/values: `attn_kv_a_mqa` gives the `kv_lora_rank` latent (RMSNorm'd with
//!   `attn_kv_a_norm`) and one `qk_rope`-dimension RoPE key shared by every head.
//!
//! Legacy layout (`attn_kv_b`): the latent is decompressed into per-head key (nope part) and
//! value rows, and attention is ordinary multi-head attention over an f16 cache of those rows.
//!
//! MLA layout (`attn_k_b`, `attn_v_b`: one matrix per head): the key decompression is absorbed
//! into the query (`q_nope` times head `h` of `attn_k_b`, a product with f16-rounded
//! activations for f16 weights), the cache holds `[latent, rope key]` rows (one shared head, MQA),
//! the value is the cached latent, and each head's attention output is decompressed by its
//! `attn_v_b` matrix before `attn_output`.

use rayon::prelude::*;

use crate::attention::{attend, KvCache};
use crate::block::BlockCtx;
use crate::config::{Config, MlaConfig};
use crate::error::Result;
use crate::loader::Loader;
use crate::matmul::Weight;
use crate::ops::{rms_norm, Rope};

/// How queries are projected.
#[derive(Debug)]
enum QueryProj<'a> {
    /// Low-rank: `b(norm(a(x)))`.
    Lora {
        a: Weight<'a>,
        norm: Vec<f32>,
        b: Weight<'a>,
    },
    /// One matrix (lite models).
    Plain(Weight<'a>),
}

/// How the latent becomes keys and values.
#[derive(Debug)]
enum KvProj<'a> {
    /// `attn_kv_b`: latent → per head `[k_nope, v]`.
    Legacy(Weight<'a>),
    /// `attn_k_b` (per head: `qk_nope` → latent) and `attn_v_b` (per head: latent → value).
    Absorbed {
        k_b: Vec<Weight<'a>>,
        v_b: Vec<Weight<'a>>,
    },
}

/// The attention weights of one deepseek2 block.
#[derive(Debug)]
pub(crate) struct MlaAttention<'a> {
    q: QueryProj<'a>,
    kv_a: Weight<'a>,
    kv_a_norm: Vec<f32>,
    kv: KvProj<'a>,
    wo: Weight<'a>,
    rope: Rope,
    m: MlaConfig,
}

impl<'a> MlaAttention<'a> {
    pub(crate) fn load(ld: &Loader<'a>, c: &Config, m: &MlaConfig, il: usize) -> Result<Self> {
        let n = |s: &str| format!("blk.{il}.{s}");
        let nh = c.n_head;
        let head_k = m.qk_nope + m.qk_rope;
        let q = match m.q_lora_rank {
            Some(r) => QueryProj::Lora {
                a: ld.weight(&n("attn_q_a.weight"), c.n_embd, r)?,
                norm: ld.vector(&n("attn_q_a_norm.weight"), r)?,
                b: ld.weight(&n("attn_q_b.weight"), r, nh * head_k)?,
            },
            None => QueryProj::Plain(ld.weight(&n("attn_q.weight"), c.n_embd, nh * head_k)?),
        };
        let kv = if m.absorbed {
            KvProj::Absorbed {
                k_b: ld.experts(&n("attn_k_b.weight"), m.qk_nope, m.kv_lora_rank, nh)?,
                v_b: ld.experts(&n("attn_v_b.weight"), m.kv_lora_rank, m.v_head, nh)?,
            }
        } else {
            KvProj::Legacy(ld.weight(
                &n("attn_kv_b.weight"),
                m.kv_lora_rank,
                nh * (m.qk_nope + m.v_head),
            )?)
        };
        Ok(MlaAttention {
            q,
            kv_a: ld.weight(
                &n("attn_kv_a_mqa.weight"),
                c.n_embd,
                m.kv_lora_rank + m.qk_rope,
            )?,
            kv_a_norm: ld.vector(&n("attn_kv_a_norm.weight"), m.kv_lora_rank)?,
            kv,
            wo: ld.weight(&n("attn_output.weight"), nh * m.v_head, c.n_embd)?,
            rope: Rope {
                kind: c.rope_kind,
                n_rot: m.qk_rope,
                freq_base: c.rope_base,
                freq_scale: c.rope_scale,
                freq_factors: None,
                yarn: c.yarn.clone(),
            },
            m: m.clone(),
        })
    }

    /// An empty KV cache: per-head key and value rows (legacy), or `[latent, rope key]` rows
    /// whose leading latent part is also the value (MLA layout).
    pub(crate) fn new_cache(&self, c: &Config) -> KvCache {
        let m = &self.m;
        match self.kv {
            KvProj::Legacy(_) => {
                KvCache::new(c.n_head * (m.qk_nope + m.qk_rope), c.n_head * m.v_head)
            }
            KvProj::Absorbed { .. } => {
                KvCache::values_in_keys(m.kv_lora_rank + m.qk_rope, m.kv_lora_rank)
            }
        }
    }

    pub(crate) fn weights(&self) -> Vec<&Weight<'a>> {
        let mut w = match &self.q {
            QueryProj::Lora { a, b, .. } => vec![a, b],
            QueryProj::Plain(q) => vec![q],
        };
        w.push(&self.kv_a);
        match &self.kv {
            KvProj::Legacy(kv_b) => w.push(kv_b),
            // one 2-D view per head, all named after the 3-D tensor
            KvProj::Absorbed { k_b, v_b } => w.extend(k_b.iter().chain(v_b)),
        }
        w.push(&self.wo);
        w
    }

    /// Attention output (before the residual) of the normed input `h`.
    pub(crate) fn forward(
        &self,
        ctx: &BlockCtx<'_>,
        h: &[f32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let (c, m) = (ctx.config, &self.m);
        let (nt, nh, p0) = (ctx.n_tok, c.n_head, ctx.p0);
        let (nope, rope, lora) = (m.qk_nope, m.qk_rope, m.kv_lora_rank);
        let head_k = nope + rope;
        let mut q = match &self.q {
            QueryProj::Lora { a, norm, b } => {
                let mut qa = ctx.mm(a, h)?;
                rms_norm(&mut qa, a.rows, norm, c.rms_eps);
                ctx.mm(b, &qa)?
            }
            QueryProj::Plain(w) => ctx.mm(w, h)?,
        };
        let mut kv = ctx.mm(&self.kv_a, h)?;
        let caches: Vec<Vec<(f32, f32)>> = (0..nt).map(|t| self.rope.cache(p0 + t)).collect();
        // RoPE on the shared key part, RMSNorm on the latent
        kv.par_chunks_mut(lora + rope)
            .zip(&caches)
            .for_each(|(row, rc)| {
                let (lat, pe) = row.split_at_mut(lora);
                self.rope.apply(pe, rope, rc);
                rms_norm(lat, lora, &self.kv_a_norm, c.rms_eps);
            });
        // RoPE on each query head's trailing part
        q.par_chunks_mut(nh * head_k)
            .zip(&caches)
            .for_each(|(row, rc)| {
                for hd in row.chunks_exact_mut(head_k) {
                    self.rope.apply(&mut hd[nope..], rope, rc);
                }
            });
        let exact = ctx.exact();
        match &self.kv {
            KvProj::Legacy(kv_b) => {
                let lat = column_block(&kv, lora + rope, 0, lora);
                let kvd = ctx.mm(kv_b, &lat)?;
                let per = nope + m.v_head;
                let mut k = Vec::with_capacity(nt * nh * head_k);
                let mut v = Vec::with_capacity(nt * nh * m.v_head);
                for (t, row) in kvd.chunks_exact(nh * per).enumerate() {
                    let pe = &kv[t * (lora + rope) + lora..(t + 1) * (lora + rope)];
                    for hd in row.chunks_exact(per) {
                        k.extend_from_slice(&hd[..nope]);
                        k.extend_from_slice(pe);
                        v.extend_from_slice(&hd[nope..]);
                    }
                }
                cache.append(&k, &v, exact);
                let att = attend(c, &q, cache, p0, nt, None, exact);
                ctx.mm(&self.wo, &att)
            }
            KvProj::Absorbed { k_b, v_b } => {
                // q_nope of head hd times its k_b matrix: nt rows of `lora` each
                let absorbed = per_head_products(ctx, k_b, nh, &q, head_k, nope)?;
                let qd = lora + rope;
                let mut qc = vec![0f32; nt * nh * qd];
                qc.par_chunks_exact_mut(nh * qd)
                    .enumerate()
                    .for_each(|(t, row)| {
                        for (hd, out) in row.chunks_exact_mut(qd).enumerate() {
                            out[..lora].copy_from_slice(&absorbed[hd][t * lora..(t + 1) * lora]);
                            let src = &q[t * nh * head_k + hd * head_k + nope..][..rope];
                            out[lora..].copy_from_slice(src);
                        }
                    });
                // the values are the latent: the leading part of each cached key row
                cache.append(&kv, &[], exact);
                let att = attend(c, &qc, cache, p0, nt, None, exact);
                // each head's latent output times its v_b matrix
                let vh = m.v_head;
                let per_head = per_head_products(ctx, v_b, nh, &att, lora, lora)?;
                let mut o = vec![0f32; nt * nh * vh];
                o.par_chunks_exact_mut(nh * vh)
                    .enumerate()
                    .for_each(|(t, row)| {
                        for (out, y) in row.chunks_exact_mut(vh).zip(&per_head) {
                            out.copy_from_slice(&y[t * vh..(t + 1) * vh]);
                        }
                    });
                ctx.mm(&self.wo, &o)
            }
        }
    }
}

/// Head `hd`'s matrix `mats[hd]` times its `len` columns at `hd * stride` of every token's row
/// of `x` (rows of `n_head * stride`), for every head. The heads run in parallel: each head's
/// product is computed whole by one task and the imatrix keeps one slot per head, so the bits do
/// not depend on the thread count.
fn per_head_products(
    ctx: &BlockCtx<'_>,
    mats: &[Weight<'_>],
    n_head: usize,
    x: &[f32],
    stride: usize,
    len: usize,
) -> Result<Vec<Vec<f32>>> {
    mats.par_iter()
        .enumerate()
        .map(|(hd, w)| {
            let cols = column_block(x, n_head * stride, hd * stride, len);
            ctx.mm_batched(w, hd, n_head, &cols)
        })
        .collect()
}

/// Columns `start..start + len` of each `row_len`-long row of `rows`, rows in order: one head's
/// part of every token's row, as the per-head products take it.
fn column_block(rows: &[f32], row_len: usize, start: usize, len: usize) -> Vec<f32> {
    rows.chunks_exact(row_len)
        .flat_map(|r| &r[start..start + len])
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::testing::{self, Matrix};
    use crate::ops::RopeKind;

    const NH: usize = 2;
    const LORA: usize = 8;
    const NOPE: usize = 4;
    const ROPE: usize = 4;
    const V: usize = 4;
    const E: usize = 16;

    /// The deepseek2 configuration of either layout.
    fn config(absorbed: bool) -> Config {
        let mut c = testing::config(NH, NH, NOPE + ROPE, 32);
        c.n_embd = E;
        c.n_rot = ROPE;
        c.head_dim_v = V;
        c.kq_scale = 1.0 / ((NOPE + ROPE) as f32).sqrt();
        if absorbed {
            (c.n_head_kv, c.head_dim_k, c.head_dim_v) = (1, LORA + ROPE, LORA);
        }
        c.mla = Some(MlaConfig {
            q_lora_rank: None,
            kv_lora_rank: LORA,
            qk_nope: NOPE,
            qk_rope: ROPE,
            v_head: V,
            absorbed,
        });
        c
    }

    /// Per head: the key decompression (`NOPE` x `LORA`) and value decompression (`V` x
    /// `LORA`) of the latent.
    fn decompression() -> (Vec<Matrix>, Vec<Matrix>) {
        let k = (0..NH)
            .map(|h| Matrix::random(NOPE, LORA, 10 + h as u64))
            .collect();
        let v = (0..NH)
            .map(|h| Matrix::random(V, LORA, 20 + h as u64))
            .collect();
        (k, v)
    }

    /// Runs `attn` over five tokens (a batch of three, then two from the cache).
    fn run(attn: &MlaAttention<'_>, c: &Config, h: &[f32]) -> Vec<f32> {
        let mut cache = attn.new_cache(c);
        let mut out = attn
            .forward(&testing::ctx(c, 0, 3), &h[..3 * E], &mut cache)
            .expect("first batch");
        out.extend(
            attn.forward(&testing::ctx(c, 3, 2), &h[3 * E..], &mut cache)
                .expect("second batch"),
        );
        out
    }

    /// Multi-head attention with keys `[K_h latent, rope key]` and values `V_h latent`, in f64.
    fn reference(
        query: impl Fn(&[f64]) -> Vec<f64>,
        kv_a: &Matrix,
        kv_a_norm: &[f32],
        (k_dec, v_dec): &(Vec<Matrix>, Vec<Matrix>),
        wo: &Matrix,
        h: &[f32],
        c: &Config,
    ) -> Vec<f64> {
        let hk = NOPE + ROPE;
        let mut keys = vec![Vec::new(); NH];
        let mut values = vec![Vec::new(); NH];
        let mut out = Vec::new();
        for (pos, x) in testing::rows(h, E).iter().enumerate() {
            let q = query(x);
            let kv = kv_a.apply(x);
            let lat = testing::rms_norm(&kv[..LORA], kv_a_norm, c.rms_eps);
            let mut pe = kv[LORA..].to_vec();
            testing::rope(&mut pe, pos, c.rope_base);
            let mut o = Vec::new();
            for hd in 0..NH {
                let mut k = k_dec[hd].apply(&lat);
                k.extend(&pe);
                keys[hd].push(k);
                values[hd].push(v_dec[hd].apply(&lat));
                let mut qh = q[hd * hk..(hd + 1) * hk].to_vec();
                testing::rope(&mut qh[NOPE..], pos, c.rope_base);
                let scale = 1.0 / (hk as f64).sqrt();
                o.extend(testing::attend(&qh, &keys[hd], &values[hd], scale));
            }
            out.extend(wo.apply(&o));
        }
        out
    }

    /// The legacy layout (one `attn_kv_b`, one query matrix) and the MLA layout (per-head
    /// `attn_k_b` / `attn_v_b` absorbed into the query and output, low-rank query) built from
    /// the same decompression matrices, each against plain multi-head attention in f64.
    #[test]
    fn both_layouts_match_plain_multi_head_attention() {
        let hk = NOPE + ROPE;
        let kv_a = Matrix::random(LORA + ROPE, E, 1);
        let kv_a_norm: Vec<f32> = testing::values(LORA, 2, 0.3)
            .iter()
            .map(|v| 1.0 + v)
            .collect();
        let wo = Matrix::random(E, NH * V, 3);
        let dec = decompression();
        let h = testing::values(5 * E, 4, 2.0);
        let rope = Rope {
            kind: RopeKind::Normal,
            n_rot: ROPE,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: None,
            yarn: None,
        };

        // legacy: kv_b holds, per head, the key rows then the value rows
        let c = config(false);
        let wq = Matrix::random(NH * hk, E, 5);
        let kv_b = Matrix {
            rows: NH * (NOPE + V),
            cols: LORA,
            v: (0..NH)
                .flat_map(|hd| dec.0[hd].v.iter().chain(&dec.1[hd].v).copied())
                .collect(),
        };
        let legacy = MlaAttention {
            q: QueryProj::Plain(wq.weight("attn_q")),
            kv_a: kv_a.weight("attn_kv_a_mqa"),
            kv_a_norm: kv_a_norm.clone(),
            kv: KvProj::Legacy(kv_b.weight("attn_kv_b")),
            wo: wo.weight("attn_output"),
            rope: rope.clone(),
            m: c.mla.clone().expect("mla"),
        };
        let expected = reference(|x| wq.apply(x), &kv_a, &kv_a_norm, &dec, &wo, &h, &c);
        testing::assert_close(&run(&legacy, &c, &h), &expected, 1e-4, "legacy layout");

        // MLA layout: k_b[h] is K_h transposed (nope -> latent), v_b[h] is V_h
        let c = config(true);
        let (qa, qb) = (Matrix::random(6, E, 6), Matrix::random(NH * hk, 6, 7));
        let q_norm: Vec<f32> = testing::values(6, 8, 0.3).iter().map(|v| 1.0 + v).collect();
        let k_b = dec.0.iter().map(|k| {
            let transposed = Matrix {
                rows: LORA,
                cols: NOPE,
                v: (0..LORA * NOPE)
                    .map(|i| k.v[(i % NOPE) * LORA + i / NOPE])
                    .collect(),
            };
            transposed.weight("attn_k_b")
        });
        let absorbed = MlaAttention {
            q: QueryProj::Lora {
                a: qa.weight("attn_q_a"),
                norm: q_norm.clone(),
                b: qb.weight("attn_q_b"),
            },
            kv_a: kv_a.weight("attn_kv_a_mqa"),
            kv_a_norm: kv_a_norm.clone(),
            kv: KvProj::Absorbed {
                k_b: k_b.collect(),
                v_b: dec.1.iter().map(|v| v.weight("attn_v_b")).collect(),
            },
            wo: wo.weight("attn_output"),
            rope,
            m: c.mla.clone().expect("mla"),
        };
        let query = |x: &[f64]| qb.apply(&testing::rms_norm(&qa.apply(x), &q_norm, c.rms_eps));
        let expected = reference(query, &kv_a, &kv_a_norm, &dec, &wo, &h, &c);
        testing::assert_close(&run(&absorbed, &c, &h), &expected, 1e-4, "MLA layout");
    }
}
