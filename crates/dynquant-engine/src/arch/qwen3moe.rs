//! qwen3moe: qwen3's attention (NeoX RoPE, per-head q/k norms) with a mixture-of-experts
//! feed-forward in every layer: softmax routing, the selected weights always renormalized
//! (llama.cpp passes `norm_w = true` for this architecture whatever the checkpoint's
//! `norm_topk_prob`, src/models/qwen3moe.cpp), per-expert size
//! `expert_feed_forward_length` (default `feed_forward_length / expert_used_count`).

use crate::config::{Config, Hparams, MoeRules};
use crate::error::{EngineError, Result};
use crate::ops::{Activation, RopeKind};

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    let mut c = hp.common(RopeKind::Neox, Activation::SwiGlu)?;
    c.qk_norm = true;
    c.moe = hp.moe(
        c.n_ff,
        MoeRules {
            expert_ff_is_ff: false,
            fixed_norm: Some(true),
        },
    )?;
    if c.moe.is_none() {
        return Err(EngineError::BadHparam {
            key: "qwen3moe.expert_count".into(),
            reason: "missing".into(),
        });
    }
    Ok(c)
}
