//! dynquant-tokenizer: the tokenizer of a GGUF model, producing exactly llama.cpp's token ids.
//!
//! [`Tokenizer::from_gguf`] reads the `tokenizer.ggml.*` keys and builds one of:
//!
//! * **BPE** (`tokenizer.ggml.model = "gpt2"`): GPT-2 byte-level BPE with ranked merges, after
//!   the pre-tokenizer named by `tokenizer.ggml.pre` (see [`PreType`]): `default`, `gpt-2`,
//!   `smollm` (and the other names llama.cpp treats like it), `llama-bpe`/`llama3`, `qwen2`,
//!   `kimi-k2`, `gpt-4o` (and `llama4`).
//! * **SPM** (`tokenizer.ggml.model = "llama"`, e.g. Llama-2, Gemma-3): SentencePiece-style
//!   merging of adjacent pieces by highest vocabulary score, with `<0xXX>` byte fallback.
//!
//! Both follow llama.cpp's `llama_tokenize(text, add_special, parse_special)` step by step:
//! special and user-defined tokens are cut out of the text first (longest first, control tokens
//! only when `parse_special`), BOS/EOS are added per `tokenizer.ggml.add_bos_token` /
//! `add_eos_token` with llama.cpp's per-type defaults, and decoding reproduces
//! `llama_detokenize` (space-prefix removal, `clean_up_tokenization_spaces`).
//!
//! The Hugging Face `tokenizers` crate is not used: llama.cpp's pre-tokenizers are hand-written
//! scanners with their own Unicode tables and quirks, and its SentencePiece path merges by score
//! in a way HF's BPE model does not express; reproducing llama.cpp's ids exactly is simpler with
//! the two small algorithms written out here.
//!
//! [`Tokenizer::apply_chat_template`] renders `tokenizer.chat_template` with minijinja the way
//! Hugging Face and llama.cpp do (trim_blocks, lstrip_blocks, Python string methods,
//! `raise_exception`, `strftime_now`, `bos_token`/`eos_token`).
//!
//! The library prints nothing and returns [`TokenizerError`] for bad metadata or inputs.
#![deny(missing_docs)]

mod chat;
mod pretok;
#[cfg(target_os = "linux")]
pub mod sandbox;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use aho_corasick::AhoCorasick;
use dynquant_gguf::{Array, Metadata, Value};

pub use chat::{ChatMessage, MAX_TEMPLATE_OUTPUT, TEMPLATE_FUEL};
pub use pretok::PreType;

