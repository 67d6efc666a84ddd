//! A loaded model (weights borrowed from the memory-mapped GGUF) and the shared decoder forward
//! pass: embeddings, blocks of attention + feed-forward, final norm, output projection.

use dynquant_gguf::GgmlType;
use dynquant_gguf::GgufModel;

use crate::attention::KvCache;
pub use crate::block::MatmulObserver;
use crate::block::{BlockCtx, Span};
use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::layer::Layer;
use crate::loader::{Loader, WeightOverrides};
use crate::matmul::{Numerics, Weight};
use crate::ops::rms_norm;

/// A model ready to run.
#[derive(Debug)]
pub struct Model<'a> {
    /// Hyper-parameters and conventions.
    pub config: Config,
    /// Vocabulary size (rows of the output projection).
    pub n_vocab: usize,
    tok_embd: Weight<'a>,
    output: Weight<'a>,
    output_norm: Vec<f32>,
    layers: Vec<Layer<'a>>,
    /// Activation rounding of the matrix products.
    pub numerics: Numerics,
}

impl<'a> Model<'a> {
    /// Reads the configuration and binds every weight of `gguf` (no copies with mmap access).
    pub fn load(gguf: &'a GgufModel) -> Result<Self> {
        Self::bind(gguf, None)
    }

    /// As [`Model::load`], with the tensors named in `overrides` bound to the override's type
    /// and bytes instead of the file's (a model with a few tensors quantized in memory).
    pub fn load_with(gguf: &'a GgufModel, overrides: &'a WeightOverrides) -> Result<Self> {
        Self::bind(gguf, Some(overrides))
    }

    fn bind(gguf: &'a GgufModel, overrides: Option<&'a WeightOverrides>) -> Result<Self> {
        let config = crate::arch::config(gguf.metadata())?;
        let c = &config;
        let ld = Loader::new(gguf, overrides);
        let embd = ld
            .find("token_embd.weight")
            .ok_or_else(|| EngineError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = match embd.info.shape.as_slice() {
            [e, v] if *e == c.n_embd as u64 => usize::try_from(*v).map_err(|_| {
                EngineError::Invalid("vocabulary size does not fit in memory".into())
            })?,
            s => {
                return Err(EngineError::BadShape {
                    name: "token_embd.weight".into(),
                    shape: s.to_vec(),
                    expected: vec![c.n_embd as u64],
                })
            }
        };
        let tok_embd = ld.weight("token_embd.weight", c.n_embd, n_vocab)?;
        let output = match ld.weight_opt("output.weight", c.n_embd, n_vocab)? {
            Some(w) => w,
            None => ld.weight("token_embd.weight", c.n_embd, n_vocab)?,
        };
        let rope_freqs = ld.vector_opt("rope_freqs.weight", c.n_rot / 2)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            layers.push(Layer::load(&ld, c, il, &rope_freqs)?);
        }
        let output_norm = ld.vector("output_norm.weight", c.n_embd)?;
        Ok(Model {
            config,
            n_vocab,
            tok_embd,
            output,
            output_norm,
            layers,
            numerics: Numerics::Llama,
        })
    }

    /// Every matrix weight with its name (for imatrix bookkeeping); an expert tensor appears as
    /// one 2-D view per expert, each named after the 3-D tensor.
    pub fn weights(&self) -> impl Iterator<Item = &Weight<'a>> {
        self.layers
            .iter()
            .flat_map(|l| l.weights())
            .chain(std::iter::once(&self.output))
    }

    /// The token embeddings of `tokens` (scaled where the architecture scales them): the
    /// state entering the first block.
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let c = &self.config;
        let e = c.n_embd;
        let mut x = vec![0f32; tokens.len() * e];
        for (row, &t) in x.chunks_exact_mut(e).zip(tokens) {
            if t as usize >= self.n_vocab {
                return Err(EngineError::BadToken {
                    id: t,
                    n_vocab: self.n_vocab,
                });
            }
            self.tok_embd.row_f32(t as usize, row)?;
            if let Some(s) = c.embd_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        Ok(x)
    }

    /// Number of decoder blocks.
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Stored type of the output projection.
    pub fn output_type(&self) -> GgmlType {
        self.output.ty
    }

    /// A new inference session holding up to `n_ctx` tokens.
    pub fn session(&self, n_ctx: usize) -> Session<'_, 'a> {
        let c = &self.config;
        Session {
            model: self,
            cache: self.layers.iter().map(|l| l.attn.new_cache(c)).collect(),
            n_ctx,
            n_past: 0,
        }
    }
}

