//! KL-divergence base files and statistics.
//!
//! A base file holds, for every scored position of a perplexity run (llama-perplexity's chunks,
//! second half of each), the base model's `top_k` most probable next tokens with their
//! log-probabilities, the remaining probability mass, and the log-probability of the token that
//! actually follows. Format (little-endian):
//!
//! ```text
//! magic   8 bytes  "DQKLDB1\0"
//! hlen    u32      length of the JSON header
//! header  hlen bytes of UTF-8 JSON: {"model", "model_sha256", "tokenizer_sha256",
//!                  "tokens_sha256", "text_sha256", "ctx", "chunks", "top_k", "n_vocab",
//!                  "positions", "n_tokens"}
//! tokens  n_tokens x u32: the evaluated token ids (chunks x ctx, BOS substitution not applied)
//! then `positions` records of: top_k x (u32 id, f32 logp), f32 tail mass, f32 logp(next)
//! ```
//!
//! `tokenizer_sha256` hashes the `tokenizer.*` metadata, `tokens_sha256` the evaluated token
//! ids (u32 LE), `model_sha256` the base model's metadata and tensor directory (names, types,
//! shapes). A base whose tokenizer, tokens, context or vocabulary size differ from the run being
//! compared is refused.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use dynquant_gguf::{GgufModel, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::eval::TopK;

const MAGIC: &[u8; 8] = b"DQKLDB1\0";

/// The header of a base file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseHeader {
    /// File name of the base model.
    pub model: String,
    /// Hash of the base model's metadata and tensor directory.
    pub model_sha256: String,
    /// Hash of the tokenizer metadata.
    pub tokenizer_sha256: String,
    /// Hash of the evaluated token ids.
    pub tokens_sha256: String,
    /// Hash of the text.
    pub text_sha256: String,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens per stored distribution.
    pub top_k: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Stored positions.
    pub positions: usize,
    /// Stored token ids.
    pub n_tokens: usize,
}

/// One stored position.
#[derive(Debug, Clone, PartialEq)]
pub struct BasePosition {
    /// The base's top tokens and tail.
    pub top: TopK,
    /// The base's log-probability of the actual next token.
    pub logp_next: f32,
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(Sha256::digest(bytes))
}

/// sha256 of token ids (u32 little-endian), hex.
pub fn tokens_sha256(tokens: &[u32]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    hex(h.finalize())
}

fn hash_value(h: &mut Sha256, v: &Value) {
    h.update(format!("{v:?}").as_bytes());
}

/// sha256 of a model's `tokenizer.*` metadata, hex.
pub fn tokenizer_sha256(model: &GgufModel) -> String {
    let mut h = Sha256::new();
    for (k, v) in model.metadata().entries() {
        if k.starts_with("tokenizer.") && k != "tokenizer.chat_template" {
            h.update(k.as_bytes());
            hash_value(&mut h, v);
        }
    }
    hex(h.finalize())
}

/// sha256 of a model's metadata and tensor directory (names, types, shapes), hex.
pub fn model_sha256(model: &GgufModel) -> String {
    let mut h = Sha256::new();
    for (k, v) in model.metadata().entries() {
        h.update(k.as_bytes());
        hash_value(&mut h, v);
    }
    for t in model.tensors() {
        h.update(format!("{}:{}:{:?};", t.info.name, t.info.ggml_type, t.info.shape).as_bytes());
    }
    hex(h.finalize())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Streams positions into a base file.
pub struct BaseWriter {
    out: BufWriter<std::fs::File>,
    path: PathBuf,
    top_k: usize,
    written: usize,
    expected: usize,
}

impl BaseWriter {
    /// Creates `path` and writes the header and the token ids (the header's `positions` is the
    /// count that must follow).
    pub fn create(path: &Path, header: &BaseHeader, tokens: &[u32]) -> Result<Self> {
        if tokens.len() != header.n_tokens {
            return Err(EngineError::Invalid("base header n_tokens mismatch".into()));
        }
        let f = std::fs::File::create(path).map_err(io(path))?;
        let mut out = BufWriter::new(f);
        let json = serde_json::to_vec(header)
            .map_err(|e| EngineError::Invalid(format!("base header: {e}")))?;
        let len = u32::try_from(json.len())
            .map_err(|_| EngineError::Invalid("base header too large".into()))?;
        out.write_all(MAGIC).map_err(io(path))?;
        out.write_all(&len.to_le_bytes()).map_err(io(path))?;
        out.write_all(&json).map_err(io(path))?;
        let tb: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        out.write_all(&tb).map_err(io(path))?;
        Ok(BaseWriter {
            out,
            path: path.to_path_buf(),
            top_k: header.top_k,
            written: 0,
            expected: header.positions,
        })
    }

    /// Appends one position.
    pub fn push(&mut self, p: &BasePosition) -> Result<()> {
        if p.top.ids.len() != self.top_k || p.top.logp.len() != self.top_k {
            return Err(EngineError::Invalid(
                "base position with the wrong top_k".into(),
            ));
        }
        let mut buf = Vec::with_capacity(8 * self.top_k + 8);
        for (&i, &l) in p.top.ids.iter().zip(&p.top.logp) {
            buf.extend_from_slice(&i.to_le_bytes());
            buf.extend_from_slice(&l.to_le_bytes());
        }
        buf.extend_from_slice(&p.top.tail.to_le_bytes());
        buf.extend_from_slice(&p.logp_next.to_le_bytes());
        self.out.write_all(&buf).map_err(io(&self.path))?;
        self.written += 1;
        Ok(())
    }

    /// Flushes; fails when fewer or more positions were written than announced.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.expected {
            return Err(EngineError::Invalid(format!(
                "base file: {} positions written, header says {}",
                self.written, self.expected
            )));
        }
        self.out.flush().map_err(io(&self.path))
    }
}

