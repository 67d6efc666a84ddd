//! A loaded model (weights borrowed from the memory-mapped GGUF) and the shared decoder forward
//! pass: embeddings, blocks of attention + feed-forward, final norm, output projection.

use dynquant_core::gguf::GgufModel;
use dynquant_core::GgmlType;
use rayon::prelude::*;

use crate::attention::{attend, KvCache};
use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::matmul::{matmul, Numerics, Weight};
use crate::ops::{rms_norm, Rope};

/// Sees the input of every matrix product with a stored weight (imatrix collection).
pub trait MatmulObserver: Sync {
    /// `x` holds `n_tok` rows of `w.cols` f32 activations about to be multiplied by `w`.
    fn observe(&self, w: &Weight<'_>, x: &[f32], n_tok: usize);
}

/// The weights of one block.
#[derive(Debug)]
pub struct Layer<'a> {
    attn_norm: Vec<f32>,
    wq: Weight<'a>,
    wk: Weight<'a>,
    wv: Weight<'a>,
    wo: Weight<'a>,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    attn_post_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Weight<'a>,
    up: Weight<'a>,
    down: Weight<'a>,
    ffn_post_norm: Option<Vec<f32>>,
    rope: Rope,
    window: Option<usize>,
}

/// A model ready to run.
#[derive(Debug)]
pub struct Model<'a> {
    /// Hyper-parameters and conventions.
    pub config: Config,
    /// Vocabulary size (rows of the output projection).
    pub n_vocab: usize,
    tok_embd: Weight<'a>,
    output: Weight<'a>,
    output_norm: Vec<f32>,
    layers: Vec<Layer<'a>>,
    /// Activation rounding of the matrix products.
    pub numerics: Numerics,
}

struct Loader<'g> {
    gguf: &'g GgufModel,
}

impl<'g> Loader<'g> {
    fn find(&self, name: &str) -> Option<dynquant_core::gguf::ModelTensor<'g>> {
        self.gguf.tensors().find(|t| t.info.name == name)
    }

    fn weight(&self, name: &str, cols: usize, rows: usize) -> Result<Weight<'g>> {
        self.weight_opt(name, cols, rows)?
            .ok_or_else(|| EngineError::MissingTensor(name.into()))
    }

    fn weight_opt(&self, name: &str, cols: usize, rows: usize) -> Result<Option<Weight<'g>>> {
        let Some(t) = self.find(name) else {
            return Ok(None);
        };
        if t.info.shape != [cols as u64, rows as u64] {
            return Err(EngineError::BadShape {
                name: name.into(),
                shape: t.info.shape.clone(),
                expected: vec![cols as u64, rows as u64],
            });
        }
        let data = self.gguf.tensor_data(&t)?;
        Weight::new(name, t.info.ggml_type, cols, rows, data).map(Some)
    }

    fn vector_opt(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.find(name) else {
            return Ok(None);
        };
        if t.info.n_elements() != n as u64 {
            return Err(EngineError::BadShape {
                name: name.into(),
                shape: t.info.shape.clone(),
                expected: vec![n as u64],
            });
        }
        let data = self.gguf.tensor_data(&t)?;
        let mut out = vec![0f32; n];
        dynquant_core::quants::dequantize(t.info.ggml_type, &data, &mut out)?;
        Ok(Some(out))
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.vector_opt(name, n)?
            .ok_or_else(|| EngineError::MissingTensor(name.into()))
    }
}

