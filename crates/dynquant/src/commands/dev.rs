//! `dev`: developer tools.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::args::{DevCommand, TestModelsArgs};

pub fn run(c: &DevCommand) -> Result<()> {
    match c {
        DevCommand::TestModels(a) => test_models(a),
    }
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
