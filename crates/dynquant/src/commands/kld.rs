//! `dynquant kld`: KL divergence from a base file written by `perplexity --save-logits`.

use anyhow::{Context, Result};
use dynquant_engine::evaluation::Progress;
use dynquant_engine::kld::{Base, KldStats};

use super::perplexity::{evaluator, open, pool};
use crate::args::KldArgs;

pub fn run(a: &KldArgs) -> Result<()> {
    let s = measure(a, true)?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("Positions:       {}", s.positions);
    println!("Mean PPL(Q):     {:.4}", s.ppl);
    println!("Mean PPL(base):  {:.4}", s.ppl_base);
    println!("PPL ratio:       {:.6}", s.ppl_ratio);
    println!("Mean KLD:        {:.6} ± {:.6}", s.kld_mean, s.kld_err);
    println!("Median KLD:      {:.6}", s.kld_median);
    println!("90.0% KLD:       {:.6}", s.kld_p90);
    println!("99.0% KLD:       {:.6}", s.kld_p99);
    println!("99.9% KLD:       {:.6}", s.kld_p999);
    println!("Maximum KLD:     {:.6}", s.kld_max);
    println!("Same top p:      {:.3} %", 100.0 * s.same_top);
    println!("RMS Δp:          {:.3} %", 100.0 * s.rms_dp);
    Ok(())
}

/// Compares the model with the base file; `progress` prints the running mean to stderr.
pub fn measure(a: &KldArgs, progress: bool) -> Result<KldStats> {
    let base = Base::read(&a.base).with_context(|| format!("reading {}", a.base.display()))?;
    let gguf = open(&a.model)?;
    let ev = evaluator(&gguf, &a.engine, &a.model)?;
    let h = &base.header;
    let stats = pool(&a.engine)?.install(|| {
        ev.kld(&base, |p| match p {
            Progress::Start { .. } if progress => eprintln!(
                "kld: {} vs base {} ({} chunks of {}, {} positions)",
                a.model.display(),
                h.model,
                h.chunks,
                h.ctx,
                h.positions
            ),
            Progress::Chunk {
                chunk,
                value: Some(kld),
            } if progress => eprint!("[{}]{kld:.6},", chunk + 1),
            _ => {}
        })
    })?;
    if progress {
        eprintln!();
    }
    Ok(stats)
}
