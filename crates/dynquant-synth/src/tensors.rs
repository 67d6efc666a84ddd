//! Streaming a model out one tensor at a time: each tensor's values are made only when it is
//! written, so a model builder holds one tensor in memory, not the model.

use std::path::Path;

use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{GgufError, GgufWriter, Metadata, OutputTarget, TensorInfo, WriteOptions};
use dynquant_quants::{encode_float, QuantError};

use crate::SynthError;

/// A tensor to write: its header entry and a function producing its f32 values on demand.
/// `E` is the builder's error type, so builders outside this crate (the test kit) can make
/// values with their own fallible steps.
pub struct Planned<'a, E = SynthError> {
    /// Name, shape and type of the tensor in the output.
    pub info: TensorInfo,
    /// Produces the tensor's values, row-major in ggml order.
    pub make: Box<dyn Fn() -> Result<Vec<f32>, E> + 'a>,
}

impl<'a, E: From<GgufError>> Planned<'a, E> {
    /// A tensor `name` of `shape` (ggml order) stored as `ty`, its values made by `make`.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<u64>,
        ty: GgmlType,
        make: impl Fn() -> Result<Vec<f32>, E> + 'a,
    ) -> Result<Self, E> {
        Ok(Planned {
            info: TensorInfo::new(name, shape, ty)?,
            make: Box::new(make),
        })
    }
}

/// Writes `tensors` (encoded as their F32/F16/BF16 types) with `metadata` to `path`,
/// replacing any file there.
pub fn write_model<E>(
    path: &Path,
    metadata: Metadata,
    tensors: Vec<Planned<'_, E>>,
) -> Result<(), E>
where
    E: From<GgufError> + From<QuantError> + From<SynthError>,
{
    let infos: Vec<TensorInfo> = tensors.iter().map(|t| t.info.clone()).collect();
    let opts = WriteOptions {
        overwrite: true,
        protected_inputs: Vec::new(),
    };
    let mut w = GgufWriter::create(
        &OutputTarget::Single(path.to_path_buf()),
        metadata,
        infos,
        &opts,
    )?;
    let mut buf = Vec::new();
    for t in &tensors {
        let values = (t.make)()?;
        if values.len() as u64 != t.info.n_elements() {
            return Err(SynthError::WrongLength {
                name: t.info.name.clone(),
                got: values.len(),
                shape: t.info.shape.clone(),
            }
            .into());
        }
        buf.clear();
        encode_float(t.info.ggml_type, &values, &mut buf)?;
        w.write(&t.info.name, &buf)?;
    }
    w.finish()?;
    Ok(())
}
