//! gemma3: NeoX RoPE, GeGLU, q/k norms, post-attention and post-FFN norms, embeddings scaled
//! by sqrt(n_embd), queries scaled by 1/sqrt(head_dim), and sliding-window attention on five
//! of every six layers with their own RoPE base (llama.cpp: src/models/gemma3.cpp and
//! llama-model.cpp's LLM_ARCH_GEMMA3 hyper-parameters; the converter already stores the norm
//! weights as 1 + w).

use crate::config::{Config, Hparams, SlidingWindow};
use crate::error::Result;
use crate::ops::{Activation, RopeKind};

/// Every sixth layer attends globally (llama.cpp: `hparams.set_swa_pattern(6)`).
const SWA_PATTERN: usize = 6;
/// RoPE base of the sliding-window layers (llama.cpp: `rope_freq_base_train_swa = 10000`).
const SWA_ROPE_BASE: f32 = 10000.0;

pub(super) fn config(hp: &Hparams<'_>) -> Result<Config> {
    let mut c = hp.common(RopeKind::Neox, Activation::GeGlu)?;
    c.qk_norm = true;
    c.post_norms = true;
    c.embd_scale = Some((c.n_embd as f32).sqrt());
    c.q_scale = 1.0 / (c.head_dim_k as f32).sqrt();
    c.kq_scale = 1.0;
    if let Some(window) = hp.usize_opt("attention.sliding_window")? {
        c.swa = Some(SlidingWindow {
            window,
            layers: (0..c.n_layer)
                .map(|il| il % SWA_PATTERN < SWA_PATTERN - 1)
                .collect(),
            rope_base: SWA_ROPE_BASE,
            rope_scale: 1.0,
        });
    }
    Ok(c)
}