/// A base file read back.
#[derive(Debug, Clone)]
pub struct Base {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its header.
    pub header: BaseHeader,
    /// The evaluated token ids.
    pub tokens: Vec<u32>,
    /// Its positions, in order.
    pub positions: Vec<BasePosition>,
}

impl Base {
    /// Reads and validates a base file.
    pub fn read(path: &Path) -> Result<Base> {
        let f = std::fs::File::open(path).map_err(io(path))?;
        let mut r = BufReader::new(f);
        let bad = |why: &str| EngineError::Invalid(format!("{}: {why}", path.display()));
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(io(path))?;
        if &magic != MAGIC {
            return Err(bad("not a dynquant KLD base file"));
        }
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(io(path))?;
        let len = u32::from_le_bytes(len) as usize;
        if len > 1 << 20 {
            return Err(bad("header too large"));
        }
        let mut json = vec![0u8; len];
        r.read_exact(&mut json).map_err(io(path))?;
        let header: BaseHeader =
            serde_json::from_slice(&json).map_err(|e| bad(&format!("header: {e}")))?;
        let rec = header
            .top_k
            .checked_mul(8)
            .and_then(|v| v.checked_add(8))
            .ok_or_else(|| bad("top_k too large"))?;
        let size = std::fs::metadata(path).map_err(io(path))?.len();
        let need = (rec as u64)
            .checked_mul(header.positions as u64)
            .and_then(|v| v.checked_add(12 + len as u64))
            .and_then(|v| v.checked_add(4 * header.n_tokens as u64));
        if need != Some(size) {
            return Err(bad("file size does not match its header"));
        }
        let mut tb = vec![0u8; 4 * header.n_tokens];
        r.read_exact(&mut tb).map_err(io(path))?;
        let tokens: Vec<u32> = tb
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if tokens_sha256(&tokens) != header.tokens_sha256 {
            return Err(bad("token ids do not match their hash"));
        }
        let mut positions = Vec::with_capacity(header.positions);
        let mut buf = vec![0u8; rec];
        let f32_at = |b: &[u8], o: usize| f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        for _ in 0..header.positions {
            r.read_exact(&mut buf).map_err(io(path))?;
            let mut ids = Vec::with_capacity(header.top_k);
            let mut logp = Vec::with_capacity(header.top_k);
            for i in 0..header.top_k {
                let id = u32::from_le_bytes([
                    buf[8 * i],
                    buf[8 * i + 1],
                    buf[8 * i + 2],
                    buf[8 * i + 3],
                ]);
                if id as usize >= header.n_vocab {
                    return Err(bad("token id beyond the vocabulary"));
                }
                ids.push(id);
                logp.push(f32_at(&buf, 8 * i + 4));
            }
            let o = 8 * header.top_k;
            positions.push(BasePosition {
                top: TopK {
                    ids,
                    logp,
                    tail: f32_at(&buf, o),
                },
                logp_next: f32_at(&buf, o + 4),
            });
        }
        Ok(Base {
            path: path.to_path_buf(),
            header,
            tokens,
            positions,
        })
    }

