//! A loaded model (weights borrowed from the memory-mapped GGUF) and the shared decoder forward
//! pass: embeddings, blocks of attention + feed-forward, final norm, output projection.

use dynquant_gguf::GgmlType;
use dynquant_gguf::GgufModel;

use crate::attention::KvCache;
use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::ffn::FeedForward;
use crate::gqa::GqaAttention;
use crate::matmul::{matmul, Numerics, Weight};
use crate::mla::MlaAttention;
use crate::ops::rms_norm;

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

/// The weights of one block: attention and feed-forward parts with their norms.
#[derive(Debug)]
pub(crate) struct Layer<'a> {
    attn_norm: Vec<f32>,
    attn: Attention<'a>,
    attn_post_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    ffn: FeedForward<'a>,
    ffn_post_norm: Option<Vec<f32>>,
}

/// The attention part of a block; one variant per attention family.
#[derive(Debug)]
pub(crate) enum Attention<'a> {
    /// Multi-head / grouped-query attention with separate q, k, v projections.
    Gqa(GqaAttention<'a>),
    /// Multi-head latent attention (deepseek2).
    Mla(MlaAttention<'a>),
}

impl<'a> Attention<'a> {
    fn load(ld: &Loader<'a>, c: &Config, il: usize, rope_freqs: &Option<Vec<f32>>) -> Result<Self> {
        match &c.mla {
            Some(m) => MlaAttention::load(ld, c, m, il).map(Attention::Mla),
            None => GqaAttention::load(ld, c, il, rope_freqs).map(Attention::Gqa),
        }
    }

    /// Row sizes of this layer's cached keys and values.
    fn cache_dims(&self, c: &Config) -> (usize, usize) {
        match self {
            Attention::Gqa(_) => (c.n_head_kv * c.head_dim_k, c.n_head_kv * c.head_dim_v),
            Attention::Mla(a) => a.cache_dims(c),
        }
    }

    fn forward(&self, ctx: &Ctx<'_, 'a>, h: &[f32], cache: &mut KvCache) -> Result<Vec<f32>> {
        match self {
            Attention::Gqa(a) => a.forward(ctx, h, cache),
            Attention::Mla(a) => a.forward(ctx, h, cache),
        }
    }

    fn weights(&self) -> Vec<&Weight<'a>> {
        match self {
            Attention::Gqa(a) => a.weights(),
            Attention::Mla(a) => a.weights(),
        }
    }
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

/// Finds and checks tensors of a GGUF model by name.
pub(crate) struct Loader<'g> {
    gguf: &'g GgufModel,
}

