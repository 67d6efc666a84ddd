//! The evaluations the `perplexity`, `kld`, `imatrix` and `run` commands show, as library
//! calls on an [`Evaluator`] (a loaded model with its tokenizer): a text read and tokenized as
//! llama.cpp's tools read `-f` ([`EvalText`]), cut into llama-perplexity's chunks
//! ([`ChunkOptions`]), then perplexity (optionally saving a KL-divergence base), KL divergence
//! from a base, imatrix collection, or generation from a prompt. Progress goes to a callback
//! ([`Progress`]); nothing is printed. Work runs on the current rayon pool.

use std::path::Path;
use std::time::Instant;

use dynquant_gguf::GgufModel;
use dynquant_tokenizer::{ChatMessage, Tokenizer};

use crate::covariance::CovarianceCollector;
use crate::error::{EngineError, Result};
use crate::eval::{for_each_scored_with, ChunkOptions, PplAccumulator, ScoredWith, TopK};
use crate::imatrix::Collector;
use crate::kld::{
    self, Base, BaseHeader, BasePosition, BaseWriter, KldAccumulator, KldPosition, KldStats,
};
use crate::model::{Logits, Model};
use crate::ops::{log_softmax, log_softmax_at};
use crate::sample::{Sampler, SamplerParams};

/// What a chunked evaluation reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// The chunks are checked and evaluation starts.
    Start {
        /// Tokens of the whole text.
        n_tokens: usize,
        /// Chunks that will be evaluated.
        n_chunks: usize,
    },
    /// Chunk `chunk` (from 0) is done.
    Chunk {
        /// Its index.
        chunk: usize,
        /// The running perplexity (perplexity), the running mean KL divergence (kld), or
        /// nothing (imatrix).
        value: Option<f64>,
    },
}

/// A text tokenized for evaluation.
#[derive(Debug, Clone)]
pub struct EvalText {
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
}

impl EvalText {
    /// Reads `path` as llama.cpp's `-f` does (one trailing newline dropped) and tokenizes it
    /// whole (BOS only when the vocabulary adds it, special tokens not parsed).
    pub fn read(tok: &Tokenizer, path: &Path) -> Result<EvalText> {
        let bytes = std::fs::read(path).map_err(|source| EngineError::ReadText {
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = kld::sha256_hex(&bytes);
        let mut text = String::from_utf8(bytes).map_err(|source| EngineError::NotUtf8 {
            path: path.to_path_buf(),
            source,
        })?;
        if text.ends_with('\n') {
            text.pop();
        }
        let tokens =
            tok.encode(&text, true, false)
                .map_err(|source| EngineError::TokenizeText {
                    path: path.to_path_buf(),
                    source,
                })?;
        Ok(EvalText { tokens, sha256 })
    }
}

/// Where a perplexity run saves the base model's distributions for later KL divergences.
#[derive(Debug, Clone)]
pub struct SaveLogits<'p> {
    /// The base file to write.
    pub path: &'p Path,
    /// Most probable tokens kept per position (clamped to 1..=vocabulary).
    pub top_k: usize,
    /// The model's name recorded in the file (its file name).
    pub model_name: String,
}

/// What a perplexity run measured.
#[derive(Debug, Clone)]
pub struct PerplexityReport {
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

/// Settings of a generation.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Tokens to generate at most.
    pub n_predict: usize,
    /// Context size (raised to hold the prompt and one token).
    pub ctx: usize,
    /// Sampling.
    pub sampler: SamplerParams,
}

/// What a generation did.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationReport {
    /// Tokens generated (an end-of-generation token not counted).
    pub generated: usize,
    /// Wall time of the prompt's evaluation.
    pub prompt_seconds: f64,
    /// Wall time of the whole generation.
    pub seconds: f64,
}

/// One answer of a batched generation ([`Evaluator::generate_batch`]).
#[derive(Debug, Clone)]
pub struct GenerationJob {
    /// The prompt's tokens.
    pub prompt: Vec<u32>,
    /// Tokens to generate at most.
    pub n_predict: usize,
    /// Sampling (its own seed per job).
    pub sampler: SamplerParams,
}

/// The answer to one [`GenerationJob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The answer's bytes (the generated tokens' pieces, possibly invalid UTF-8).
    pub bytes: Vec<u8>,
    /// Tokens generated (an end-of-generation token not counted).
    pub generated: usize,
}

