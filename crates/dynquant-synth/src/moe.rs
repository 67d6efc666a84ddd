//! Synthetic MoE models with trained-looking weights, in llama.cpp's `deepseek2` (both
//! attention layouts) and `qwen3moe` architectures, with the tokenizer of a given model
//! (SmolLM2's in the test kit) or [`byte_level_tokenizer`].
//!
//! Uniform noise is a poor stand-in for trained weights: quantizers behave differently on
//! heavy tails and outliers. Every matrix here is drawn as
//! `w[r][c] = std · row_scale[r] · col_gain[c] · t_nu`, with
//! * `t_nu` Student-t with `nu` degrees of freedom, scaled to unit variance (heavy tails);
//! * `row_scale` log-normal with median 1 and spread `row_scale_sigma` (per output row);
//! * `col_gain` = `outlier_gain` on `outlier_channels` fixed residual-stream channels (the same
//!   channels in every layer, as in trained LLMs), 1 elsewhere, for matrices that read the
//!   residual stream;
//! * experts additionally scaled per expert (log-normal, `expert_scale_sigma`);
//! * one "super weight" (`super_weight_gain` × its row's scale) in the first layer's
//!   `down_proj`, writing into outlier channel 0;
//! * the output head scaled so that unit-RMS hidden states give logits with standard
//!   deviation `logit_std` (per-token spread `output_row_scale_sigma`), so next-token
//!   distributions are peaked (about 3 nats of entropy), neither flat nor one-hot.
//!
//! Everything is seeded: the same spec gives byte-identical files.
//!
//! The MLA (`attn_k_b`/`attn_v_b`) and legacy (`attn_kv_b`) deepseek2 files are the same
//! model: `k_b`/`v_b` are derived from the generated `kv_b` exactly as llama.cpp's converter
//! does (view `kv_b` as `(n_head, nope + v, kv_lora)`, split, transpose the k part).

use std::path::Path;

use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{keys, Array, Metadata, Value};

use crate::rng::Rng;
use crate::tensors::{write_model, Planned};
use crate::{Result, SynthError};

/// How trained-looking the weights are; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct WeightStyle {
    /// Student-t degrees of freedom of element values.
    pub nu: u32,
    /// Log-normal spread of per-row scales.
    pub row_scale_sigma: f64,
    /// Log-normal spread of per-expert scales.
    pub expert_scale_sigma: f64,
    /// Residual-stream channels with outsized weights.
    pub outlier_channels: usize,
    /// Gain of those channels.
    pub outlier_gain: f64,
    /// Size of the super weight relative to its row's scale.
    pub super_weight_gain: f64,
    /// Standard deviation of output logits for unit-RMS hidden states.
    pub logit_std: f64,
    /// Log-normal spread of the output head's per-token row scales (token frequency effect).
    pub output_row_scale_sigma: f64,
}

impl Default for WeightStyle {
    fn default() -> Self {
        WeightStyle {
            nu: 5,
            row_scale_sigma: 0.35,
            expert_scale_sigma: 0.3,
            outlier_channels: 4,
            outlier_gain: 6.0,
            super_weight_gain: 80.0,
            // With these two, next-token entropy is about 3 nats over SmolLM2's 49,152 tokens
            // (log V = 10.8): peaked like a trained model, yet not one-hot.
            logit_std: 2.5,
            output_row_scale_sigma: 0.25,
        }
    }
}

pub use dynquant_plan::inventory::MlaLayout;

