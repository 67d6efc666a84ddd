//! `demo`: the main job on an embedded default, with nothing to download.
//!
//! Builds a small llama-shaped F32 model deterministically, writes it as GGUF, inspects it,
//! splits it into shards and merges them back, and checks the round trip is byte-identical.
//! Then it builds a small synthetic DeepSeek-style MoE model (from the test-model kit), shows
//! the plans of the dynamic `ud-iq1_s` recipe and a uniform `basic-iq1_s`, quantizes both and
//! prints their sizes side by side. (As evaluation lands, the demo grows to measure them.)

use anyhow::{ensure, Context, Result};
use dynquant_core::gguf::{
    copy_model, keys, Access, Array, GgufModel, GgufWriter, Metadata, OutputTarget, SplitSpec,
    TensorInfo, Value,
};
use dynquant_core::types::GgmlType;

use std::collections::BTreeMap;
use std::path::Path;

use dynquant_plan::inventory::Inventory;
use dynquant_plan::{plan_recipe, PlanOptions};

use super::{human_bytes, write_options};
use crate::args::DemoArgs;

/// Hyper-parameters of the demo model: every row a multiple of 256, like real big models.
const N_LAYER: u32 = 4;
const N_EMBD: u64 = 256;
const N_FF: u64 = 768;
const N_HEAD: u32 = 4;
const N_HEAD_KV: u32 = 2;
const N_VOCAB: u64 = 512;

fn demo_metadata() -> Metadata {
    let mut md = Metadata::new();
    let arch = "llama";
    md.set(keys::general::ARCHITECTURE, Value::String(arch.into()));
    md.set(keys::general::TYPE, Value::String("model".into()));
    md.set(keys::general::NAME, Value::String("dynquant demo".into()));
    md.set(keys::general::FILE_TYPE, Value::U32(0));
    md.set(format!("{arch}.block_count"), Value::U32(N_LAYER));
    md.set(format!("{arch}.context_length"), Value::U32(2048));
    md.set(
        format!("{arch}.embedding_length"),
        Value::U32(N_EMBD as u32),
    );
    md.set(
        format!("{arch}.feed_forward_length"),
        Value::U32(N_FF as u32),
    );
    md.set(format!("{arch}.attention.head_count"), Value::U32(N_HEAD));
    md.set(
        format!("{arch}.attention.head_count_kv"),
        Value::U32(N_HEAD_KV),
    );
    md.set(format!("{arch}.rope.freq_base"), Value::F32(10000.0));
    md.set(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    );
    md.set(keys::tokenizer::MODEL, Value::String("gpt2".into()));
    let tokens: Vec<String> = (0..N_VOCAB).map(|i| format!("<tok{i}>")).collect();
    md.set(keys::tokenizer::TOKENS, Value::Array(Array::String(tokens)));
    md.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; N_VOCAB as usize])),
    );
    md
}

fn demo_tensors() -> Result<Vec<TensorInfo>> {
    let head_dim = N_EMBD / u64::from(N_HEAD);
    let kv = head_dim * u64::from(N_HEAD_KV);
    let mut t = vec![
        TensorInfo::new("token_embd.weight", vec![N_EMBD, N_VOCAB], GgmlType::F32)?,
        TensorInfo::new("output_norm.weight", vec![N_EMBD], GgmlType::F32)?,
        TensorInfo::new("output.weight", vec![N_EMBD, N_VOCAB], GgmlType::F32)?,
    ];
    for l in 0..N_LAYER {
        let shapes: [(&str, Vec<u64>); 9] = [
            ("attn_norm", vec![N_EMBD]),
            ("attn_q", vec![N_EMBD, N_EMBD]),
            ("attn_k", vec![N_EMBD, kv]),
            ("attn_v", vec![N_EMBD, kv]),
            ("attn_output", vec![N_EMBD, N_EMBD]),
            ("ffn_norm", vec![N_EMBD]),
            ("ffn_gate", vec![N_EMBD, N_FF]),
            ("ffn_up", vec![N_EMBD, N_FF]),
            ("ffn_down", vec![N_FF, N_EMBD]),
        ];
        for (name, shape) in shapes {
            t.push(TensorInfo::new(
                format!("blk.{l}.{name}.weight"),
                shape,
                GgmlType::F32,
            )?);
        }
    }
    Ok(t)
}

