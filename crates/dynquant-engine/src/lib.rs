//! dynquant-engine: a CPU inference engine for llama, qwen2, qwen3 and gemma3 GGUF models that
//! follows llama.cpp's CPU numerics, so that quality measured here (perplexity, KL divergence)
//! predicts what llama.cpp users see.
//!
//! * [`dot`]: activations rounded to each weight type's `vec_dot_type` (Q8_0, Q8_1, Q8_K, F16...).
//! * [`matmul`]: products of mmap'd weights of any ggml type with batches of activations.
//! * [`ops`], [`attention`]: RMSNorm, RoPE, GLU activations, flash-attention-style GQA.
//! * [`config`] + [`arch`]: typed hyper-parameters, one small file per architecture.
//! * [`model`]: the shared forward pass with a KV cache.
//! * [`eval`]: perplexity, KL-divergence statistics and base files, imatrix collection.
//! * [`sample`]: token sampling for generation.
//!
//! Weights stay in their stored type; results do not depend on the number of threads.
#![deny(missing_docs)]

pub mod arch;
pub mod attention;
pub mod config;
pub mod dot;
pub mod error;
pub mod eval;
mod fa;
mod ffn;
mod gqa;
pub mod imatrix;
pub mod kld;
mod kquant;
pub mod matmul;
pub mod model;
pub mod ops;
pub mod sample;
pub mod simd_exp;

pub use error::{EngineError, Result};
pub use matmul::Numerics;
pub use model::{Logits, Model, Session};
