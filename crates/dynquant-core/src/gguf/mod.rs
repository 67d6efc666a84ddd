//! GGUF: reading (v2/v3, mmap or pread), streaming writing, split sets.
//!
//! Reading validates the whole header before any tensor data is touched: every count,
//! length, shape, type, offset and alignment is checked with checked arithmetic against the
//! file length. Writing computes all headers up front and then accepts tensor data strictly
//! in header order (see [`writer`]).

mod encode;
mod error;
mod file;
mod header;
pub mod keys;
mod model;
mod value;
pub mod writer;

pub use encode::{build_header, encode_header, encode_header_unpadded, layout, StreamEncoder};
pub use error::{GgufError, Location, Result};
pub use file::{read_exact_at, Access, GgufFile, COPY_CHUNK};
pub use header::{
    align_up, alignment_of, parse_header, GgufHeader, TensorInfo, MAX_ARRAY_LEN, MAX_DIMS, MAX_KV,
    MAX_NAME_LEN, MAX_NESTING, MAX_STRING_LEN, MAX_TENSORS,
};
pub use model::{GgufModel, ModelTensor};
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::{
    parse_size, plan_shards, remove_temporary_outputs_and_exit, split_path, split_prefix,
    GgufWriter, OutputTarget, SplitSpec, WriteOptions, WriteSummary,
};

/// Copies every tensor of `model`, unchanged and in order, to `target` with the model's
/// metadata (split keys removed, new ones added for a split target). This is `split`,
/// `merge`, and a plain rewrite; data is streamed, never held whole.
pub fn copy_model(
    model: &GgufModel,
    target: &OutputTarget,
    opts: &WriteOptions,
) -> Result<WriteSummary> {
    let tensors: Vec<TensorInfo> = model.tensors().map(|t| t.info.clone()).collect();
    let mut opts = opts.clone();
    opts.protected_inputs.extend(model.paths());
    let mut writer = GgufWriter::create(target, model.merged_metadata(), tensors, &opts)?;
    for t in model.tensors() {
        model.stream_tensor(&t, &mut |chunk| writer.write(&t.info.name, chunk))?;
    }
    writer.finish()
}