/// Deterministic pseudo-random weights (xorshift), norms at 1.
fn fill(info: &TensorInfo, seed: u64) -> Vec<u8> {
    let n = info.n_elements() as usize;
    let mut out = Vec::with_capacity(n * 4);
    if info.name.contains("_norm") {
        for _ in 0..n {
            out.extend_from_slice(&1.0f32.to_le_bytes());
        }
        return out;
    }
    let scale = 1.0 / (info.row_len() as f32).sqrt();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let u = (s >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        out.extend_from_slice(&((u * 2.0 - 1.0) * scale).to_le_bytes());
    }
    out
}

pub fn run(a: &DemoArgs) -> Result<()> {
    let dir = a
        .out_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("dynquant-demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let model_path = dir.join("demo-f32.gguf");
    let opts = write_options(true);

    // 1. Build and write the model, streaming one tensor at a time.
    let tensors = demo_tensors()?;
    let mut writer = GgufWriter::create(
        &OutputTarget::Single(model_path.clone()),
        demo_metadata(),
        tensors.clone(),
        &opts,
    )?;
    for (i, t) in tensors.iter().enumerate() {
        writer.write(&t.name, &fill(t, i as u64 + 1))?;
    }
    let written = writer.finish()?;
    println!(
        "1. wrote {} ({}, {} tensors)",
        model_path.display(),
        human_bytes(written.bytes),
        tensors.len()
    );

    // 2. Inspect it.
    println!("2. inspect:\n");
    super::inspect::run(&crate::args::InspectArgs {
        file: model_path.clone(),
        json: false,
        tensors: false,
        read: crate::args::ReadArgs { no_mmap: false },
    })?;

    // 3. Split into shards of at most 12 tensors, then merge back.
    let model = GgufModel::open(&model_path, Access::Mmap)?;
    let prefix = dir.join("demo-split");
    let split = copy_model(
        &model,
        &OutputTarget::Split {
            prefix,
            spec: SplitSpec {
                max_bytes: None,
                max_tensors: Some(12),
            },
        },
        &opts,
    )?;
    println!("\n3. split into {} shards:", split.paths.len());
    for p in &split.paths {
        println!("   {}", p.display());
    }
    let merged_path = dir.join("demo-merged.gguf");
    let shards = GgufModel::open(&split.paths[0], Access::Pread)?;
    copy_model(&shards, &OutputTarget::Single(merged_path.clone()), &opts)?;
    let same = std::fs::read(&model_path)? == std::fs::read(&merged_path)?;
    ensure!(same, "merged file differs from the original");
    println!(
        "4. merged back into {}: byte-identical to the original",
        merged_path.display()
    );

    // 5. The dynamic idea on the architecture it was made for: a small synthetic DeepSeek-V3
    //    style model (MLA attention, 1 dense + 3 MoE layers, 16 routed experts + 1 shared),
    //    planned and quantized with the dynamic ud-iq1_s recipe and with plain IQ1_S.
    dynamic_vs_basic(&dir)
}

/// The tokenizer for the synthetic model: SmolLM2's real vocabulary when the oracle cache
/// holds it, otherwise GPT-2's 256 byte symbols (nothing to download).
fn demo_tokenizer() -> (Metadata, &'static str) {
    let cached = std::env::var_os("DYNQUANT_ORACLE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(".oracle"))
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    match GgufModel::open(&cached, Access::Pread) {
        Ok(m) => (m.metadata().clone(), "SmolLM2's vocabulary (cached)"),
        Err(_) => (
            dynquant_testkit::synth::byte_level_tokenizer(),
            "a 256-symbol byte vocabulary",
        ),
    }
}

fn quantize_args(input: &Path, output: &Path, recipe: &str) -> crate::args::QuantizeArgs {
    crate::args::QuantizeArgs {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        recipe: crate::args::RecipeArgs {
            recipe: recipe.to_string(),
            tensor_type: Vec::new(),
            tensor_type_file: None,
            token_embedding_type: None,
            output_tensor_type: None,
        },
        imatrix: None,
        imatrix_fallback: true,
        threads: None,
        shards: crate::args::ShardLimits::default(),
        allow_requantize: false,
        dry_run: false,
        json: false,
        quiet: true,
        force: true,
        read: crate::args::ReadArgs { no_mmap: false },
    }
}

fn dynamic_vs_basic(dir: &Path) -> Result<()> {
    let model_path = dir.join("synth-deepseek2.gguf");
    let (tokenizer, which) = demo_tokenizer();
    dynquant_testkit::synth::write_deepseek2(
        &dynquant_testkit::synth::Deepseek2Spec::default(),
        dynquant_testkit::synth::MlaLayout::Mla,
        &tokenizer,
        &model_path,
    )
    .context("building the synthetic deepseek2 model")?;
    let model = GgufModel::open(&model_path, Access::Mmap)?;
    println!(
        "\n5. built {} (deepseek2, MLA, 16 experts, {}; {} tensors, {})",
        model_path.display(),
        which,
        model.n_tensors(),
        human_bytes(std::fs::metadata(&model_path)?.len())
    );
    let inv = Inventory::from_gguf(&model);
    let recipes = ["ud-iq1_s", "basic-iq1_s"];
    let mut plans = Vec::new();
    for r in recipes {
        let recipe = super::plan::load_recipe(r)?;
        plans.push(plan_recipe(&inv, &recipe, &PlanOptions::default())?);
    }
    // Per role: the types each recipe gives it (and bytes).
    println!("\n6. plans side by side (types per tensor role):\n");
    println!("   {:<18} {:<26} {:<26}", "role", recipes[0], recipes[1]);
    let mut roles: Vec<String> = Vec::new();
    for t in &plans[0].tensors {
        let r = format!("{:?}", t.role);
        if !roles.contains(&r) {
            roles.push(r);
        }
    }
    for role in &roles {
        let cell = |p: &dynquant_plan::Plan| {
            let mut types: BTreeMap<String, (usize, u64)> = BTreeMap::new();
            for t in p
                .tensors
                .iter()
                .filter(|t| &format!("{:?}", t.role) == role)
            {
                let e = types.entry(t.target.name().to_string()).or_default();
                e.0 += 1;
                e.1 += t.bytes;
            }
            types
                .iter()
                .map(|(ty, (n, _))| format!("{ty} x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "   {:<18} {:<26} {:<26}",
            role,
            cell(&plans[0]),
            cell(&plans[1])
        );
    }
    println!(
        "   {:<18} {:<26} {:<26}",
        "total",
        format!(
            "{} ({:.2} bpw)",
            human_bytes(plans[0].total_bytes),
            plans[0].bpw()
        ),
        format!(
            "{} ({:.2} bpw)",
            human_bytes(plans[1].total_bytes),
            plans[1].bpw()
        )
    );
    println!(
        "\n7. quantize both (importance: uniform fallback weights; no imatrix for this model yet):"
    );
    let mut sizes = Vec::new();
    for r in recipes {
        let out = dir.join(format!("synth-deepseek2-{r}.gguf"));
        super::quantize::run(&quantize_args(&model_path, &out, r))?;
        sizes.push((r, out.clone(), std::fs::metadata(&out)?.len()));
    }
    println!();
    for (r, path, bytes) in &sizes {
        println!(
            "   {:<12} {:>10}  {}",
            r,
            human_bytes(*bytes),
            path.display()
        );
    }
    println!(
        "\n   The dynamic recipe keeps attention, the dense layer, the shared expert and the \
         router at higher precision and puts the routed experts at IQ1_S. On this small model \
         those tensors are a large share of the weights, so it is bigger than plain IQ1_S; on \
         DeepSeek-R1 (routed experts = 97% of weights) `dynquant plan` gives 131.8 GiB vs 122.6 GiB."
    );
    Ok(())
}