/// Shape of a synthetic deepseek2 model (defaults: 4 layers, the first dense).
#[derive(Debug, Clone, Copy)]
pub struct Deepseek2Spec {
    /// Seed of every weight.
    pub seed: u64,
    /// Layers.
    pub n_layer: usize,
    /// Leading dense layers.
    pub n_dense: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Query LoRA rank.
    pub q_lora: usize,
    /// KV LoRA rank.
    pub kv_lora: usize,
    /// Non-rotary head dim.
    pub nope: usize,
    /// Rotary head dim.
    pub rope: usize,
    /// Value head dim.
    pub v: usize,
    /// Dense FFN size.
    pub n_ff: usize,
    /// Expert FFN size.
    pub n_ff_exp: usize,
    /// Routed experts.
    pub n_expert: usize,
    /// Experts per token.
    pub n_used: usize,
    /// Shared experts.
    pub n_shared: usize,
    /// Expert groups.
    pub n_group: usize,
    /// Groups used per token.
    pub n_group_used: usize,
    /// Weight style.
    pub style: WeightStyle,
}

impl Default for Deepseek2Spec {
    fn default() -> Self {
        Deepseek2Spec {
            seed: 20_250_120,
            n_layer: 4,
            n_dense: 1,
            n_embd: 512,
            n_head: 4,
            q_lora: 256,
            kv_lora: 256,
            nope: 128,
            rope: 64,
            v: 128,
            n_ff: 1536,
            n_ff_exp: 256,
            n_expert: 16,
            n_used: 4,
            n_shared: 1,
            n_group: 4,
            n_group_used: 2,
            style: WeightStyle::default(),
        }
    }
}

/// Shape of a synthetic qwen3moe model.
#[derive(Debug, Clone, Copy)]
pub struct Qwen3MoeSpec {
    /// Seed of every weight.
    pub seed: u64,
    /// Layers (all MoE).
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Attention heads.
    pub n_head: usize,
    /// KV heads.
    pub n_head_kv: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Expert FFN size.
    pub n_ff_exp: usize,
    /// Routed experts.
    pub n_expert: usize,
    /// Experts per token.
    pub n_used: usize,
    /// Weight style.
    pub style: WeightStyle,
}

impl Default for Qwen3MoeSpec {
    fn default() -> Self {
        Qwen3MoeSpec {
            seed: 20_250_429,
            n_layer: 4,
            n_embd: 512,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 128,
            n_ff_exp: 256,
            n_expert: 16,
            n_used: 4,
            style: WeightStyle::default(),
        }
    }
}

/// Generates matrices for one model.
struct Gen {
    seed: u64,
    style: WeightStyle,
    n_embd: usize,
    outliers: Vec<usize>,
}

impl Gen {
    fn new(seed: u64, style: WeightStyle, n_embd: usize) -> Self {
        let mut r = Rng::new(seed, "outlier-channels");
        let mut outliers = Vec::new();
        while outliers.len() < style.outlier_channels.min(n_embd) {
            let c = r.below(n_embd as u64) as usize;
            if !outliers.contains(&c) {
                outliers.push(c);
            }
        }
        Gen {
            seed,
            style,
            n_embd,
            outliers,
        }
    }