impl<'g> Loader<'g> {
    pub(crate) fn find(&self, name: &str) -> Option<dynquant_gguf::ModelTensor<'g>> {
        self.gguf.tensors().find(|t| t.info.name == name)
    }

    pub(crate) fn weight(&self, name: &str, cols: usize, rows: usize) -> Result<Weight<'g>> {
        self.weight_opt(name, cols, rows)?
            .ok_or_else(|| EngineError::MissingTensor(name.into()))
    }

    pub(crate) fn weight_opt(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
    ) -> Result<Option<Weight<'g>>> {
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

    /// The `n` per-expert `rows` x `cols` matrices of the 3-D tensor `name` (ggml shape
    /// `{cols, rows, n}`), each borrowing its slice of the stored bytes.
    pub(crate) fn experts(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
        n: usize,
    ) -> Result<Vec<Weight<'g>>> {
        let t = self
            .find(name)
            .ok_or_else(|| EngineError::MissingTensor(name.into()))?;
        let expected = vec![cols as u64, rows as u64, n as u64];
        let bad = || EngineError::BadShape {
            name: name.into(),
            shape: t.info.shape.clone(),
            expected: expected.clone(),
        };
        if t.info.shape != expected {
            return Err(bad());
        }
        let per = t
            .info
            .ggml_type
            .row_bytes(cols as u64)
            .and_then(|b| b.checked_mul(rows as u64))
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(bad)?;
        let data = self.gguf.tensor_data(&t)?;
        if per.checked_mul(n) != Some(data.len()) {
            return Err(bad());
        }
        let ty = t.info.ggml_type;
        use std::borrow::Cow;
        (0..n)
            .map(|e| {
                let range = e * per..(e + 1) * per;
                let bytes = match &data {
                    Cow::Borrowed(b) => {
                        let b: &'g [u8] = b;
                        Cow::Borrowed(&b[range])
                    }
                    Cow::Owned(v) => Cow::Owned(v[range].to_vec()),
                };
                Weight::new(name, ty, cols, rows, bytes)
            })
            .collect()
    }

    pub(crate) fn vector_opt(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
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
        dynquant_quants::dequantize(t.info.ggml_type, &data, &mut out)?;
        Ok(Some(out))
    }

    pub(crate) fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
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
        let rope_freqs = ld.vector_opt("rope_freqs.weight", c.n_rot / 2)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            let opt_norm = |s: &str, on: bool| -> Result<Option<Vec<f32>>> {
                if on {
                    ld.vector(&n(s), c.n_embd).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: ld.vector(&n("attn_norm.weight"), c.n_embd)?,
                attn: Attention::load(&ld, c, il, &rope_freqs)?,
                attn_post_norm: opt_norm("post_attention_norm.weight", c.post_norms)?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), c.n_embd)?,
                ffn: FeedForward::load(&ld, c, il)?,
                ffn_post_norm: opt_norm("post_ffw_norm.weight", c.post_norms)?,
            });
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

    /// Every matrix weight with its name (for imatrix bookkeeping); an expert tensor appears as
    /// one 2-D view per expert, each named after the 3-D tensor.
    pub fn weights(&self) -> impl Iterator<Item = &Weight<'a>> {
        self.layers
            .iter()
            .flat_map(|l| {
                let mut w = l.attn.weights();
                w.extend(l.ffn.weights());
                w
            })
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
            cache: self
                .layers
                .iter()
                .map(|l| {
                    let (k, v) = l.attn.cache_dims(c);
                    match &l.attn {
                        Attention::Mla(a) if a.values_in_keys() => KvCache::values_in_keys(k, v),
                        _ => KvCache::new(k, v),
                    }
                })
                .collect(),
            n_ctx,
            n_past: 0,
        }
    }
}

/// What a block's parts need besides their own weights: the configuration, the numerics, the
/// batch's first position and size, and the observer of matrix products.
pub(crate) struct Ctx<'m, 'a> {
    /// The model being run.
    pub model: &'m Model<'a>,
    /// Position of the batch's first token.
    pub p0: usize,
    /// Tokens in the batch.
    pub n_tok: usize,
    /// Sees every matrix product's input (imatrix collection).
    pub obs: Option<&'m dyn MatmulObserver>,
}

impl Ctx<'_, '_> {
    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.model.config
    }

    /// Whether the exact f32 numerics are asked for.
    pub fn exact(&self) -> bool {
        self.model.numerics == Numerics::Exact
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
        matmul(w, x, n, self.model.numerics)
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
        let ctx = Ctx {
            model: m,
            p0: self.n_past,
            n_tok: nt,
            obs,
        };
        for (l, cache) in m.layers.iter().zip(&mut self.cache) {
            let mut h = x.clone();
            rms_norm(&mut h, e, &l.attn_norm, c.rms_eps);
            let mut o = l.attn.forward(&ctx, &h, cache)?;
            if let Some(pn) = &l.attn_post_norm {
                rms_norm(&mut o, e, pn, c.rms_eps);
            }
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let mut h = x.clone();
            rms_norm(&mut h, e, &l.ffn_norm, c.rms_eps);
            let mut d = l.ffn.forward(&ctx, &h)?;
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
        ctx.mm_rows(&m.output, &h, nt - from)
    }
}
