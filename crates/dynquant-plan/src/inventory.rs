//! Tensor inventories: a model's tensor list (names, shapes, source types) and architecture
//! keys without data, the planner's input. Building one is the caller's job: from an opened
//! GGUF's header ([`Inventory::from_gguf`]), or from a Hugging Face checkpoint or bare
//! `config.json` through `dynquant-hf`, which maps Hugging Face names to GGUF names for
//! conversion and planning alike.

use dynquant_gguf::{keys, GgufModel, Metadata, TensorInfo, Value};

/// deepseek2 attention layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlaLayout {
    /// `attn_k_b` + `attn_v_b` (llama.cpp PR #12801 and later).
    Mla,
    /// `attn_kv_b` (files converted before PR #12801).
    Legacy,
}

/// A model's tensor list and architecture metadata, without data.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Architecture keys (`deepseek2.*`, `general.architecture`).
    pub metadata: Metadata,
    /// Tensors with real shapes and source types (offsets 0).
    pub tensors: Vec<TensorInfo>,
}

impl Inventory {
    /// The inventory of an opened GGUF model: its parsed header (no tensor data is read).
    pub fn from_gguf(model: &GgufModel) -> Self {
        Inventory {
            metadata: model.merged_metadata(),
            tensors: model.tensors().map(|t| t.info.clone()).collect(),
        }
    }

    /// Architecture name (`general.architecture`).
    pub fn architecture(&self) -> Option<&str> {
        self.metadata
            .get(keys::general::ARCHITECTURE)
            .and_then(Value::as_str)
    }

    /// Total parameters.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::n_elements).sum()
    }
}
