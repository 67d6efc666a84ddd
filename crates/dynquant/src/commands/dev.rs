//! `dev`: developer tools.

use std::path::PathBuf;

use anyhow::{Context, Result};

use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::{file_type_by_name, GgmlType};
use dynquant_gguf::{keys, GgufWriter, Metadata, OutputTarget, TensorInfo, Value};
use dynquant_testkit::llama_quantize::LlamaLib;

use super::write_options;
use crate::args::{BigModelArgs, DevCommand, LlamaQuantizeArgs, TestModelsArgs};

pub fn run(c: &DevCommand) -> Result<()> {
    match c {
        DevCommand::TestModels(a) => test_models(a),
        DevCommand::LlamaQuantize(a) => llama_quantize(a),
        DevCommand::BigModel(a) => big_model(a),
    }
}

fn llama_quantize(a: &LlamaQuantizeArgs) -> Result<()> {
    let ft = file_type_by_name(&a.ftype)
        .with_context(|| format!("unknown llama.cpp file type '{}'", a.ftype))?;
    let imatrix = a
        .imatrix
        .as_ref()
        .map(|p| Imatrix::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let lib = LlamaLib::from_env()?;
    let mut p = lib.default_params()?;
    p.nthread = a.threads;
    p.ftype = ft.id as i32;
    let started = std::time::Instant::now();
    lib.quantize(&a.input, &a.output, p, imatrix.as_ref(), false)?;
    println!(
        "llama.cpp wrote {} ({}) in {:.2} s",
        a.output.display(),
        ft.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A one-layer F32 llama model (no attention) whose two FFN matrices are `ffn_mib` each:
/// the model is larger than the quantize memory bound, so a measurement shows the bound
/// does not grow with the model.
fn big_model(a: &BigModelArgs) -> Result<()> {
    const N_EMBD: u64 = 4096;
    const N_VOCAB: u64 = 256;
    let n_ff = (a.ffn_mib << 20) / (4 * N_EMBD);
    anyhow::ensure!(n_ff >= 256, "--ffn-mib too small");
    let n_ff = n_ff / 256 * 256;
    let arch = "llama";
    let mut md = Metadata::new();
    md.set(keys::general::ARCHITECTURE, Value::String(arch.into()));
    md.set(
        keys::general::NAME,
        Value::String("dynquant big-model".into()),
    );
    md.set(keys::general::FILE_TYPE, Value::U32(0));
    for (k, v) in [
        ("block_count", 1),
        ("context_length", 2048),
        ("embedding_length", N_EMBD as u32),
        ("feed_forward_length", n_ff as u32),
        ("attention.head_count", 32),
        ("attention.head_count_kv", 32),
    ] {
        md.set(format!("{arch}.{k}"), Value::U32(v));
    }
    md.set(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    );
    let tensors = vec![
        ("token_embd.weight", vec![N_EMBD, N_VOCAB]),
        ("blk.0.ffn_norm.weight", vec![N_EMBD]),
        ("blk.0.ffn_up.weight", vec![N_EMBD, n_ff]),
        ("blk.0.ffn_down.weight", vec![n_ff, N_EMBD]),
        ("output_norm.weight", vec![N_EMBD]),
    ];
    let infos = tensors
        .iter()
        .map(|(n, s)| TensorInfo::new(n.to_string(), s.clone(), GgmlType::F32))
        .collect::<Result<Vec<_>, _>>()?;
    let mut w = GgufWriter::create(
        &OutputTarget::Single(a.out.clone()),
        md,
        infos,
        &write_options(true),
    )?;
    let mut buf = Vec::with_capacity(4 << 20);
    for (name, shape) in &tensors {
        let n: u64 = shape.iter().product();
        let mut rng = dynquant_testkit::rng::Rng::new(7, name);
        let mut done = 0;
        while done < n {
            let k = (n - done).min(1 << 20);
            buf.clear();
            for _ in 0..k {
                let v = if shape.len() == 1 {
                    1.0
                } else {
                    ((rng.uniform() - 0.5) * 0.04) as f32
                };
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write(name, &buf)?;
            done += k;
        }
    }
    let s = w.finish()?;
    println!("wrote {} ({} bytes)", a.out.display(), s.bytes);
    Ok(())
}

fn test_models(a: &TestModelsArgs) -> Result<()> {
    let smollm2 = match &a.smollm2 {
        Some(p) => p.clone(),
        None => std::env::var_os("DYNQUANT_ORACLE")
            .map(|d| PathBuf::from(d).join("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
            .context("no --smollm2 given and DYNQUANT_ORACLE is not set (run scripts/prepare-oracles.sh)")?,
    };
    let imatrix = a
        .imatrix
        .clone()
        .unwrap_or_else(|| PathBuf::from("../shared/golden/smollm2-135m.imatrix.gguf"));
    let started = std::time::Instant::now();
    let report = dynquant_testkit::build_all(&a.out, &smollm2, &imatrix, &mut |msg| {
        eprintln!("{msg}");
    })
    .with_context(|| format!("building test models into {}", a.out.display()))?;
    println!(
        "test models in {}: {} built, {} cached ({:.1} s)",
        a.out.display(),
        report.built.len(),
        report.cached.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
