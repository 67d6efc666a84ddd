//! From `config.json` and the checkpoint's tensor names to GGUF: the architecture name,
//! hyper-parameters, tensor names and layout transforms, as llama.cpp's converter writes them.
//!
//! The generic parts live here: the hyper-parameters every text model gets
//! (`TextModel.set_gguf_parameters`), the name map shared by the llama family, expert stacking
//! and output ordering. Each architecture is one small file adding its own keys and rules.

mod checkpoint;
mod deepseek;
mod gemma3;
mod glm4moe;
mod gpt_oss;
mod llama;
mod mixtral;
mod qwen2;
mod qwen3;
mod qwen3moe;

pub(crate) use checkpoint::{CheckpointTensors, ConfigCheckpoint};

use dynquant_gguf::{Metadata, Value};
use dynquant_plan::MlaLayout;

use crate::config::Config;
use crate::error::{HfError, Result};

/// How an output tensor is made from its source(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Rows as stored (one source, or several stacked along a new first dimension).
    None,
    /// llama.cpp's `LlamaModel.permute` of q/k rows for its RoPE layout: within each of
    /// `n_head` heads the two halves of the rows are interleaved.
    RopePermute {
        /// Heads (KV heads for k).
        n_head: usize,
    },
    /// DeepSeek `kv_b_proj` [H*(nope+v), L] -> `attn_k_b` [H, L, nope] (the k part, transposed).
    KvbK {
        /// Heads.
        n_head: usize,
        /// qk_nope_head_dim.
        nope: usize,
        /// v_head_dim.
        v: usize,
    },
    /// DeepSeek `kv_b_proj` -> `attn_v_b` [H, v, L] (the v part).
    KvbV {
        /// Heads.
        n_head: usize,
        /// qk_nope_head_dim.
        nope: usize,
        /// v_head_dim.
        v: usize,
    },
    /// Gemma's RMSNorm weights, stored as offsets from 1: 1 is added (in f32).
    AddOne,
    /// Every other column from `parity` (gpt-oss's interleaved `gate_up_proj_bias`: gate at even
    /// columns, up at odd); the row halves.
    Deinterleave {
        /// 0: even columns, 1: odd.
        parity: usize,
    },
    /// An MXFP4 `*_blocks` [E, R, nb, 16] / `*_scales` [E, R, nb] pair (sources in that order)
    /// repacked into ggml MXFP4 blocks [E, R', nb*32]: the E8M0 scale byte, then the 32 E2M1
    /// nibbles reordered from consecutive pairs to ggml's element j / j + 16 per byte. With
    /// `parity`, only rows `parity`, `parity + 2`, ... (gpt-oss's interleaved gate/up).
    Mxfp4 {
        /// `None`: every row; `Some(p)`: every other row from `p`.
        parity: Option<usize>,
    },
}

/// How `tokenizer.ggml.add_space_prefix` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpacePrefix {
    /// Not written.
    Absent,
    /// From `tokenizer_config.json`'s `add_prefix_space`, before the vocabulary (llama family).
    FromConfig,
    /// `false`, after the vocabulary, when it is SentencePiece (Gemma).
    OffAfterSpm,
}

/// One tensor of the GGUF output.
#[derive(Debug, Clone)]
pub struct OutTensor {
    /// GGUF name.
    pub name: String,
    /// Checkpoint tensors it is made of (several: experts stacked in order).
    pub sources: Vec<String>,
    /// Layout transform.
    pub transform: Transform,
    /// Result shape, PyTorch order (rows first; reversed in GGUF).
    pub shape: Vec<usize>,
    /// Values computed by the converter itself (no source), e.g. Llama 3's `rope_freqs`.
    pub values: Option<Vec<f32>>,
}

impl OutTensor {
    /// Row length (last dimension).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    /// Rows.
    pub fn n_rows(&self) -> usize {
        self.numel() / self.row_len().max(1)
    }
    /// Elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether llama.cpp's converter always stores it as F32 whatever the output type:
    /// 1-D tensors, norms, the MoE routers, and anything not ending in `.weight`.
    pub fn forced_f32(&self) -> bool {
        self.shape.len() <= 1
            || self.name.ends_with("_norm.weight")
            || self.name.contains(".ffn_gate_inp.")
            || self.name.contains(".ffn_gate_inp_shexp.")
            || !self.name.ends_with(".weight")
    }
}

