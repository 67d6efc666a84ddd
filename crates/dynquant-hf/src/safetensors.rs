//! A checkpoint's safetensors shards: headers validated through the `safetensors` crate over a
//! memory map, tensor data read lazily with positioned reads, row range by row range, so memory
//! stays bounded by what the caller asks for (mapped pages of a large file are never touched).
//!
//! F32, F16 and BF16 are widened to f32 exactly; F8_E4M3 weights are dequantized with their
//! float32 `<name>_scale_inv` block scales (`weight_block_size` from config.json, 128x128 for
//! DeepSeek-V3/R1): value = fp8 (exact in f32) x scale_inv of its block, one f32 multiply, as
//! llama.cpp's converter computes; edge blocks are partial.

use dynquant_gguf::read_exact_at;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

/// Elements converted per parallel piece.
const PIECE: usize = 1 << 16;

use crate::error::{HfError, Result};

/// Stored element type of a checkpoint tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StDtype {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
    /// FP8 e4m3 (finite-only "fn" variant), block-scaled.
    F8E4M3,
    /// Raw bytes: MXFP4 `*_blocks` (two E2M1 nibbles a byte) and `*_scales` (E8M0 exponents),
    /// copied, never read as values.
    U8,
}

impl StDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StDtype::F32 => 4,
            StDtype::F16 | StDtype::BF16 => 2,
            StDtype::F8E4M3 | StDtype::U8 => 1,
        }
    }
}

/// One tensor of the checkpoint.
#[derive(Debug, Clone)]
pub struct StTensor {
    /// Shard index.
    pub shard: usize,
    /// Stored type.
    pub dtype: StDtype,
    /// Shape, PyTorch order (rows first).
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in its shard.
    pub offset: u64,
}

impl StTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Row length (last dimension; 1 for scalars).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.numel() / self.row_len().max(1)
    }
}

struct Shard {
    path: PathBuf,
    file: File,
}

/// All shards of a checkpoint folder, with every tensor's location.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// Tensors in llama.cpp's converter order: shard by shard (shard files sorted by name), names
    /// sorted within a shard.
    order: Vec<String>,
    tensors: HashMap<String, StTensor>,
    /// FP8 block size, when config.json declares block-scaled FP8.
    block: Option<[usize; 2]>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.order.len())
            .finish()
    }
}

fn dtype_of(name: &str, d: Dtype) -> Result<StDtype> {
    Ok(match d {
        Dtype::F32 => StDtype::F32,
        Dtype::F16 => StDtype::F16,
        Dtype::BF16 => StDtype::BF16,
        Dtype::F8_E4M3 => StDtype::F8E4M3,
        Dtype::U8 => StDtype::U8,
        other => {
            return Err(HfError::UnsupportedDtype {
                name: name.into(),
                dtype: format!("{other:?}"),
            })
        }
    })
}

/// Decodes one FP8 e4m3fn byte (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no
/// infinities, S.1111.111 is NaN; OCP FP8 spec) exactly to f32.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let e = (b >> 3) & 0x0f;
    let m = (b & 0x07) as f32;
    if e == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    if e == 0 {
        sign * m * (1.0 / 512.0) // subnormal: m/8 * 2^-6
    } else {
        sign * (1.0 + m / 8.0) * f32::powi(2.0, e as i32 - 7)
    }
}

