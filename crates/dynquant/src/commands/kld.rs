//! `dynquant kld`: KL divergence from a base file written by `perplexity --save-logits`.

use anyhow::{bail, Context, Result};
use dynquant_engine::eval::{for_each_scored, ChunkOptions, Scored};
use dynquant_engine::kld::{self, Base, KldAccumulator, KldStats};
use dynquant_engine::ops::log_softmax;
use dynquant_tokenizer::Tokenizer;

use super::perplexity::{load, open, pool};
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
    let model = load(&gguf, &a.engine, &a.model)?;
    let tok = Tokenizer::from_gguf(gguf.metadata()).context("reading the tokenizer")?;
    base.check_compatible(&kld::tokenizer_sha256(&gguf), None, model.n_vocab)?;
    let h = &base.header;
    let opts = ChunkOptions {
        ctx: h.ctx,
        chunks: Some(h.chunks),
        bos: if tok.add_bos() { tok.bos() } else { None },
    };
    if opts.n_chunks(base.tokens.len()) != h.chunks {
        bail!(
            "{}: token count does not give {} chunks",
            a.base.display(),
            h.chunks
        );
    }
    if progress {
        eprintln!(
            "kld: {} vs base {} ({} chunks of {}, {} positions)",
            a.model.display(),
            h.model,
            h.chunks,
            h.ctx,
            h.positions
        );
    }
    let mut acc = KldAccumulator::default();
    let mut k = 0usize;
    pool(&a.engine)?.install(|| {
        for_each_scored(&model, &base.tokens, &opts, |ev| {
            match ev {
                Scored::Position { logits, next, .. } => {
                    let p = base.positions.get(k).ok_or_else(|| {
                        dynquant_engine::EngineError::Invalid(
                            "base file has too few positions".into(),
                        )
                    })?;
                    acc.add(p, &log_softmax(logits), next);
                    k += 1;
                }
                Scored::ChunkDone(i) => {
                    if let Some(s) = acc.stats().filter(|_| progress) {
                        eprint!("[{}]{:.6},", i + 1, s.kld_mean);
                    }
                }
            }
            Ok(())
        })
    })?;
    if progress {
        eprintln!();
    }
    acc.stats().context("no positions compared")
}
