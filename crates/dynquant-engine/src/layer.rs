//! One decoder block: RMSNorm, attention, optional post-norm and residual add, then the same
//! around the feed-forward part. The attention and feed-forward families are enums over the
//! block kinds ([`crate::gqa`], [`crate::mla`], [`crate::ffn`], [`crate::moe`]).

use crate::attention::KvCache;
use crate::block::BlockCtx;
use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::ffn::DenseFfn;
use crate::gqa::GqaAttention;
use crate::loader::Loader;
use crate::mla::MlaAttention;
use crate::moe::MoeFfn;
use crate::ops::{add_assign, rms_norm};
use crate::weight::Weight;

/// The weights of one block: attention and feed-forward parts with their norms.
#[derive(Debug)]
pub(crate) struct Layer<'a> {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) attn: Attention<'a>,
    pub(crate) attn_post_norm: Option<Vec<f32>>,
    pub(crate) ffn_norm: Vec<f32>,
    pub(crate) ffn: FeedForward<'a>,
    pub(crate) ffn_post_norm: Option<Vec<f32>>,
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

    /// An empty KV cache for this attention.
    pub(crate) fn new_cache(&self, c: &Config) -> KvCache {
        match self {
            Attention::Gqa(_) => {
                KvCache::new(c.n_head_kv * c.head_dim_k, c.n_head_kv * c.head_dim_v)
            }
            Attention::Mla(a) => a.new_cache(c),
        }
    }

    /// Attention of the normed rows `h` of every sequence of the batch (`ctx.spans`), each
    /// over its own cache (`caches[i]` for span `i`).
    fn forward(
        &self,
        ctx: &BlockCtx<'_>,
        h: &[f32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<f32>> {
        if caches.len() != ctx.spans.len() {
            return Err(EngineError::Invalid(format!(
                "{} sequences with {} caches",
                ctx.spans.len(),
                caches.len()
            )));
        }
        match self {
            Attention::Gqa(a) => a.forward(ctx, h, caches),
            Attention::Mla(a) => {
                if let [cache] = caches {
                    return a.forward(ctx, h, cache);
                }
                // one sequence at a time: MLA's products stay per sequence
                let e = ctx.config.n_embd;
                let mut out = Vec::new();
                let mut row = 0;
                for (span, cache) in ctx.spans.iter().zip(caches.iter_mut()) {
                    let rows = &h[row * e..(row + span.n) * e];
                    out.extend(a.forward(&ctx.one_sequence(span), rows, cache)?);
                    row += span.n;
                }
                Ok(out)
            }
        }
    }

    fn weights(&self) -> Vec<&Weight<'a>> {
        match self {
            Attention::Gqa(a) => a.weights(),
            Attention::Mla(a) => a.weights(),
        }
    }
}

/// The feed-forward weights of one block.
#[derive(Debug)]
pub(crate) enum FeedForward<'a> {
    /// Gated linear unit: `down(act(gate(x)) * up(x))`.
    Dense(DenseFfn<'a>),
    /// Routed experts (and shared experts), see [`crate::moe`].
    Moe(MoeFfn<'a>),
}

impl<'a> FeedForward<'a> {
    /// Experts when the block has a router (`ffn_gate_inp`) and is not one of the leading
    /// dense blocks, a dense GLU otherwise.
    pub(crate) fn load(ld: &Loader<'a>, c: &Config, il: usize) -> Result<Self> {
        let dense_lead = c.moe.as_ref().map_or(0, |m| m.n_dense_lead);
        if il >= dense_lead && ld.find(&format!("blk.{il}.ffn_gate_inp.weight")).is_some() {
            return MoeFfn::load(ld, c, il).map(FeedForward::Moe);
        }
        DenseFfn::load(ld, c, il, "", c.n_ff).map(FeedForward::Dense)
    }

    /// Matrix weights (for experts: one 2-D view per expert, all named after the 3-D tensor).
    pub(crate) fn weights(&self) -> Vec<&Weight<'a>> {
        match self {
            FeedForward::Dense(d) => d.weights(),
            FeedForward::Moe(m) => m.weights(),
        }
    }

    /// The block's feed-forward output (before the post norm and residual) of the normed `h`.
    pub(crate) fn forward(&self, ctx: &BlockCtx<'_>, h: &[f32]) -> Result<Vec<f32>> {
        match self {
            FeedForward::Dense(d) => d.forward(ctx, h),
            FeedForward::Moe(m) => m.forward(ctx, h),
        }
    }
}

/// The pre-feed-forward norm's tensor: gpt-oss and glm4moe store it as `post_attention_norm`
/// (the Hugging Face `post_attention_layernorm`, which normalizes the feed-forward input there).
fn ffn_norm_name(c: &Config) -> &'static str {
    if c.arch == "gpt-oss" || c.arch == "glm4moe" {
        "post_attention_norm.weight"
    } else {
        "ffn_norm.weight"
    }
}

impl<'a> Layer<'a> {
    /// Binds block `il` (`rope_freqs`: the model's RoPE frequency factors, if any).
    pub(crate) fn load(
        ld: &Loader<'a>,
        c: &Config,
        il: usize,
        rope_freqs: &Option<Vec<f32>>,
    ) -> Result<Self> {
        let n = |s: &str| format!("blk.{il}.{s}");
        let opt_norm = |s: &str, on: bool| -> Result<Option<Vec<f32>>> {
            if on {
                ld.vector(&n(s), c.n_embd).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Layer {
            attn_norm: ld.vector(&n("attn_norm.weight"), c.n_embd)?,
            attn: Attention::load(ld, c, il, rope_freqs)?,
            attn_post_norm: opt_norm("post_attention_norm.weight", c.post_norms)?,
            ffn_norm: ld.vector(&n(ffn_norm_name(c)), c.n_embd)?,
            ffn: FeedForward::load(ld, c, il)?,
            ffn_post_norm: opt_norm("post_ffw_norm.weight", c.post_norms)?,
        })
    }

    /// Matrix weights (for experts and per-head matrices: one 2-D view each).
    pub(crate) fn weights(&self) -> Vec<&Weight<'a>> {
        let mut w = self.attn.weights();
        w.extend(self.ffn.weights());
        w
    }

    /// Runs the `ctx.n_tok` rows of the residual stream `x` through the block, in place; the
    /// rows of sequence `ctx.spans[i]` attend over `caches[i]`.
    pub(crate) fn forward(
        &self,
        ctx: &BlockCtx<'_>,
        x: &mut [f32],
        caches: &mut [&mut KvCache],
    ) -> Result<()> {
        let c = ctx.config;
        let e = c.n_embd;
        let mut h = x.to_vec();
        rms_norm(&mut h, e, &self.attn_norm, c.rms_eps);
        let mut o = self.attn.forward(ctx, &h, caches)?;
        if let Some(pn) = &self.attn_post_norm {
            rms_norm(&mut o, e, pn, c.rms_eps);
        }
        add_assign(x, &o);
        let mut h = x.to_vec();
        rms_norm(&mut h, e, &self.ffn_norm, c.rms_eps);
        let mut d = self.ffn.forward(ctx, &h)?;
        if let Some(pn) = &self.ffn_post_norm {
            rms_norm(&mut d, e, pn, c.rms_eps);
        }
        add_assign(x, &d);
        Ok(())
    }
}