/// Sees the hidden state entering each block (by index), then the last block's output.
type LayerSink<'f> = dyn FnMut(usize, &[f32]) + 'f;

/// Which positions of a batch get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (imatrix without the output projection, cache filling).
    None,
    /// Only the last token.
    Last,
    /// Tokens `from..` of the batch.
    From(usize),
}

impl Logits {
    /// The first of `n` rows that gets logits (`n`: none).
    fn first_row(self, n: usize) -> usize {
        match self {
            Logits::None => n,
            Logits::Last => n.saturating_sub(1),
            Logits::From(f) => f.min(n),
        }
    }
}

/// A sequence being evaluated: the KV cache and its length. A clone continues from the same
/// cache independently (a shared prompt evaluated once).
#[derive(Debug, Clone)]
pub struct Session<'m, 'a> {
    model: &'m Model<'a>,
    cache: Vec<KvCache>,
    n_ctx: usize,
    n_past: usize,
}

impl Session<'_, '_> {
    /// Tokens held in the cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Lets the session hold `n_ctx` tokens (never fewer than it holds).
    pub fn set_n_ctx(&mut self, n_ctx: usize) {
        self.n_ctx = n_ctx.max(self.n_past);
    }

    /// An error unless `n` more tokens fit in the context.
    fn room_for(&self, n: usize) -> Result<()> {
        let wanted = self.n_past + n;
        if wanted > self.n_ctx {
            return Err(EngineError::ContextFull {
                n_ctx: self.n_ctx,
                wanted,
            });
        }
        Ok(())
    }

    /// Empties the cache.
    pub fn clear(&mut self) {
        self.n_past = 0;
        for c in &mut self.cache {
            c.clear();
        }
    }

    /// Runs `tokens` (one batch, positions `n_past..`) through the model, appending to the KV
    /// cache; returns the logits of the rows asked for, `n_vocab` each.
    pub fn eval(
        &mut self,
        tokens: &[u32],
        logits: Logits,
        obs: Option<&dyn MatmulObserver>,
    ) -> Result<Vec<f32>> {
        let m = self.model;
        let nt = tokens.len();
        if nt == 0 {
            return Ok(Vec::new());
        }
        self.room_for(nt)?;
        let x = m.embed(tokens)?;
        self.run_layers(0, x, nt, logits, obs, None)
    }

    /// Runs `tokens` (one batch from an empty cache) through every block without logits and
    /// returns the hidden state entering each block, then the one leaving the last: `n_layer + 1`
    /// vectors of `tokens.len() x n_embd`. [`Session::eval_from`] continues from any of them.
    pub fn hidden_states(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.clear();
        let mut states = Vec::with_capacity(self.model.layers.len() + 1);
        let mut keep = |_: usize, x: &[f32]| states.push(x.to_vec());
        let nt = tokens.len();
        self.room_for(nt)?;
        let x = self.model.embed(tokens)?;
        self.run_layers(0, x, nt, Logits::None, None, Some(&mut keep))?;
        Ok(states)
    }

    /// Continues an evaluation from block `first` (`n_layer`: only the output projection):
    /// `hidden` (`n_tok x n_embd`) is the state entering that block, at positions `n_past..`
    /// of the blocks `first..` (whose caches it appends to; the caches of earlier blocks are
    /// not used). With the same weights this gives the bits [`Session::eval`] gives.
    pub fn eval_from(&mut self, first: usize, hidden: &[f32], logits: Logits) -> Result<Vec<f32>> {
        let e = self.model.config.n_embd;
        if first > self.model.layers.len() || !hidden.len().is_multiple_of(e) {
            return Err(EngineError::Invalid(format!(
                "eval_from: block {first} of {}, {} hidden values for width {e}",
                self.model.layers.len(),
                hidden.len()
            )));
        }
        let nt = hidden.len() / e;
        if nt == 0 {
            return Ok(Vec::new());
        }
        self.room_for(nt)?;
        self.run_layers(first, hidden.to_vec(), nt, logits, None, None)
    }

