//! dynquant-gguf: the file formats dynquant reads and writes, exact and hard to break.
//!
//! * [`types`]: the one declarative table of ggml tensor types and llama file types.
//! * GGUF v2/v3 at the crate root: reading (mmap or pread, every count, length, shape, type,
//!   offset and alignment checked with checked arithmetic against the file length before any
//!   tensor data is touched), streaming writing (headers computed up front, tensor data
//!   accepted strictly in header order, temp file + rename), split sets and merging.
//! * [`imatrix`]: llama.cpp importance-matrix files (GGUF and legacy `.dat`).
//!
//! Row conversions between f32 and stored types live in `dynquant-quants`; the streaming
//! quantization of a whole model in `dynquant-quantize`.
//!
//! Invariants: libraries print nothing and never panic on bad input; output is written to a
//! temporary file and renamed only when complete; an input file is never overwritten.
#![deny(missing_docs)]

pub mod covariance;
pub mod imatrix;
pub mod types;

mod encode;
mod error;
mod file;
mod header;
pub mod keys;
mod model;
mod value;
pub mod verify;
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
pub use verify::{recorded_checksums, verify_set, VerifySummary};
pub use writer::{
    interrupted_message, parse_size, plan_shards, planned_output_bytes,
    remove_temporary_outputs_and_exit, split_path, split_prefix, tensor_checksum, GgufWriter,
    OutputTarget, SetOptions, ShardWorker, SplitSpec, WriteOptions, WriteSummary,
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

pub use types::{FileTypeInfo, GgmlType, ImatrixNeed, TypeInfo};
