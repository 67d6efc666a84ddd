//! The weight-space part: one tensor's importance-weighted relative error per stored type,
//! over a deterministic sample of its rows, and whole tensors quantized for a probe. Both
//! quantize exactly as the quantize pipeline does (`quantize_rows` with the imatrix weights of
//! the row's expert; all-ones weights for a type that needs an imatrix when there is no
//! entry), so what is measured is what `quantize` would write.

use std::collections::BTreeMap;

use dynquant_gguf::imatrix::{ExpertPrior, Imatrix};
use dynquant_gguf::{GgmlType, ImatrixNeed, TensorInfo};
use dynquant_quantize::TensorSource;
use dynquant_quants::{dequantize, quantize_rows};
use rayon::prelude::*;

use crate::MeasureError;

/// Per-expert importance weights of a tensor (`None` without an imatrix entry).
pub(crate) fn importance(
    imatrix: Option<&Imatrix>,
    prior: ExpertPrior,
    t: &TensorInfo,
) -> Result<Option<Vec<Vec<f32>>>, MeasureError> {
    let Some(entry) = imatrix.and_then(|im| im.get(&t.name)) else {
        return Ok(None);
    };
    entry
        .weights_for_tensor(t, prior)
        .map(Some)
        .ok_or_else(|| MeasureError::ImatrixShape {
            tensor: t.name.clone(),
            entry: format!("{} x {}", entry.n_per_mat, entry.n_mat()),
            need: format!("{} x {}", t.row_len(), t.n_matrices()),
        })
}

/// The weights `quantize_rows` gets for matrix `mat`: the imatrix's, all ones for a type that
/// needs an imatrix when there is none, else none (the quantizer's own default).
fn quant_weights<'w>(
    imp: &'w Option<Vec<Vec<f32>>>,
    ones: &'w [f32],
    ty: GgmlType,
    mat: usize,
) -> Option<&'w [f32]> {
    match imp {
        Some(m) => Some(m[mat.min(m.len() - 1)].as_slice()),
        None if ty.info().imatrix == ImatrixNeed::Required => Some(ones),
        None => None,
    }
}

/// The rows measured of a tensor of `rows_per_mat` rows per matrix and `mats` matrices with a
/// budget of `sample_rows` rows: every row when the tensor has at most that many, else for
/// each matrix `max(2, ceil(sample_rows / mats))` rows (at most all) evenly spaced from its
/// first row.
pub(crate) fn sampled_rows(rows_per_mat: usize, mats: usize, sample_rows: usize) -> Vec<usize> {
    let total = rows_per_mat * mats;
    if total <= sample_rows {
        return (0..total).collect();
    }
    let per = sample_rows.div_ceil(mats).max(2).min(rows_per_mat);
    let mut rows = Vec::with_capacity(per * mats);
    for m in 0..mats {
        for i in 0..per {
            rows.push(m * rows_per_mat + i * rows_per_mat / per);
        }
    }
    rows
}

/// One tensor's measured errors.
pub(crate) struct TensorErrors {
    pub rows_measured: u64,
    /// Stored type -> relative error.
    pub errors: BTreeMap<GgmlType, f64>,
}

