//! Hugging Face checkpoints straight to GGUF, no Python: safetensors shards (F32, F16, BF16
//! and DeepSeek's block-scaled FP8) read lazily, mapped to llama.cpp's GGUF names, layouts and
//! metadata for llama, mistral/mixtral, qwen2, qwen3, qwen3moe and deepseek_v2/v3, with the
//! tokenizer converted too. [`HfModel`] is also a [`dynquant_quantize::TensorSource`],
//! so the quantization pipeline streams from safetensors into any recipe without an
//! intermediate file. [`config_inventory`] plans a model from its `config.json` alone, through
//! the same name map.

#![deny(missing_docs)]

pub mod arch;
pub mod config;
pub mod error;
pub mod inventory;
pub mod meta;
pub mod model;
pub mod pre_tokenizer_hash;
pub mod safetensors;
pub mod tokenizer;

pub use error::{HfError, Result};
pub use inventory::config_inventory;
pub use model::{is_hf_dir, ConvertOptions, HfModel, OutType};
