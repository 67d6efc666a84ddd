//! gpt-oss: NeoX RoPE (YaRN), biased q/k/v/o projections, per-head attention sinks, a
//! sliding window on every other layer (the first included; llama.cpp: `load_swa_pattern(ml,
//! 2)`, same RoPE base unless `rope.freq_base_swa` says otherwise), the pre-FFN norm stored as
//! `post_attention_norm`, and experts in every layer: a biased router whose raw logits select
//! the experts and whose softmax over the selected ones weights them, biased expert products
//! and the clamped SwiGLU (llama.cpp: src/models/openai-moe.cpp, `build_moe_ffn` with
//! `LLM_FFN_SWIGLU_OAI_MOE` and `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT`).

use crate::config::{Config, Gating, Hparams, MoeRules, SlidingWindow};
use crate::error::{EngineError, Result};
use crate::ops::{Activation, RopeKind};

/// Every second layer attends globally, the others within the window.
const SWA_PATTERN: usize = 2;

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    let mut c = hp.common(RopeKind::Neox, Activation::SwigluOai)?;
    let mut moe = hp
        .moe(
            c.n_ff,
            MoeRules {
                expert_ff_is_ff: false,
                fixed_norm: Some(false),
            },
        )?
        .ok_or_else(|| EngineError::BadHparam {
            key: "gpt-oss.expert_count".into(),
            reason: "missing".into(),
        })?;
    moe.gating = Gating::SoftmaxWeight;
    c.moe = Some(moe);
    let window = hp.usize("attention.sliding_window")?;
    c.swa = Some(SlidingWindow {
        window,
        layers: (0..c.n_layer)
            .map(|il| il % SWA_PATTERN < SWA_PATTERN - 1)
            .collect(),
        rope_base: hp.f32_opt("rope.freq_base_swa")?.unwrap_or(c.rope_base),
        rope_scale: c.rope_scale,
    });
    Ok(c)
}