    /// `n_mat` matrices of `rows` x `cols` (ggml ne = {cols, rows, n_mat}).
    /// Matrices reading the residual stream (`cols == n_embd`) get the outlier columns.
    fn matrices(&self, name: &str, cols: usize, rows: usize, n_mat: usize, std: f64) -> Vec<f32> {
        let outliers = cols == self.n_embd;
        self.matrices_styled(
            name,
            cols,
            rows,
            n_mat,
            std,
            self.style.row_scale_sigma,
            outliers,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn matrices_styled(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
        n_mat: usize,
        std: f64,
        row_sigma: f64,
        outlier_cols: bool,
    ) -> Vec<f32> {
        let mut r = Rng::new(self.seed, name);
        let s = self.style;
        let reads_residual = outlier_cols;
        let mut out = Vec::with_capacity(cols * rows * n_mat);
        for _ in 0..n_mat {
            let mat_scale = if n_mat > 1 {
                r.log_normal(s.expert_scale_sigma)
            } else {
                1.0
            };
            for _ in 0..rows {
                let row_scale = std * mat_scale * r.log_normal(row_sigma);
                for c in 0..cols {
                    let gain = if reads_residual && self.outliers.contains(&c) {
                        s.outlier_gain
                    } else {
                        1.0
                    };
                    out.push((row_scale * gain * r.student_t(s.nu)) as f32);
                }
            }
        }
        out
    }

    /// A matrix with the super weight planted: row = outlier channel 0 (a residual channel
    /// the down projection writes), column chosen by the seed.
    fn down_with_super_weight(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
        n_mat: usize,
    ) -> Vec<f32> {
        let std = 1.0 / (cols as f64).sqrt();
        let mut m = self.matrices(name, cols, rows, n_mat, std);
        let row = self.outliers[0];
        let col = Rng::new(self.seed, "super-weight").below(cols as u64) as usize;
        m[row * cols + col] = (self.style.super_weight_gain * std) as f32;
        m
    }

    fn norm(&self, name: &str, n: usize) -> Vec<f32> {
        let mut r = Rng::new(self.seed, name);
        (0..n).map(|_| (1.0 + 0.1 * r.normal()) as f32).collect()
    }

    fn small(&self, name: &str, n: usize, std: f64) -> Vec<f32> {
        let mut r = Rng::new(self.seed, name);
        (0..n).map(|_| (std * r.normal()) as f32).collect()
    }
}

/// Tokenizer and general keys copied from SmolLM2 (its vocabulary is the synthetic models').
fn base_metadata(tokenizer_source: &Metadata, arch: &str, name: &str) -> (Metadata, usize) {
    let mut md = Metadata::new();
    md.set(keys::general::ARCHITECTURE, Value::String(arch.into()));
    md.set(keys::general::TYPE, Value::String("model".into()));
    md.set(keys::general::NAME, Value::String(name.into()));
    md.set(keys::general::FILE_TYPE, Value::U32(1));
    let mut n_vocab = 0;
    for (k, v) in tokenizer_source.entries() {
        if k.starts_with("tokenizer.") {
            if k == keys::tokenizer::TOKENS {
                n_vocab = v.as_array().map_or(0, Array::len);
            }
            md.set(k.clone(), v.clone());
        }
    }
    (md, n_vocab)
}

fn u32v(n: usize) -> Value {
    Value::U32(n as u32)
}

/// The shared embedding/output/norm tensors.
fn embeddings<'a>(g: &'a Gen, n_vocab: usize, out: &mut Vec<Planned<'a>>) -> Result<()> {
    let e = g.n_embd;
    out.push(Planned::new(
        "token_embd.weight",
        vec![e as u64, n_vocab as u64],
        GgmlType::F16,
        move || Ok(g.matrices("token_embd", e, n_vocab, 1, 1.0)),
    )?);
    // As in trained models, the final norm damps the massive-activation channels, so they do
    // not decide the logits.
    out.push(Planned::new(
        "output_norm.weight",
        vec![e as u64],
        GgmlType::F32,
        move || {
            let mut w = g.norm("output_norm", e);
            for &c in &g.outliers {
                w[c] *= 0.05;
            }
            Ok(w)
        },
    )?);
    let std = g.style.logit_std / (e as f64).sqrt();
    let sigma = g.style.output_row_scale_sigma;
    // The head does not amplify the outlier channels (trained heads do not either).
    out.push(Planned::new(
        "output.weight",
        vec![e as u64, n_vocab as u64],
        GgmlType::F16,
        move || Ok(g.matrices_styled("output", e, n_vocab, 1, std, sigma, false)),
    )?);
    Ok(())
}

fn dense_matrix<'a>(
    g: &'a Gen,
    out: &mut Vec<Planned<'a>>,
    name: String,
    cols: usize,
    rows: usize,
    n_mat: usize,
) -> Result<()> {
    let mut shape = vec![cols as u64, rows as u64];
    if n_mat > 1 {
        shape.push(n_mat as u64);
    }
    let key = name.clone();
    out.push(Planned::new(name, shape, GgmlType::F16, move || {
        Ok(g.matrices(&key, cols, rows, n_mat, 1.0 / (cols as f64).sqrt()))
    })?);
    Ok(())
}