/// Sequences generated side by side at most: the batch's rows per decoding step. A fixed
/// number, so answers do not depend on the machine; enough rows that each weight is read once
/// for many tokens.
pub const MAX_BATCH_SEQUENCES: usize = 64;

/// A model ready for the evaluations: its GGUF file, the engine model, the tokenizer.
#[derive(Debug)]
pub struct Evaluator<'g> {
    gguf: &'g GgufModel,
    model: Model<'g>,
    tokenizer: Tokenizer,
}

/// Weights the imatrix and covariance passes leave out, as llama-imatrix does without
/// `--process-output`.
fn not_collected() -> Vec<String> {
    vec!["output.weight".into(), "token_embd.weight".into()]
}

impl<'g> Evaluator<'g> {
    /// Bundles a model loaded from `gguf` with its tokenizer.
    pub fn new(gguf: &'g GgufModel, model: Model<'g>, tokenizer: Tokenizer) -> Self {
        Evaluator {
            gguf,
            model,
            tokenizer,
        }
    }

    /// The engine model.
    pub fn model(&self) -> &Model<'g> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Reads and tokenizes an evaluation text (see [`EvalText::read`]).
    pub fn read_text(&self, path: &Path) -> Result<EvalText> {
        EvalText::read(&self.tokenizer, path)
    }

    /// llama-perplexity's chunks of `ctx` tokens (at most `chunks`) for this vocabulary.
    pub fn chunking(&self, ctx: usize, chunks: Option<usize>) -> ChunkOptions {
        ChunkOptions::for_tokenizer(&self.tokenizer, ctx, chunks)
    }

