//! A model's identity for sensitivity files: cheap even for a model of hundreds of GB.

use dynquant_gguf::{GgufModel, Metadata};
use dynquant_quantize::TensorSource;
use sha2::{Digest, Sha256};

use crate::MeasureError;

/// SHA-256 (hex) of a model's identity: its metadata (every key and value, `split.*` keys
/// left out by the caller, see [`gguf_identity`]), its tensor directory (name, stored type,
/// shape) and, per tensor, the values of its first, middle and last rows. Two files with the
/// same tensors split differently share an identity; a file whose weights were changed almost
/// surely does not, and the cost is three rows per tensor whatever the model's size.
///
/// `plan` and `quantize` check a `--sensitivity` file with
/// `model_identity(input.source(), &input.metadata())` (`dynquant_input::ModelInput`).
pub fn model_identity(
    source: &dyn TensorSource,
    metadata: &Metadata,
) -> Result<String, MeasureError> {
    let mut h = Sha256::new();
    h.update(b"dynquant-model-identity/1\n");
    for (k, v) in metadata.entries() {
        h.update(k.as_bytes());
        h.update(format!("={v:?}\n").as_bytes());
    }
    for i in 0..source.n_tensors() {
        let t = source.info(i);
        h.update(format!("{}:{}:{:?}\n", t.name, t.ggml_type, t.shape).as_bytes());
    }
    for i in 0..source.n_tensors() {
        let t = source.info(i);
        let row = t.row_len() as usize;
        let n_rows = t.n_rows() as usize;
        if row == 0 || n_rows == 0 {
            continue;
        }
        let mut rows = vec![0, n_rows / 2, n_rows - 1];
        rows.dedup();
        let mut x = vec![0f32; row];
        for r in rows {
            source
                .read_rows_f32(i, r, &mut x, true)
                .map_err(|e| MeasureError::Read {
                    tensor: t.name.clone(),
                    source: Box::new(e),
                })?;
            for v in &x {
                h.update(v.to_bits().to_le_bytes());
            }
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// [`model_identity`] of a GGUF file or split set (its metadata without `split.*` keys, as
/// `dynquant_input::ModelInput::metadata` gives it).
pub fn gguf_identity(model: &GgufModel) -> Result<String, MeasureError> {
    model_identity(model, &model.merged_metadata())
}
