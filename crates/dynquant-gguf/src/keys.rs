//! Metadata key names, as constants (`gguf-py/gguf/constants.py` `Keys`, pinned reference).

/// `general.*` keys.
pub mod general {
    /// Architecture name (`llama`, `deepseek2`...).
    pub const ARCHITECTURE: &str = "general.architecture";
    /// Data alignment (u32, power of two; default 32).
    pub const ALIGNMENT: &str = "general.alignment";
    /// llama file type (u32, `enum llama_ftype`).
    pub const FILE_TYPE: &str = "general.file_type";
    /// Quantization version (u32, 2 = `GGML_QNT_VERSION`).
    pub const QUANTIZATION_VERSION: &str = "general.quantization_version";
    /// Model name.
    pub const NAME: &str = "general.name";
    /// File kind: `model` or `imatrix`.
    pub const TYPE: &str = "general.type";
    /// Size label (`135M`).
    pub const SIZE_LABEL: &str = "general.size_label";
}

/// `split.*` keys written by gguf-split and llama-quantize `--keep-split`.
pub mod split {
    /// 0-based shard index (u16).
    pub const NO: &str = "split.no";
    /// Number of shards (u16).
    pub const COUNT: &str = "split.count";
    /// Total tensors over all shards (i32).
    pub const TENSORS_COUNT: &str = "split.tensors.count";
    /// All three, for removal.
    pub const ALL: [&str; 3] = [NO, COUNT, TENSORS_COUNT];
}

/// `tokenizer.ggml.*` keys.
pub mod tokenizer {
    /// Tokenizer model (`gpt2`, `llama`...).
    pub const MODEL: &str = "tokenizer.ggml.model";
    /// Pre-tokenizer name.
    pub const PRE: &str = "tokenizer.ggml.pre";
    /// Token strings.
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    /// BPE merges.
    pub const MERGES: &str = "tokenizer.ggml.merges";
    /// Chat template.
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// Per-architecture key suffixes; the full key is `{arch}.{suffix}`.
pub mod arch {
    /// Layer count.
    pub const BLOCK_COUNT: &str = "block_count";
    /// Training context length.
    pub const CONTEXT_LENGTH: &str = "context_length";
    /// Hidden size.
    pub const EMBEDDING_LENGTH: &str = "embedding_length";
    /// Dense FFN size.
    pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
    /// Attention heads.
    pub const HEAD_COUNT: &str = "attention.head_count";
    /// KV heads.
    pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
    /// Routed experts.
    pub const EXPERT_COUNT: &str = "expert_count";
    /// Experts used per token.
    pub const EXPERT_USED_COUNT: &str = "expert_used_count";
    /// Shared experts.
    pub const EXPERT_SHARED_COUNT: &str = "expert_shared_count";
    /// Expert FFN size.
    pub const EXPERT_FEED_FORWARD_LENGTH: &str = "expert_feed_forward_length";
    /// Leading dense layers (deepseek2).
    pub const LEADING_DENSE_BLOCK_COUNT: &str = "leading_dense_block_count";
    /// Vocabulary size, where the converter writes it.
    pub const VOCAB_SIZE: &str = "vocab_size";
}

/// dynquant's own keys (llama.cpp and gguf-py ignore keys they do not know).
pub mod dynquant {
    /// Per-tensor checksums of a file's own tensors, in tensor-info order: the first eight
    /// bytes of each tensor's SHA-256, little-endian, as a u64 array. Written last among the
    /// metadata so its values can be filled in once the data is written.
    pub const TENSOR_CHECKSUMS: &str = "dynquant.tensor_checksums";
}

/// Default data alignment (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