    /// Perplexity of `text` as llama-perplexity computes it (each chunk from an empty cache,
    /// its second half scored), optionally writing a KL-divergence base file.
    pub fn perplexity(
        &self,
        text: &EvalText,
        chunking: &ChunkOptions,
        save: Option<&SaveLogits<'_>>,
        mut progress: impl FnMut(Progress),
    ) -> Result<PerplexityReport> {
        let tokens = &text.tokens;
        let ctx = chunking.ctx;
        let n_chunks = chunking.check(tokens.len())?;
        progress(Progress::Start {
            n_tokens: tokens.len(),
            n_chunks,
        });
        let top_k = save.map_or(1, |s| s.top_k.clamp(1, self.model.n_vocab));
        let mut writer = match save {
            None => None,
            Some(s) => {
                let used = &tokens[..(n_chunks * ctx).min(tokens.len())];
                let header = BaseHeader {
                    model: s.model_name.clone(),
                    model_sha256: kld::model_sha256(self.gguf),
                    tokenizer_sha256: kld::tokenizer_sha256(self.gguf),
                    tokens_sha256: kld::tokens_sha256(used),
                    text_sha256: text.sha256.clone(),
                    ctx,
                    chunks: n_chunks,
                    top_k,
                    n_vocab: self.model.n_vocab,
                    positions: n_chunks * (ctx / 2).saturating_sub(1),
                    n_tokens: used.len(),
                };
                Some(BaseWriter::create(s.path, &header, used)?)
            }
        };
        let t0 = Instant::now();
        let mut acc = PplAccumulator::default();
        let mut running = Vec::new();
        let saving = writer.is_some();
        // the log-probability of the next token, and the base file's top-k when saving
        let score = |_: usize, _: usize, logits: &[f32], next: u32| {
            if saving {
                let lp = log_softmax(logits);
                (lp[next as usize], Some(TopK::from_logprobs(&lp, top_k)))
            } else {
                (log_softmax_at(logits, next), None)
            }
        };
        for_each_scored_with(&self.model, tokens, chunking, score, |ev| {
            match ev {
                ScoredWith::Position {
                    value: (lp_next, top),
                    ..
                } => {
                    acc.add(lp_next);
                    if let (Some(w), Some(top)) = (writer.as_mut(), top) {
                        w.push(&BasePosition {
                            top,
                            logp_next: lp_next as f32,
                        })?;
                    }
                }
                ScoredWith::ChunkDone(i) => {
                    let ppl = acc.ppl();
                    running.push(ppl);
                    progress(Progress::Chunk {
                        chunk: i,
                        value: Some(ppl),
                    });
                }
            }
            Ok(())
        })?;
        if let Some(w) = writer {
            w.finish()?;
        }
        Ok(PerplexityReport {
            ppl: acc.ppl(),
            ppl_err: acc.ppl_err(),
            tokens: n_chunks * ctx,
            scored: acc.count(),
            chunks: n_chunks,
            running,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// KL divergence of this model's next-token distributions from those stored in `base`, over
    /// the base's tokens and chunks. A base made with another tokenizer or vocabulary is
    /// refused.
    pub fn kld(&self, base: &Base, mut progress: impl FnMut(Progress)) -> Result<KldStats> {
        base.check_compatible(&kld::tokenizer_sha256(self.gguf), None, self.model.n_vocab)?;
        let h = &base.header;
        let chunking = self.chunking(h.ctx, Some(h.chunks));
        if chunking.n_chunks(base.tokens.len()) != h.chunks {
            return Err(EngineError::Invalid(format!(
                "{}: token count does not give {} chunks",
                base.path.display(),
                h.chunks
            )));
        }
        let n_chunks = chunking.check(base.tokens.len())?;
        progress(Progress::Start {
            n_tokens: base.tokens.len(),
            n_chunks,
        });
        let mut acc = KldAccumulator::default();
        // the base's positions in order: chunk `i`'s scored positions `first..ctx - 1` follow
        // the earlier chunks' `per_chunk` each
        let first = h.ctx / 2;
        let per_chunk = h.ctx - 1 - first;
        let score = |i: usize, j: usize, logits: &[f32], next: u32| {
            let p = base.positions.get(i * per_chunk + j - first)?;
            Some(KldPosition::new(p, &log_softmax(logits), next))
        };
        for_each_scored_with(&self.model, &base.tokens, &chunking, score, |ev| {
            match ev {
                ScoredWith::Position { value, .. } => {
                    let v = value.ok_or_else(|| {
                        EngineError::Invalid("base file has too few positions".into())
                    })?;
                    acc.push(v);
                }
                ScoredWith::ChunkDone(i) => progress(Progress::Chunk {
                    chunk: i,
                    value: acc.stats().map(|s| s.kld_mean),
                }),
            }
            Ok(())
        })?;
        acc.stats()
            .ok_or_else(|| EngineError::Invalid("no positions compared".into()))
    }

    /// The squared activations of every matrix product over `tokens` in chunks (each from an
    /// empty cache, no logits), as llama-imatrix collects them: the output projection and the
    /// token embeddings are left out, as llama-imatrix does without `--process-output`.
    pub fn imatrix(
        &self,
        tokens: &[u32],
        chunking: &ChunkOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<Collector> {
        let collector = Collector::new(not_collected());
        self.observe_chunks(tokens, chunking, &collector, &mut progress)?;
        Ok(collector)
    }

    /// [`Evaluator::imatrix`] and, in the same pass, the input covariance (`Σ x xᵀ`) of every
    /// matrix product whose diagonal the imatrix keeps: same chunks, same weights left out.
    pub fn imatrix_and_covariance(
        &self,
        tokens: &[u32],
        chunking: &ChunkOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<(Collector, CovarianceCollector)> {
        let both = (
            Collector::new(not_collected()),
            CovarianceCollector::new(not_collected()),
        );
        self.observe_chunks(tokens, chunking, &both, &mut progress)?;
        Ok(both)
    }

    /// Runs every chunk of `tokens` from an empty cache with no logits, showing each matrix
    /// product's input to `observer`.
    fn observe_chunks(
        &self,
        tokens: &[u32],
        chunking: &ChunkOptions,
        observer: &dyn crate::block::MatmulObserver,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let n_chunks = chunking.n_chunks(tokens.len());
        if n_chunks == 0 {
            return Err(EngineError::Invalid(format!(
                "the text gives {} tokens, fewer than one chunk of {}",
                tokens.len(),
                chunking.ctx
            )));
        }
        progress(Progress::Start {
            n_tokens: tokens.len(),
            n_chunks,
        });
        let mut s = self.model.session(chunking.ctx);
        for i in 0..n_chunks {
            s.clear();
            s.eval(&chunking.chunk(tokens, i), Logits::None, Some(observer))?;
            progress(Progress::Chunk {
                chunk: i,
                value: None,
            });
        }
        Ok(())
    }

    /// The tokens of a prompt: the text itself, or with `chat` the model's chat template
    /// around it as a user turn (special tokens parsed, a BOS the template already wrote not
    /// doubled). An empty result is an error.
    pub fn prompt(&self, text: &str, chat: bool) -> Result<Vec<u32>> {
        let mut prompts = self.prompts(&[(text, chat)])?;
        prompts
            .pop()
            .ok_or_else(|| EngineError::Invalid("the prompt gives no tokens".into()))
    }

    /// The tokens of several prompts, each `(text, chat)` as [`Evaluator::prompt`] gives it,
    /// with every chat-template render in one batch (one sandboxed child process on Linux,
    /// not one per prompt).
    pub fn prompts(&self, requests: &[(&str, bool)]) -> Result<Vec<Vec<u32>>> {
        let tok = &self.tokenizer;
        let turns: Vec<[ChatMessage; 1]> = requests
            .iter()
            .filter(|(_, chat)| *chat)
            .map(|(text, _)| [ChatMessage::new("user", text.to_string())])
            .collect();
        let rendered = if turns.is_empty() {
            Vec::new()
        } else {
            let refs: Vec<&[ChatMessage]> = turns.iter().map(|t| t.as_slice()).collect();
            tok.apply_chat_template_batch(&refs, true)
                .map_err(EngineError::ChatTemplate)?
        };
        let mut rendered = rendered.into_iter();
        requests
            .iter()
            .map(|&(text, chat)| {
                let (text, parse_special) = if chat {
                    let t = rendered.next().ok_or_else(|| {
                        EngineError::Invalid("the chat template rendered too few prompts".into())
                    })?;
                    (t, true)
                } else {
                    (text.to_string(), false)
                };
                let mut prompt = tok.encode(&text, true, parse_special)?;
                if chat && tok.add_bos() && prompt.len() >= 2 && prompt[0] == prompt[1] {
                    prompt.remove(0); // the template already wrote BOS
                }
                if prompt.is_empty() {
                    return Err(EngineError::Invalid("the prompt gives no tokens".into()));
                }
                Ok(prompt)
            })
            .collect()
    }

    /// Generates the answers of `jobs` side by side (as llama.cpp's parallel slots do): the
    /// prompts as one batch, then one batch per step with one token of every unfinished
    /// answer, at most [`MAX_BATCH_SEQUENCES`] answers at a time (jobs split evenly into
    /// groups in order). Each answer stops at its `n_predict` tokens or an end-of-generation
    /// token. Answers depend only on the jobs (not on thread counts); they can differ from
    /// [`Evaluator::generate`] of the same prompt alone in the last bits of some logits (see
    /// [`crate::Session::eval_sequences`]). `on_progress(tokens)` after each step: tokens
    /// accounted for so far, of the jobs' `n_predict` summed (a finished answer counts its
    /// whole `n_predict`).
    pub fn generate_batch(
        &self,
        jobs: &[GenerationJob],
        mut on_progress: impl FnMut(usize),
    ) -> Result<Vec<Generated>> {
        let mut out = Vec::with_capacity(jobs.len());
        let n_groups = jobs.len().div_ceil(MAX_BATCH_SEQUENCES).max(1);
        let per_group = jobs.len().div_ceil(n_groups).max(1);
        let mut before = 0;
        for group in jobs.chunks(per_group) {
            out.extend(self.generate_group(group, |k| on_progress(before + k))?);
            before += group.iter().map(|j| j.n_predict).sum::<usize>();
        }
        Ok(out)
    }

    fn generate_group(
        &self,
        jobs: &[GenerationJob],
        mut on_progress: impl FnMut(usize),
    ) -> Result<Vec<Generated>> {
        let tok = &self.tokenizer;
        if let Some(i) = jobs.iter().position(|j| j.prompt.is_empty()) {
            return Err(EngineError::Invalid(format!(
                "generation {i} has an empty prompt"
            )));
        }
        // each distinct prompt evaluated once (greedy and sampled answers share theirs):
        // `first_job[k]` is the first job with distinct prompt `k`, `of_job[i]` job i's prompt
        let mut first_job: Vec<usize> = Vec::new();
        let of_job: Vec<usize> = jobs
            .iter()
            .enumerate()
            .map(
                |(i, j)| match first_job.iter().position(|&f| jobs[f].prompt == j.prompt) {
                    Some(k) => k,
                    None => {
                        first_job.push(i);
                        first_job.len() - 1
                    }
                },
            )
            .collect();
        let mut prompt_sessions: Vec<_> = first_job
            .iter()
            .map(|&i| self.model.session(jobs[i].prompt.len()))
            .collect();
        let prompts: Vec<(&[u32], Logits)> = first_job
            .iter()
            .map(|&i| (jobs[i].prompt.as_slice(), Logits::Last))
            .collect();
        let mut refs: Vec<&mut crate::Session<'_, '_>> = prompt_sessions.iter_mut().collect();
        let prompt_logits = crate::Session::eval_sequences(&mut refs, &prompts)?;
        let mut sessions: Vec<_> = jobs
            .iter()
            .zip(&of_job)
            .map(|(j, &k)| {
                let mut s = prompt_sessions[k].clone();
                s.set_n_ctx(j.prompt.len() + j.n_predict + 1);
                s
            })
            .collect();
        drop(prompt_sessions);
        let mut logits: Vec<Vec<f32>> = of_job.iter().map(|&k| prompt_logits[k].clone()).collect();
        let mut samplers: Vec<Sampler> = jobs
            .iter()
            .map(|j| Sampler::new(j.sampler.clone()))
            .collect();
        let mut answers: Vec<Generated> = jobs
            .iter()
            .map(|_| Generated {
                bytes: Vec::new(),
                generated: 0,
            })
            .collect();
        let mut active: Vec<usize> = (0..jobs.len()).collect();
        let mut accounted = 0;
        while !active.is_empty() {
            // sample every active answer's next token; the finished ones leave the batch
            let mut next_active = Vec::with_capacity(active.len());
            let mut next_tokens = Vec::with_capacity(active.len());
            for (&i, l) in active.iter().zip(&logits) {
                let a = &mut answers[i];
                let before = a.generated;
                let mut done = a.generated >= jobs[i].n_predict;
                if !done {
                    let t = samplers[i].sample(l);
                    if tok.is_eog(t) {
                        done = true;
                    } else {
                        a.generated += 1;
                        a.bytes.extend(tok.token_to_piece(t));
                        // the last token needs no evaluation
                        done = a.generated >= jobs[i].n_predict;
                        if !done {
                            next_active.push(i);
                            next_tokens.push([t]);
                        }
                    }
                }
                // a finished answer counts the rest of its budget
                accounted += if done {
                    jobs[i].n_predict.saturating_sub(before)
                } else {
                    1
                };
            }
            on_progress(accounted);
            active = next_active;
            if active.is_empty() {
                break;
            }
            let mut refs: Vec<&mut crate::Session<'_, '_>> = sessions
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| active.binary_search(i).is_ok())
                .map(|(_, s)| s)
                .collect();
            let batch: Vec<(&[u32], Logits)> = next_tokens
                .iter()
                .map(|t| (t.as_slice(), Logits::Last))
                .collect();
            logits = crate::Session::eval_sequences(&mut refs, &batch)?;
        }
        Ok(answers)
    }

    /// Generates after `prompt` until `n_predict` tokens, an end-of-generation token or a full
    /// context, handing the text to `on_text` as it comes: whole UTF-8 characters while
    /// generating, whatever bytes remain at the end.
    pub fn generate<E: From<EngineError>>(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<GenerationReport, E> {
        let tok = &self.tokenizer;
        let mut sampler = Sampler::new(opts.sampler.clone());
        let ctx = opts.ctx.max(prompt.len() + 1);
        let t0 = Instant::now();
        let mut s = self.model.session(ctx);
        let mut logits = s.eval(prompt, Logits::Last, None)?;
        let prompt_seconds = t0.elapsed().as_secs_f64();
        let mut generated = 0usize;
        let mut pending: Vec<u8> = Vec::new();
        while generated < opts.n_predict && s.n_past() < ctx {
            let next = sampler.sample(&logits);
            if tok.is_eog(next) {
                break;
            }
            generated += 1;
            pending.extend(tok.token_to_piece(next));
            // whole UTF-8 characters only
            let valid = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => pending.len(),
            };
            if valid > 0 {
                on_text(&pending[..valid])?;
            }
            pending.drain(..valid);
            if s.n_past() >= ctx {
                break;
            }
            logits = s.eval(&[next], Logits::Last, None)?;
        }
        if !pending.is_empty() {
            on_text(&pending)?;
        }
        Ok(GenerationReport {
            generated,
            prompt_seconds,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}
