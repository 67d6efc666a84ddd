//! Evaluations over token sequences: llama-perplexity's perplexity.

use dynquant_tokenizer::Tokenizer;

use crate::error::{EngineError, Result};
use crate::model::{Logits, Model};
use crate::ops::log_softmax_at;

/// How a text is cut into chunks (llama-perplexity's method).
#[derive(Debug, Clone)]
pub struct ChunkOptions {
    /// Tokens per chunk.
    pub ctx: usize,
    /// At most this many chunks.
    pub chunks: Option<usize>,
    /// The BOS id when the vocabulary adds BOS: it replaces each chunk's first token.
    pub bos: Option<u32>,
}

impl ChunkOptions {
    /// Chunks of `ctx` tokens (at most `chunks` of them), each starting with BOS when `tok`'s
    /// vocabulary adds BOS (llama-perplexity's substitution).
    pub fn for_tokenizer(tok: &Tokenizer, ctx: usize, chunks: Option<usize>) -> ChunkOptions {
        ChunkOptions {
            ctx,
            chunks,
            bos: if tok.add_bos() { tok.bos() } else { None },
        }
    }

    /// Number of chunks `n_tokens` tokens give.
    pub fn n_chunks(&self, n_tokens: usize) -> usize {
        let n = n_tokens / self.ctx.max(1);
        self.chunks.map_or(n, |c| c.min(n))
    }

    /// The tokens of chunk `i`, BOS-substituted.
    pub fn chunk(&self, tokens: &[u32], i: usize) -> Vec<u32> {
        let mut c = tokens[i * self.ctx..(i + 1) * self.ctx].to_vec();
        if let Some(b) = self.bos {
            c[0] = b;
        }
        c
    }

    /// The number of chunks, or an error when `ctx` is odd or below 4 or the text is shorter
    /// than one chunk.
    pub(crate) fn check(&self, n_tokens: usize) -> Result<usize> {
        if self.ctx < 4 || !self.ctx.is_multiple_of(2) {
            return Err(EngineError::Invalid(format!(
                "ctx must be even and >= 4, got {}",
                self.ctx
            )));
        }
        let n = self.n_chunks(n_tokens);
        if n == 0 {
            return Err(EngineError::Invalid(format!(
                "need at least {} tokens for one chunk, the text gives {n_tokens}",
                self.ctx
            )));
        }
        Ok(n)
    }
}

/// Running perplexity state (sum of -log p and its square over scored tokens).
#[derive(Debug, Clone, Default)]
pub struct PplAccumulator {
    nll: f64,
    nll2: f64,
    count: usize,
}

impl PplAccumulator {
    /// Adds one scored token's log-probability.
    pub fn add(&mut self, logp: f64) {
        self.nll -= logp;
        self.nll2 += logp * logp;
        self.count += 1;
    }

    /// Scored tokens so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// exp(mean negative log-likelihood).
    pub fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }

    /// llama-perplexity's uncertainty: ppl * sqrt(var(nll) / (n - 1)).
    pub fn ppl_err(&self) -> Option<f64> {
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        (self.count > 1 && var > 0.0).then(|| self.ppl() * (var / (n - 1.0)).sqrt())
    }
}

/// What [`for_each_scored_with`] reports: a scored position's value, then each chunk's end.
#[derive(Debug)]
pub enum ScoredWith<R> {
    /// Scored position `j` of chunk `chunk`, the token that follows it, and what the scoring
    /// function made of its logits.
    Position {
        /// Chunk index.
        chunk: usize,
        /// Position within the chunk.
        j: usize,
        /// The token that follows.
        next: u32,
        /// The scoring function's result.
        value: R,
    },
    /// Chunk `0` is complete.
    ChunkDone(usize),
}

