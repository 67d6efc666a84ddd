//! `demo`: the main job on an embedded default, with nothing to download.
//!
//! Builds a small llama-shaped F32 model deterministically, writes it as GGUF, inspects it,
//! splits it into shards and merges them back, and checks the round trip is byte-identical.
//! Then it builds a small synthetic DeepSeek-style MoE model (dynquant-synth), shows
//! the plans of the dynamic `ud-iq1_s` recipe and a uniform `basic-iq1_s`, computes an
//! importance matrix with dynquant's own engine on an embedded text, quantizes both with it,
//! and measures size, KL divergence and top-1 agreement of each against the unquantized model
//! (not perplexity: the weights are random, so the model knows nothing about the text and its
//! perplexity says nothing about quality).

use anyhow::{ensure, Context, Result};
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{
    copy_model, keys, Access, Array, GgufModel, GgufWriter, Metadata, OutputTarget, SplitSpec,
    TensorInfo, Value,
};

use std::collections::BTreeMap;
use std::path::Path;

use dynquant_plan::inventory::Inventory;
use dynquant_plan::PlanOptions;

use dynquant_synth::moe::{byte_level_tokenizer, write_deepseek2, Deepseek2Spec, MlaLayout};

use super::{human_bytes, write_options};
use crate::args::{DemoArgs, EngineArgs, ImatrixArgs, PerplexityArgs};

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
    if a.model_only {
        return Ok(());
    }

    // 5. The dynamic idea on the architecture it was made for: a small synthetic DeepSeek-V3
    //    style model (MLA attention, 1 dense + 3 MoE layers, 16 routed experts + 1 shared),
    //    planned and quantized with the dynamic ud-iq1_s recipe and with plain IQ1_S.
    dynamic_vs_basic(&dir, a.threads)
}

/// The text the demo calibrates and evaluates on (original prose, ~4 KB: with the byte-level
/// vocabulary that is 7 chunks of 512 tokens).
const DEMO_TEXT: &str = include_str!("../../data/demo-text.txt");

/// The demo's MoE model: the synthetic DeepSeek test model with 64 routed experts in 8 groups
/// (4 groups and 6 experts used per token) and a 256-symbol byte vocabulary, so that, as in
/// DeepSeek-R1 (97%), the routed experts hold most of the weights and the dynamic and the
/// uniform quantization come out at about the same size.
fn demo_spec() -> Deepseek2Spec {
    Deepseek2Spec {
        n_expert: 64,
        n_used: 6,
        n_group: 8,
        n_group_used: 4,
        ..Deepseek2Spec::default()
    }
}

fn quantize_args(
    input: &Path,
    output: &Path,
    recipe: &str,
    imatrix: &Path,
) -> crate::args::QuantizeArgs {
    crate::args::QuantizeArgs {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        recipe: crate::args::RecipeArgs {
            recipe: Some(recipe.to_string()),
            tensor_type: Vec::new(),
            tensor_type_file: None,
            token_embedding_type: None,
            output_tensor_type: None,
            requantize_mxfp4: false,
        },
        target: crate::args::TargetArgs::default(),
        imatrix: Some(imatrix.to_path_buf()),
        covariance: None,
        // token_embd and output are not in an imatrix (llama-imatrix leaves them out too), and
        // the uniform IQ1_S/IQ2_XXS recipes give them types that want one.
        imatrix_fallback: true,
        expert_prior: crate::args::ExpertPriorArgs::default(),
        threads: None,
        shards: crate::args::ShardLimits::default(),
        shard: None,
        checksums: false,
        allow_requantize: false,
        dry_run: false,
        json: false,
        quiet: true,
        force: true,
        read: crate::args::ReadArgs { no_mmap: false },
    }
}