fn norm_tensor<'a>(g: &'a Gen, out: &mut Vec<Planned<'a>>, name: String, n: usize) -> Result<()> {
    let key = name.clone();
    out.push(Planned::new(
        name,
        vec![n as u64],
        GgmlType::F32,
        move || Ok(g.norm(&key, n)),
    )?);
    Ok(())
}

/// The `down` projection of an FFN, with the super weight in layer 0.
fn down<'a>(
    g: &'a Gen,
    out: &mut Vec<Planned<'a>>,
    layer: usize,
    name: String,
    cols: usize,
    n_mat: usize,
) -> Result<()> {
    let e = g.n_embd;
    let mut shape = vec![cols as u64, e as u64];
    if n_mat > 1 {
        shape.push(n_mat as u64);
    }
    let key = name.clone();
    out.push(Planned::new(name, shape, GgmlType::F16, move || {
        Ok(if layer == 0 {
            g.down_with_super_weight(&key, cols, e, n_mat)
        } else {
            g.matrices(&key, cols, e, n_mat, 1.0 / (cols as f64).sqrt())
        })
    })?);
    Ok(())
}

/// Routed experts (gate, up, down) and router of one MoE layer.
fn moe<'a>(
    g: &'a Gen,
    out: &mut Vec<Planned<'a>>,
    l: usize,
    n_ff_exp: usize,
    n_expert: usize,
) -> Result<()> {
    let e = g.n_embd;
    let router = format!("blk.{l}.ffn_gate_inp.weight");
    let key = router.clone();
    out.push(Planned::new(
        router,
        vec![e as u64, n_expert as u64],
        GgmlType::F32,
        move || Ok(g.matrices(&key, e, n_expert, 1, 1.0 / (e as f64).sqrt())),
    )?);
    dense_matrix(
        g,
        out,
        format!("blk.{l}.ffn_gate_exps.weight"),
        e,
        n_ff_exp,
        n_expert,
    )?;
    dense_matrix(
        g,
        out,
        format!("blk.{l}.ffn_up_exps.weight"),
        e,
        n_ff_exp,
        n_expert,
    )?;
    down(
        g,
        out,
        l,
        format!("blk.{l}.ffn_down_exps.weight"),
        n_ff_exp,
        n_expert,
    )
}

