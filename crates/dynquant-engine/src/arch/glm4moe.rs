//! glm4moe (GLM-4.5 / 4.6): grouped-query attention with q/k/v biases, per-head q/k norms
//! when the blocks have them (GLM-4.5 yes, GLM-4.5-Air no), NeoX RoPE on the first
//! `rope.dimension_count` dimensions of each head (half of it); the pre-feed-forward norm is
//! stored as `post_attention_norm`; `leading_dense_block_count` dense blocks, then experts with
//! sigmoid routing (the default when `expert_gating_func` is absent), the `exp_probs_b`
//! selection bias, weight normalization and scale as the file says, plus the shared expert.
//! The last `nextn_predict_layers` blocks are the NextN / multi-token-prediction head:
//! llama.cpp does not run them when it evaluates the model (src/models/glm4-moe.cpp), and
//! neither does this engine (they are not loaded).

use crate::config::{Config, Gating, Hparams, MoeRules};
use crate::error::{EngineError, Result};
use crate::ops::{Activation, RopeKind};

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    let mut c = hp.common(RopeKind::Neox, Activation::SwiGlu)?;
    c.qkv_bias = true;
    c.qk_norm_optional = true;
    let nextn = hp.usize_opt("nextn_predict_layers")?.unwrap_or(0);
    if nextn >= c.n_layer {
        return Err(EngineError::BadHparam {
            key: "glm4moe.nextn_predict_layers".into(),
            reason: format!("{nextn} of {} blocks leaves no decoder block", c.n_layer),
        });
    }
    c.n_layer -= nextn;
    let mut moe = hp
        .moe(
            c.n_ff,
            MoeRules {
                expert_ff_is_ff: false,
                fixed_norm: None,
            },
        )?
        .ok_or_else(|| EngineError::BadHparam {
            key: "glm4moe.expert_count".into(),
            reason: "missing".into(),
        })?;
    // llama.cpp: an absent (or 0) gating function means sigmoid for this architecture.
    if matches!(hp.usize_opt("expert_gating_func")?, None | Some(0)) {
        moe.gating = Gating::Sigmoid;
    }
    c.moe = Some(moe);
    Ok(c)
}