impl<'a> Model<'a> {
    /// Reads the configuration and binds every weight of `gguf` (no copies with mmap access).
    pub fn load(gguf: &'a GgufModel) -> Result<Self> {
        let config = crate::arch::config(gguf.metadata())?;
        let c = &config;
        let ld = Loader { gguf };
        let embd = ld
            .find("token_embd.weight")
            .ok_or_else(|| EngineError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = match embd.info.shape.as_slice() {
            [e, v] if *e == c.n_embd as u64 => usize::try_from(*v).map_err(|_| {
                EngineError::Invalid("vocabulary size does not fit in memory".into())
            })?,
            s => {
                return Err(EngineError::BadShape {
                    name: "token_embd.weight".into(),
                    shape: s.to_vec(),
                    expected: vec![c.n_embd as u64],
                })
            }
        };
        let tok_embd = ld.weight("token_embd.weight", c.n_embd, n_vocab)?;
        let output = match ld.weight_opt("output.weight", c.n_embd, n_vocab)? {
            Some(w) => w,
            None => ld.weight("token_embd.weight", c.n_embd, n_vocab)?,
        };
        let freq_factors = ld.vector_opt("rope_freqs.weight", c.n_rot / 2)?;
        let (qd, kvd, vd) = (
            c.n_head * c.head_dim_k,
            c.n_head_kv * c.head_dim_k,
            c.n_head_kv * c.head_dim_v,
        );
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            let swa = c.swa.as_ref().filter(|s| s.layers[il]);
            let rope = Rope {
                kind: c.rope_kind,
                n_rot: c.n_rot,
                freq_base: swa.map_or(c.rope_base, |s| s.rope_base),
                freq_scale: swa.map_or(c.rope_scale, |s| s.rope_scale),
                freq_factors: freq_factors.clone(),
            };
            let opt_norm = |s: &str, len: usize, on: bool| -> Result<Option<Vec<f32>>> {
                if on {
                    ld.vector(&n(s), len).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: ld.vector(&n("attn_norm.weight"), c.n_embd)?,
                wq: ld.weight(&n("attn_q.weight"), c.n_embd, qd)?,
                wk: ld.weight(&n("attn_k.weight"), c.n_embd, kvd)?,
                wv: ld.weight(&n("attn_v.weight"), c.n_embd, vd)?,
                wo: ld.weight(&n("attn_output.weight"), c.n_head * c.head_dim_v, c.n_embd)?,
                bq: ld.vector_opt(&n("attn_q.bias"), qd)?,
                bk: ld.vector_opt(&n("attn_k.bias"), kvd)?,
                bv: ld.vector_opt(&n("attn_v.bias"), vd)?,
                q_norm: opt_norm("attn_q_norm.weight", c.head_dim_k, c.qk_norm)?,
                k_norm: opt_norm("attn_k_norm.weight", c.head_dim_k, c.qk_norm)?,
                attn_post_norm: opt_norm("post_attention_norm.weight", c.n_embd, c.post_norms)?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), c.n_embd)?,
                gate: ld.weight(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                up: ld.weight(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                down: ld.weight(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
                ffn_post_norm: opt_norm("post_ffw_norm.weight", c.n_embd, c.post_norms)?,
                rope,
                window: swa.map(|s| s.window),
            });
            if c.qkv_bias && layers[il].bq.is_none() {
                return Err(EngineError::MissingTensor(n("attn_q.bias")));
            }
        }
        let output_norm = ld.vector("output_norm.weight", c.n_embd)?;
        Ok(Model {
            config,
            n_vocab,
            tok_embd,
            output,
            output_norm,
            layers,
            numerics: Numerics::Llama,
        })
    }

    /// Every matrix weight with its name (for imatrix bookkeeping).
    pub fn weights(&self) -> impl Iterator<Item = &Weight<'a>> {
        self.layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down])
            .chain(std::iter::once(&self.output))
    }

    /// Stored type of the output projection.
    pub fn output_type(&self) -> GgmlType {
        self.output.ty
    }

    /// A new inference session holding up to `n_ctx` tokens.
    pub fn session(&self, n_ctx: usize) -> Session<'_, 'a> {
        let c = &self.config;
        Session {
            model: self,
            cache: (0..c.n_layer)
                .map(|_| KvCache::new(c.n_head_kv * c.head_dim_k, c.n_head_kv * c.head_dim_v))
                .collect(),
            n_ctx,
            n_past: 0,
        }
    }

    fn mm(
        &self,
        w: &Weight<'_>,
        x: &[f32],
        n_tok: usize,
        obs: Option<&dyn MatmulObserver>,
    ) -> Result<Vec<f32>> {
        if let Some(o) = obs {
            o.observe(w, x, n_tok);
        }
        matmul(w, x, n_tok, self.numerics)
    }
}

/// Which positions of a batch get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (imatrix without the output projection, cache filling).
    None,
    /// Only the last token.
    Last,
    /// Tokens `from..` of the batch.
    From(usize),
}

