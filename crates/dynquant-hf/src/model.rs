//! An opened Hugging Face model folder presented as a GGUF model: metadata and tensor infos
//! computed from `config.json`, the tokenizer files and the safetensors headers alone; tensor
//! data produced on demand, rows at a time, in f32 or in the output type.

use std::path::{Path, PathBuf};

use dynquant_gguf::GgmlType;
use dynquant_gguf::{
    GgufError, GgufWriter, Metadata, OutputTarget, TensorInfo, Value, WriteOptions, WriteSummary,
};
use dynquant_plan::{Inventory, MlaLayout};
use dynquant_quantize::{PipelineError, TensorSource};
use dynquant_quants::{bf16_to_f32, f32_to_bf16, quantize_rows};
use rayon::prelude::*;

use crate::arch::{generic_params, plan_tensors, ArchPlan, OutTensor, SpacePrefix, Transform};
use crate::config::{read_json, Config};
use crate::error::{HfError, Result};
use crate::meta::{id_to_title, model_id_components, size_label, total_params, IdComponents};
use crate::safetensors::Checkpoint;
use crate::tokenizer::{write_vocab, VocabKind, VocabOptions};

/// Output element type of `convert` (`--outtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutType {
    /// float32 everywhere.
    F32,
    /// float16 matrices.
    F16,
    /// bfloat16 matrices (the default: lossless for BF16 and FP8 checkpoints' dequantized
    /// values rounded as llama.cpp rounds them).
    #[default]
    Bf16,
    /// Q8_0 matrices (F16 where a row is not a multiple of 32).
    Q8_0,
}

impl OutType {
    /// The ggml type of converted matrices.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Bf16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
        }
    }
    /// `general.file_type` (llama.cpp `LlamaFileType`).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Bf16 => 32,
            OutType::Q8_0 => 7,
        }
    }
}

impl std::str::FromStr for OutType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(OutType::F32),
            "f16" => Ok(OutType::F16),
            "bf16" => Ok(OutType::Bf16),
            "q8_0" => Ok(OutType::Q8_0),
            _ => Err(format!("unknown outtype '{s}' (f32, f16, bf16, q8_0)")),
        }
    }
}

/// Conversion options.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Output type of matrices.
    pub outtype: OutType,
    /// BPE pre-tokenizer name to write (`tokenizer.ggml.pre`); `None`: `gpt-2` with a warning.
    pub tokenizer_pre: Option<String>,
    /// `general.name` instead of the one derived from the folder name.
    pub name: Option<String>,
}

/// A Hugging Face model folder, opened: everything but the tensor data is known.
pub struct HfModel {
    dir: PathBuf,
    ckpt: Checkpoint,
    plan: ArchPlan,
    infos: Vec<TensorInfo>,
    metadata: Metadata,
    warnings: Vec<String>,
    vocab: VocabKind,
}

impl std::fmt::Debug for HfModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfModel")
            .field("dir", &self.dir)
            .field("tensors", &self.infos.len())
            .finish()
    }
}

/// Whether `path` looks like a Hugging Face model folder (config.json plus safetensors).
pub fn is_hf_dir(path: &Path) -> bool {
    path.is_dir()
        && path.join("config.json").is_file()
        && (path.join("model.safetensors").is_file()
            || path.join("model.safetensors.index.json").is_file())
}

