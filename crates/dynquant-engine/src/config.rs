//! Typed hyper-parameters of a decoder-only transformer, shared by every architecture file in
//! [`crate::arch`].

use dynquant_gguf::{Metadata, Value};

use crate::error::{EngineError, Result};
use crate::ops::{Activation, RopeKind, Yarn};

/// Sliding-window attention layout (gemma3, gpt-oss).
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Keys at distance >= `window` from the query are masked.
    pub window: usize,
    /// Per layer: whether it is a sliding-window layer.
    pub layers: Vec<bool>,
    /// RoPE frequency base of the sliding-window layers.
    pub rope_base: f32,
    /// RoPE position scale of the sliding-window layers.
    pub rope_scale: f32,
}

/// Everything the forward pass needs to know about the model's shape and conventions.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `general.architecture`.
    pub arch: String,
    /// Hidden size.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (GQA when smaller than `n_head`).
    pub n_head_kv: usize,
    /// Key (and query) head size.
    pub head_dim_k: usize,
    /// Value head size.
    pub head_dim_v: usize,
    /// Feed-forward hidden size.
    pub n_ff: usize,
    /// Training context length.
    pub n_ctx_train: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE pairing.
    pub rope_kind: RopeKind,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RoPE position scale (1 / linear factor).
    pub rope_scale: f32,
    /// Feed-forward activation.
    pub act: Activation,
    /// Per-head RMSNorm of queries and keys before RoPE (qwen3, gemma3).
    pub qk_norm: bool,
    /// The per-head q/k norms are used when the block has them (glm4moe: GLM-4.5 has them,
    /// GLM-4.5-Air not); `qk_norm` requires them.
    pub qk_norm_optional: bool,
    /// Biases on the q, k, v projections (qwen2).
    pub qkv_bias: bool,
    /// RMSNorm after the attention and feed-forward blocks, before the residual add (gemma3).
    pub post_norms: bool,
    /// Input embeddings multiplied by this (gemma3: sqrt(n_embd)).
    pub embd_scale: Option<f32>,
    /// Queries multiplied by this before attention (gemma3), 1 otherwise.
    pub q_scale: f32,
    /// Attention logit scale (1/sqrt(head_dim_k), or 1 when `q_scale` already holds it).
    pub kq_scale: f32,
    /// Sliding-window attention, if any.
    pub swa: Option<SlidingWindow>,
    /// YaRN RoPE scaling (`rope.scaling.type = yarn`), if any.
    pub yarn: Option<Yarn>,
    /// Multi-head latent attention (deepseek2), if any.
    pub mla: Option<MlaConfig>,
    /// Mixture-of-experts feed-forward, if any (layers with `ffn_gate_inp` use it).
    pub moe: Option<MoeConfig>,
}

/// Multi-head latent attention shapes (deepseek2; llama.cpp's `n_lora_q`, `n_lora_kv`,
/// `n_embd_head_k_mla`, `n_embd_head_v_mla`).
#[derive(Debug, Clone, PartialEq)]
pub struct MlaConfig {
    /// Rank of the query compression (`attn_q_a`, `attn_q_b`); `None`: one `attn_q` (lite models).
    pub q_lora_rank: Option<usize>,
    /// Rank of the compressed key/value latent.
    pub kv_lora_rank: usize,
    /// Per-head query/key dimensions without RoPE.
    pub qk_nope: usize,
    /// Per-head query/key dimensions with RoPE (shared by all heads on the key side).
    pub qk_rope: usize,
    /// Per-head value size after decompression.
    pub v_head: usize,
    /// `attn_k_b` / `attn_v_b` with the latent in the KV cache (`key_length_mla` present);
    /// otherwise the legacy `attn_kv_b`, decompressed before attention.
    pub absorbed: bool,
}

/// How router scores become expert probabilities (`{arch}.expert_gating_func`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    /// Softmax over all experts (1, and the default when the key is absent).
    Softmax,
    /// Element-wise sigmoid (2, DeepSeek-V3).
    Sigmoid,
    /// The raw logits select, and a softmax over the selected experts' logits weights them
    /// (gpt-oss; llama.cpp's `SOFTMAX_WEIGHT`, hard-coded for that architecture).
    SoftmaxWeight,
}

/// Mixture-of-experts hyper-parameters, as llama.cpp's `build_moe_ffn` uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// Routed experts (`expert_count`).
    pub n_expert: usize,
    /// Experts per token (`expert_used_count`).
    pub n_expert_used: usize,
    /// Hidden size of one routed expert.
    pub n_ff_exp: usize,
    /// Hidden size of the shared experts together (0: none).
    pub n_ff_shexp: usize,
    /// Router probabilities.
    pub gating: Gating,
    /// Selected weights divided by their sum.
    pub norm_weights: bool,
    /// Selected weights multiplied by this (1: unscaled).
    pub weights_scale: f32,
    /// Expert groups (`expert_group_count`; 1: no group-limited routing).
    pub n_group: usize,
    /// Groups kept per token (`expert_group_used_count`).
    pub n_group_used: usize,
    /// Leading layers that keep a dense feed-forward (`leading_dense_block_count`).
    pub n_dense_lead: usize,
}