/// What one checkpoint tensor becomes.
#[derive(Debug, Clone)]
pub(crate) enum Mapped {
    /// A tensor of its own.
    Tensor(String, Transform),
    /// One expert's matrix; stacked with the others of its layer.
    Expert {
        /// Layer.
        layer: usize,
        /// Projection key in the architecture's stacking order (see [`Arch::expert_projs`]).
        proj: &'static str,
        /// Expert index.
        expert: usize,
    },
    /// Output tensors made from an MXFP4 `*_scales` tensor and its `*_blocks`, written before
    /// every other tensor (the converter repacks them ahead of its main loop).
    Mxfp4(Vec<(String, Option<usize>)>),
    /// Not converted (MTP layers, rotary caches, FP8 scales).
    Skip,
}

/// An architecture's rules.
pub(crate) trait Arch: Send + Sync {
    /// GGUF architecture name.
    fn gguf_arch(&self) -> &'static str;
    /// Changes to the generic hyper-parameters (head_count_kv, key/value lengths).
    fn generic_overrides(&self, _cfg: &Config) -> Result<Overrides> {
        Ok(Overrides::default())
    }
    /// Keys written after `general.file_type`.
    fn extra_params(&self, cfg: &Config, p: &Params, md: &mut Metadata) -> Result<()>;
    /// Maps a checkpoint tensor.
    fn map(&self, name: &str, layer: Option<usize>, cfg: &Config) -> Result<Mapped>;
    /// Expert projections in the order the converter emits their stacked tensors, with GGUF
    /// base names; an empty list for dense models.
    fn expert_projs(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Number of experts (to know when a layer's set is complete).
    fn n_experts(&self, _cfg: &Config) -> Result<usize> {
        Ok(0)
    }
    /// Tensors the converter computes itself, written before the checkpoint's.
    fn generated(&self, _cfg: &Config) -> Result<Vec<OutTensor>> {
        Ok(Vec::new())
    }
    /// The llama family reads SentencePiece `tokenizer.model` when present.
    fn prefers_spm(&self) -> bool {
        false
    }
    /// How `tokenizer.ggml.add_space_prefix` is written.
    fn space_prefix(&self) -> SpacePrefix {
        if self.prefers_spm() {
            SpacePrefix::FromConfig
        } else {
            SpacePrefix::Absent
        }
    }
    /// Whether `token_embd` keeps only the tokenizer's rows (Gemma 3 drops the padding rows
    /// past the tokenizer's last token).
    fn trims_embedding_to_vocab(&self) -> bool {
        false
    }
    /// Special tokens named by content (type, added token), set after those the tokenizer
    /// files give (GLM's `_set_vocab_glm`).
    fn named_special_tokens(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// The tensors (Hugging Face names, PyTorch shapes) a checkpoint with this config holds,
    /// for planning from `config.json` alone; their GGUF names come from [`Arch::map`].
    fn checkpoint_tensors(&self, cfg: &Config) -> Result<Vec<(String, Vec<usize>)>>;
}

/// Changes to the generic hyper-parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub head_count_kv: Option<u64>,
    pub key_value_length: Option<(u64, u64)>,
    pub expert_count: Option<u64>,
    /// `block_count` when it is not `num_hidden_layers` (GLM keeps its NextN layers).
    pub block_count: Option<u64>,
}

/// Numbers every architecture needs.
#[derive(Debug, Clone)]
pub struct Params {
    /// Decoder blocks (`num_hidden_layers`).
    pub n_layer: usize,
    /// `hidden_size`.
    pub n_embd: usize,
    /// `num_attention_heads`.
    pub n_head: usize,
    /// `num_key_value_heads` (defaults to `n_head`).
    pub n_head_kv: usize,
    /// `vocab_size`.
    pub n_vocab: Option<u64>,
}

impl Params {
    fn read(cfg: &Config) -> Result<Self> {
        let n_head = cfg.req_u64(&["num_attention_heads", "n_head", "n_heads"])? as usize;
        Ok(Params {
            n_layer: cfg.req_u64(&["num_hidden_layers", "n_layer", "num_layers"])? as usize,
            n_embd: cfg.req_u64(&["hidden_size", "n_embd", "dim"])? as usize,
            n_head,
            n_head_kv: cfg
                .u64_of(&["num_key_value_heads", "n_kv_heads"])?
                .map_or(n_head, |v| v as usize),
            n_vocab: cfg.u64_of(&["vocab_size"])?,
        })
    }
}

/// The architecture of `cfg`; `layout` chooses deepseek2's attention tensors (the converter
/// writes the MLA layout; the legacy one is planned for files converted before it).
pub(crate) fn arch_for(cfg: &Config, layout: MlaLayout) -> Result<Box<dyn Arch>> {
    let hf = cfg.architecture().unwrap_or("");
    let mt = cfg.str_of("model_type").unwrap_or("");
    Ok(match (hf, mt) {
        ("MixtralForCausalLM", _) | (_, "mixtral") => Box::new(mixtral::Mixtral),
        ("LlamaForCausalLM" | "LLaMAForCausalLM" | "MistralForCausalLM", _)
        | (_, "llama" | "mistral") => Box::new(llama::Llama),
        ("Qwen2ForCausalLM", _) | (_, "qwen2") => Box::new(qwen2::Qwen2),
        ("Qwen3ForCausalLM", _) | (_, "qwen3") => Box::new(qwen3::Qwen3),
        ("Qwen3MoeForCausalLM", _) | (_, "qwen3_moe") => Box::new(qwen3moe::Qwen3Moe),
        ("Gemma3ForCausalLM", _) | (_, "gemma3_text") => Box::new(gemma3::Gemma3),
        ("GptOssForCausalLM", _) | (_, "gpt_oss") => Box::new(gpt_oss::GptOss),
        ("Glm4MoeForCausalLM", _) | (_, "glm4_moe") => Box::new(glm4moe::Glm4Moe),
        ("DeepseekV3ForCausalLM" | "DeepseekV2ForCausalLM", _)
        | (_, "deepseek_v3" | "deepseek_v2") => Box::new(deepseek::Deepseek { layout }),
        _ => {
            let what = if hf.is_empty() { mt } else { hf };
            return Err(HfError::UnknownArchitecture(if what.is_empty() {
                "<none: config.json has no architectures/model_type>".into()
            } else {
                what.into()
            }));
        }
    })
}

/// The block index of a checkpoint name: its first all-digit dotted part (as the converter).
pub(crate) fn block_of(name: &str) -> Option<usize> {
    name.split('.')
        .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
}

/// The llama-family name map shared by every architecture here (gguf-py `TensorNameMap`
/// entries for the Hugging Face names these models use). `None`: not a shared name.
pub(crate) fn common_name(name: &str) -> Option<String> {
    let (stem, suffix) = if let Some(s) = name.strip_suffix(".weight") {
        (s, "weight")
    } else if let Some(s) = name.strip_suffix(".bias") {
        (s, "bias")
    } else {
        return None;
    };
    let top = match stem {
        "model.embed_tokens" => Some("token_embd"),
        "model.norm" => Some("output_norm"),
        "lm_head" => Some("output"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(format!("{t}.{suffix}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let g = match part {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "mlp.gate" => "ffn_gate_inp",
        "block_sparse_moe.gate" => "ffn_gate_inp",
        "mlp.shared_experts.gate_proj" | "mlp.shared_expert.gate_proj" => "ffn_gate_shexp",
        "mlp.shared_experts.up_proj" | "mlp.shared_expert.up_proj" => "ffn_up_shexp",
        "mlp.shared_experts.down_proj" | "mlp.shared_expert.down_proj" => "ffn_down_shexp",
        "mlp.shared_expert_gate" => "ffn_gate_inp_shexp",
        "self_attn.q_a_proj" => "attn_q_a",
        "self_attn.q_a_layernorm" => "attn_q_a_norm",
        "self_attn.q_b_proj" => "attn_q_b",
        "self_attn.kv_a_proj_with_mqa" => "attn_kv_a_mqa",
        "self_attn.kv_a_layernorm" => "attn_kv_a_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// `mlp.experts.<e>.<proj>.weight` of layer-local name `part`.
pub(crate) fn expert_of(name: &str, marker: &str) -> Option<(usize, String)> {
    let i = name.find(marker)?;
    let rest = &name[i + marker.len()..];
    let (e, proj) = rest.split_once('.')?;
    let proj = proj.strip_suffix(".weight")?;
    Some((e.parse().ok()?, proj.to_string()))
}

/// The generic hyper-parameters (`TextModel.set_gguf_parameters`), up to and including
/// `general.file_type`.
pub(crate) fn generic_params(
    arch: &str,
    cfg: &Config,
    ov: &Overrides,
    file_type: u32,
    md: &mut Metadata,
) -> Result<()> {
    let k = |s: &str| format!("{arch}.{s}");
    let u32v = |v: u64| -> Result<Value> {
        u32::try_from(v)
            .map(Value::U32)
            .map_err(|_| HfError::json(cfg.path(), format!("{v} does not fit a u32")))
    };
    let blocks = match ov.block_count {
        Some(b) => b,
        None => cfg.req_u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?,
    };
    md.set(k("block_count"), u32v(blocks)?);
    if let Some(v) = cfg.u64_of(&[
        "max_position_embeddings",
        "n_ctx",
        "n_positions",
        "max_length",
        "max_sequence_length",
        "model_max_length",
    ])? {
        md.set(k("context_length"), u32v(v)?);
    }
    if let Some(v) = cfg.u64_of(&["hidden_size", "n_embd", "dim"])? {
        md.set(k("embedding_length"), u32v(v)?);
    }
    if let Some(v) = cfg.u64_of(&["intermediate_size", "n_inner", "hidden_dim"])? {
        md.set(k("feed_forward_length"), u32v(v)?);
    }
    if let Some(v) = cfg.u64_of(&["num_attention_heads", "n_head", "n_heads"])? {
        md.set(k("attention.head_count"), u32v(v)?);
    }
    let kv = match ov.head_count_kv {
        Some(v) => Some(v),
        None => cfg.u64_of(&["num_key_value_heads", "n_kv_heads"])?,
    };
    if let Some(v) = kv {
        md.set(k("attention.head_count_kv"), u32v(v)?);
    }
    let rope = cfg
        .get("rope_parameters")
        .or_else(|| cfg.get("rope_scaling"))
        .filter(|r| r.is_object());
    let rope_theta = cfg.f64_of(&[
        "global_rope_theta",
        "rope_global_theta",
        "rope_theta_global",
        "rope_theta",
        "rotary_emb_base",
    ])?;
    if let Some(r) = rope {
        let ty = r
            .get("rope_type")
            .or_else(|| r.get("type"))
            .and_then(|t| t.as_str());
        let factor = r.get("factor").and_then(|f| f.as_f64());
        match (ty, factor) {
            (Some("linear"), Some(f)) => {
                md.set(k("rope.scaling.type"), Value::String("linear".into()));
                md.set(k("rope.scaling.factor"), Value::F32(f as f32));
            }
            (Some("yarn"), Some(f)) => {
                md.set(k("rope.scaling.type"), Value::String("yarn".into()));
                md.set(k("rope.scaling.factor"), Value::F32(f as f32));
                let orig = r
                    .get("original_max_position_embeddings")
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| {
                        HfError::json(
                            cfg.path(),
                            "yarn rope scaling without original_max_position_embeddings",
                        )
                    })?;
                md.set(k("rope.scaling.original_context_length"), u32v(orig)?);
                let f32_of = |key: &str| {
                    r.get(key)
                        .and_then(|v| v.as_f64())
                        .map(|v| Value::F32(v as f32))
                };
                if let Some(v) = f32_of("extrapolation_factor") {
                    md.set(k("rope.scaling.yarn_ext_factor"), v);
                }
                if let Some(v) = f32_of("attention_factor").or_else(|| f32_of("attn_factor")) {
                    md.set(k("rope.scaling.yarn_attn_factor"), v);
                }
                if let Some(v) = f32_of("beta_fast") {
                    md.set(k("rope.scaling.yarn_beta_fast"), v);
                }
                if let Some(v) = f32_of("beta_slow") {
                    md.set(k("rope.scaling.yarn_beta_slow"), v);
                }
            }
            _ => {}
        }
    }
    let theta = rope
        .and_then(|r| r.get("rope_theta"))
        .and_then(|v| v.as_f64())
        .or(rope_theta);
    if let Some(t) = theta {
        md.set(k("rope.freq_base"), Value::F32(t as f32));
    }
    // The sliding-window layers' base (Gemma 3's `rope_local_base_freq`).
    let local_theta = match rope.and_then(|r| r.get("sliding_attention")) {
        Some(s) => s.get("rope_theta").and_then(|v| v.as_f64()),
        None => cfg.f64_of(&[
            "local_rope_theta",
            "rope_local_theta",
            "rope_theta_local",
            "swa_rope_theta",
            "rope_local_base_freq",
        ])?,
    };
    if let Some(t) = local_theta {
        md.set(k("rope.freq_base_swa"), Value::F32(t as f32));
    }
    if let Some(e) = cfg.f64_of(&["rms_norm_eps", "norm_eps"])? {
        md.set(k("attention.layer_norm_rms_epsilon"), Value::F32(e as f32));
    }
    if let Some(e) = cfg.f64_of(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])? {
        md.set(k("attention.layer_norm_epsilon"), Value::F32(e as f32));
    }
    let n_expert = match ov.expert_count {
        Some(v) => Some(v),
        None => cfg.u64_of(&["num_local_experts", "num_experts"])?,
    };
    if let Some(v) = n_expert {
        md.set(k("expert_count"), u32v(v)?);
    }
    if let Some(v) = cfg.u64_of(&[
        "num_experts_per_tok",
        "num_experts_per_token",
        "top_k_experts",
    ])? {
        md.set(k("expert_used_count"), u32v(v)?);
    }
    if let Some(v) = cfg.u64_of(&["n_group"])? {
        md.set(k("expert_group_count"), u32v(v)?);
    }
    if let Some(v) = cfg.u64_of(&["topk_group"])? {
        md.set(k("expert_group_used_count"), u32v(v)?);
    }
    if let Some(f) = cfg
        .find(&[
            "score_function",
            "scoring_func",
            "score_func",
            "moe_router_activation",
            "moe_router_activation_func",
        ])
        .and_then(|v| v.as_str())
    {
        let id = match f {
            "softmax" => 1,
            "sigmoid" => 2,
            other => {
                return Err(HfError::json(
                    cfg.path(),
                    format!("unsupported expert gating function '{other}'"),
                ))
            }
        };
        md.set(k("expert_gating_func"), Value::U32(id));
    }
    let kvl = match ov.key_value_length {
        Some(p) => Some(p),
        None => cfg.u64_of(&["head_dim"])?.map(|h| (h, h)),
    };
    if let Some((kl, vl)) = kvl {
        md.set(k("attention.key_length"), u32v(kl)?);
        md.set(k("attention.value_length"), u32v(vl)?);
    }
    md.set("general.file_type", Value::U32(file_type));
    Ok(())
}

/// The conversion plan of a checkpoint: architecture, parameters, output tensors in order.
pub(crate) struct ArchPlan {
    pub arch: Box<dyn Arch>,
    pub params: Params,
    pub tensors: Vec<OutTensor>,
}

fn shape_err(name: &str, got: &[usize], want: Vec<usize>) -> HfError {
    HfError::ShapeMismatch {
        name: name.into(),
        got: got.to_vec(),
        want,
    }
}

/// A tensor's shape, or [`HfError::MissingTensor`].
fn shape_of<'a>(ckpt: &'a dyn CheckpointTensors, name: &str) -> Result<&'a [usize]> {
    ckpt.shape(name)
        .ok_or_else(|| HfError::MissingTensor(name.to_string()))
}

/// Maps every checkpoint tensor and stacks experts, in the converter's order, checking shapes
/// against config.json.
pub(crate) fn plan_tensors(
    cfg: &Config,
    ckpt: &dyn CheckpointTensors,
    layout: MlaLayout,
) -> Result<ArchPlan> {
    let arch = arch_for(cfg, layout)?;
    let params = Params::read(cfg)?;
    // Layers past num_hidden_layers are an error unless the architecture keeps them (NextN).
    let n_blocks = arch
        .generic_overrides(cfg)?
        .block_count
        .map_or(params.n_layer, |b| b as usize);
    let layers = if n_blocks == params.n_layer {
        format!("num_hidden_layers {n_blocks}")
    } else {
        format!(
            "{n_blocks} layers (num_hidden_layers {} + NextN)",
            params.n_layer
        )
    };
    let n_exp = arch.n_experts(cfg)?;
    let projs = arch.expert_projs();
    // (layer) -> proj -> expert -> name
    let mut pending: std::collections::BTreeMap<usize, Vec<Vec<Option<String>>>> =
        Default::default();
    let mut out = arch.generated(cfg)?;
    // MXFP4 repacks, placed before everything else once all are known.
    let mut front: Vec<OutTensor> = Vec::new();
    for name in ckpt.names() {
        if name.ends_with("_scale_inv") {
            // FP8 block scales are folded into their weights when read.
            shape_of(ckpt, name.trim_end_matches("_scale_inv"))?;
            continue;
        }
        let shape_in = shape_of(ckpt, name)?;
        let layer = block_of(name);
        match arch.map(name, layer, cfg)? {
            Mapped::Skip => {}
            Mapped::Mxfp4(outputs) => {
                let blocks = name
                    .strip_suffix("_scales")
                    .map(|b| format!("{b}_blocks"))
                    .ok_or_else(|| HfError::UnmappedTensor(name.clone()))?;
                let bshape = shape_of(ckpt, &blocks)?;
                let [e, r, nb, 16] = *bshape else {
                    return Err(shape_err(&blocks, bshape, vec![0, 0, 0, 16]));
                };
                if shape_in != [e, r, nb] {
                    return Err(shape_err(name, shape_in, vec![e, r, nb]));
                }
                for (gname, parity) in outputs {
                    if parity.is_some() && r % 2 != 0 {
                        return Err(shape_err(name, shape_in, vec![e, r + 1, nb]));
                    }
                    let rows = if parity.is_some() { r / 2 } else { r };
                    front.push(OutTensor {
                        name: gname,
                        sources: vec![blocks.clone(), name.clone()],
                        transform: Transform::Mxfp4 { parity },
                        shape: vec![e, rows, nb * 32],
                        values: None,
                    });
                }
            }
            Mapped::Tensor(gname0, tr0) => {
                if let Some(l) = layer.filter(|&l| l >= n_blocks) {
                    return Err(HfError::IndexMismatch(format!(
                        "tensor '{name}' is in layer {l}, but config.json has {layers}"
                    )));
                }
                let pieces = match tr0 {
                    Transform::KvbK { n_head, nope, v } => vec![
                        (gname0.clone(), Transform::KvbK { n_head, nope, v }),
                        (
                            gname0.replace(".attn_k_b.", ".attn_v_b."),
                            Transform::KvbV { n_head, nope, v },
                        ),
                    ],
                    Transform::Deinterleave { .. } => vec![
                        (gname0.clone(), Transform::Deinterleave { parity: 0 }),
                        (
                            gname0.replace("_gate_", "_up_"),
                            Transform::Deinterleave { parity: 1 },
                        ),
                    ],
                    other => vec![(gname0, other)],
                };
                for (gname, tr) in pieces {
                    let shape = match &tr {
                        Transform::None | Transform::RopePermute { .. } | Transform::AddOne => {
                            shape_in.to_vec()
                        }
                        Transform::Deinterleave { .. } => {
                            let mut s = shape_in.to_vec();
                            match s.last_mut() {
                                Some(c) if *c % 2 == 0 => *c /= 2,
                                _ => {
                                    return Err(shape_err(
                                        name,
                                        shape_in,
                                        vec![shape_in.last().copied().unwrap_or(0) + 1],
                                    ))
                                }
                            }
                            s
                        }
                        Transform::Mxfp4 { .. } => {
                            return Err(HfError::UnmappedTensor(name.clone()));
                        }
                        Transform::KvbK { n_head, nope, v }
                        | Transform::KvbV { n_head, nope, v } => {
                            let want_rows = n_head * (nope + v);
                            if shape_in.len() != 2 || shape_in[0] != want_rows {
                                return Err(shape_err(
                                    name,
                                    shape_in,
                                    vec![want_rows, shape_in.last().copied().unwrap_or(0)],
                                ));
                            }
                            let l = shape_in[1];
                            if matches!(tr, Transform::KvbK { .. }) {
                                vec![*n_head, l, *nope]
                            } else {
                                vec![*n_head, *v, l]
                            }
                        }
                    };
                    if let Transform::RopePermute { n_head } = tr {
                        let rows = shape_in.first().copied().unwrap_or(0);
                        if n_head == 0 || rows == 0 || rows % (2 * n_head) != 0 {
                            let want = 2 * n_head.max(1) * (rows / (2 * n_head.max(1))).max(1);
                            return Err(shape_err(name, shape_in, vec![want]));
                        }
                    }
                    if gname == "token_embd.weight" || gname == "output.weight" {
                        let want = vec![
                            params
                                .n_vocab
                                .map_or(shape_in.first().copied().unwrap_or(0), |v| v as usize),
                            params.n_embd,
                        ];
                        if shape_in != want.as_slice() {
                            return Err(shape_err(name, shape_in, want));
                        }
                    }
                    out.push(OutTensor {
                        name: gname,
                        sources: vec![name.clone()],
                        transform: tr,
                        shape,
                        values: None,
                    });
                }
            }
            Mapped::Expert {
                layer,
                proj,
                expert,
            } => {
                if layer >= n_blocks {
                    return Err(HfError::IndexMismatch(format!(
                        "tensor '{name}' is in layer {layer}, but config.json has {layers}"
                    )));
                }
                let pi = projs
                    .iter()
                    .position(|(p, _)| *p == proj)
                    .ok_or_else(|| HfError::UnmappedTensor(name.clone()))?;
                if expert >= n_exp {
                    return Err(HfError::IndexMismatch(format!(
                        "tensor '{name}' is expert {expert}, but config.json has {n_exp} experts"
                    )));
                }
                let slots = pending
                    .entry(layer)
                    .or_insert_with(|| vec![vec![None; n_exp]; projs.len()]);
                slots[pi][expert] = Some(name.clone());
                let complete = |v: &Vec<Option<String>>| v.iter().all(Option::is_some);
                // The converter stacks a layer's experts once all of them (every projection) are
                // seen, emitting the projections in the architecture's order.
                if slots.iter().all(complete) {
                    let ready = 0..projs.len();
                    let slots = pending.remove(&layer).unwrap_or_default();
                    for pi in ready {
                        let names: Vec<String> = slots[pi].iter().flatten().cloned().collect();
                        let first = shape_of(ckpt, &names[0])?;
                        for n in &names {
                            let s = shape_of(ckpt, n)?;
                            if s != first || s.len() != 2 {
                                return Err(shape_err(n, s, first.to_vec()));
                            }
                        }
                        let mut shape = vec![names.len()];
                        shape.extend_from_slice(first);
                        out.push(OutTensor {
                            name: format!("blk.{layer}.{}.weight", projs[pi].1),
                            sources: names,
                            transform: Transform::None,
                            shape,
                            values: None,
                        });
                    }
                }
            }
        }
    }
    if let Some((layer, slots)) = pending.into_iter().next() {
        let have: usize = slots.iter().map(|v| v.iter().flatten().count()).sum();
        return Err(HfError::IndexMismatch(format!(
            "layer {layer} has {have} of its {} expert tensors ({} experts x {} projections)",
            n_exp * projs.len(),
            n_exp,
            projs.len()
        )));
    }
    front.append(&mut out);
    Ok(ArchPlan {
        arch,
        params,
        tensors: front,
    })
}