/// The relative error `Σ w (x − q(x))² / Σ w x²` of tensor `index` for each type of `types`
/// (as stored after ggml's shape fallback; types without a fallback are skipped), over its
/// sampled rows; `w` is the row's imatrix weights (ones without an entry).
pub(crate) fn tensor_errors(
    source: &dyn TensorSource,
    index: usize,
    imatrix: Option<&Imatrix>,
    prior: ExpertPrior,
    types: &[GgmlType],
    sample_rows: usize,
) -> Result<TensorErrors, MeasureError> {
    let info = source.info(index);
    let row = info.row_len() as usize;
    let mats = info.n_matrices() as usize;
    let rows_per_mat = info.shape.get(1).copied().unwrap_or(1) as usize;
    let imp = importance(imatrix, prior, info)?;
    let ones = vec![1f32; row];
    let rows = sampled_rows(rows_per_mat, mats, sample_rows);
    // the sampled rows as f32, read one at a time (a sample of a large tensor is sparse)
    let mut x = vec![0f32; rows.len() * row];
    for (dst, &r) in x.chunks_exact_mut(row).zip(&rows) {
        source
            .read_rows_f32(index, r, dst, true)
            .map_err(|e| MeasureError::Read {
                tensor: info.name.clone(),
                source: Box::new(e),
            })?;
    }
    let mut stored: Vec<GgmlType> = types
        .iter()
        .filter_map(|t| t.fallback_for_row(row as u64))
        .collect();
    stored.sort_by_key(|t| t.id());
    stored.dedup();
    let mut errors = BTreeMap::new();
    for ty in stored {
        let rb = ty.row_bytes(row as u64).unwrap_or(0) as usize;
        // per row (numerator, denominator), summed in row order afterwards: the same result
        // for any number of threads
        let parts: Vec<(f64, f64)> = x
            .par_chunks(row)
            .zip(rows.par_iter())
            .map(|(xr, &r)| -> Result<(f64, f64), MeasureError> {
                let mat = r / rows_per_mat.max(1);
                let qw = quant_weights(&imp, &ones, ty, mat);
                let mut q = vec![0u8; rb];
                quantize_rows(ty, xr, row, qw, &mut q).map_err(|source| {
                    MeasureError::Quantize {
                        tensor: info.name.clone(),
                        ty,
                        source,
                    }
                })?;
                let mut back = vec![0f32; row];
                dequantize(ty, &q, &mut back).map_err(|source| MeasureError::Quantize {
                    tensor: info.name.clone(),
                    ty,
                    source,
                })?;
                let w: &[f32] = imp.as_ref().map_or(&ones, |m| &m[mat.min(m.len() - 1)]);
                let (mut num, mut den) = (0f64, 0f64);
                for ((&a, &b), &wi) in xr.iter().zip(&back).zip(w) {
                    let d = f64::from(a) - f64::from(b);
                    num += f64::from(wi) * d * d;
                    den += f64::from(wi) * f64::from(a) * f64::from(a);
                }
                Ok((num, den))
            })
            .collect::<Result<_, _>>()?;
        let (num, den) = parts
            .iter()
            .fold((0f64, 0f64), |(n, d), (a, b)| (n + a, d + b));
        errors.insert(ty, if den > 0.0 { num / den } else { 0.0 });
    }
    Ok(TensorErrors {
        rows_measured: rows.len() as u64,
        errors,
    })
}

/// Tensor `index` quantized whole to `ty` (already the stored type after fallback), as the
/// quantize pipeline would write it.
pub(crate) fn quantize_tensor(
    source: &dyn TensorSource,
    index: usize,
    imatrix: Option<&Imatrix>,
    prior: ExpertPrior,
    ty: GgmlType,
) -> Result<Vec<u8>, MeasureError> {
    let info = source.info(index);
    let row = info.row_len() as usize;
    let n_rows = info.n_rows() as usize;
    let rows_per_mat = info.shape.get(1).copied().unwrap_or(1) as usize;
    let imp = importance(imatrix, prior, info)?;
    let ones = vec![1f32; row];
    let rb = ty.row_bytes(row as u64).unwrap_or(0) as usize;
    let mut out = vec![0u8; n_rows * rb];
    // slabs of about 16 Mi values, rows of a slab in parallel
    let slab = ((16usize << 20) / row.max(1)).max(1);
    let mut x = Vec::new();
    for first in (0..n_rows).step_by(slab) {
        let n = slab.min(n_rows - first);
        x.resize(n * row, 0f32);
        source
            .read_rows_f32(index, first, &mut x, true)
            .map_err(|e| MeasureError::Read {
                tensor: info.name.clone(),
                source: Box::new(e),
            })?;
        out[first * rb..(first + n) * rb]
            .par_chunks_mut(rb)
            .zip(x.par_chunks(row))
            .enumerate()
            .try_for_each(|(i, (dst, xr))| {
                let mat = (first + i) / rows_per_mat.max(1);
                quantize_rows(ty, xr, row, quant_weights(&imp, &ones, ty, mat), dst)
            })
            .map_err(|source| MeasureError::Quantize {
                tensor: info.name.clone(),
                ty,
                source,
            })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_every_row_of_small_tensors_and_spreads_over_experts() {
        assert_eq!(sampled_rows(10, 1, 16), (0..10).collect::<Vec<_>>());
        let r = sampled_rows(1000, 1, 4);
        assert_eq!(r, vec![0, 250, 500, 750]);
        let r = sampled_rows(100, 8, 16);
        assert_eq!(r.len(), 16);
        assert_eq!(&r[..4], &[0, 50, 100, 150]);
        // at least two rows per expert
        assert_eq!(sampled_rows(100, 64, 16).len(), 128);
    }
}
