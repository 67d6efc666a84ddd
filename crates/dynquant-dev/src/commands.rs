//! One function per subcommand; each makes thin calls into the test kit and dynquant-synth.

use std::path::PathBuf;

use anyhow::{Context, Result};

use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::file_type_by_name;
use dynquant_synth::big_llama::write_big_llama;
use dynquant_testkit::llama_quantize::LlamaLib;

use crate::args::{BigModelArgs, Command, FitPriorsArgs, LlamaQuantizeArgs, TestModelsArgs};

/// Dispatches a parsed command line.
pub fn run(c: &Command) -> Result<()> {
    match c {
        Command::TestModels(a) => test_models(a),
        Command::LlamaQuantize(a) => llama_quantize(a),
        Command::BigModel(a) => big_model(a),
        Command::FitPriors(a) => fit_priors(a),
    }
}

fn fit_priors(a: &FitPriorsArgs) -> Result<()> {
    let read = |paths: &[PathBuf]| -> Result<Vec<(String, dynquant_plan::Sensitivity)>> {
        let mut scans = Vec::new();
        for p in paths {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let s = dynquant_plan::Sensitivity::parse(&text)
                .with_context(|| p.display().to_string())?;
            let name = p.file_stem().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            scans.push((name, s));
        }
        Ok(scans)
    };
    let (scans, typed) = (read(&a.scans)?, read(&a.type_errors_from)?);
    let scan_refs: Vec<(&str, &dynquant_plan::Sensitivity)> =
        scans.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let typed_refs: Vec<(&str, &dynquant_plan::Sensitivity)> =
        typed.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let priors = dynquant_plan::Priors::fit(&scan_refs, &typed_refs);
    let refs = scan_refs;
    let tmp = a.output.with_extension("tmp");
    std::fs::write(&tmp, priors.to_toml()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output).with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "priors from {} scans: {} types, {} roles -> {}",
        refs.len(),
        priors.type_errors.len(),
        priors.roles.len(),
        a.output.display()
    );
    Ok(())
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
    lib.quantize(&a.input, &a.output, p, imatrix.as_ref())?;
    println!(
        "llama.cpp wrote {} ({}) in {:.2} s",
        a.output.display(),
        ft.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A one-layer F32 llama model whose two FFN matrices are `ffn_mib` each
/// (`dynquant_synth::big_llama`).
fn big_model(a: &BigModelArgs) -> Result<()> {
    let bytes = write_big_llama(&a.out, a.ffn_mib)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {} ({} bytes)", a.out.display(), bytes);
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
