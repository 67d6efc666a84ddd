//! Tensor inventories: a model's tensor list (names, shapes, source types) and architecture
//! keys without data. From a GGUF header, or derived from a Hugging Face `config.json` so a
//! user can plan a 700 GB model before downloading it.
//!
//! DeepSeek-V3/R1 (`model_type` `deepseek_v3`/`deepseek_v2`): every tensor's real name, shape
//! and source type, as llama.cpp's converter would write them.
//!
//! Names and shapes follow llama.cpp's converter (`docs/formats.md` §12): legacy files hold
//! `attn_kv_b` (1025 tensors for R1), MLA files `attn_k_b` + `attn_v_b` (1086 tensors). MTP
//! layers (index >= `num_hidden_layers`) are dropped, as the converter drops them. Types are
//! those of a BF16 conversion: F32 for norms, the router and `exp_probs_b`, BF16 otherwise.

use std::path::Path;

use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{keys, Metadata, TensorInfo, Value};
use serde::Deserialize;

use dynquant_gguf::{GgufError, GgufModel};

/// deepseek2 attention layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlaLayout {
    /// `attn_k_b` + `attn_v_b` (llama.cpp PR #12801 and later).
    Mla,
    /// `attn_kv_b` (files converted before PR #12801).
    Legacy,
}

/// Errors building an inventory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// Reading a GGUF header.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Reading a file.
    #[error("read {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A config that cannot be used.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A tensor shape that is not valid.
    #[error("bad tensor shape: {0}")]
    Shape(String),
}

type Result<T, E = InventoryError> = std::result::Result<T, E>;

/// The fields of a DeepSeek-V3/R1 `config.json` the inventory needs.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct DeepseekConfig {
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub moe_intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub first_k_dense_replace: u64,
    pub num_attention_heads: u64,
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
    pub n_routed_experts: u64,
    pub n_shared_experts: u64,
    pub num_experts_per_tok: u64,
    pub n_group: Option<u64>,
    pub topk_group: Option<u64>,
    pub vocab_size: u64,
    pub max_position_embeddings: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub routed_scaling_factor: Option<f64>,
    pub tie_word_embeddings: Option<bool>,
}

impl DeepseekConfig {
    /// Reads `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| InventoryError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|e| InventoryError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// A model's tensor list and architecture metadata, without data.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Architecture keys (`deepseek2.*`, `general.architecture`).
    pub metadata: Metadata,
    /// Tensors with real shapes and source types (offsets 0).
    pub tensors: Vec<TensorInfo>,
}

impl Inventory {
    /// The inventory of a GGUF model (header only; no tensor data is read).
    pub fn from_gguf(model: &GgufModel) -> Self {
        Inventory {
            metadata: model.merged_metadata(),
            tensors: model.tensors().map(|t| t.info.clone()).collect(),
        }
    }

    /// Architecture name (`general.architecture`).
    pub fn architecture(&self) -> Option<&str> {
        self.metadata
            .get(keys::general::ARCHITECTURE)
            .and_then(Value::as_str)
    }

    /// Total parameters.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::n_elements).sum()
    }
}