    /// Blocks `first..` over `x` (`nt` tokens at positions `n_past..`), then the logits asked
    /// for; `on_layer(i, x)` sees the state entering block `i` and, last, the final one.
    fn run_layers(
        &mut self,
        first: usize,
        mut x: Vec<f32>,
        nt: usize,
        logits: Logits,
        obs: Option<&dyn MatmulObserver>,
        mut on_layer: Option<&mut LayerSink<'_>>,
    ) -> Result<Vec<f32>> {
        let m = self.model;
        let c = &m.config;
        let e = c.n_embd;
        let wanted = self.n_past + nt;
        let spans = [Span {
            p0: self.n_past,
            n: nt,
        }];
        let ctx = BlockCtx {
            config: c,
            numerics: m.numerics,
            p0: self.n_past,
            n_tok: nt,
            spans: &spans,
            obs,
        };
        for (il, (l, cache)) in m.layers.iter().zip(&mut self.cache).enumerate().skip(first) {
            if let Some(f) = on_layer.as_mut() {
                f(il, &x);
            }
            l.forward(&ctx, &mut x, &mut [cache])?;
        }
        if let Some(f) = on_layer.as_mut() {
            f(m.layers.len(), &x);
        }
        self.n_past = wanted;
        if logits == Logits::None {
            return Ok(Vec::new());
        }
        let from = logits.first_row(nt);
        let mut h = x[from * e..].to_vec();
        rms_norm(&mut h, e, &m.output_norm, c.rms_eps);
        ctx.mm_rows(&m.output, &h, nt - from)
    }

    /// Runs several sequences of one model as one batch: the tokens `batch[i].0` (positions
    /// `n_past..` of `sessions[i]`) appended to that session's cache, the logits of the rows
    /// `batch[i].1` asks for returned per sequence, in order. Every matrix product sees all the sequences' rows at once (the
    /// weights are read once per batch instead of once per sequence); attention stays per
    /// sequence. A sequence's logits may differ in the last bits from [`Session::eval`] of it
    /// alone, as llama.cpp's do between a lone and a batched sequence, since ggml picks some
    /// products' kernels by the batch's row count; they depend only on the batch.
    pub fn eval_sequences(
        sessions: &mut [&mut Session<'_, '_>],
        batch: &[(&[u32], Logits)],
    ) -> Result<Vec<Vec<f32>>> {
        let Some(first) = sessions.first() else {
            return Ok(Vec::new());
        };
        let m = first.model;
        if batch.len() != sessions.len() || sessions.iter().any(|s| !std::ptr::eq(s.model, m)) {
            return Err(EngineError::Invalid(
                "a batch of sequences needs one session of one model per sequence".into(),
            ));
        }
        let c = &m.config;
        let e = c.n_embd;
        let mut spans = Vec::with_capacity(batch.len());
        let mut tokens = Vec::new();
        for (s, (t, _)) in sessions.iter().zip(batch) {
            s.room_for(t.len())?;
            spans.push(Span {
                p0: s.n_past,
                n: t.len(),
            });
            tokens.extend_from_slice(t);
        }
        let nt = tokens.len();
        if nt == 0 {
            return Ok(vec![Vec::new(); batch.len()]);
        }
        let mut x = m.embed(&tokens)?;
        let ctx = BlockCtx {
            config: c,
            numerics: m.numerics,
            p0: spans[0].p0,
            n_tok: nt,
            spans: &spans,
            obs: None,
        };
        for (il, l) in m.layers.iter().enumerate() {
            let mut caches: Vec<&mut KvCache> =
                sessions.iter_mut().map(|s| &mut s.cache[il]).collect();
            l.forward(&ctx, &mut x, &mut caches)?;
        }
        // the rows that get logits, all sequences' together through the output projection
        let mut h = Vec::new();
        let mut counts = Vec::with_capacity(batch.len());
        let mut row = 0;
        for (s, (span, (_, logits))) in sessions.iter_mut().zip(spans.iter().zip(batch)) {
            s.n_past += span.n;
            let from = logits.first_row(span.n);
            h.extend_from_slice(&x[(row + from) * e..(row + span.n) * e]);
            counts.push(span.n - from);
            row += span.n;
        }
        let rows: usize = counts.iter().sum();
        if rows == 0 {
            return Ok(vec![Vec::new(); batch.len()]);
        }
        rms_norm(&mut h, e, &m.output_norm, c.rms_eps);
        let all = ctx.mm_rows(&m.output, &h, rows)?;
        let nv = m.n_vocab;
        let mut out = Vec::with_capacity(batch.len());
        let mut at = 0;
        for n in counts {
            out.push(all[at * nv..(at + n) * nv].to_vec());
            at += n;
        }
        Ok(out)
    }
}
