//! Small helpers shared by the model builders: reading tensors as f32, row-major matrix
//! surgery, and streaming a model out one tensor at a time (`dynquant-synth`'s writer, with
//! this crate's error type).

use dynquant_gguf::GgufModel;
use dynquant_quants::dequantize;

use crate::{Result, TestkitError};

pub use dynquant_synth::tensors::write_model;

/// A tensor to write whose values are made by the test kit's fallible steps.
pub type Planned<'a> = dynquant_synth::tensors::Planned<'a, TestkitError>;

/// A tensor of `model` as f32 values with its shape.
pub fn read_f32(model: &GgufModel, name: &str) -> Result<(Vec<u64>, Vec<f32>)> {
    let t = model
        .tensors()
        .find(|t| t.info.name == name)
        .ok_or_else(|| TestkitError::BadSource(format!("no tensor '{name}'")))?;
    let data = model.tensor_data(&t)?;
    let mut out = vec![0f32; t.info.n_elements() as usize];
    dequantize(t.info.ggml_type, &data, &mut out)?;
    Ok((t.info.shape.clone(), out))
}

/// Rounds every value through F16, as storing it as F16 would.
pub fn f16_round(v: &mut [f32]) {
    use dynquant_quants::{f16_to_f32, f32_to_f16};
    v.iter_mut().for_each(|x| *x = f16_to_f32(f32_to_f16(*x)));
}

/// Row-major matrix of `rows` rows of `cols` values (ggml ne = {cols, rows}), with columns
/// zero-padded to `new_cols`.
pub fn pad_cols(data: &[f32], cols: usize, new_cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let mut out = vec![0f32; rows * new_cols];
    for r in 0..rows {
        out[r * new_cols..r * new_cols + cols].copy_from_slice(&data[r * cols..(r + 1) * cols]);
    }
    out
}

/// Appends zero rows up to `new_rows`.
pub fn pad_rows(data: &[f32], cols: usize, new_rows: usize) -> Vec<f32> {
    let mut out = data.to_vec();
    out.resize(new_rows * cols, 0.0);
    out
}

/// Rearranges groups of `group` consecutive rows: output group `i` is input group `map[i]`,
/// or zeros for `None`.
pub fn remap_row_groups(
    data: &[f32],
    cols: usize,
    group: usize,
    map: &[Option<usize>],
) -> Vec<f32> {
    let block = group * cols;
    let mut out = vec![0f32; map.len() * block];
    for (i, src) in map.iter().enumerate() {
        if let Some(s) = src {
            out[i * block..(i + 1) * block].copy_from_slice(&data[s * block..(s + 1) * block]);
        }
    }
    out
}

/// Rearranges groups of `group` consecutive columns in every row: output column group `i`
/// is input column group `map[i]`, or zeros for `None`.
pub fn remap_col_groups(
    data: &[f32],
    cols: usize,
    group: usize,
    map: &[Option<usize>],
) -> Vec<f32> {
    let rows = data.len() / cols;
    let new_cols = map.len() * group;
    let mut out = vec![0f32; rows * new_cols];
    for r in 0..rows {
        let src_row = &data[r * cols..(r + 1) * cols];
        let dst_row = &mut out[r * new_cols..(r + 1) * new_cols];
        for (i, src) in map.iter().enumerate() {
            if let Some(s) = src {
                dst_row[i * group..(i + 1) * group]
                    .copy_from_slice(&src_row[s * group..(s + 1) * group]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_surgery() {
        // 2 rows x 3 cols.
        let m = [1., 2., 3., 4., 5., 6.];
        assert_eq!(pad_cols(&m, 3, 4), vec![1., 2., 3., 0., 4., 5., 6., 0.]);
        assert_eq!(pad_rows(&m, 3, 3), vec![1., 2., 3., 4., 5., 6., 0., 0., 0.]);
        assert_eq!(
            remap_row_groups(&m, 3, 1, &[Some(1), None, Some(0)]),
            vec![4., 5., 6., 0., 0., 0., 1., 2., 3.]
        );
        assert_eq!(
            remap_col_groups(&m, 3, 1, &[Some(2), None, Some(0), Some(1)]),
            vec![3., 0., 1., 2., 6., 0., 4., 5.]
        );
    }
}