fn dynamic_vs_basic(dir: &Path, threads: Option<usize>) -> Result<()> {
    let model_path = dir.join("synth-deepseek2.gguf");
    let spec = demo_spec();
    write_deepseek2(&spec, MlaLayout::Mla, &byte_level_tokenizer(), &model_path)
        .context("building the synthetic deepseek2 model")?;
    let model = GgufModel::open(&model_path, Access::Mmap)?;
    println!(
        "\n5. built {} (deepseek2, MLA, {} layers of which {} dense, {} routed experts + {} shared, \
         {} used per token; {} tensors, {})",
        model_path.display(),
        spec.n_layer,
        spec.n_dense,
        spec.n_expert,
        spec.n_shared,
        spec.n_used,
        model.n_tensors(),
        human_bytes(std::fs::metadata(&model_path)?.len())
    );
    let inv = Inventory::from_gguf(&model);
    // The seed's comparison (uniform IQ1_S) and a uniform quant of about the dynamic one's
    // size (IQ2_XXS).
    let recipes = ["ud-iq1_s", "basic-iq1_s", "basic-iq2_xxs"];
    let mut plans = Vec::new();
    for r in recipes {
        let preset = dynquant_input::load_preset(r)?;
        plans.push(preset.plan(&inv, &PlanOptions::default())?);
    }
    // Per role: the types each recipe gives it.
    println!("\n6. plans side by side (types per tensor role):\n");
    print!("   {:<16}", "role");
    recipes.iter().for_each(|r| print!(" {r:<24}"));
    println!();
    let mut roles: Vec<String> = Vec::new();
    for t in &plans[0].tensors {
        let r = format!("{:?}", t.role);
        if !roles.contains(&r) {
            roles.push(r);
        }
    }
    for role in &roles {
        print!("   {role:<16}");
        for p in &plans {
            let mut types: BTreeMap<String, usize> = BTreeMap::new();
            for t in p
                .tensors
                .iter()
                .filter(|t| &format!("{:?}", t.role) == role)
            {
                *types.entry(t.target.name().to_string()).or_default() += 1;
            }
            let cell = types
                .iter()
                .map(|(ty, n)| format!("{ty} x{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            print!(" {cell:<24}");
        }
        println!();
    }
    print!("   {:<16}", "total");
    for p in &plans {
        let cell = format!("{} ({:.2} bpw)", human_bytes(p.total_bytes), p.bpw());
        print!(" {cell:<24}");
    }
    println!();
    let engine = EngineArgs {
        threads,
        exact: false,
    };
    let text_path = dir.join("demo-text.txt");
    std::fs::write(&text_path, DEMO_TEXT)
        .with_context(|| format!("writing {}", text_path.display()))?;
    let imatrix_path = dir.join("synth-deepseek2.imatrix.gguf");
    println!(
        "\n7. importance matrix from dynquant's own engine on {} ({} bytes of text):",
        text_path.display(),
        DEMO_TEXT.len()
    );
    super::imatrix::run(&ImatrixArgs {
        action: None,
        model: Some(model_path.clone()),
        text: Some(text_path.clone()),
        output: Some(imatrix_path.clone()),
        ctx: EVAL_CTX,
        chunks: None,
        chunk_range: None,
        covariance: None,
        show_statistics: false,
        force: true,
        engine,
    })?;

    println!("\n8. quantize all three with it:");
    let mut quants = Vec::new();
    for (r, plan) in recipes.iter().zip(&plans) {
        let out = dir.join(format!("synth-deepseek2-{r}.gguf"));
        super::quantize::run(&quantize_args(&model_path, &out, r, &imatrix_path))?;
        let bytes = std::fs::metadata(&out)?.len();
        println!("   {:<14} {:>10}  {}", r, human_bytes(bytes), out.display());
        quants.push((*r, out, bytes, plan.bpw()));
    }

    println!("\n9. quality against the unquantized model (same text, {EVAL_CTX}-token chunks):");
    let base_path = dir.join("synth-deepseek2.kld-base");
    // Only for its base file of reference distributions.
    super::perplexity::measure(
        &PerplexityArgs {
            model: model_path.clone(),
            text: text_path.clone(),
            ctx: EVAL_CTX,
            chunks: None,
            save_logits: Some(base_path.clone()),
            top_k: 64,
            json: false,
            engine,
        },
        false,
    )?;
    // No perplexity column: with random weights the model knows nothing about the text, and a
    // flatter, more damaged model even gets a lower one. Drift from the unquantized model is
    // the measure.
    println!(
        "\n   The weights are random, so perplexity means nothing here; the measure is how far each \
         quant drifts from the unquantized model."
    );
    println!();
    println!(
        "   {:<14} {:>10} {:>6} {:>22} {:>8}",
        "model", "size", "bpw", "mean KLD", "top-1"
    );
    println!(
        "   {:<14} {:>10} {:>6.2} {:>22} {:>8}",
        "F16",
        human_bytes(std::fs::metadata(&model_path)?.len()),
        plans_f16_bpw(&inv),
        "-",
        "-"
    );
    // The report's measurements are the `kld` command's (the same accumulator), with the
    // percentile curve and each file's bit map besides.
    let quant_paths: Vec<std::path::PathBuf> = quants.iter().map(|q| q.1.clone()).collect();
    let mut report = super::compare::measure(
        &super::compare::CompareInputs {
            base: &base_path,
            quants: &quant_paths,
            text: Some(&text_path),
            ctx: EVAL_CTX,
            chunks: usize::MAX,
            top_k: 64,
            references: Vec::new(),
            checks: None,
            progress: false,
            engine,
        },
        dir,
    )?;
    let mut klds = Vec::new();
    for ((r, _, bytes, bpw), q) in quants.iter().zip(&report.quants) {
        println!(
            "   {:<14} {:>10} {:>6.2} {:>22} {:>7.2}%",
            r,
            human_bytes(*bytes),
            bpw,
            format!("{:.5} ± {:.5}", q.kld.mean, q.kld.mean_err),
            100.0 * q.kld.top1
        );
        klds.push(q.kld.mean);
    }
    println!(
        "\n   Uniform IQ1_S is {:.0}% of the dynamic quant's size and drifts {:.1}x as far from the \
         original (mean KLD); uniform IQ2_XXS, {:.0}% of its size, drifts {:.1}x as far. The \
         dynamic recipe keeps attention, the dense layer, the shared expert and the router at \
         higher precision and puts the routed experts (most of the weights) at IQ1_S, their \
         down projections in the first MoE layers at IQ2_XXS. On DeepSeek-R1 (58 MoE layers) \
         `dynquant plan` gives 131.8 GiB for ud-iq1_s vs 122.6 GiB for basic-iq1_s.",
        100.0 * quants[1].2 as f64 / quants[0].2 as f64,
        klds[1] / klds[0],
        100.0 * quants[2].2 as f64 / quants[0].2 as f64,
        klds[2] / klds[0],
    );

    // 10. The same measurements as a report a person can open (no generation checks: the
    //     weights are random, so every model, the unquantized one included, writes gibberish).
    let gguf = super::perplexity::open(&model_path)?;
    let kv = dynquant_engine::Model::load(&gguf)
        .map(|m| dynquant_report::facts::kv_bytes_per_token(&m.config))
        .context("loading the demo model")?;
    report.base.file = "synth-deepseek2.gguf".to_string();
    report.base.facts = Some(dynquant_report::facts::ModelFacts::of(
        &gguf,
        &report.base.file,
        kv,
    )?);
    let html = dir.join("report.html");
    let outputs = super::compare::Outputs::new(&html, Some(&dir.join("card.md")), &[])?;
    outputs.write(&report)?;
    println!(
        "\n10. report: {} (charts of KLD vs size, KLD percentiles and where each file's bits \
         went; report.json and card.md beside it)",
        html.display()
    );
    Ok(())
}

/// Context of the demo's imatrix and evaluation runs.
const EVAL_CTX: usize = 512;

/// Bits per weight of the unquantized model (all tensors).
fn plans_f16_bpw(inv: &Inventory) -> f64 {
    let (bytes, elems) = inv.tensors.iter().fold((0u64, 0u64), |(b, e), t| {
        (
            b + t.ggml_type.row_bytes(t.row_len()).unwrap_or(0)
                * (t.n_elements() / t.row_len().max(1)),
            e + t.n_elements(),
        )
    });
    8.0 * bytes as f64 / elems.max(1) as f64
}