    /// Refuses a base made with another tokenizer, text or vocabulary size.
    /// `text_sha256` is checked only when given (the run re-read the text).
    pub fn check_compatible(
        &self,
        tokenizer_sha256: &str,
        text_sha256: Option<&str>,
        n_vocab: usize,
    ) -> Result<()> {
        let h = &self.header;
        let mut why = Vec::new();
        if h.tokenizer_sha256 != tokenizer_sha256 {
            why.push("the tokenizer differs");
        }
        if text_sha256.is_some_and(|t| t != h.text_sha256) {
            why.push("the text differs");
        }
        if h.n_vocab != n_vocab {
            why.push("the vocabulary size differs");
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Invalid(format!(
                "base file made from {} does not match this run: {}",
                h.model,
                why.join(", ")
            )))
        }
    }
}

/// Summary of a KL-divergence comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KldStats {
    /// Positions compared.
    pub positions: usize,
    /// Mean KL(base || model).
    pub kld_mean: f64,
    /// Standard error of the mean.
    pub kld_err: f64,
    /// Median.
    pub kld_median: f64,
    /// 90th percentile.
    pub kld_p90: f64,
    /// 99th percentile.
    pub kld_p99: f64,
    /// 99.9th percentile.
    pub kld_p999: f64,
    /// Maximum.
    pub kld_max: f64,
    /// Fraction of positions where both models' most probable token is the same.
    pub same_top: f64,
    /// RMS over positions of p_model(next) - p_base(next).
    pub rms_dp: f64,
    /// The model's perplexity over the positions.
    pub ppl: f64,
    /// The base's perplexity over the positions.
    pub ppl_base: f64,
    /// ppl / ppl_base.
    pub ppl_ratio: f64,
}

/// Accumulates per-position comparisons.
#[derive(Debug, Default, Clone)]
pub struct KldAccumulator {
    kld: Vec<f64>,
    same: usize,
    dp2: f64,
    nll: f64,
    nll_base: f64,
}

impl KldAccumulator {
    /// Adds a position: the base's stored data, the model's full log-probabilities, the next token.
    pub fn add(&mut self, base: &BasePosition, ours: &[f64], next: u32) {
        self.push(KldPosition::new(base, ours, next));
    }

    /// Adds a position compared beforehand (positions may be compared in parallel, then
    /// pushed in order).
    pub fn push(&mut self, p: KldPosition) {
        self.kld.push(p.kld);
        self.same += usize::from(p.same_top);
        let dp = p.logp_next.exp() - p.logp_next_base.exp();
        self.dp2 += dp * dp;
        self.nll -= p.logp_next;
        self.nll_base -= p.logp_next_base;
    }
}

/// One position's comparison with the base, before it joins a [`KldAccumulator`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KldPosition {
    kld: f64,
    same_top: bool,
    logp_next: f64,
    logp_next_base: f64,
}

impl KldPosition {
    /// Compares the model's full log-probabilities `ours` with the base's stored data.
    pub fn new(base: &BasePosition, ours: &[f64], next: u32) -> KldPosition {
        let best = ours
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i as u32);
        KldPosition {
            kld: base.top.kld(ours),
            same_top: best == base.top.ids.first().copied(),
            logp_next: ours[next as usize],
            logp_next_base: base.logp_next as f64,
        }
    }

    /// KL divergence of the model's distribution from the base's at this position.
    pub fn kld(&self) -> f64 {
        self.kld
    }

    /// The model's log-probability of the next token.
    pub fn logp_next(&self) -> f64 {
        self.logp_next
    }
}

impl KldAccumulator {
    /// The summary (None before any position).
    pub fn stats(&self) -> Option<KldStats> {
        let n = self.kld.len();
        if n == 0 {
            return None;
        }
        let mut s = self.kld.clone();
        s.sort_by(f64::total_cmp);
        let q = |p: f64| s[((p * (n - 1) as f64).round() as usize).min(n - 1)];
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n.max(2) - 1) as f64;
        let ppl = (self.nll / n as f64).exp();
        let ppl_base = (self.nll_base / n as f64).exp();
        Some(KldStats {
            positions: n,
            kld_mean: mean,
            kld_err: (var / n as f64).sqrt(),
            kld_median: q(0.5),
            kld_p90: q(0.9),
            kld_p99: q(0.99),
            kld_p999: q(0.999),
            kld_max: s[n - 1],
            same_top: self.same as f64 / n as f64,
            rms_dp: (self.dp2 / n as f64).sqrt(),
            ppl,
            ppl_base,
            ppl_ratio: ppl / ppl_base,
        })
    }
}