/// Errors from building a tokenizer, encoding, or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required metadata key is absent.
    #[error("GGUF metadata has no `{0}`")]
    MissingKey(&'static str),
    /// A metadata key has the wrong type.
    #[error("GGUF metadata `{key}` is {found}, expected {expected}")]
    BadType {
        /// The key.
        key: &'static str,
        /// What the file holds.
        found: String,
        /// What is needed.
        expected: &'static str,
    },
    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error("unsupported tokenizer model `{0}` (supported: gpt2 = BPE, llama = SentencePiece)")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unsupported BPE pre-tokenizer `{0}` (supported: default, gpt-2, smollm, llama-bpe/llama3, qwen2, kimi-k2, gpt-4o and their aliases)")]
    UnsupportedPre(String),
    /// A per-token array is shorter than the token list.
    #[error("`{key}` has {found} entries for {n_vocab} tokens")]
    LengthMismatch {
        /// The key.
        key: &'static str,
        /// Entries found.
        found: usize,
        /// Tokens in the vocabulary.
        n_vocab: usize,
    },
    /// The same token text appears twice in the vocabulary.
    #[error("duplicate token {text:?} at ids {first} and {second}")]
    DuplicateToken {
        /// The text.
        text: String,
        /// First id.
        first: u32,
        /// Second id.
        second: u32,
    },
    /// The vocabulary has no token for a byte the SentencePiece fallback needs.
    #[error("the vocabulary has no byte token for 0x{0:02X}")]
    MissingByteToken(u8),
    /// BOS/EOS is to be added but its id is not set.
    #[error("{0} is true but the token id is not set")]
    MissingSpecialToken(&'static str),
    /// A text fragment longer than 4 GiB was given to the SentencePiece tokenizer.
    #[error("text of {0} bytes is too long to tokenize in one piece")]
    TextTooLong(usize),
    /// The vocabulary is too large for 32-bit token ids.
    #[error("vocabulary of {0} tokens is too large")]
    VocabTooLarge(usize),
    /// The special-token matcher could not be built (pattern set beyond aho-corasick's limits).
    #[error("cannot index the special tokens: {0}")]
    SpecialTokens(String),
    /// The model has no `tokenizer.chat_template`.
    #[error("the model has no chat template (tokenizer.chat_template)")]
    NoChatTemplate,
    /// The chat template failed to compile or render (including `raise_exception`).
    #[error("chat template: {0}")]
    Template(String),
    /// The sandboxed chat-template render (Linux) ran past a limit or could not run.
    #[cfg(target_os = "linux")]
    #[error("chat template: {0}")]
    TemplateSandbox(sandbox::SandboxError),
}

// Not `#[from]`: that would also make the limit the error's source, and error chains (the
// CLI's one-line message) would print it twice.
#[cfg(target_os = "linux")]
impl From<sandbox::SandboxError> for TokenizerError {
    fn from(e: sandbox::SandboxError) -> Self {
        TokenizerError::TemplateSandbox(e)
    }
}

type Result<T> = std::result::Result<T, TokenizerError>;

// Token attributes, llama.h `llama_token_attr`.
const ATTR_UNKNOWN: u32 = 1 << 0;
const ATTR_UNUSED: u32 = 1 << 1;
const ATTR_NORMAL: u32 = 1 << 2;
const ATTR_CONTROL: u32 = 1 << 3;
const ATTR_USER_DEFINED: u32 = 1 << 4;
const ATTR_BYTE: u32 = 1 << 5;
const ATTR_LSTRIP: u32 = 1 << 7;
const ATTR_RSTRIP: u32 = 1 << 8;

/// `tokenizer.ggml.token_type` values (llama.h `llama_token_type`) to attributes.
fn attr_of_type(t: i64) -> u32 {
    match t {
        1 => ATTR_NORMAL,
        2 => ATTR_UNKNOWN,
        3 => ATTR_CONTROL,
        4 => ATTR_USER_DEFINED,
        5 => ATTR_UNUSED,
        6 => ATTR_BYTE,
        _ => 0,
    }
}

const SPACE_ESCAPE: &str = "\u{2581}";

/// FxHash (rustc's hasher): much faster than SipHash for the many short-string lookups of
/// tokenization; keys are vocabulary strings, not attacker-chosen, and lookups stay exact.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

#[derive(Debug, Clone)]
struct TokenData {
    text: String,
    score: f32,
    attr: u32,
}

#[derive(Debug, Clone)]
enum Model {
    Bpe(Box<Bpe>),
    Spm,
}

#[derive(Debug, Clone)]
struct Bpe {
    steps: Vec<pretok::Step>,
    ignore_merges: bool,
    /// Every token text and every merge half, interned.
    pieces: FxMap<String, u32>,
    /// (left piece, right piece) -> merge rank (first occurrence wins, as llama.cpp's emplace).
    ranks: FxMap<(u32, u32), u32>,
    byte_chars: [char; 256],
    unicode_to_byte: HashMap<char, u8>,
}

/// The tokenizer of one model. Cheap to share (`&self` everywhere, no interior mutability).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    model: Model,
    pre: Option<PreType>,
    tokens: Vec<TokenData>,
    token_to_id: FxMap<String, u32>,
    /// CONTROL | USER_DEFINED | UNKNOWN tokens, longest text first.
    special_cache: Vec<u32>,
    /// Finds which special tokens occur in a text at all (an exact pre-filter).
    special_matcher: Option<AhoCorasick>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    chat_template: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Metadata access

fn type_name(v: &Value) -> String {
    v.type_path()
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(" of ")
}

fn get_str<'m>(meta: &'m Metadata, key: &'static str) -> Result<Option<&'m str>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| TokenizerError::BadType {
            key,
            found: type_name(v),
            expected: "string",
        }),
    }
}

fn get_bool(meta: &Metadata, key: &'static str) -> Result<Option<bool>> {
    match meta.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(TokenizerError::BadType {
            key,
            found: type_name(v),
            expected: "bool",
        }),
    }
}

fn get_id(meta: &Metadata, key: &'static str) -> Result<Option<u64>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| TokenizerError::BadType {
            key,
            found: type_name(v),
            expected: "unsigned integer",
        }),
    }
}

fn get_array<'m>(meta: &'m Metadata, key: &'static str) -> Result<Option<&'m Array>> {
    match meta.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(v) => Err(TokenizerError::BadType {
            key,
            found: type_name(v),
            expected: "array",
        }),
    }
}

fn bad_array(key: &'static str, a: &Array, expected: &'static str) -> TokenizerError {
    TokenizerError::BadType {
        key,
        found: format!("array of {}", a.element_type().name()),
        expected,
    }
}

// ---------------------------------------------------------------------------------------------
// Construction