/// The inventory of a DeepSeek-V3/R1 model in the given attention layout.
pub fn deepseek_inventory(c: &DeepseekConfig, layout: MlaLayout) -> Result<Inventory> {
    let e = c.hidden_size;
    let n_head = c.num_attention_heads;
    let (nope, rope, v) = (c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim);
    let mut md = Metadata::new();
    md.set(
        keys::general::ARCHITECTURE,
        Value::String("deepseek2".into()),
    );
    let a = |k: &str| format!("deepseek2.{k}");
    let u = |x: u64| Value::U32(x as u32);
    md.set(a("block_count"), u(c.num_hidden_layers));
    md.set(a("context_length"), u(c.max_position_embeddings));
    md.set(a("embedding_length"), u(e));
    md.set(a("feed_forward_length"), u(c.intermediate_size));
    md.set(a("attention.head_count"), u(n_head));
    md.set(
        a("attention.layer_norm_rms_epsilon"),
        Value::F32(c.rms_norm_eps as f32),
    );
    md.set(a("rope.freq_base"), Value::F32(c.rope_theta as f32));
    md.set(a("expert_count"), u(c.n_routed_experts));
    md.set(a("expert_used_count"), u(c.num_experts_per_tok));
    md.set(a("expert_shared_count"), u(c.n_shared_experts));
    md.set(a("expert_feed_forward_length"), u(c.moe_intermediate_size));
    md.set(a("leading_dense_block_count"), u(c.first_k_dense_replace));
    md.set(a("vocab_size"), u(c.vocab_size));
    md.set(a("attention.kv_lora_rank"), u(c.kv_lora_rank));
    if let Some(q) = c.q_lora_rank {
        md.set(a("attention.q_lora_rank"), u(q));
    }
    if let (Some(g), Some(gu)) = (c.n_group, c.topk_group) {
        md.set(a("expert_group_count"), u(g));
        md.set(a("expert_group_used_count"), u(gu));
    }
    if let Some(s) = c.routed_scaling_factor {
        md.set(a("expert_weights_scale"), Value::F32(s as f32));
    }
    md.set(a("rope.dimension_count"), u(rope));
    match layout {
        MlaLayout::Mla => {
            md.set(a("attention.head_count_kv"), u(1));
            md.set(a("attention.key_length"), u(c.kv_lora_rank + rope));
            md.set(a("attention.value_length"), u(c.kv_lora_rank));
            md.set(a("attention.key_length_mla"), u(nope + rope));
            md.set(a("attention.value_length_mla"), u(v));
        }
        MlaLayout::Legacy => {
            md.set(a("attention.head_count_kv"), u(n_head));
            md.set(a("attention.key_length"), u(nope + rope));
            md.set(a("attention.value_length"), u(v));
        }
    }

    let bf16 = GgmlType::BF16;
    let f32 = GgmlType::F32;
    let mut t = Vec::new();
    let mut push = |name: String, shape: Vec<u64>, ty: GgmlType| -> Result<()> {
        let info =
            TensorInfo::new(name, shape, ty).map_err(|e| InventoryError::Shape(e.to_string()))?;
        t.push(info);
        Ok(())
    };
    push("token_embd.weight".into(), vec![e, c.vocab_size], bf16)?;
    push("output_norm.weight".into(), vec![e], f32)?;
    if !c.tie_word_embeddings.unwrap_or(false) {
        push("output.weight".into(), vec![e, c.vocab_size], bf16)?;
    }
    let (n_exp, ff_exp) = (c.n_routed_experts, c.moe_intermediate_size);
    for l in 0..c.num_hidden_layers {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        push(b("attn_norm"), vec![e], f32)?;
        match c.q_lora_rank {
            Some(q) => {
                push(b("attn_q_a"), vec![e, q], bf16)?;
                push(b("attn_q_a_norm"), vec![q], f32)?;
                push(b("attn_q_b"), vec![q, n_head * (nope + rope)], bf16)?;
            }
            None => push(b("attn_q"), vec![e, n_head * (nope + rope)], bf16)?,
        }
        push(b("attn_kv_a_mqa"), vec![e, c.kv_lora_rank + rope], bf16)?;
        push(b("attn_kv_a_norm"), vec![c.kv_lora_rank], f32)?;
        match layout {
            MlaLayout::Legacy => push(
                b("attn_kv_b"),
                vec![c.kv_lora_rank, n_head * (nope + v)],
                bf16,
            )?,
            MlaLayout::Mla => {
                push(b("attn_k_b"), vec![nope, c.kv_lora_rank, n_head], bf16)?;
                push(b("attn_v_b"), vec![c.kv_lora_rank, v, n_head], bf16)?;
            }
        }
        push(b("attn_output"), vec![n_head * v, e], bf16)?;
        push(b("ffn_norm"), vec![e], f32)?;
        if l < c.first_k_dense_replace {
            push(b("ffn_gate"), vec![e, c.intermediate_size], bf16)?;
            push(b("ffn_up"), vec![e, c.intermediate_size], bf16)?;
            push(b("ffn_down"), vec![c.intermediate_size, e], bf16)?;
        } else {
            push(b("ffn_gate_inp"), vec![e, n_exp], f32)?;
            push(format!("blk.{l}.exp_probs_b.bias"), vec![n_exp], f32)?;
            push(b("ffn_gate_exps"), vec![e, ff_exp, n_exp], bf16)?;
            push(b("ffn_up_exps"), vec![e, ff_exp, n_exp], bf16)?;
            push(b("ffn_down_exps"), vec![ff_exp, e, n_exp], bf16)?;
            let sh = ff_exp * c.n_shared_experts;
            push(b("ffn_gate_shexp"), vec![e, sh], bf16)?;
            push(b("ffn_up_shexp"), vec![e, sh], bf16)?;
            push(b("ffn_down_shexp"), vec![sh, e], bf16)?;
        }
    }
    Ok(Inventory {
        metadata: md,
        tensors: t,
    })
}