/// Where an architecture's expert conventions differ (llama.cpp hard-codes some per model).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MoeRules {
    /// The per-expert size is `feed_forward_length` (llama's Mixtral layout) rather than
    /// `expert_feed_forward_length` (default `feed_forward_length / expert_used_count`).
    pub expert_ff_is_ff: bool,
    /// `Some(b)`: weight normalization fixed to `b`; `None`: read `expert_weights_norm`
    /// (default false) with `expert_weights_scale` and `expert_gating_func` (deepseek2).
    pub fixed_norm: Option<bool>,
}

/// Reads `{arch}.*` keys with types and checks.
pub(crate) struct Hparams<'a> {
    md: &'a Metadata,
    arch: &'a str,
}

impl<'a> Hparams<'a> {
    pub(crate) fn new(md: &'a Metadata, arch: &'a str) -> Self {
        Hparams { md, arch }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn bad(&self, suffix: &str, reason: &str) -> EngineError {
        EngineError::BadHparam {
            key: self.key(suffix),
            reason: reason.into(),
        }
    }

    pub(crate) fn usize_opt(&self, suffix: &str) -> Result<Option<usize>> {
        match self.md.get(&self.key(suffix)) {
            None => Ok(None),
            Some(Value::Array(_)) => Err(self.bad(suffix, "per-layer arrays are not supported")),
            Some(v) => v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| self.bad(suffix, "not a non-negative integer")),
        }
    }

    pub(crate) fn usize(&self, suffix: &str) -> Result<usize> {
        self.usize_opt(suffix)?
            .ok_or_else(|| self.bad(suffix, "missing"))
    }