/// Names llama.cpp maps to each supported pre-tokenizer (llama-vocab.cpp, `load`), and the
/// flags it sets with them: (ignore_merges, add_bos default, clean_spaces).
fn pre_type_of(name: &str) -> Option<(PreType, bool, bool, bool)> {
    Some(match name {
        "" | "default" => (PreType::Default, false, false, true),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => (PreType::Llama3, true, true, true),
        // GLM-4.5's `glm4` (and `glm5`): llama.cpp's CHATGLM4 expression is Llama-3's, merges
        // ignored, no BOS added (its default BOS id is none; GLM files name `[gMASK]`).
        "glm4" | "glm5" => (PreType::Llama3, true, false, true),
        "dbrx" | "smaug-bpe" => (PreType::Llama3, false, false, true),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais" | "exaone4" => {
            (PreType::Gpt2, false, false, true)
        }
        "trillion" | "granite-docling" => (PreType::Gpt2, false, false, false),
        "smollm" | "command-r" => (PreType::Smollm, false, false, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
            (PreType::Smollm, false, false, true)
        }
        "qwen2" | "deepseek-r1-qwen" | "hunyuan" => (PreType::Qwen2, false, false, false),
        "stablelm2" | "megrez" => (PreType::Qwen2, false, false, true),
        "kimi-k2" => (PreType::KimiK2, false, false, false),
        "gpt-4o" | "llama4" | "minimax-m2" | "kanana2" | "talkie" => {
            (PreType::Gpt4o, false, false, false)
        }
        _ => return None,
    })
}

impl Tokenizer {
    /// Builds the tokenizer from a model's GGUF metadata (`tokenizer.ggml.*`,
    /// `tokenizer.chat_template`), as llama.cpp's `llama_vocab::load` does.
    pub fn from_gguf(meta: &Metadata) -> Result<Self> {
        let model_name = get_str(meta, "tokenizer.ggml.model")?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        let pre_name = get_str(meta, "tokenizer.ggml.pre")?.unwrap_or("");

        let texts = match get_array(meta, "tokenizer.ggml.tokens")? {
            Some(Array::String(v)) => v,
            Some(a) => return Err(bad_array("tokenizer.ggml.tokens", a, "array of string")),
            None => return Err(TokenizerError::MissingKey("tokenizer.ggml.tokens")),
        };
        let n = texts.len();
        if u32::try_from(n).is_err() || n >= i32::MAX as usize {
            return Err(TokenizerError::VocabTooLarge(n));
        }
        let scores: Option<Vec<f32>> = match get_array(meta, "tokenizer.ggml.scores")? {
            None => None,
            Some(Array::F32(v)) => Some(v.clone()),
            Some(Array::I32(v)) => Some(v.iter().map(|&x| x as f32).collect()),
            Some(a) => return Err(bad_array("tokenizer.ggml.scores", a, "array of float32")),
        };
        let types: Option<&Vec<i32>> = match get_array(meta, "tokenizer.ggml.token_type")? {
            None => None,
            Some(Array::I32(v)) => Some(v),
            Some(a) => return Err(bad_array("tokenizer.ggml.token_type", a, "array of int32")),
        };
        for (key, len) in [
            ("tokenizer.ggml.scores", scores.as_ref().map(Vec::len)),
            ("tokenizer.ggml.token_type", types.map(Vec::len)),
        ] {
            if let Some(found) = len.filter(|&l| l < n) {
                return Err(TokenizerError::LengthMismatch {
                    key,
                    found,
                    n_vocab: n,
                });
            }
        }

        let mut tokens = Vec::with_capacity(n);
        let mut token_to_id: FxMap<String, u32> =
            FxMap::with_capacity_and_hasher(n, Default::default());
        for (i, text) in texts.iter().enumerate() {
            let id = i as u32;
            // llama.cpp renames empty tokens so that they cannot match anything.
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text.clone()
            };
            if let Some(&first) = token_to_id.get(&text) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: id,
                });
            }
            token_to_id.insert(text.clone(), id);
            tokens.push(TokenData {
                text,
                score: scores.as_ref().map_or(0.0, |s| s[i]),
                attr: types.map_or(ATTR_NORMAL, |t| attr_of_type(i64::from(t[i]))),
            });
        }

        // Per-type defaults (llama-vocab.cpp, load): ids, flags.
        let (
            model,
            pre,
            mut bos,
            mut eos,
            mut add_bos,
            mut add_eos,
            mut add_space_prefix,
            clean_spaces,
        );
        match model_name {
            "gpt2" => {
                let (pre_type, ignore_merges, def_bos, clean) = pre_type_of(pre_name)
                    .ok_or_else(|| TokenizerError::UnsupportedPre(pre_name.to_owned()))?;
                model = Model::Bpe(Box::new(Bpe::new(
                    meta,
                    &token_to_id,
                    pre_type,
                    ignore_merges,
                )?));
                pre = Some(pre_type);
                bos = Some(11u64);
                eos = Some(11u64);
                add_bos = def_bos;
                add_eos = false;
                add_space_prefix = false;
                clean_spaces = clean;
            }
            "llama" => {
                model = Model::Spm;
                pre = None;
                bos = Some(1);
                eos = Some(2);
                add_bos = true;
                add_eos = false;
                add_space_prefix = true;
                clean_spaces = false;
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        }
        if let Some(v) = get_bool(meta, "tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }
        // Special ids: a default outside the vocabulary is disabled; a key outside it is ignored.
        let mut eot = None;
        let in_range = |id: Option<u64>| id.filter(|&i| i < n as u64);
        for (key, slot) in [
            ("tokenizer.ggml.bos_token_id", &mut bos),
            ("tokenizer.ggml.eos_token_id", &mut eos),
            ("tokenizer.ggml.eot_token_id", &mut eot),
        ] {
            *slot = in_range(*slot);
            if let Some(id) = in_range(get_id(meta, key)?) {
                *slot = Some(id);
            }
        }
        if let Some(v) = get_bool(meta, "tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = get_bool(meta, "tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecialToken(
                "tokenizer.ggml.add_bos_token",
            ));
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecialToken(
                "tokenizer.ggml.add_eos_token",
            ));
        }

        let mut eot = eot.map(|x| x as u32);
        let eog = detect_special_by_text(&mut tokens, &token_to_id, &mut eot, eos);

        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                tokens[id as usize].attr & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0
            })
            .collect();
        special_cache.sort_by_key(|&id| Reverse(tokens[id as usize].text.len()));

        // Per-model attributes llama.cpp sets by name (only Phi-3 here: its special tokens
        // swallow whitespace to their right).
        let general_name = get_str(meta, "general.name")?.unwrap_or("").to_lowercase();
        if general_name.contains("phi-3") || general_name.contains("phi3") {
            for &id in &special_cache {
                tokens[id as usize].attr |= ATTR_RSTRIP;
            }
            for (t, on) in [
                ("</s>", true),
                ("<unk>", false),
                ("<s>", false),
                ("<|endoftext|>", false),
            ] {
                if let Some(&id) = token_to_id.get(t) {
                    let a = &mut tokens[id as usize].attr;
                    *a = if on {
                        *a | ATTR_RSTRIP
                    } else {
                        *a & !ATTR_RSTRIP
                    };
                }
            }
        }

        let special_matcher = if special_cache.is_empty() {
            None
        } else {
            let texts = special_cache
                .iter()
                .map(|&id| tokens[id as usize].text.as_str());
            Some(
                AhoCorasick::new(texts)
                    .map_err(|e| TokenizerError::SpecialTokens(e.to_string()))?,
            )
        };

        let chat_template = get_str(meta, "tokenizer.chat_template")?.map(str::to_owned);
        Ok(Tokenizer {
            model,
            pre,
            tokens,
            token_to_id,
            special_cache,
            special_matcher,
            bos: bos.map(|x| x as u32),
            eos: eos.map(|x| x as u32),
            eot,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            chat_template,
        })
    }
}

