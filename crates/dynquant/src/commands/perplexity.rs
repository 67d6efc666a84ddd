//! `dynquant perplexity`: llama-perplexity's method on the dynquant engine.

use std::path::Path;

use anyhow::{Context, Result};
use dynquant_engine::eval::{for_each_scored, ChunkOptions, PplAccumulator, Scored, TopK};
use dynquant_engine::kld::{self, BaseHeader, BasePosition, BaseWriter};
use dynquant_engine::ops::log_softmax;
use dynquant_engine::{Model, Numerics};
use dynquant_gguf::{Access, GgufModel};
use dynquant_tokenizer::Tokenizer;

use crate::args::{EngineArgs, PerplexityArgs};

/// A rayon pool with the requested threads (0 = all cores).
pub(super) fn pool(e: &EngineArgs) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(e.threads.unwrap_or(0))
        .build()
        .context("starting worker threads")
}

/// Opens a model (mmap) for the engine.
pub(super) fn open(path: &Path) -> Result<GgufModel> {
    GgufModel::open(path, Access::Mmap).with_context(|| format!("opening {}", path.display()))
}

/// Binds the engine to an opened model.
pub(super) fn load<'a>(gguf: &'a GgufModel, e: &EngineArgs, path: &Path) -> Result<Model<'a>> {
    let mut m = Model::load(gguf).with_context(|| format!("loading {}", path.display()))?;
    if e.exact {
        m.numerics = Numerics::Exact;
    }
    Ok(m)
}

/// Reads a text as llama.cpp's `-f` does (one trailing newline dropped) and tokenizes it whole
/// (BOS only when the vocabulary adds it, special tokens not parsed). Returns (text hash, tokens).
pub(super) fn tokenize_text(tok: &Tokenizer, path: &Path) -> Result<(String, Vec<u32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let hash = kld::sha256_hex(&bytes);
    let mut text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
    }
    let tokens = tok
        .encode(&text, true, false)
        .with_context(|| format!("tokenizing {}", path.display()))?;
    Ok((hash, tokens))
}

/// The chunking of a run: BOS substitution when the vocabulary adds BOS.
pub(super) fn chunk_options(tok: &Tokenizer, ctx: usize, chunks: Option<usize>) -> ChunkOptions {
    ChunkOptions {
        ctx,
        chunks,
        bos: if tok.add_bos() { tok.bos() } else { None },
    }
}

/// What a perplexity run measured.
#[derive(Debug, Clone)]
pub struct PplResult {
    /// Perplexity over the scored tokens.
    pub ppl: f64,
    /// Its standard error (llama-perplexity's estimate), when defined.
    pub ppl_err: Option<f64>,
    /// Tokens evaluated (chunks x ctx).
    pub tokens: usize,
    /// Tokens scored (second half of each chunk).
    pub scored: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Perplexity after each chunk.
    pub running: Vec<f64>,
    /// Wall time of the evaluation.
    pub seconds: f64,
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
pub fn measure(a: &PerplexityArgs, progress: bool) -> Result<PplResult> {
    let gguf = open(&a.model)?;
    let model = load(&gguf, &a.engine, &a.model)?;
    let tok = Tokenizer::from_gguf(gguf.metadata()).context("reading the tokenizer")?;
    let (text_hash, tokens) = tokenize_text(&tok, &a.text)?;
    let opts = chunk_options(&tok, a.ctx, a.chunks);
    let n_chunks = opts.n_chunks(tokens.len());
    if progress {
        eprintln!(
            "perplexity: {} tokens, {n_chunks} chunks of {}, add_bos={}",
            tokens.len(),
            a.ctx,
            opts.bos.is_some()
        );
    }
    let mut writer = match &a.save_logits {
        None => None,
        Some(p) => {
            let used = &tokens[..(n_chunks * a.ctx).min(tokens.len())];
            let header = BaseHeader {
                model: a
                    .model
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                model_sha256: kld::model_sha256(&gguf),
                tokenizer_sha256: kld::tokenizer_sha256(&gguf),
                tokens_sha256: kld::tokens_sha256(used),
                text_sha256: text_hash.clone(),
                ctx: a.ctx,
                chunks: n_chunks,
                top_k: a.top_k.clamp(1, model.n_vocab),
                n_vocab: model.n_vocab,
                positions: n_chunks * (a.ctx / 2).saturating_sub(1),
                n_tokens: used.len(),
            };
            Some(BaseWriter::create(p, &header, used)?)
        }
    };
    let top_k = a.top_k.clamp(1, model.n_vocab);
    let t0 = std::time::Instant::now();
    let mut acc = PplAccumulator::default();
    let mut running = Vec::new();
    let pool = pool(&a.engine)?;
    pool.install(|| {
        for_each_scored(&model, &tokens, &opts, |ev| {
            match ev {
                Scored::Position { logits, next, .. } => {
                    let lp = log_softmax(logits);
                    acc.add(lp[next as usize]);
                    if let Some(w) = writer.as_mut() {
                        w.push(&BasePosition {
                            top: TopK::from_logprobs(&lp, top_k),
                            logp_next: lp[next as usize] as f32,
                        })?;
                    }
                }
                Scored::ChunkDone(i) => {
                    let ppl = acc.ppl();
                    running.push(ppl);
                    if progress {
                        eprint!("[{}]{ppl:.4},", i + 1);
                    }
                }
            }
            Ok(())
        })
    })?;
    if progress {
        eprintln!();
    }
    if let Some(w) = writer {
        w.finish()?;
    }
    Ok(PplResult {
        ppl: acc.ppl(),
        ppl_err: acc.ppl_err(),
        tokens: n_chunks * a.ctx,
        scored: acc.count(),
        chunks: n_chunks,
        running,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
