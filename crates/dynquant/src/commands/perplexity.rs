//! `dynquant perplexity`: llama-perplexity's method on the dynquant engine.

use std::path::Path;

use anyhow::{Context, Result};
use dynquant_engine::evaluation::{Evaluator, PerplexityReport, Progress, SaveLogits};
use dynquant_engine::{Model, Numerics};
use dynquant_gguf::{Access, GgufModel};
use dynquant_tokenizer::Tokenizer;

use crate::args::{EngineArgs, PerplexityArgs};

/// A rayon pool with the requested threads (0 = all cores).
pub(super) fn pool(e: &EngineArgs) -> Result<rayon::ThreadPool> {
    worker_pool(e.threads)
}

/// A rayon pool of `threads` workers (all cores when `None`).
pub(super) fn worker_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .context("starting worker threads")
}

/// Opens a model (mmap) for the engine.
pub(super) fn open(path: &Path) -> Result<GgufModel> {
    GgufModel::open(path, Access::Mmap).with_context(|| format!("opening {}", path.display()))
}

/// Binds the engine and the tokenizer to an opened model.
pub(super) fn evaluator<'a>(
    gguf: &'a GgufModel,
    e: &EngineArgs,
    path: &Path,
) -> Result<Evaluator<'a>> {
    let mut m = Model::load(gguf).with_context(|| format!("loading {}", path.display()))?;
    if e.exact {
        m.numerics = Numerics::Exact;
    }
    let tok = Tokenizer::from_gguf(gguf.metadata()).context("reading the tokenizer")?;
    Ok(Evaluator::new(gguf, m, tok))
}

pub fn run(a: &PerplexityArgs) -> Result<()> {
    let r = measure(a, true)?;
    eprintln!(
        "Final estimate: PPL = {:.4} +/- {} ({} scored tokens, {:.1} s, {:.1} tokens/s)",
        r.ppl,
        r.ppl_err.map_or("n/a".into(), |e| format!("{e:.5}")),
        r.scored,
        r.seconds,
        r.tokens as f64 / r.seconds
    );
    if a.json {
        let v = serde_json::json!({
            "ppl": r.ppl,
            "ppl_err": r.ppl_err,
            "tokens": r.tokens,
            "scored": r.scored,
            "chunks": r.chunks,
            "ctx": a.ctx,
            "running": r.running,
            "seconds": r.seconds,
            "tokens_per_second": r.tokens as f64 / r.seconds,
        });
        println!("{v}");
    }
    Ok(())
}

/// Runs the perplexity evaluation (and writes the base file when asked); `progress` prints
/// the running value after each chunk to stderr.
pub fn measure(a: &PerplexityArgs, progress: bool) -> Result<PerplexityReport> {
    let gguf = open(&a.model)?;
    let ev = evaluator(&gguf, &a.engine, &a.model)?;
    let text = ev.read_text(&a.text)?;
    let chunking = ev.chunking(a.ctx, a.chunks);
    let save = a.save_logits.as_deref().map(|path| SaveLogits {
        path,
        top_k: a.top_k,
        model_name: a
            .model
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
    });
    let r = pool(&a.engine)?.install(|| {
        ev.perplexity(&text, &chunking, save.as_ref(), |p| match p {
            Progress::Start { n_tokens, n_chunks } if progress => eprintln!(
                "perplexity: {n_tokens} tokens, {n_chunks} chunks of {}, add_bos={}",
                a.ctx,
                chunking.bos.is_some()
            ),
            Progress::Chunk {
                chunk,
                value: Some(ppl),
            } if progress => eprint!("[{}]{ppl:.4},", chunk + 1),
            _ => {}
        })
    })?;
    if progress {
        eprintln!();
    }
    Ok(r)
}