/// A sequence being evaluated: the KV cache and its length.
#[derive(Debug)]
pub struct Session<'m, 'a> {
    model: &'m Model<'a>,
    cache: Vec<KvCache>,
    n_ctx: usize,
    n_past: usize,
}

impl Session<'_, '_> {
    /// Tokens held in the cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Empties the cache.
    pub fn clear(&mut self) {
        self.n_past = 0;
        for c in &mut self.cache {
            c.clear();
        }
    }

    /// Runs `tokens` (one batch, positions `n_past..`) through the model, appending to the KV
    /// cache; returns the logits of the rows asked for, `n_vocab` each.
    pub fn eval(
        &mut self,
        tokens: &[u32],
        logits: Logits,
        obs: Option<&dyn MatmulObserver>,
    ) -> Result<Vec<f32>> {
        let m = self.model;
        let c = &m.config;
        let nt = tokens.len();
        if nt == 0 {
            return Ok(Vec::new());
        }
        let wanted = self.n_past + nt;
        if wanted > self.n_ctx {
            return Err(EngineError::ContextFull {
                n_ctx: self.n_ctx,
                wanted,
            });
        }
        let e = c.n_embd;
        let mut x = vec![0f32; nt * e];
        for (row, &t) in x.chunks_exact_mut(e).zip(tokens) {
            if t as usize >= m.n_vocab {
                return Err(EngineError::BadToken {
                    id: t,
                    n_vocab: m.n_vocab,
                });
            }
            m.tok_embd.row_f32(t as usize, row)?;
            if let Some(s) = c.embd_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        let exact = m.numerics == Numerics::Exact;
        let p0 = self.n_past;
        for (il, l) in m.layers.iter().enumerate() {
            let mut h = x.clone();
            rms_norm(&mut h, e, &l.attn_norm, c.rms_eps);
            let mut q = m.mm(&l.wq, &h, nt, obs)?;
            let mut k = m.mm(&l.wk, &h, nt, obs)?;
            let mut v = m.mm(&l.wv, &h, nt, obs)?;
            for (t, b) in [(&mut q, &l.bq), (&mut k, &l.bk), (&mut v, &l.bv)] {
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
            q.par_chunks_mut(qd)
                .zip(k.par_chunks_mut(kd))
                .enumerate()
                .for_each(|(t, (qr, kr))| {
                    if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                        rms_norm(qr, hk, qn, c.rms_eps);
                        rms_norm(kr, hk, kn, c.rms_eps);
                    }
                    let cache = l.rope.cache(p0 + t);
                    l.rope.apply(qr, hk, &cache);
                    l.rope.apply(kr, hk, &cache);
                    if c.q_scale != 1.0 {
                        qr.iter_mut().for_each(|v| *v *= c.q_scale);
                    }
                });
            self.cache[il].append(&k, &v, exact);
            let att = attend(c, &q, &self.cache[il], p0, nt, l.window, exact);
            let mut o = m.mm(&l.wo, &att, nt, obs)?;
            if let Some(pn) = &l.attn_post_norm {
                rms_norm(&mut o, e, pn, c.rms_eps);
            }
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let mut h = x.clone();
            rms_norm(&mut h, e, &l.ffn_norm, c.rms_eps);
            let mut g = m.mm(&l.gate, &h, nt, obs)?;
            let u = m.mm(&l.up, &h, nt, obs)?;
            g.par_chunks_mut(c.n_ff)
                .zip(u.par_chunks(c.n_ff))
                .for_each(|(g, u)| c.act.apply(g, u));
            let mut d = m.mm(&l.down, &g, nt, obs)?;
            if let Some(pn) = &l.ffn_post_norm {
                rms_norm(&mut d, e, pn, c.rms_eps);
            }
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        self.n_past = wanted;
        let from = match logits {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => nt.saturating_sub(1),
            Logits::From(f) => f.min(nt),
        };
        let mut h = x[from * e..].to_vec();
        rms_norm(&mut h, e, &m.output_norm, c.rms_eps);
        m.mm(&m.output, &h, nt - from, obs)
    }
}