/// llama.cpp's text-based detection of EOT/FIM/EOG tokens (llama-vocab.cpp, load): such
/// tokens are forced to CONTROL; control tokens named "unused" get UNUSED; the end-of-generation
/// set is returned (sorted). Where llama.cpp takes the first hit of a hash-map walk for EOT, the
/// lowest id is taken here (only `eot()` can differ; the EOG set is the same).
fn detect_special_by_text(
    tokens: &mut [TokenData],
    token_to_id: &FxMap<String, u32>,
    eot: &mut Option<u32>,
    eos: Option<u64>,
) -> Vec<u32> {
    let find = |names: &[&str]| -> Option<u32> {
        names
            .iter()
            .filter_map(|t| token_to_id.get(*t).copied())
            .min()
    };
    const EOT: &[&str] = &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "<｜end▁of▁sentence｜>",
        "<end_of_utterance>",
    ];
    const EOM: &[&str] = &["<|eom_id|>"];
    const FIM_PRE: &[&str] = &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ];
    const FIM_SUF: &[&str] = &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ];
    const FIM_MID: &[&str] = &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ];
    const FIM_PAD: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
    const FIM_REP: &[&str] = &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ];
    const FIM_SEP: &[&str] = &["<|file_sep|>"];
    const EOG: &[&str] = &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    ];

    let mut force_control = |id: u32| tokens[id as usize].attr |= ATTR_CONTROL;
    if eot.is_none() {
        *eot = find(EOT);
    }
    let found: Vec<Option<u32>> = [EOM, FIM_PRE, FIM_SUF, FIM_MID, FIM_PAD, FIM_REP, FIM_SEP]
        .iter()
        .map(|names| find(names))
        .collect();
    for id in found.iter().flatten().chain(eot.iter()) {
        force_control(*id);
    }
    let (eom, fim_pad, fim_rep, fim_sep) = (found[0], found[4], found[5], found[6]);
    let mut eog: Vec<u32> = Vec::new();
    eog.extend([fim_pad, fim_rep, fim_sep].into_iter().flatten());
    for name in EOG {
        if let Some(&id) = token_to_id.get(*name) {
            eog.push(id);
            force_control(id);
        }
    }
    eog.extend([eos.map(|x| x as u32), *eot, eom].into_iter().flatten());
    for t in tokens.iter_mut() {
        if t.attr & ATTR_CONTROL != 0 && t.text.contains("unused") {
            t.attr |= ATTR_UNUSED;
        }
    }
    // gpt-oss: these are always rendered.
    for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = token_to_id.get(name) {
            tokens[id as usize].attr = ATTR_USER_DEFINED;
        }
    }
    eog.sort_unstable();
    eog.dedup();
    let has = |eog: &[u32], t: &str| token_to_id.get(t).is_some_and(|id| eog.contains(id));
    // o200k_harmony / solar-open: "<|end|>" is not end-of-generation next to these.
    if (has(&eog, "<|return|>") || has(&eog, "<|flush|>"))
        && (has(&eog, "<|call|>") || has(&eog, "<|calls|>"))
        && has(&eog, "<|end|>")
    {
        if let Some(&end) = token_to_id.get("<|end|>") {
            eog.retain(|&x| x != end);
            tokens[end as usize].attr = ATTR_USER_DEFINED;
        }
    }
    // gemma4 / paddleocr: "</s>" is a normal token when "<|tool_response>" exists.
    if has(&eog, "<|tool_response>") && has(&eog, "</s>") {
        if let Some(&s) = token_to_id.get("</s>") {
            eog.retain(|&x| x != s);
            tokens[s as usize].attr = ATTR_NORMAL;
        }
    }
    eog
}

