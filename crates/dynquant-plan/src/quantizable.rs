//! Which tensors may be quantized at all: llama.cpp's `tensor_allows_quantization`
//! (`src/llama-quant.cpp` @80fb11ac). One list, used by the recipe planner and by llama.cpp's
//! mixes alike, so a recipe and a mix never disagree about what keeps its source type.

/// Substrings that mark tensors llama.cpp never quantizes although they are matrices named
/// `*weight`: small or shape-sensitive parts of other architectures (RWKV time mixing, Mamba
/// and LFM convolutions, Gemma 3n's AltUp/Laurel, positional and vision/audio parts).
const NEVER_QUANTIZED: &[&str] = &[
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Whole names llama.cpp never quantizes (BERT's positional embeddings and token types).
const NEVER_QUANTIZED_NAMES: &[&str] = &["position_embd.weight", "token_types.weight"];

/// `ggml_n_dims`: dimensions up to the last one that is not 1 (at least 1).
fn n_dims(shape: &[u64]) -> usize {
    shape.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

/// Why a tensor of `name` and `shape` (ggml order) keeps its source type, or `None` when it
/// may be quantized.
pub fn keep_reason(name: &str, shape: &[u64]) -> Option<&'static str> {
    if n_dims(shape) < 2 {
        return Some("1-D tensors are never quantized");
    }
    if !name.ends_with("weight") {
        return Some("only weights are quantized");
    }
    if name.contains("_norm.weight") {
        return Some("norms stay in full precision");
    }
    if name.contains("ffn_gate_inp.weight") {
        return Some("the MoE router stays in full precision");
    }
    if NEVER_QUANTIZED.iter().any(|s| name.contains(s)) || NEVER_QUANTIZED_NAMES.contains(&name) {
        return Some(
            "llama.cpp never quantizes this tensor (small, positional or convolution weights)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_rules() {
        let kept = |n: &str, s: &[u64]| keep_reason(n, s).is_some();
        assert!(kept("blk.0.attn_norm.weight", &[512]));
        // Trailing dimensions of 1 do not count (ggml_n_dims).
        assert!(kept("blk.0.ffn_gate_inp_shexp.weight", &[512, 1]));
        assert!(kept("blk.0.attn_q.bias", &[512, 2]));
        assert!(kept("blk.0.attn_q_a_norm.weight", &[512, 2]));
        assert!(kept("blk.0.ffn_gate_inp.weight", &[512, 8]));
        assert!(kept("blk.0.time_mix_w1.weight", &[512, 8]));
        assert!(kept("position_embd.weight", &[512, 8]));
        assert!(!kept("blk.0.ffn_down_exps.weight", &[512, 8, 4]));
        assert!(!kept("blk.0.attn_k_b.weight", &[128, 512, 16]));
        assert!(!kept("token_embd.weight", &[512, 100]));
    }
}
