//! `dynquant run`: streaming generation.

use std::io::Write;

use anyhow::Result;
use dynquant_engine::evaluation::GenerateOptions;
use dynquant_engine::sample::SamplerParams;

use super::perplexity::{evaluator, open, pool};
use crate::args::RunArgs;

pub fn run(a: &RunArgs) -> Result<()> {
    let gguf = open(&a.model)?;
    let ev = evaluator(&gguf, &a.engine, &a.model)?;
    let prompt = ev.prompt(&a.prompt, a.chat)?;
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let opts = GenerateOptions {
        n_predict: a.n_predict,
        ctx: a.ctx,
        sampler: SamplerParams {
            temp: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            seed,
        },
    };
    let report = pool(&a.engine)?.install(|| -> Result<_> {
        let mut out = std::io::stdout().lock();
        let report = ev.generate(&prompt, &opts, |text| -> Result<()> {
            out.write_all(text)?;
            out.flush()?;
            Ok(())
        })?;
        writeln!(out)?;
        Ok(report)
    })?;
    eprintln!(
        "run: prompt {} tokens in {:.2} s, generated {} tokens at {:.1} tokens/s (seed {seed})",
        prompt.len(),
        report.prompt_seconds,
        report.generated,
        report.generated as f64 / (report.seconds - report.prompt_seconds).max(1e-9)
    );
    Ok(())
}