impl Checkpoint {
    /// Opens the weights of `dir`: `model.safetensors.index.json` (shards from its weight map)
    /// or a single `model.safetensors`. `fp8_block` is config.json's `weight_block_size`.
    pub fn open(dir: &Path, fp8_block: Option<[usize; 2]>) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        type WeightMap = Option<(PathBuf, BTreeMap<String, String>)>;
        let (names, weight_map): (Vec<String>, WeightMap) = if index.is_file() {
            let v = crate::config::read_json(&index)?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| HfError::json(&index, "no 'weight_map' object"))?;
            let mut wm = BTreeMap::new();
            for (k, f) in map {
                let f = f.as_str().ok_or_else(|| {
                    HfError::json(&index, format!("weight_map['{k}'] is not a file name"))
                })?;
                if f.contains('/') || f.contains('\\') || f == ".." {
                    return Err(HfError::json(
                        &index,
                        format!("shard name '{f}' is not a plain file name"),
                    ));
                }
                wm.insert(k.clone(), f.to_string());
            }
            let mut files: Vec<String> = wm.values().cloned().collect();
            files.sort();
            files.dedup();
            for f in &files {
                if !dir.join(f).is_file() {
                    return Err(HfError::MissingShard {
                        index: index.clone(),
                        shard: f.clone(),
                    });
                }
            }
            (files, Some((index, wm)))
        } else if single.is_file() {
            (vec!["model.safetensors".into()], None)
        } else {
            return Err(HfError::NoWeights(dir.to_path_buf()));
        };
        let mut shards = Vec::new();
        let mut order = Vec::new();
        let mut tensors = HashMap::new();
        for (si, fname) in names.iter().enumerate() {
            let path = dir.join(fname);
            let file = File::open(&path).map_err(|e| HfError::io("open", &path, e))?;
            let len = file
                .metadata()
                .map_err(|e| HfError::io("stat", &path, e))?
                .len();
            if len < 8 {
                return Err(HfError::BadSafetensors {
                    path,
                    reason: format!("{len} bytes, shorter than the 8-byte header length"),
                });
            }
            // SAFETY: the map is read-only and only its header bytes are read here; dynquant never
            // writes its inputs. A concurrent truncation by another process could fault, as with
            // any mapped input (the same contract as GGUF inputs).
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| HfError::io("mmap", &path, e))?;
            let (n, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| HfError::BadSafetensors {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let data_start = 8u64 + n as u64;
            let mut names_here: Vec<String> = Vec::new();
            for (name, info) in meta.tensors() {
                let dtype = dtype_of(&name, info.dtype)?;
                let numel = info
                    .shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| HfError::BadSafetensors {
                        path: path.clone(),
                        reason: format!("tensor '{name}' shape overflows"),
                    })?;
                let (b, e) = info.data_offsets;
                if numel.checked_mul(dtype.size()) != Some(e - b) {
                    return Err(HfError::BadSafetensors {
                        path: path.clone(),
                        reason: format!("tensor '{name}' data length does not match its shape"),
                    });
                }
                let st = StTensor {
                    shard: si,
                    dtype,
                    shape: info.shape.clone(),
                    offset: data_start + b as u64,
                };
                if tensors.insert(name.clone(), st).is_some() {
                    return Err(HfError::DuplicateTensor(name));
                }
                names_here.push(name);
            }
            drop(map);
            names_here.sort();
            order.extend(names_here);
            shards.push(Shard { path, file });
        }
        if let Some((index, wm)) = &weight_map {
            let mut missing: Vec<&String> =
                wm.keys().filter(|k| !tensors.contains_key(*k)).collect();
            let mut extra: Vec<&String> = order.iter().filter(|k| !wm.contains_key(*k)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                missing.truncate(5);
                extra.truncate(5);
                return Err(HfError::IndexMismatch(format!(
                    "{}: the weight map and the shards disagree; missing from shards: {missing:?}, not in the map: {extra:?}",
                    index.display()
                )));
            }
        }
        Ok(Checkpoint {
            shards,
            order,
            tensors,
            block: fp8_block,
        })
    }

    /// Shard paths.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.shards.iter().map(|s| s.path.clone()).collect()
    }

    /// Tensor names in converter order.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// A tensor's entry.
    pub fn get(&self, name: &str) -> Option<&StTensor> {
        self.tensors.get(name)
    }

    /// A tensor's entry, or [`HfError::MissingTensor`].
    pub fn require(&self, name: &str) -> Result<&StTensor> {
        self.get(name)
            .ok_or_else(|| HfError::MissingTensor(name.to_string()))
    }

    /// Checks the block scales of every FP8 tensor before any work: present, F32, and of shape
    /// ceil(rows/bh) x ceil(cols/bw).
    pub fn check_fp8(&self) -> Result<()> {
        for name in &self.order {
            let t = &self.tensors[name];
            if t.dtype != StDtype::F8E4M3 {
                continue;
            }
            self.scale_of(name, t)?;
        }
        Ok(())
    }

    fn scale_of(&self, name: &str, t: &StTensor) -> Result<(&StTensor, [usize; 2])> {
        let sname = format!("{name}_scale_inv");
        let s = self
            .tensors
            .get(&sname)
            .ok_or_else(|| HfError::MissingScale(name.to_string()))?;
        let block = self.block.unwrap_or([128, 128]);
        let (rows, cols) = match t.shape.as_slice() {
            [r, c] => (*r, *c),
            _ => {
                return Err(HfError::UnsupportedDtype {
                    name: name.into(),
                    dtype: format!(
                        "F8_E4M3 with {} dimensions (only 2-D is block-scaled)",
                        t.shape.len()
                    ),
                })
            }
        };
        let want = vec![
            rows.div_ceil(block[0].max(1)),
            cols.div_ceil(block[1].max(1)),
        ];
        if s.dtype != StDtype::F32 || s.shape != want || block.contains(&0) {
            return Err(HfError::BadScale {
                name: name.into(),
                got: s.shape.clone(),
                want,
                shape: t.shape.clone(),
                block,
            });
        }
        Ok((s, block))
    }

    fn read_bytes(&self, t: &StTensor, from: u64, buf: &mut [u8]) -> Result<()> {
        let shard = &self.shards[t.shard];
        let at = t.offset + from;
        read_exact_at(&shard.file, buf, at).map_err(|e| HfError::io("read", &shard.path, e))
    }

    /// Reads `buf.len()` raw bytes of tensor `name` from byte `from` of its data.
    pub fn read_raw(&self, name: &str, from: usize, buf: &mut [u8]) -> Result<()> {
        let t = self.require(name)?;
        if from + buf.len() > t.numel() * t.dtype.size() {
            return Err(HfError::ShapeMismatch {
                name: name.into(),
                got: t.shape.clone(),
                want: vec![from + buf.len()],
            });
        }
        self.read_bytes(t, from as u64, buf)
    }

    /// Reads rows `first..first + out.len() / row_len` of tensor `name` as f32.
    pub fn read_rows(&self, name: &str, first: usize, out: &mut [f32]) -> Result<()> {
        let t = self.require(name)?;
        let row = t.row_len().max(1);
        let n = out.len() / row;
        if first + n > t.n_rows() || !out.len().is_multiple_of(row) {
            return Err(HfError::ShapeMismatch {
                name: name.into(),
                got: t.shape.clone(),
                want: vec![first + n, row],
            });
        }
        if t.dtype == StDtype::U8 {
            return Err(HfError::UnsupportedDtype {
                name: name.into(),
                dtype: "U8 outside an MXFP4 blocks/scales pair".into(),
            });
        }
        let es = t.dtype.size();
        let mut buf = vec![0u8; out.len() * es];
        self.read_bytes(t, (first * row * es) as u64, &mut buf)?;
        match t.dtype {
            // Element-wise, in parallel pieces: the values do not depend on the split.
            StDtype::F32 => out
                .par_chunks_mut(PIECE)
                .zip(buf.par_chunks(PIECE * 4))
                .for_each(|(o, b)| {
                    for (d, c) in o.iter_mut().zip(b.chunks_exact(4)) {
                        *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                }),
            StDtype::F16 => out
                .par_chunks_mut(PIECE)
                .zip(buf.par_chunks(PIECE * 2))
                .for_each(|(o, b)| {
                    for (d, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                        *d = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                    }
                }),
            StDtype::BF16 => out
                .par_chunks_mut(PIECE)
                .zip(buf.par_chunks(PIECE * 2))
                .for_each(|(o, b)| {
                    for (d, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                        *d = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                    }
                }),
            // Rejected above.
            StDtype::U8 => {}
            StDtype::F8E4M3 => {
                let (s, [bh, bw]) = self.scale_of(name, t)?;
                let scols = s.shape[1];
                // The scale rows these data rows need.
                let s_first = first / bh;
                let s_last = (first + n).div_ceil(bh).max(s_first + 1).min(s.shape[0]);
                let mut scales = vec![0f32; (s_last - s_first) * scols];
                self.read_rows(&format!("{name}_scale_inv"), s_first, &mut scales)?;
                let lut: [f32; 256] = std::array::from_fn(|b| e4m3_to_f32(b as u8));
                out.par_chunks_mut(row)
                    .zip(buf.par_chunks(row))
                    .enumerate()
                    .for_each(|(i, (d, b))| {
                        let srow = &scales[((first + i) / bh - s_first) * scols..][..scols];
                        for (j, (x, &q)) in d.iter_mut().zip(b).enumerate() {
                            *x = lut[q as usize] * srow[j / bw];
                        }
                    });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_decodes_the_format_table() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9)); // smallest subnormal
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6)); // smallest normal
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7e), 448.0); // largest finite
        assert_eq!(e4m3_to_f32(0xfe), -448.0);
        assert!(e4m3_to_f32(0x7f).is_nan());
    }
}
