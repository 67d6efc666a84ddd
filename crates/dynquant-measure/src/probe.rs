//! The end-to-end part: the unquantized model's run over the calibration chunks, kept as the
//! hidden state entering every block and the full next-token log-probabilities of every scored
//! position, and a probe: the model with a few tensors replaced (engine `WeightOverrides`),
//! run from the first block those tensors touch, compared with the kept distributions.
//!
//! Each chunk is evaluated from an empty cache and its second half scored, as
//! llama-perplexity and `dynquant kld` do. The KL divergence is exact over the whole
//! vocabulary (no top-k truncation: a single group's ΔKLD can be 1e-5 nats, below a top-k
//! tail's rounding). Blocks before the probe's first block see unchanged weights, so their
//! output is the kept state: a probe of block L costs blocks L.. only, with the same bits a
//! whole run would give.
//!
//! In context (`dynquant measure context`) the kept states are those of a quantized file of
//! the model and the probe sets a group back to the unquantized weights; the distributions
//! compared with stay the unquantized model's, and each position's KLD of the quantized file
//! is kept so a probe's saving is a mean of per-position differences.

use std::time::Instant;

use dynquant_engine::ops::log_softmax;
use dynquant_engine::{Logits, Model, Session, WeightOverrides};
use dynquant_gguf::GgufModel;
use rayon::prelude::*;

use crate::MeasureError;

/// Where a probe's evaluation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// From the tokens (the embedding changed).
    Tokens,
    /// From the state entering block `n` (`n_layer`: the output projection only).
    Block(usize),
}

impl Start {
    /// The share of a whole-model evaluation that a probe starting here runs (its blocks and
    /// the output projection, of `n_layer` blocks and the output), for time estimates.
    pub(crate) fn share_of_run(self, n_layer: usize) -> f64 {
        match self {
            Start::Tokens => 1.0,
            Start::Block(b) => (n_layer - b.min(n_layer) + 1) as f64 / (n_layer + 1) as f64,
        }
    }
}

/// The state entering every block (then the last block's output) and the log-probabilities of
/// the scored positions of one chunk, from one whole run of `model` in session `s`.
fn states_and_log_probs(
    model: &Model<'_>,
    s: &mut Session<'_, '_>,
    tokens: &[u32],
) -> Result<(Vec<Vec<f32>>, Vec<f64>), MeasureError> {
    let ctx = tokens.len();
    let states = s.hidden_states(tokens).map_err(engine)?;
    s.clear();
    let last = states.last().map_or(&[][..], Vec::as_slice);
    let logits = s
        .eval_from(model.n_layer(), last, Logits::From(ctx / 2))
        .map_err(engine)?;
    Ok((states, log_probs(&logits, model.n_vocab, ctx)))
}

/// One calibration chunk of the unquantized model.
struct Chunk {
    tokens: Vec<u32>,
    /// State entering each block, then the last block's output.
    states: Vec<Vec<f32>>,
    /// Log-probabilities of every scored position (`n_vocab` each, consecutive).
    base: Vec<f64>,
    /// In context: the quantized file's KLD at every scored position (else empty).
    current: Vec<f64>,
}

/// The unquantized model's run over the calibration chunks.
pub(crate) struct Calibration {
    chunks: Vec<Chunk>,
    ctx: usize,
    n_vocab: usize,
    /// Wall time of the run (one whole-model evaluation of every chunk).
    pub seconds: f64,
}

fn engine(e: dynquant_engine::EngineError) -> MeasureError {
    MeasureError::Engine(Box::new(e))
}