impl Bpe {
    fn new(
        meta: &Metadata,
        token_to_id: &FxMap<String, u32>,
        pre: PreType,
        ignore_merges: bool,
    ) -> Result<Self> {
        let merges = match get_array(meta, "tokenizer.ggml.merges")? {
            Some(Array::String(v)) => v,
            Some(a) => return Err(bad_array("tokenizer.ggml.merges", a, "array of string")),
            None => return Err(TokenizerError::MissingKey("tokenizer.ggml.merges")),
        };
        let mut pieces: FxMap<String, u32> =
            FxMap::with_capacity_and_hasher(token_to_id.len() + 16, Default::default());
        for t in token_to_id.keys() {
            let next = pieces.len() as u32;
            pieces.insert(t.clone(), next);
        }
        let intern = |s: &str, pieces: &mut FxMap<String, u32>| -> u32 {
            if let Some(&p) = pieces.get(s) {
                return p;
            }
            let next = pieces.len() as u32;
            pieces.insert(s.to_owned(), next);
            next
        };
        let mut ranks = FxMap::with_capacity_and_hasher(merges.len(), Default::default());
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte; no space: ("", "").
            // (Byte positions: the first character may be multi-byte.)
            let (a, b) = match m.bytes().skip(1).position(|c| c == b' ') {
                Some(p) => (&m[..p + 1], &m[p + 2..]),
                None => ("", ""),
            };
            let key = (intern(a, &mut pieces), intern(b, &mut pieces));
            ranks.entry(key).or_insert(rank as u32);
        }
        let byte_chars = pretok::byte_to_unicode_table();
        let unicode_to_byte = byte_chars
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        Ok(Bpe {
            steps: pretok::steps_for(pre),
            ignore_merges,
            pieces,
            ranks,
            byte_chars,
            unicode_to_byte,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Pending BPE merges: (rank, left, right, left len, right len), smallest rank then leftmost first.
type BpeQueue = BinaryHeap<Reverse<(u32, usize, usize, usize, usize)>>;

/// A piece of the input after special-token partitioning.
#[derive(Clone, Copy, Debug)]
enum Frag {
    Text(usize, usize),
    Token(u32),
}

impl Tokenizer {
    /// Tokenizes `text` exactly as llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `add_special` adds BOS/EOS when the vocabulary asks for them; `parse_special` lets control
    /// tokens written in the text (e.g. `<|im_start|>`) become those tokens (user-defined tokens
    /// are always matched).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let frags = if text.is_empty() {
            Vec::new()
        } else {
            self.partition(text, parse_special)
        };
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.push(
                self.bos
                    .ok_or(TokenizerError::MissingSpecialToken("add_bos_token"))?,
            );
        }
        match &self.model {
            Model::Spm => {
                let mut prev_special = true;
                for f in frags {
                    match f {
                        Frag::Text(s, e) => {
                            let mut t = String::with_capacity(e - s + 4);
                            if self.add_space_prefix && prev_special {
                                t.push(' ');
                            }
                            t.push_str(&text[s..e]);
                            let t = t.replace(' ', SPACE_ESCAPE);
                            self.spm_tokenize(&t, &mut out)?;
                            prev_special = false;
                        }
                        Frag::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                let mut cache: FxMap<&str, Vec<u32>> = FxMap::default();
                for f in frags {
                    match f {
                        Frag::Text(s, e) => {
                            self.bpe_tokenize(bpe, &text[s..e], &mut cache, &mut out)
                        }
                        Frag::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.push(
                self.eos
                    .ok_or(TokenizerError::MissingSpecialToken("add_eos_token"))?,
            );
        }
        Ok(out)
    }

    /// llama.cpp's `tokenizer_st_partition`: for each special token, longest first, cut every
    /// remaining text fragment at each occurrence.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Frag> {
        let mut frags = vec![Frag::Text(0, text.len())];
        let Some(matcher) = &self.special_matcher else {
            return frags;
        };
        // Which special tokens occur anywhere in the text: a token absent from the whole text
        // cannot cut any fragment, so skipping it changes nothing.
        let mut present = vec![false; self.special_cache.len()];
        for m in matcher.find_overlapping_iter(text) {
            present[m.pattern().as_usize()] = true;
        }
        for (k, &id) in self.special_cache.iter().enumerate() {
            if !present[k] {
                continue;
            }
            let tok = &self.tokens[id as usize];
            if !parse_special && tok.attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
                continue;
            }
            let pat = tok.text.as_str();
            let mut next = Vec::with_capacity(frags.len() + 4);
            for f in frags {
                let Frag::Text(mut s, e) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(rel) = text[s..e].find(pat) {
                    let m = s + rel;
                    let mut left_end = m;
                    if tok.attr & ATTR_LSTRIP != 0 {
                        while left_end > s && text.as_bytes()[left_end - 1].is_ascii_whitespace_c()
                        {
                            left_end -= 1;
                        }
                    }
                    if left_end > s {
                        next.push(Frag::Text(s, left_end));
                    }
                    next.push(Frag::Token(id));
                    s = m + pat.len();
                    if tok.attr & ATTR_RSTRIP != 0 {
                        while s < e && text.as_bytes()[s].is_ascii_whitespace_c() {
                            s += 1;
                        }
                    }
                }
                if s < e {
                    next.push(Frag::Text(s, e));
                }
            }
            frags = next;
        }
        frags
    }

    fn bpe_tokenize<'t>(
        &self,
        bpe: &Bpe,
        text: &'t str,
        cache: &mut FxMap<&'t str, Vec<u32>>,
        out: &mut Vec<u32>,
    ) {
        for word in pretok::split(text, &bpe.steps) {
            if let Some(ids) = cache.get(word) {
                out.extend_from_slice(ids);
                continue;
            }
            let start = out.len();
            let encoded: String = word.bytes().map(|b| bpe.byte_chars[b as usize]).collect();
            self.bpe_word(bpe, &encoded, out);
            cache.insert(word, out[start..].to_vec());
        }
    }

    /// BPE merges within one byte-encoded word: repeatedly merge the adjacent pair with the
    /// lowest merge rank (leftmost on ties), as llama.cpp's `llm_tokenizer_bpe_session`.
    fn bpe_word(&self, bpe: &Bpe, word: &str, out: &mut Vec<u32>) {
        if bpe.ignore_merges {
            if let Some(&id) = self.token_to_id.get(word) {
                out.push(id);
                return;
            }
        }
        struct Sym {
            start: usize,
            len: usize,
            piece: Option<u32>,
            prev: Option<usize>,
            next: Option<usize>,
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
        for (i, (start, c)) in word.char_indices().enumerate() {
            let len = c.len_utf8();
            syms.push(Sym {
                start,
                len,
                piece: bpe.pieces.get(&word[start..start + len]).copied(),
                prev: i.checked_sub(1),
                next: None,
            });
        }
        let count = syms.len();
        for (i, s) in syms.iter_mut().enumerate() {
            s.next = (i + 1 < count).then_some(i + 1);
        }
        let mut heap: BpeQueue = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
            let (Some(a), Some(b)) = (syms[l].piece, syms[r].piece) else {
                return;
            };
            if let Some(&rank) = bpe.ranks.get(&(a, b)) {
                heap.push(Reverse((rank, l, r, syms[l].len, syms[r].len)));
            }
        };
        for i in 1..count {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, llen, rlen))) = heap.pop() {
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len != llen || syms[r].len != rlen {
                continue;
            }
            let new_len = llen + rlen;
            let start = syms[l].start;
            syms[l].len = new_len;
            syms[l].piece = bpe.pieces.get(&word[start..start + new_len]).copied();
            syms[r].len = 0;
            let rn = syms[r].next;
            syms[l].next = rn;
            if let Some(rn) = rn {
                syms[rn].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                push(&mut heap, &syms, p, l);
            }
            if let Some(rn) = rn {
                push(&mut heap, &syms, l, rn);
            }
        }
        let mut i = if count > 0 { Some(0) } else { None };
        while let Some(k) = i {
            let s = &syms[k];
            let piece = &word[s.start..s.start + s.len];
            match self.token_to_id.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    // llama.cpp looks up each byte of the encoded text as a one-byte token;
                    // only ASCII bytes can match.
                    for b in piece.bytes().filter(u8::is_ascii) {
                        let mut buf = [0u8; 4];
                        if let Some(&id) = self
                            .token_to_id
                            .get(char::from(b).encode_utf8(&mut buf) as &str)
                        {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }

    /// SentencePiece-style merging (llama.cpp `llm_tokenizer_spm_session`): start from single
    /// characters, repeatedly merge the adjacent pair whose concatenation is the vocabulary
    /// token with the highest score (leftmost on ties); characters left unmerged that are not
    /// tokens become `<0xXX>` byte tokens.
    fn spm_tokenize(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        struct Sym {
            start: usize,
            len: usize,
            prev: Option<usize>,
            next: Option<usize>,
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            syms.push(Sym {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
        }
        let count = syms.len();
        for (i, s) in syms.iter_mut().enumerate() {
            s.next = (i + 1 < count).then_some(i + 1);
        }
        if u32::try_from(text.len()).is_err() {
            return Err(TokenizerError::TextTooLong(text.len()));
        }
        // Max-heap of (score key, right, size): the score key orders by score, then by the
        // smaller left index (llama.cpp's llm_bigram_spm comparator) in one integer compare.
        let mut heap: BinaryHeap<(u64, u32, u32)> = BinaryHeap::new();
        let try_add = |heap: &mut BinaryHeap<(u64, u32, u32)>, syms: &[Sym], l: usize, r: usize| {
            let start = syms[l].start;
            let size = syms[l].len + syms[r].len;
            if let Some(&id) = self.token_to_id.get(&text[start..start + size]) {
                let key = (u64::from(ordered_score(self.tokens[id as usize].score)) << 32)
                    | u64::from(u32::MAX - l as u32);
                heap.push((key, r as u32, size as u32));
            }
        };
        for i in 1..count {
            try_add(&mut heap, &syms, i - 1, i);
        }
        while let Some((key, r, size)) = heap.pop() {
            let l = (u32::MAX - (key & 0xFFFF_FFFF) as u32) as usize;
            let r = r as usize;
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != size as usize {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            let rn = syms[r].next;
            syms[l].next = rn;
            if let Some(rn) = rn {
                syms[rn].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                try_add(&mut heap, &syms, p, l);
            }
            if let Some(rn) = rn {
                try_add(&mut heap, &syms, l, rn);
            }
        }
        // Every merged symbol is a token by construction, so llama.cpp's `resegment` never
        // recurses; a leftover single character that is not a token becomes byte tokens.
        let mut i = if count > 0 { Some(0) } else { None };
        while let Some(k) = i {
            let s = &syms[k];
            let piece = &text[s.start..s.start + s.len];
            match self.token_to_id.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        out.push(self.byte_to_token(b)?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    /// llama.cpp `byte_to_token` for SentencePiece vocabularies: `<0xXX>`, else the byte itself.
    fn byte_to_token(&self, b: u8) -> Result<u32> {
        if let Some(&id) = self.token_to_id.get(&format!("<0x{b:02X}>")) {
            return Ok(id);
        }
        if b.is_ascii() {
            if let Some(&id) = self.token_to_id.get(&char::from(b).to_string()) {
                return Ok(id);
            }
        }
        Err(TokenizerError::MissingByteToken(b))
    }
}

/// An `f32` as a `u32` with the same order (-0.0 and 0.0 equal, as C++'s `<` sees them).
fn ordered_score(f: f32) -> u32 {
    let b = if f == 0.0 { 0.0f32 } else { f }.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

trait CSpace {
    fn is_ascii_whitespace_c(&self) -> bool;
}

impl CSpace for u8 {
    /// C's `isspace` in the "C" locale: space, \t, \n, \v, \f, \r.
    fn is_ascii_whitespace_c(&self) -> bool {
        matches!(*self, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding and accessors

impl Tokenizer {
    /// The bytes of one token, as llama.cpp's `llama_token_to_piece(.., lstrip 0, special)`:
    /// control and unknown tokens render as their text only when `special`; byte tokens give
    /// their byte; normal tokens are un-escaped (`▁` to space for SentencePiece, GPT-2 byte
    /// decoding for BPE). An id outside the vocabulary gives nothing.
    pub fn token_to_piece_with(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(tok) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        let attr = tok.attr;
        if !special && attr & (ATTR_UNKNOWN | ATTR_CONTROL) != 0 {
            return Vec::new();
        }
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
            return tok.text.as_bytes().to_vec();
        }
        if attr & ATTR_NORMAL != 0 {
            return match &self.model {
                Model::Spm => tok.text.replace(SPACE_ESCAPE, " ").into_bytes(),
                Model::Bpe(bpe) => {
                    let mut out = Vec::with_capacity(tok.text.len());
                    for c in tok.text.chars() {
                        match bpe.unicode_to_byte.get(&c) {
                            Some(&b) => out.push(b),
                            None => {
                                // llama.cpp's llama_decode_text marks an unmappable character.
                                out.extend_from_slice(b"[UNK_BYTE_0x");
                                let mut buf = [0u8; 4];
                                for b in c.encode_utf8(&mut buf).bytes() {
                                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                                }
                                out.extend_from_slice(tok.text.as_bytes());
                                out.push(b']');
                            }
                        }
                    }
                    out
                }
            };
        }
        if attr & ATTR_BYTE != 0 {
            let hex = tok.text.get(3..5).unwrap_or("");
            return u8::from_str_radix(hex, 16)
                .map(|b| vec![b])
                .unwrap_or_default();
        }
        Vec::new()
    }

    /// The bytes of one token for streaming output: `token_to_piece_with(id, false)` (control
    /// tokens such as `<|im_end|>` render as nothing). Concatenate the bytes of consecutive
    /// tokens before converting to text: one character can span several byte tokens.
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        self.token_to_piece_with(id, false)
    }

    /// Text of `ids`, as llama.cpp's `llama_detokenize(.., remove_special = false,
    /// unparse_special = false)` (what node-llama-cpp's `detokenize` does); invalid UTF-8 is
    /// replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.detokenize(ids, false, false)).into_owned()
    }

    /// llama.cpp's `llama_detokenize(ids, remove_special, unparse_special)`, as bytes:
    /// `remove_special` drops a leading BOS / trailing EOS the vocabulary adds; `unparse_special`
    /// renders control tokens as their text. The leading space SentencePiece adds is removed,
    /// and BPE vocabularies with `clean_up_tokenization_spaces` get llama.cpp's clean-up.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && !ids.is_empty() && Some(ids[0]) == self.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && ids.last().copied() == self.eos && self.eos.is_some() {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            let piece = self.token_to_piece_with(id, unparse_special);
            let skip = usize::from(remove_space && piece.first() == Some(&b' '));
            text.extend_from_slice(&piece[skip..]);
            remove_space = false;
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End-of-turn token: `tokenizer.ggml.eot_token_id`, else the token named like one
    /// (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, ...). When several names are present
    /// llama.cpp's pick depends on its hash-map order; this takes the lowest id. Both are in the
    /// end-of-generation set, which is what stopping should use ([`Tokenizer::is_eog`]).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Whether a space is put before the text (SentencePiece `add_space_prefix`); `decode`
    /// removes it again from the first piece, streaming callers should do the same.
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
    /// Whether generating `id` ends generation (llama.cpp `llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
    /// The end-of-generation tokens, sorted.
    pub fn eog_tokens(&self) -> &[u32] {
        &self.eog
    }
    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
    /// The stored text of a token (`▁`/`Ġ` escapes included), if `id` is in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(|t| t.text.as_str())
    }
    /// The id of the token whose stored text is `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }
    /// Whether this is a byte-level BPE vocabulary (`tokenizer.ggml.model = gpt2`).
    pub fn is_bpe(&self) -> bool {
        matches!(self.model, Model::Bpe(_))
    }
    /// The BPE pre-tokenizer in use (`None` for SentencePiece vocabularies).
    pub fn pre_type(&self) -> Option<PreType> {
        self.pre
    }
    /// The model's chat template (`tokenizer.chat_template`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

/// llama.cpp's `clean_up_tokenization_spaces` passes over the detokenized bytes.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // " ?", " !", " .", " ,": drop the space.
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    // " ' ": strip the apostrophe's surrounding spaces.
    // llama.cpp overwrites the skipped space with NUL in place; later checks see that.
    let mut t = std::mem::take(&mut out);
    let mut i = 0;
    while i < t.len() {
        let x = t[i];
        if i > 0 && x == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
            out.pop();
            out.push(x);
            t[i + 1] = 0;
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    // " 's", " 'm", " 're", " 've": drop the space.
    let t = std::mem::take(&mut out);
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
            let x1 = t[i + 1];
            let x2 = t.get(i + 2).copied();
            let drop = matches!(x1, b's' | b'm')
                || (i + 2 < t.len() && matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))));
            if drop {
                out.pop();
            }
        }
        out.push(x);
    }
    *text = out;
}