fn sampling(dir: &Path, md: &mut Metadata) -> Result<()> {
    let p = dir.join("generation_config.json");
    if !p.is_file() {
        return Ok(());
    }
    // Like the converter, an unreadable generation_config.json is ignored.
    let Ok(g) = read_json(&p) else {
        return Ok(());
    };
    let int = |k: &str| {
        g.get(k)
            .and_then(|v| v.as_i64())
            .map(|v| Value::I32(v as i32))
    };
    let flt = |k: &str| {
        g.get(k)
            .and_then(|v| v.as_f64())
            .map(|v| Value::F32(v as f32))
    };
    let entries = [
        (
            "general.sampling.sequence",
            g.get("sequence")
                .and_then(|v| v.as_str())
                .map(|s| Value::String(s.into())),
        ),
        ("general.sampling.top_k", int("top_k")),
        ("general.sampling.top_p", flt("top_p")),
        ("general.sampling.min_p", flt("min_p")),
        ("general.sampling.xtc_probability", flt("xtc_probability")),
        ("general.sampling.xtc_threshold", flt("xtc_threshold")),
        ("general.sampling.temp", flt("temperature")),
        ("general.sampling.penalty_last_n", int("penalty_last_n")),
        ("general.sampling.penalty_repeat", flt("penalty_repeat")),
        ("general.sampling.mirostat", int("mirostat")),
        ("general.sampling.mirostat_tau", flt("mirostat_tau")),
        ("general.sampling.mirostat_eta", flt("mirostat_eta")),
    ];
    for (k, v) in entries {
        if let Some(v) = v {
            md.set(k, v);
        }
    }
    Ok(())
}

/// The GGUF tensor infos of a conversion plan: norms, routers and other small tensors F32 (as
/// the converter keeps them), matrices `outtype` (F16 for Q8_0 rows that are not whole blocks).
pub(crate) fn tensor_infos(plan: &ArchPlan, outtype: OutType) -> Result<Vec<TensorInfo>> {
    let mut infos = Vec::with_capacity(plan.tensors.len());
    for t in &plan.tensors {
        let mut ty = if t.forced_f32() {
            GgmlType::F32
        } else {
            outtype.ggml_type()
        };
        if ty == GgmlType::Q8_0 && t.row_len() % 32 != 0 {
            ty = GgmlType::F16;
        }
        if matches!(t.transform, Transform::Mxfp4 { .. }) {
            // Copied as stored, whatever the output type.
            ty = GgmlType::MXFP4;
        }
        let shape: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        infos.push(TensorInfo::new(t.name.clone(), shape, ty)?);
    }
    Ok(infos)
}

/// How many tokens the converter's vocabulary of `dir` has: SentencePiece, `vocab_size` (or
/// the model's pieces); `tokenizer.json`, its vocab plus its added tokens.
fn tokenizer_rows(dir: &Path, kind: VocabKind, n_vocab: Option<u64>) -> Result<usize> {
    match kind {
        VocabKind::SentencePiece => match n_vocab {
            Some(n) => Ok(n as usize),
            None => {
                let path = dir.join("tokenizer.model");
                let bytes = std::fs::read(&path).map_err(|e| HfError::io("read", &path, e))?;
                crate::tokenizer::parse_spm_pieces(&bytes)
                    .map(|p| p.len())
                    .ok_or_else(|| {
                        HfError::Tokenizer(format!("{}: not a SentencePiece model", path.display()))
                    })
            }
        },
        VocabKind::Bpe => {
            let path = dir.join("tokenizer.json");
            let tj = read_json(&path)?;
            let n = |v: Option<&serde_json::Value>| match v {
                Some(serde_json::Value::Object(m)) => m.len(),
                Some(serde_json::Value::Array(a)) => a.len(),
                _ => 0,
            };
            Ok(n(tj.get("model").and_then(|m| m.get("vocab"))) + n(tj.get("added_tokens")))
        }
    }
}