impl Calibration {
    /// Runs the unquantized model over `chunks` (token lists of `ctx` each).
    pub(crate) fn run(gguf: &GgufModel, chunks: Vec<Vec<u32>>) -> Result<Self, MeasureError> {
        let t0 = Instant::now();
        let model = Model::load(gguf).map_err(engine)?;
        let ctx = chunks.first().map_or(0, Vec::len);
        let mut s = model.session(ctx);
        let mut out = Vec::with_capacity(chunks.len());
        for tokens in chunks {
            let (states, base) = states_and_log_probs(&model, &mut s, &tokens)?;
            out.push(Chunk {
                tokens,
                states,
                base,
                current: Vec::new(),
            });
        }
        Ok(Calibration {
            chunks: out,
            ctx,
            n_vocab: model.n_vocab,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Runs the unquantized model `base` over `chunks` for the distributions, and its quantized
    /// file `quant` for the kept states and its own KLD at every position. Returns the
    /// calibration and the quantized file's mean KLD and standard error.
    pub(crate) fn run_in_context(
        base: &GgufModel,
        quant: &GgufModel,
        chunks: Vec<Vec<u32>>,
    ) -> Result<(Self, (f64, f64)), MeasureError> {
        let t0 = Instant::now();
        let ctx = chunks.first().map_or(0, Vec::len);
        let mut dists = Vec::with_capacity(chunks.len());
        let n_vocab = {
            let model = Model::load(base).map_err(engine)?;
            let mut s = model.session(ctx);
            for tokens in &chunks {
                s.clear();
                let logits = s
                    .eval(tokens, Logits::From(ctx / 2), None)
                    .map_err(engine)?;
                dists.push(log_probs(&logits, model.n_vocab, ctx));
            }
            model.n_vocab
        };
        let model = Model::load(quant).map_err(engine)?;
        if model.n_vocab != n_vocab {
            return Err(MeasureError::Invalid(format!(
                "the quantized file has {} tokens in its vocabulary, the model {n_vocab}",
                model.n_vocab
            )));
        }
        let mut s = model.session(ctx);
        let mut out = Vec::with_capacity(chunks.len());
        let mut all = Vec::new();
        for (tokens, base) in chunks.into_iter().zip(dists) {
            let (states, quantized) = states_and_log_probs(&model, &mut s, &tokens)?;
            let current = klds(&base, &quantized, n_vocab);
            all.extend_from_slice(&current);
            out.push(Chunk {
                tokens,
                states,
                base,
                current,
            });
        }
        let cal = Calibration {
            chunks: out,
            ctx,
            n_vocab,
            seconds: t0.elapsed().as_secs_f64(),
        };
        Ok((cal, mean_and_stderr(&all)))
    }

    /// Scored positions over all chunks.
    pub(crate) fn positions(&self) -> usize {
        self.chunks.len() * (self.ctx / 2).saturating_sub(1)
    }

    /// Mean KL(unquantized ‖ probed) over the scored positions and its standard error, with
    /// the tensors of `overrides` replaced, evaluated from `start`.
    pub(crate) fn probe(
        &self,
        gguf: &GgufModel,
        overrides: &WeightOverrides,
        start: Start,
    ) -> Result<(f64, f64), MeasureError> {
        Ok(mean_and_stderr(&self.probe_klds(gguf, overrides, start)?))
    }

    /// In context: the quantized file's mean KLD minus the probed one (mean of per-position
    /// differences) and its standard error, `gguf` being the quantized file.
    pub(crate) fn saving(
        &self,
        gguf: &GgufModel,
        overrides: &WeightOverrides,
        start: Start,
    ) -> Result<(f64, f64), MeasureError> {
        let probed = self.probe_klds(gguf, overrides, start)?;
        let diffs: Vec<f64> = self
            .chunks
            .iter()
            .flat_map(|c| c.current.iter())
            .zip(&probed)
            .map(|(a, b)| a - b)
            .collect();
        Ok(mean_and_stderr(&diffs))
    }

    /// KL(unquantized ‖ probed) at every scored position.
    fn probe_klds(
        &self,
        gguf: &GgufModel,
        overrides: &WeightOverrides,
        start: Start,
    ) -> Result<Vec<f64>, MeasureError> {
        let model = Model::load_with(gguf, overrides).map_err(engine)?;
        let ctx = self.ctx;
        let mut s = model.session(ctx);
        let mut out = Vec::with_capacity(self.positions());
        for c in &self.chunks {
            s.clear();
            let logits = match start {
                Start::Tokens => s.eval(&c.tokens, Logits::From(ctx / 2), None),
                Start::Block(b) => {
                    let b = b.min(model.n_layer());
                    s.eval_from(b, &c.states[b], Logits::From(ctx / 2))
                }
            }
            .map_err(engine)?;
            let ours = log_probs(&logits, self.n_vocab, ctx);
            out.extend(klds(&c.base, &ours, self.n_vocab));
        }
        Ok(out)
    }
}

/// KL(p ‖ q) per position of two runs of log-probabilities (`nv` each, consecutive), exact
/// over the whole vocabulary.
fn klds(p: &[f64], q: &[f64], nv: usize) -> Vec<f64> {
    p.par_chunks(nv)
        .zip(q.par_chunks(nv))
        .map(|(p, q)| {
            let kl: f64 = p.iter().zip(q).map(|(&lp, &lq)| lp.exp() * (lp - lq)).sum();
            kl.max(0.0)
        })
        .collect()
}

/// Log-probabilities of the scored positions `ctx/2 .. ctx-2` from the logits of positions
/// `ctx/2..` (the last position has no next token and is not scored, as in llama-perplexity).
fn log_probs(logits: &[f32], nv: usize, ctx: usize) -> Vec<f64> {
    let scored = (ctx / 2).saturating_sub(1);
    let mut out = vec![0f64; scored * nv];
    out.par_chunks_mut(nv)
        .zip(logits.par_chunks(nv))
        .for_each(|(o, l)| o.copy_from_slice(&log_softmax(l)));
    out
}

/// Mean and standard error of the mean (sample variance over n − 1, as the engine's
/// `KldStats` computes them).
fn mean_and_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n.max(2) - 1) as f64;
    (mean, (var / n as f64).sqrt())
}
