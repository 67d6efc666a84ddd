//! llama (and SmolLM2): RMSNorm, adjacent-pair RoPE, GQA, SwiGLU, optionally tied embeddings.

use crate::config::{Config, Hparams};
use crate::error::Result;
use crate::ops::{Activation, RopeKind};

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    hp.common(RopeKind::Normal, Activation::SwiGlu)
}