impl HfModel {
    /// Opens `dir`: reads config.json, the tokenizer files and the safetensors headers (no
    /// tensor data), maps every tensor and builds the GGUF metadata.
    pub fn open(dir: &Path, opts: &ConvertOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(HfError::io(
                "open",
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
            ));
        }
        let cfg = Config::read(dir)?;
        // Architecture first: an unknown one is reported before anything else is read.
        crate::arch::arch_for(&cfg, MlaLayout::Mla)?;
        let ckpt = Checkpoint::open(dir, cfg.fp8_block()?)?;
        ckpt.check_fp8()?;
        let mut plan = plan_tensors(&cfg, &ckpt, MlaLayout::Mla)?;
        let vopts = VocabOptions {
            pre: opts.tokenizer_pre.clone(),
            prefer_spm: plan.arch.prefers_spm(),
            add_space_prefix: plan.arch.space_prefix() == SpacePrefix::FromConfig,
            space_prefix_off_after_spm: plan.arch.space_prefix() == SpacePrefix::OffAfterSpm,
            kimi_tiktoken: plan.arch.gguf_arch() == "deepseek2",
            named_specials: plan.arch.named_special_tokens(),
        };
        // The vocabulary is read before the tensors are final: it may trim the embedding.
        let mut vocab_md = Metadata::new();
        let (vocab, warnings) = write_vocab(dir, plan.params.n_vocab, &vopts, &mut vocab_md)?;
        if plan.arch.trims_embedding_to_vocab() {
            let rows = tokenizer_rows(dir, vocab, plan.params.n_vocab)?;
            if let Some(t) = plan
                .tensors
                .iter_mut()
                .find(|t| t.name == "token_embd.weight")
            {
                t.shape[0] = t.shape[0].min(rows);
            }
        }
        let infos = tensor_infos(&plan, opts.outtype)?;
        let arch = plan.arch.gguf_arch();
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String(arch.into()));
        md.set("general.type", Value::String("model".into()));
        sampling(dir, &mut md)?;
        // general.*: from config.json's `_name_or_path` (when it is a model id, not a path) and
        // then the folder name, each filling what is still unknown, as the converter does.
        let total = total_params(&plan.tensors);
        let folder = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut ids: Vec<String> = Vec::new();
        if let Some(n) = cfg
            .str_of("_name_or_path")
            .filter(|n| n.matches('/').count() <= 1)
        {
            ids.push(n.to_string());
        }
        ids.push(folder);
        let mut name = opts.name.clone();
        let mut c = IdComponents::default();
        for id in &ids {
            let full = id.split_once('/').map_or(id.as_str(), |(_, n)| n);
            if name.is_none() && !full.is_empty() {
                name = Some(id_to_title(full));
            }
            let got = model_id_components(id, total);
            c.organization = c.organization.or(got.organization.map(|o| id_to_title(&o)));
            c.basename = c.basename.or(got.basename);
            c.finetune = c.finetune.or(got.finetune);
            c.version = c.version.or(got.version);
            c.size_label = c.size_label.or(got.size_label);
        }
        md.set("general.name", Value::String(name.unwrap_or_default()));
        for (k, v) in [
            ("general.version", c.version),
            ("general.organization", c.organization),
            ("general.finetune", c.finetune),
            ("general.basename", c.basename),
        ] {
            if let Some(v) = v {
                md.set(k, Value::String(v));
            }
        }
        let label = c.size_label.unwrap_or_else(|| size_label(&plan.tensors));
        md.set("general.size_label", Value::String(label));
        let ov = plan.arch.generic_overrides(&cfg)?;
        generic_params(arch, &cfg, &ov, opts.outtype.file_type(), &mut md)?;
        plan.arch.extra_params(&cfg, &plan.params, &mut md)?;
        md.set("general.quantization_version", Value::U32(2));
        for (k, v) in vocab_md.entries() {
            md.set(k.clone(), v.clone());
        }
        Ok(HfModel {
            dir: dir.to_path_buf(),
            ckpt,
            plan,
            infos,
            metadata: md,
            warnings,
            vocab,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// GGUF metadata of the conversion.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Output tensors (GGUF names, shapes, types), in order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// The conversion's tensors and metadata, for planning.
    pub fn inventory(&self) -> Inventory {
        Inventory {
            metadata: self.metadata.clone(),
            tensors: self.infos.clone(),
        }
    }

    /// Things the user should know (e.g. the pre-tokenizer fallback).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Which tokenizer was converted.
    pub fn vocab_kind(&self) -> VocabKind {
        self.vocab
    }

    /// The safetensors files read.
    pub fn input_paths(&self) -> Vec<PathBuf> {
        self.ckpt.paths()
    }

    /// Fills `out` (whole rows, PyTorch row order of the output tensor) with rows `first..` of
    /// output tensor `index` as f32.
    pub fn read_rows(&self, index: usize, first: usize, out: &mut [f32]) -> Result<()> {
        let t = &self.plan.tensors[index];
        let row = t.row_len().max(1);
        let n = out.len() / row;
        if !out.len().is_multiple_of(row) || first + n > t.n_rows() {
            return Err(HfError::ShapeMismatch {
                name: t.name.clone(),
                got: t.shape.clone(),
                want: vec![first + n, row],
            });
        }
        if let Some(v) = &t.values {
            out.copy_from_slice(&v[first * row..first * row + out.len()]);
            return Ok(());
        }
        match &t.transform {
            Transform::None => self.read_stacked(t, first, out),
            Transform::RopePermute { n_head } => self.read_permuted(t, *n_head, first, out),
            Transform::AddOne => {
                self.read_stacked(t, first, out)?;
                out.iter_mut().for_each(|v| *v += 1.0);
                Ok(())
            }
            Transform::Deinterleave { parity } => {
                let mut src = vec![0f32; out.len() * 2];
                self.ckpt.read_rows(&t.sources[0], first, &mut src)?;
                for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = pair[*parity];
                }
                Ok(())
            }
            Transform::Mxfp4 { .. } => {
                let mut raw = Vec::new();
                self.read_mxfp4(t, first, n, &mut raw)?;
                dynquant_quants::dequantize(GgmlType::MXFP4, &raw, out).map_err(|source| {
                    HfError::Quant {
                        tensor: t.name.clone(),
                        source,
                    }
                })
            }
            Transform::KvbV { n_head: _, nope, v } => {
                // out row (h, j) = source row h*(nope+v) + nope + j
                let map = |r: usize| (r / v) * (nope + v) + nope + r % v;
                self.read_mapped(&t.sources[0], row, first, out, map)
            }
            Transform::KvbK { n_head: _, nope, v } => {
                // out [H, L, nope]: row (h, l) = column l of source rows h*(nope+v) .. +nope
                let l = row_len_of(t, 1);
                let (h0, h1) = (first / l, (first + n - 1) / l);
                let mut buf = vec![0f32; nope * l];
                for h in h0..=h1 {
                    self.ckpt
                        .read_rows(&t.sources[0], h * (nope + v), &mut buf)?;
                    for li in 0..l {
                        let r = h * l + li;
                        if r < first || r >= first + n {
                            continue;
                        }
                        let dst = &mut out[(r - first) * row..][..row];
                        for (k, d) in dst.iter_mut().enumerate() {
                            *d = buf[k * l + li];
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Rows `first..first + n` of an MXFP4 output tensor as ggml `block_mxfp4` bytes, repacked
    /// from its `*_blocks` / `*_scales` sources (see [`Transform::Mxfp4`]).
    fn read_mxfp4(&self, t: &OutTensor, first: usize, n: usize, dst: &mut Vec<u8>) -> Result<()> {
        let Transform::Mxfp4 { parity } = t.transform else {
            return Ok(());
        };
        let nb = t.row_len() / 32;
        let rows_out = t.shape[1];
        let step = if parity.is_some() { 2 } else { 1 };
        let rows_in = rows_out * step;
        dst.clear();
        dst.resize(n * nb * 17, 0);
        let mut blocks = vec![0u8; nb * 16];
        let mut scales = vec![0u8; nb];
        for (i, out_row) in dst.chunks_exact_mut(nb * 17).enumerate() {
            let r = first + i;
            let src = (r / rows_out) * rows_in + (r % rows_out) * step + parity.unwrap_or(0);
            self.ckpt
                .read_raw(&t.sources[0], src * nb * 16, &mut blocks)?;
            self.ckpt.read_raw(&t.sources[1], src * nb, &mut scales)?;
            for ((o, q), &e) in out_row
                .chunks_exact_mut(17)
                .zip(blocks.chunks_exact(16))
                .zip(&scales)
            {
                o[0] = e;
                // Source byte k: elements 2k (low nibble), 2k + 1 (high); ggml byte j:
                // elements j (low), j + 16 (high).
                let nib = |i: usize| (q[i / 2] >> (4 * (i % 2))) & 0x0f;
                for j in 0..16 {
                    o[1 + j] = nib(j) | (nib(j + 16) << 4);
                }
            }
        }
        Ok(())
    }

    fn read_stacked(&self, t: &OutTensor, first: usize, out: &mut [f32]) -> Result<()> {
        let row = t.row_len().max(1);
        if t.sources.len() == 1 {
            return self.ckpt.read_rows(&t.sources[0], first, out);
        }
        let per = t.shape[1..t.shape.len() - 1]
            .iter()
            .product::<usize>()
            .max(1);
        let n = out.len() / row;
        let mut r = first;
        while r < first + n {
            let e = r / per;
            let local = r % per;
            let take = (per - local).min(first + n - r);
            self.ckpt.read_rows(
                &t.sources[e],
                local,
                &mut out[(r - first) * row..(r - first + take) * row],
            )?;
            r += take;
        }
        Ok(())
    }

    fn read_permuted(
        &self,
        t: &OutTensor,
        n_head: usize,
        first: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let total = t.shape[0];
        let per_head = total / n_head.max(1);
        let half = per_head / 2;
        // out index (h, j, i) <- source (h, i, j): the halves of each head interleaved.
        let map = move |r: usize| {
            let (h, w) = (r / per_head, r % per_head);
            h * per_head + (w % 2) * half + w / 2
        };
        if t.shape.len() == 1 {
            let mut all = vec![0f32; total];
            self.ckpt.read_rows(&t.sources[0], 0, &mut all)?;
            for (r, o) in out.iter_mut().enumerate() {
                *o = all[map(r)];
            }
            return Ok(());
        }
        self.read_mapped(&t.sources[0], t.row_len(), first, out, map)
    }

    /// Rows `first..` where out row r is source row `map(r)`: reads the span of source rows
    /// they need in one piece (bounded by the range asked for plus one head), then gathers.
    fn read_mapped(
        &self,
        src: &str,
        row: usize,
        first: usize,
        out: &mut [f32],
        map: impl Fn(usize) -> usize,
    ) -> Result<()> {
        let n = out.len() / row.max(1);
        let (lo, hi) = (first..first + n)
            .map(&map)
            .fold((usize::MAX, 0), |(a, b), s| (a.min(s), b.max(s)));
        if n == 0 {
            return Ok(());
        }
        let mut span = vec![0f32; (hi - lo + 1) * row];
        self.ckpt.read_rows(src, lo, &mut span)?;
        for i in 0..n {
            let s = map(first + i) - lo;
            out[i * row..(i + 1) * row].copy_from_slice(&span[s * row..(s + 1) * row]);
        }
        Ok(())
    }

    /// Encodes f32 rows of tensor `index` into its output type.
    fn encode(&self, index: usize, x: &[f32], dst: &mut Vec<u8>) -> Result<()> {
        let info = &self.infos[index];
        dst.clear();
        const PIECE: usize = 1 << 16;
        let width = match info.ggml_type {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            _ => 0,
        };
        if width > 0 {
            // Element-wise, in parallel pieces: the bytes do not depend on the split.
            dst.resize(x.len() * width, 0);
            let ty = info.ggml_type;
            dst.par_chunks_mut(PIECE * width)
                .zip(x.par_chunks(PIECE))
                .for_each(|(d, v)| {
                    for (o, v) in d.chunks_exact_mut(width).zip(v) {
                        match ty {
                            GgmlType::F32 => o.copy_from_slice(&v.to_le_bytes()),
                            GgmlType::F16 => {
                                o.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes())
                            }
                            _ => o.copy_from_slice(&f32_to_bf16(*v).to_le_bytes()),
                        }
                    }
                });
        } else {
            let ty = info.ggml_type;
            let row = info.row_len() as usize;
            let rb = ty.row_bytes(row as u64).unwrap_or(0) as usize;
            dst.resize(x.len() / row.max(1) * rb, 0);
            dst.par_chunks_mut(rb.max(1))
                .zip(x.par_chunks(row.max(1)))
                .try_for_each(|(d, v)| quantize_rows(ty, v, row, None, d))
                .map_err(|source| HfError::Quant {
                    tensor: info.name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Streams tensor `index` in its output type to `sink`, `slab_values` f32 values at a time.
    pub fn stream_tensor(
        &self,
        index: usize,
        slab_values: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let t = &self.plan.tensors[index];
        let row = t.row_len().max(1);
        let n_rows = t.n_rows();
        let step = (slab_values / row).max(1);
        let mut x = Vec::new();
        let mut bytes = Vec::new();
        for first in (0..n_rows).step_by(step) {
            let rows = step.min(n_rows - first);
            if matches!(t.transform, Transform::Mxfp4 { .. }) {
                self.read_mxfp4(t, first, rows, &mut bytes)?;
                sink(&bytes)?;
                continue;
            }
            x.resize(rows * row, 0f32);
            self.read_rows(index, first, &mut x)?;
            self.encode(index, &x, &mut bytes)?;
            sink(&bytes)?;
        }
        Ok(())
    }

    /// Writes the converted model to `target`.
    pub fn write_gguf(&self, target: &OutputTarget, opts: &WriteOptions) -> Result<WriteSummary> {
        let mut opts = opts.clone();
        opts.protected_inputs.extend(self.input_paths());
        let mut w = GgufWriter::create(target, self.metadata.clone(), self.infos.clone(), &opts)?;
        for (i, info) in self.infos.iter().enumerate() {
            self.stream_tensor(i, SLAB_VALUES, &mut |b| Ok(w.write(&info.name, b)?))?;
        }
        Ok(w.finish()?)
    }
}

/// f32 values converted per step (16 MiB).
pub const SLAB_VALUES: usize = 4 << 20;

fn row_len_of(t: &OutTensor, dim: usize) -> usize {
    t.shape.get(dim).copied().unwrap_or(1)
}

fn to_pipeline(e: HfError) -> PipelineError {
    match e {
        HfError::Gguf(g) => PipelineError::Gguf(g),
        other => PipelineError::Source(Box::new(other)),
    }
}

impl TensorSource for HfModel {
    fn n_tensors(&self) -> usize {
        self.infos.len()
    }
    fn info(&self, index: usize) -> &TensorInfo {
        &self.infos[index]
    }
    fn input_paths(&self) -> Vec<PathBuf> {
        HfModel::input_paths(self)
    }
    fn stream_raw(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::result::Result<(), GgufError>,
    ) -> std::result::Result<(), PipelineError> {
        self.stream_tensor(index, SLAB_VALUES, &mut |b| Ok(sink(b)?))
            .map_err(to_pipeline)
    }
    fn read_rows_f32(
        &self,
        index: usize,
        first_row: usize,
        out: &mut [f32],
        _allow_requantize: bool,
    ) -> std::result::Result<(), PipelineError> {
        // Output rows in GGUF order are the same rows as in PyTorch order (the row is the last
        // PyTorch dimension = ne0). Values are those of the stored type, so quantizing a folder
        // gives exactly what `convert` then `quantize` gives.
        self.read_rows(index, first_row, out).map_err(to_pipeline)?;
        match self.infos[index].ggml_type {
            GgmlType::BF16 => out
                .iter_mut()
                .for_each(|v| *v = bf16_to_f32(f32_to_bf16(*v))),
            GgmlType::F16 => out
                .iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
            _ => {}
        }
        Ok(())
    }
}
