//! dynquant-engine: a CPU inference engine for llama (dense or Mixtral-style experts), qwen2,
//! qwen3, qwen3moe, gemma3 and deepseek2 (multi-head latent attention, `mla.rs`) GGUF models that
//! follows llama.cpp's CPU numerics, so that quality measured here (perplexity, KL divergence)
//! predicts what llama.cpp users see.
//!
//! * [`cpu`]: the one place that asks what the CPU can do: the libggml-cpu flavour whose
//!   numerics are reproduced (`DYNQUANT_CPU_FLAVOR` overrides it) and whether AVX2+FMA may run.
//! * [`dot`]: activations rounded to each weight type's `vec_dot_type` (Q8_0, Q8_1, Q8_K, F16...).
//! * [`matmul`]: products of mmap'd weights of any ggml type with batches of activations; it
//!   only picks a kernel (`kernels/`: legacy and K-quant integer dots, dequantized float
//!   tiles, block layouts); for F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K (repacked), Q6_K, Q2_K
//!   (repacked on AVX-512), Q3_K, Q5_K, IQ4_XS (IQ panel gemm for batches) and IQ4_NL
//!   (repacked) bit-identical to ggml-cpu's AVX2/AVX-512 kernels (AVX2 integer code with a
//!   portable form giving the same bits); so are the codebook i-quants (IQ1_S, IQ1_M,
//!   IQ2_XXS/XS/S, IQ3_XXS/S, `kernels/iquant.rs`).
//! * [`ops`], [`attention`], [`simd_exp`]: RMSNorm, RoPE (YaRN included), GLU activations
//!   (ggml's vector `exp`), GQA over ggml's flash-attention paths, bit-identical to the
//!   libggml-cpu variant of the CPU.
//! * [`config`] + [`arch`]: typed hyper-parameters, one small file per architecture.
//! * Blocks (`gqa.rs`, `mla.rs`, `ffn.rs`, `moe.rs`, llama.cpp's `build_moe_ffn` routing) run in
//!   a small context of their own ([`MatmulObserver`] and `block.rs`: configuration, numerics,
//!   positions, observer), bound from the GGUF by `loader.rs` and assembled per layer in
//!   `layer.rs`; none of them knows the [`Model`].
//! * [`model`]: the top: embeddings, the layers with their KV caches, output projection.
//! * [`eval`], [`kld`], [`imatrix`]: perplexity, KL-divergence statistics and base files,
//!   imatrix collection; [`evaluation`] runs them (and generation) on a text or prompt, as the
//!   `perplexity`, `kld`, `imatrix` and `run` commands do, reporting progress to a callback.
//! * [`sample`]: token sampling for generation.
//!
//! Weights stay in their stored type; results do not depend on the number of threads.
#![deny(missing_docs)]

/// Defines `$name`, which runs `$inner` compiled with AVX2 and FMA when they may run
/// ([`cpu::simd`]: `mul_add` is then one instruction instead of a library call); same results
/// either way.
macro_rules! fma_variant {
    ($name:ident, $inner:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        #[allow(clippy::too_many_arguments, clippy::unused_unit)]
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::simd() {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments, clippy::unused_unit)]
                unsafe fn fast($($arg: $ty),*) -> $ret {
                    $inner($($arg),*)
                }
                // SAFETY: `cpu::simd` detected AVX2 and FMA at runtime.
                return unsafe { fast($($arg),*) };
            }
            $inner($($arg),*)
        }
    };
}

pub mod arch;
pub mod attention;
mod block;
pub mod config;
pub mod covariance;
pub mod cpu;
pub mod dot;
pub mod error;
pub mod eval;
pub mod evaluation;
mod fa;
mod ffn;
mod gqa;
pub mod imatrix;
mod kernels;
pub mod kld;
mod layer;
mod loader;
pub mod matmul;
mod mla;
pub mod model;
mod moe;
pub mod ops;
mod reduce;
pub mod sample;
pub mod simd_exp;
mod weight;

pub use block::MatmulObserver;
pub use error::{EngineError, Result};
pub use loader::WeightOverrides;
pub use matmul::Numerics;
pub use model::{Logits, Model, Session};