    pub(crate) fn f32_opt(&self, suffix: &str) -> Result<Option<f32>> {
        match self.md.get(&self.key(suffix)) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|v| Some(v as f32))
                .ok_or_else(|| self.bad(suffix, "not a number")),
        }
    }

    pub(crate) fn str_opt(&self, suffix: &str) -> Option<&'a str> {
        self.md.get(&self.key(suffix)).and_then(Value::as_str)
    }

    /// The hyper-parameters every architecture shares, with llama-like defaults; the
    /// architecture file adjusts the conventions afterwards.
    pub(crate) fn common(&self, rope_kind: RopeKind, act: Activation) -> Result<Config> {
        let n_embd = self.usize("embedding_length")?;
        let n_layer = self.usize("block_count")?;
        let n_head = self.usize("attention.head_count")?;
        let n_head_kv = self.usize_opt("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(self.bad(
                "attention.head_count_kv",
                &format!("{n_head_kv} does not divide {n_head} query heads"),
            ));
        }
        if n_layer == 0 || n_embd == 0 {
            return Err(self.bad("block_count", "zero-sized model"));
        }
        let head_dim_k = self
            .usize_opt("attention.key_length")?
            .unwrap_or(n_embd / n_head);
        let head_dim_v = self
            .usize_opt("attention.value_length")?
            .unwrap_or(n_embd / n_head);
        let n_rot = self
            .usize_opt("rope.dimension_count")?
            .unwrap_or(head_dim_k);
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return Err(self.bad("rope.dimension_count", "odd or larger than the head"));
        }
        let factor = || -> Result<f32> {
            let f = self.f32_opt("rope.scaling.factor")?.unwrap_or(1.0);
            if f.is_nan() || f <= 0.0 {
                return Err(self.bad("rope.scaling.factor", "not positive"));
            }
            Ok(f)
        };
        let n_ctx_train = self.usize_opt("context_length")?.unwrap_or(4096);
        let (rope_scale, yarn) = match self.str_opt("rope.scaling.type") {
            None | Some("none") => (1.0, None),
            Some("linear") => (1.0 / factor()?, None),
            Some("yarn") => {
                // llama-context.cpp: ext_factor 1; attn_factor = mscale(factor) cancelled by
                // rope_yarn's own 1 + 0.1 ln(factor), times rope.scaling.attn_factor. The betas
                // keep llama.cpp's defaults (32, 1): most architectures do not read them.
                let f = factor()?;
                let scale = 1.0 / f;
                let inv = 1.0 / scale;
                let mscale = if inv <= 1.0 {
                    1.0
                } else {
                    0.1 * inv.ln() + 1.0
                };
                let attn = mscale
                    * (1.0 / (1.0 + 0.1 * inv.ln()))
                    * self.f32_opt("rope.scaling.attn_factor")?.unwrap_or(1.0);
                let yarn = Yarn {
                    ext_factor: 1.0,
                    attn_factor: attn,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    n_ctx_orig: self
                        .usize_opt("rope.scaling.original_context_length")?
                        .unwrap_or(n_ctx_train),
                };
                (scale, Some(yarn))
            }
            Some(other) => {
                return Err(self.bad(
                    "rope.scaling.type",
                    &format!("'{other}' is not supported (none, linear, yarn)"),
                ))
            }
        };
        Ok(Config {
            arch: self.arch.to_string(),
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff: self.usize("feed_forward_length")?,
            n_ctx_train,
            rms_eps: self
                .f32_opt("attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-5),
            rope_kind,
            n_rot,
            rope_base: self.f32_opt("rope.freq_base")?.unwrap_or(10000.0),
            rope_scale,
            act,
            qk_norm: false,
            qk_norm_optional: false,
            qkv_bias: false,
            post_norms: false,
            embd_scale: None,
            q_scale: 1.0,
            kq_scale: 1.0 / (head_dim_k as f32).sqrt(),
            swa: None,
            yarn,
            mla: None,
            moe: None,
        })
    }

    fn bool_opt(&self, suffix: &str) -> Result<Option<bool>> {
        match self.md.get(&self.key(suffix)) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(suffix, "not a boolean")),
        }
    }

    /// The mixture-of-experts hyper-parameters (`None` without `expert_count`), following
    /// llama.cpp's hparams loading (`llama-model.cpp`) and `build_moe_ffn`.
    pub(crate) fn moe(&self, n_ff: usize, rules: MoeRules) -> Result<Option<MoeConfig>> {
        let n_expert = match self.usize_opt("expert_count")? {
            None | Some(0) => return Ok(None),
            Some(n) => n,
        };
        let n_expert_used = self.usize("expert_used_count")?;
        if n_expert_used == 0 || n_expert_used > n_expert {
            return Err(self.bad(
                "expert_used_count",
                &format!("{n_expert_used} is not in 1..={n_expert}"),
            ));
        }
        let n_ff_exp = if rules.expert_ff_is_ff {
            n_ff
        } else {
            self.usize_opt("expert_feed_forward_length")?
                .unwrap_or(n_ff / n_expert_used)
        };
        if n_ff_exp == 0 {
            return Err(self.bad("expert_feed_forward_length", "zero"));
        }
        let n_shared = self.usize_opt("expert_shared_count")?.unwrap_or(0);
        let n_ff_shexp =
            self.usize_opt("expert_shared_feed_forward_length")?
                .unwrap_or(n_ff_exp.checked_mul(n_shared).ok_or_else(|| {
                    self.bad("expert_shared_count", "shared expert size overflows")
                })?);
        let (norm_weights, weights_scale, gating) = match rules.fixed_norm {
            Some(norm) => (norm, 1.0, Gating::Softmax),
            None => {
                let scale = match self.f32_opt("expert_weights_scale")? {
                    // llama.cpp skips the scaling for 0 and 1.
                    None => 1.0,
                    Some(0.0) => 1.0,
                    Some(s) if s.is_finite() => s,
                    Some(_) => return Err(self.bad("expert_weights_scale", "not finite")),
                };
                let gating = match self.usize_opt("expert_gating_func")? {
                    None | Some(0) | Some(1) => Gating::Softmax,
                    Some(2) => Gating::Sigmoid,
                    Some(g) => {
                        return Err(self.bad(
                            "expert_gating_func",
                            &format!("{g} is not supported (1 softmax, 2 sigmoid)"),
                        ))
                    }
                };
                let norm = self.bool_opt("expert_weights_norm")?.unwrap_or(false);
                (norm, scale, gating)
            }
        };
        let n_group = self.usize_opt("expert_group_count")?.unwrap_or(1).max(1);
        let n_group_used = self
            .usize_opt("expert_group_used_count")?
            .unwrap_or(n_group);
        if n_group > 1
            && (n_expert % n_group != 0
                || n_expert / n_group < 2
                || n_group_used == 0
                || n_group_used > n_group
                || n_expert / n_group * n_group_used < n_expert_used)
        {
            return Err(self.bad(
                "expert_group_count",
                &format!(
                    "{n_group} groups ({n_group_used} used) do not fit {n_expert} experts, {n_expert_used} used"
                ),
            ));
        }
        Ok(Some(MoeConfig {
            n_expert,
            n_expert_used,
            n_ff_exp,
            n_ff_shexp,
            gating,
            norm_weights,
            weights_scale,
            n_group,
            n_group_used,
            n_dense_lead: self.usize_opt("leading_dense_block_count")?.unwrap_or(0),
        }))
    }
}