/// The inventory of a Hugging Face model from its `config.json` alone (a folder holding one,
/// or the file): tensor names and shapes as llama.cpp's converter writes them, source types
/// from `torch_dtype` (1-D tensors and MoE routers F32, as the converter stores them).
/// Supported `model_type`s: llama, mistral, qwen2, qwen3, qwen3_moe, mixtral, deepseek_v2,
/// deepseek_v3 (MLA layout; see [`deepseek_inventory`] for the legacy one).
pub fn from_hf_config(path: &Path) -> Result<Inventory> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| InventoryError::Io {
        path: file.clone(),
        source: e,
    })?;
    let c: serde_json::Value = serde_json::from_str(&text).map_err(|e| InventoryError::Config {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    let bad = |reason: String| InventoryError::Config {
        path: file.clone(),
        reason,
    };
    let model_type = c["model_type"].as_str().unwrap_or("").to_string();
    if model_type.starts_with("deepseek_v") {
        let cfg: DeepseekConfig =
            serde_json::from_value(c.clone()).map_err(|e| bad(e.to_string()))?;
        return deepseek_inventory(&cfg, MlaLayout::Mla);
    }
    let arch = match model_type.as_str() {
        "llama" | "mistral" | "mixtral" => "llama",
        "qwen2" => "qwen2",
        "qwen3" => "qwen3",
        "qwen3_moe" => "qwen3moe",
        other => return Err(bad(format!("model_type '{other}' is not supported yet"))),
    };
    let num = |k: &str| {
        c[k].as_u64()
            .ok_or_else(|| bad(format!("config lacks '{k}'")))
    };
    let h = num("hidden_size")?;
    let n_layer = num("num_hidden_layers")?;
    let n_head = num("num_attention_heads")?;
    let n_kv = c["num_key_value_heads"].as_u64().unwrap_or(n_head);
    let head_dim = c["head_dim"].as_u64().unwrap_or(h / n_head.max(1));
    let vocab = num("vocab_size")?;
    let tied = c["tie_word_embeddings"].as_bool().unwrap_or(false);
    let wt = match c["torch_dtype"].as_str().unwrap_or("bfloat16") {
        "float32" => GgmlType::F32,
        "float16" => GgmlType::F16,
        _ => GgmlType::BF16,
    };
    let (n_expert, ff_expert) = match model_type.as_str() {
        "mixtral" => (num("num_local_experts")?, num("intermediate_size")?),
        "qwen3_moe" => (num("num_experts")?, num("moe_intermediate_size")?),
        _ => (0, 0),
    };
    let mut md = Metadata::new();
    md.set(keys::general::ARCHITECTURE, Value::String(arch.into()));
    let a = |k: &str| format!("{arch}.{k}");
    let u = |x: u64| Value::U32(x as u32);
    md.set(a("block_count"), u(n_layer));
    md.set(a("embedding_length"), u(h));
    md.set(a("attention.head_count"), u(n_head));
    md.set(a("attention.head_count_kv"), u(n_kv));
    md.set(a("vocab_size"), u(vocab));
    if n_expert > 0 {
        md.set(a("expert_count"), u(n_expert));
        md.set(a("expert_used_count"), u(num("num_experts_per_tok")?));
    }
    let f32t = GgmlType::F32;
    let mut t = Vec::new();
    let mut push = |name: String, shape: Vec<u64>, ty: GgmlType| -> Result<()> {
        t.push(TensorInfo::new(name, shape, ty).map_err(|e| InventoryError::Shape(e.to_string()))?);
        Ok(())
    };
    push("token_embd.weight".into(), vec![h, vocab], wt)?;
    push("output_norm.weight".into(), vec![h], f32t)?;
    if !tied {
        push("output.weight".into(), vec![h, vocab], wt)?;
    }
    let (q, kv) = (n_head * head_dim, n_kv * head_dim);
    for l in 0..n_layer {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        push(b("attn_norm"), vec![h], f32t)?;
        push(b("attn_q"), vec![h, q], wt)?;
        push(b("attn_k"), vec![h, kv], wt)?;
        push(b("attn_v"), vec![h, kv], wt)?;
        push(b("attn_output"), vec![q, h], wt)?;
        if arch == "qwen2" {
            for (n, len) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
                push(format!("blk.{l}.{n}.bias"), vec![len], f32t)?;
            }
        }
        if arch.starts_with("qwen3") {
            push(b("attn_q_norm"), vec![head_dim], f32t)?;
            push(b("attn_k_norm"), vec![head_dim], f32t)?;
        }
        push(b("ffn_norm"), vec![h], f32t)?;
        if n_expert > 0 {
            push(b("ffn_gate_inp"), vec![h, n_expert], f32t)?;
            push(b("ffn_gate_exps"), vec![h, ff_expert, n_expert], wt)?;
            push(b("ffn_up_exps"), vec![h, ff_expert, n_expert], wt)?;
            push(b("ffn_down_exps"), vec![ff_expert, h, n_expert], wt)?;
        } else {
            let ff = num("intermediate_size")?;
            push(b("ffn_gate"), vec![h, ff], wt)?;
            push(b("ffn_up"), vec![h, ff], wt)?;
            push(b("ffn_down"), vec![ff, h], wt)?;
        }
    }
    Ok(Inventory {
        metadata: md,
        tensors: t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r1() -> DeepseekConfig {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/configs/deepseek-r1/config.json");
        DeepseekConfig::read(&p).unwrap()
    }

    #[test]
    fn r1_inventory_matches_published_counts_and_parameters() {
        let legacy = deepseek_inventory(&r1(), MlaLayout::Legacy).unwrap();
        let mla = deepseek_inventory(&r1(), MlaLayout::Mla).unwrap();
        // llama.cpp issues #13305/#13916: 1025 tensors (legacy) and 1086 (MLA).
        assert_eq!(legacy.tensors.len(), 1025);
        assert_eq!(mla.tensors.len(), 1086);
        // docs/dynamic-quants.md §8.3: 671.03B parameters; both layouts hold the same count.
        let n = legacy.n_params();
        assert!((n as f64 / 1e9 - 671.03).abs() < 0.01, "{n}");
        assert_eq!(n, mla.n_params());
        let k_b = mla
            .tensors
            .iter()
            .find(|t| t.name == "blk.0.attn_k_b.weight")
            .unwrap();
        assert_eq!(k_b.shape, vec![128, 512, 128]);
    }
}