/// Writes a synthetic deepseek2 model.
pub fn write_deepseek2(
    spec: &Deepseek2Spec,
    layout: MlaLayout,
    tokenizer_source: &Metadata,
    out: &Path,
) -> Result<()> {
    let s = *spec;
    if s.n_dense == 0 || s.n_dense >= s.n_layer || !s.n_expert.is_multiple_of(s.n_group) {
        return Err(SynthError::BadSpec("inconsistent deepseek2 spec".into()));
    }
    let g = Gen::new(s.seed, s.style, s.n_embd);
    let name = match layout {
        MlaLayout::Mla => "synthetic deepseek2 (MLA layout)",
        MlaLayout::Legacy => "synthetic deepseek2 (legacy kv_b layout)",
    };
    let (mut md, n_vocab) = base_metadata(tokenizer_source, "deepseek2", name);
    let a = |k: &str| format!("deepseek2.{k}");
    md.set(a("block_count"), u32v(s.n_layer));
    md.set(a("context_length"), u32v(4096));
    md.set(a("embedding_length"), u32v(s.n_embd));
    md.set(a("feed_forward_length"), u32v(s.n_ff));
    md.set(a("attention.head_count"), u32v(s.n_head));
    let (kv_heads, key_len, val_len) = match layout {
        MlaLayout::Mla => (1, s.kv_lora + s.rope, s.kv_lora),
        MlaLayout::Legacy => (s.n_head, s.nope + s.rope, s.v),
    };
    md.set(a("attention.head_count_kv"), u32v(kv_heads));
    md.set(a("rope.scaling.type"), Value::String("yarn".into()));
    md.set(a("rope.scaling.factor"), Value::F32(4.0));
    md.set(a("rope.scaling.original_context_length"), u32v(1024));
    md.set(a("rope.scaling.yarn_beta_fast"), Value::F32(32.0));
    md.set(a("rope.scaling.yarn_beta_slow"), Value::F32(1.0));
    md.set(a("rope.freq_base"), Value::F32(10000.0));
    md.set(a("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    md.set(a("expert_count"), u32v(s.n_expert));
    md.set(a("expert_used_count"), u32v(s.n_used));
    md.set(a("expert_group_count"), u32v(s.n_group));
    md.set(a("expert_group_used_count"), u32v(s.n_group_used));
    md.set(a("expert_gating_func"), u32v(2));
    md.set(a("attention.key_length"), u32v(key_len));
    md.set(a("attention.value_length"), u32v(val_len));
    md.set(a("leading_dense_block_count"), u32v(s.n_dense));
    md.set(a("vocab_size"), u32v(n_vocab));
    md.set(a("attention.q_lora_rank"), u32v(s.q_lora));
    md.set(a("attention.kv_lora_rank"), u32v(s.kv_lora));
    if layout == MlaLayout::Mla {
        md.set(a("attention.key_length_mla"), u32v(s.nope + s.rope));
        md.set(a("attention.value_length_mla"), u32v(s.v));
    }
    md.set(a("expert_feed_forward_length"), u32v(s.n_ff_exp));
    md.set(a("expert_shared_count"), u32v(s.n_shared));
    md.set(a("expert_weights_scale"), Value::F32(2.5));
    md.set(a("expert_weights_norm"), Value::Bool(true));
    md.set(a("rope.dimension_count"), u32v(s.rope));
    md.set(a("rope.scaling.yarn_log_multiplier"), Value::F32(0.1));

    let g = &g;
    let e = s.n_embd;
    let mut t = Vec::new();
    embeddings(g, n_vocab, &mut t)?;
    for l in 0..s.n_layer {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        norm_tensor(g, &mut t, b("attn_norm"), e)?;
        dense_matrix(g, &mut t, b("attn_q_a"), e, s.q_lora, 1)?;
        norm_tensor(g, &mut t, b("attn_q_a_norm"), s.q_lora)?;
        dense_matrix(
            g,
            &mut t,
            b("attn_q_b"),
            s.q_lora,
            s.n_head * (s.nope + s.rope),
            1,
        )?;
        dense_matrix(g, &mut t, b("attn_kv_a_mqa"), e, s.kv_lora + s.rope, 1)?;
        norm_tensor(g, &mut t, b("attn_kv_a_norm"), s.kv_lora)?;
        // kv_b is generated once, under one name, for both layouts.
        let kv_b = move || {
            let key = format!("blk.{l}.attn_kv_b.weight");
            g.matrices(
                &key,
                s.kv_lora,
                s.n_head * (s.nope + s.v),
                1,
                1.0 / (s.kv_lora as f64).sqrt(),
            )
        };
        match layout {
            MlaLayout::Legacy => t.push(Planned::new(
                b("attn_kv_b"),
                vec![s.kv_lora as u64, (s.n_head * (s.nope + s.v)) as u64],
                GgmlType::F16,
                move || Ok(kv_b()),
            )?),
            MlaLayout::Mla => {
                t.push(Planned::new(
                    b("attn_k_b"),
                    vec![s.nope as u64, s.kv_lora as u64, s.n_head as u64],
                    GgmlType::F16,
                    move || Ok(split_k_b(&kv_b(), &s)),
                )?);
                t.push(Planned::new(
                    b("attn_v_b"),
                    vec![s.kv_lora as u64, s.v as u64, s.n_head as u64],
                    GgmlType::F16,
                    move || Ok(split_v_b(&kv_b(), &s)),
                )?);
            }
        }
        dense_matrix(g, &mut t, b("attn_output"), s.n_head * s.v, e, 1)?;
        norm_tensor(g, &mut t, b("ffn_norm"), e)?;
        if l < s.n_dense {
            dense_matrix(g, &mut t, b("ffn_gate"), e, s.n_ff, 1)?;
            dense_matrix(g, &mut t, b("ffn_up"), e, s.n_ff, 1)?;
            down(g, &mut t, l, b("ffn_down"), s.n_ff, 1)?;
        } else {
            moe(g, &mut t, l, s.n_ff_exp, s.n_expert)?;
            let bias = format!("blk.{l}.exp_probs_b.bias");
            let key = bias.clone();
            t.push(Planned::new(
                bias,
                vec![s.n_expert as u64],
                GgmlType::F32,
                move || Ok(g.small(&key, s.n_expert, 0.05)),
            )?);
            let sh = s.n_ff_exp * s.n_shared;
            dense_matrix(g, &mut t, b("ffn_gate_shexp"), e, sh, 1)?;
            dense_matrix(g, &mut t, b("ffn_up_shexp"), e, sh, 1)?;
            dense_matrix(g, &mut t, b("ffn_down_shexp"), sh, e, 1)?;
        }
    }
    write_model(out, md, t)
}

/// `attn_k_b` from `kv_b`: head h, row r < kv_lora, column c < nope = kv_b[h·(nope+v) + c][r].
fn split_k_b(kv_b: &[f32], s: &Deepseek2Spec) -> Vec<f32> {
    let mut out = Vec::with_capacity(s.n_head * s.kv_lora * s.nope);
    for h in 0..s.n_head {
        for r in 0..s.kv_lora {
            for c in 0..s.nope {
                out.push(kv_b[(h * (s.nope + s.v) + c) * s.kv_lora + r]);
            }
        }
    }
    out
}

/// `attn_v_b` from `kv_b`: head h, row j < v = kv_b row h·(nope+v) + nope + j, unchanged.
fn split_v_b(kv_b: &[f32], s: &Deepseek2Spec) -> Vec<f32> {
    let mut out = Vec::with_capacity(s.n_head * s.v * s.kv_lora);
    for h in 0..s.n_head {
        let start = (h * (s.nope + s.v) + s.nope) * s.kv_lora;
        out.extend_from_slice(&kv_b[start..start + s.v * s.kv_lora]);
    }
    out
}

/// Writes a synthetic qwen3moe model.
pub fn write_qwen3moe(spec: &Qwen3MoeSpec, tokenizer_source: &Metadata, out: &Path) -> Result<()> {
    let s = *spec;
    let g = Gen::new(s.seed, s.style, s.n_embd);
    let (mut md, n_vocab) = base_metadata(tokenizer_source, "qwen3moe", "synthetic qwen3moe");
    let a = |k: &str| format!("qwen3moe.{k}");
    md.set(a("block_count"), u32v(s.n_layer));
    md.set(a("context_length"), u32v(4096));
    md.set(a("embedding_length"), u32v(s.n_embd));
    md.set(a("feed_forward_length"), u32v(s.n_ff_exp * s.n_used));
    md.set(a("attention.head_count"), u32v(s.n_head));
    md.set(a("attention.head_count_kv"), u32v(s.n_head_kv));
    md.set(a("rope.freq_base"), Value::F32(1_000_000.0));
    md.set(a("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    md.set(a("expert_count"), u32v(s.n_expert));
    md.set(a("expert_used_count"), u32v(s.n_used));
    md.set(a("attention.key_length"), u32v(s.head_dim));
    md.set(a("attention.value_length"), u32v(s.head_dim));
    md.set(a("expert_feed_forward_length"), u32v(s.n_ff_exp));

    let g = &g;
    let e = s.n_embd;
    let mut t = Vec::new();
    embeddings(g, n_vocab, &mut t)?;
    for l in 0..s.n_layer {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        norm_tensor(g, &mut t, b("attn_norm"), e)?;
        dense_matrix(g, &mut t, b("attn_q"), e, s.n_head * s.head_dim, 1)?;
        dense_matrix(g, &mut t, b("attn_k"), e, s.n_head_kv * s.head_dim, 1)?;
        dense_matrix(g, &mut t, b("attn_v"), e, s.n_head_kv * s.head_dim, 1)?;
        norm_tensor(g, &mut t, b("attn_q_norm"), s.head_dim)?;
        norm_tensor(g, &mut t, b("attn_k_norm"), s.head_dim)?;
        dense_matrix(g, &mut t, b("attn_output"), s.n_head * s.head_dim, e, 1)?;
        norm_tensor(g, &mut t, b("ffn_norm"), e)?;
        moe(g, &mut t, l, s.n_ff_exp, s.n_expert)?;
    }
    write_model(out, md, t)
}

/// Tokenizer metadata for synthetic models when no real vocabulary is at hand (the demo on a
/// fresh machine): GPT-2's 256 byte-level symbols (its byte-to-unicode table, `bytes_to_unicode`
/// in OpenAI's `encoder.py`) and no merges, so every byte is one token.
pub fn byte_level_tokenizer() -> Metadata {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut symbols = vec![String::new(); 256];
    for &b in &printable {
        symbols[b as usize] = char::from_u32(b).expect("latin-1").to_string();
    }
    let mut next = 256;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            symbols[b as usize] = char::from_u32(next).expect("valid").to_string();
            next += 1;
            printable.push(b);
        }
    }
    let mut md = Metadata::new();
    md.set(keys::tokenizer::MODEL, Value::String("gpt2".into()));
    md.set("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    md.set(
        keys::tokenizer::TOKENS,
        Value::Array(Array::String(symbols)),
    );
    md.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; 256])),
    );
    md.set(
        "tokenizer.ggml.merges",
        Value::Array(Array::String(Vec::new())),
    );
    md.set("tokenizer.ggml.bos_token_id", Value::U32(u32::from(b'\n')));
    md.set("tokenizer.ggml.eos_token_id", Value::U32(u32::from(b'\n')));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_b_and_v_b_partition_kv_b() {
        let s = Deepseek2Spec {
            n_head: 2,
            kv_lora: 3,
            nope: 2,
            v: 1,
            ..Deepseek2Spec::default()
        };
        // kv_b rows: head 0 (k0, k1, v0), head 1 (k0, k1, v0); each row has kv_lora = 3 cols.
        let kv_b: Vec<f32> = (0..2 * 3 * 3).map(|i| i as f32).collect();
        let k_b = split_k_b(&kv_b, &s);
        // head 0: rows r = 0..3 of (kv_b[0][r], kv_b[1][r]).
        assert_eq!(&k_b[..6], &[0., 3., 1., 4., 2., 5.]);
        let v_b = split_v_b(&kv_b, &s);
        assert_eq!(v_b, vec![6., 7., 8., 15., 16., 17.]);
    }

    #[test]
    fn weights_have_heavy_tails_outliers_and_a_super_weight() {
        let g = Gen::new(1, WeightStyle::default(), 256);
        let m = g.matrices("m", 256, 512, 1, 1.0);
        let mean_sq = m.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / m.len() as f64;
        let kurt =
            m.iter().map(|x| f64::from(*x).powi(4)).sum::<f64>() / m.len() as f64 / mean_sq.powi(2);
        assert!(kurt > 5.0, "kurtosis {kurt}");
        // Outlier columns carry much more energy than the others.
        let col_energy = |c: usize| m.iter().skip(c).step_by(256).map(|x| x * x).sum::<f32>();
        let typical: f32 = (0..256).map(col_energy).sum::<f32>() / 256.0;
        for &c in &g.outliers {
            assert!(col_energy(c) > 10.0 * typical);
        }
        let d = g.down_with_super_weight("d", 256, 256, 1);
        let max = d.iter().fold(0f32, |a, x| a.max(x.abs()));
        assert!(max >= (80.0 / 16.0) as f32 * 0.99, "super weight {max}");
    }
}
