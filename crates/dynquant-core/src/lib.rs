//! dynquant-core: the exact, hard-to-break foundation of dynquant.
//!
//! * [`types`]: the one declarative table of ggml tensor types and llama file types.
//! * [`gguf`]: GGUF v2/v3 reading (mmap or pread, every offset checked before data is
//!   touched), streaming writing (temp file + rename), split sets and merging.
//! * [`quants`]: row conversions between f32 and stored ggml types.
//! * [`imatrix`]: llama.cpp importance-matrix files.
//! * [`pipeline`]: the streaming, parallel, deterministic quantization of a whole model.
//!
//! Invariants: libraries print nothing and never panic on bad input; every size, count and
//! offset read from a file is checked with checked arithmetic against the file length before
//! any tensor data is read; output is written to a temporary file and renamed only when
//! complete; an input file is never overwritten.
#![deny(missing_docs)]

pub mod gguf;
pub mod imatrix;
pub mod pipeline;
pub mod quants;
pub mod types;

pub use types::{FileTypeInfo, GgmlType, ImatrixNeed, TypeInfo};
