//! dynquant-engine: a CPU inference engine for llama (dense or Mixtral-style experts), qwen2,
//! qwen3, qwen3moe, gemma3 and deepseek2 (multi-head latent attention, `mla.rs`) GGUF models that
//! follows llama.cpp's CPU numerics, so that quality measured here (perplexity, KL divergence)
//! predicts what llama.cpp users see.
//!
//! * [`dot`]: activations rounded to each weight type's `vec_dot_type` (Q8_0, Q8_1, Q8_K, F16...).
//! * [`matmul`]: products of mmap'd weights of any ggml type with batches of activations.
//! * [`ops`], [`attention`]: RMSNorm, RoPE (YaRN included), GLU activations,
//!   flash-attention-style GQA.
//! * [`config`] + [`arch`]: typed hyper-parameters, one small file per architecture.
//! * [`model`]: the shared forward pass with a KV cache; feed-forward blocks are dense GLUs or
//!   mixtures of experts (`moe.rs`, llama.cpp's `build_moe_ffn` routing).
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
mod ffn;
mod gqa;
pub mod imatrix;
pub mod kld;
pub mod matmul;
mod mla;
pub mod model;
mod moe;
pub mod ops;
pub mod sample;

pub use error::{EngineError, Result};
pub use matmul::Numerics;
pub use model::{Logits, Model, Session};