/// Evaluates every chunk (each from an empty cache, one batch), runs `score(chunk, j, logits,
/// next)` on its scored positions j = ctx/2 .. ctx-2 in parallel (each position by one task,
/// so the results do not depend on the thread count; the vocabulary-wide rows are not scored
/// on one thread after each forward pass), then reports the results to `on` in position order
/// and the chunk's end. Returns the number of chunks.
pub fn for_each_scored_with<R: Send>(
    model: &Model<'_>,
    tokens: &[u32],
    opts: &ChunkOptions,
    score: impl Fn(usize, usize, &[f32], u32) -> R + Sync,
    mut on: impl FnMut(ScoredWith<R>) -> Result<()>,
) -> Result<usize> {
    use rayon::prelude::*;
    let n_chunks = opts.check(tokens.len())?;
    let first = opts.ctx / 2;
    let nv = model.n_vocab;
    let mut s = model.session(opts.ctx);
    for i in 0..n_chunks {
        let chunk = opts.chunk(tokens, i);
        s.clear();
        let logits = s.eval(&chunk, Logits::From(first), None)?;
        let values: Vec<R> = (first..opts.ctx - 1)
            .into_par_iter()
            .map(|j| {
                let row = &logits[(j - first) * nv..(j - first + 1) * nv];
                score(i, j, row, chunk[j + 1])
            })
            .collect();
        for (j, value) in (first..opts.ctx - 1).zip(values) {
            on(ScoredWith::Position {
                chunk: i,
                j,
                next: chunk[j + 1],
                value,
            })?;
        }
        on(ScoredWith::ChunkDone(i))?;
    }
    Ok(n_chunks)
}

/// Perplexity as llama-perplexity computes it; `progress(chunk, running ppl)` after each chunk.
pub fn perplexity(
    model: &Model<'_>,
    tokens: &[u32],
    opts: &ChunkOptions,
    mut progress: impl FnMut(usize, f64),
) -> Result<PplAccumulator> {
    let mut acc = PplAccumulator::default();
    let score = |_: usize, _: usize, logits: &[f32], next: u32| log_softmax_at(logits, next);
    for_each_scored_with(model, tokens, opts, score, |ev| {
        match ev {
            ScoredWith::Position { value, .. } => acc.add(value),
            ScoredWith::ChunkDone(i) => progress(i, acc.ppl()),
        }
        Ok(())
    })?;
    Ok(acc)
}

/// A reference next-token distribution reduced to its most probable tokens plus the
/// probability mass of all others.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Token ids, most probable first.
    pub ids: Vec<u32>,
    /// Their natural-log probabilities.
    pub logp: Vec<f32>,
    /// Probability of every other token together.
    pub tail: f32,
}

impl TopK {
    /// The `k` most probable tokens of a full log-probability vector.
    pub fn from_logprobs(logp: &[f64], k: usize) -> TopK {
        let mut idx: Vec<u32> = (0..logp.len() as u32).collect();
        let k = k.min(idx.len());
        let cmp = |a: &u32, b: &u32| {
            logp[*b as usize]
                .total_cmp(&logp[*a as usize])
                .then(a.cmp(b))
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k, cmp);
            idx.truncate(k);
        }
        idx.sort_by(cmp);
        let top: f64 = idx.iter().map(|&i| logp[i as usize].exp()).sum();
        TopK {
            logp: idx.iter().map(|&i| logp[i as usize] as f32).collect(),
            ids: idx,
            tail: (1.0 - top).max(0.0) as f32,
        }
    }

    /// KL(reference || ours) with the reference's tail treated as one outcome (a lower bound of
    /// the full-vocabulary divergence, tight when the tail is small).
    pub fn kld(&self, ours: &[f64]) -> f64 {
        let mut kl = 0.0;
        let mut q_top = 0.0;
        for (&i, &lp) in self.ids.iter().zip(&self.logp) {
            let lq = ours[i as usize];
            q_top += lq.exp();
            kl += (lp as f64).exp() * (lp as f64 - lq);
        }
        let tail = self.tail as f64;
        if tail > 0.0 {
            let q_tail = (1.0 - q_top).max(1e-30);
            kl += tail * (tail.ln() - q_tail.ln());
        }
        kl.max(0.0)
    }
}
