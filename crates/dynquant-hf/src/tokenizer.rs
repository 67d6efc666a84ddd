//! Tokenizer metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`) from a model folder,
//! with the keys and rules of llama.cpp's converter (`TextModel._set_vocab_gpt2`,
//! `_create_vocab_sentencepiece` and gguf-py's `SpecialVocab`):
//!
//! * byte-level BPE from `tokenizer.json`: tokens by id (missing ids become `[PAD<i>]`,
//!   UNUSED), types NORMAL / CONTROL (special or special-looking added tokens) /
//!   USER_DEFINED, merges as `"a b"` strings (a space inside a part is written as U+0120);
//! * SentencePiece from `tokenizer.model` (a protobuf `ModelProto`, read by a small
//!   hand-written decoder): pieces, scores and types, then `added_tokens.json` and
//!   `tokenizer_config.json`'s `added_tokens_decoder` (CONTROL or USER_DEFINED, score -1000);
//! * special token ids from `tokenizer_config.json` (looked up among `tokenizer.json`'s
//!   added tokens) then `config.json`'s `<type>_token_id`; `add_bos`/`add_eos`/`add_sep` from
//!   a `TemplateProcessing` post-processor and `tokenizer_config.json`; the chat template.
//!
//! The pre-tokenizer name: as llama.cpp, by hashing the token ids of a fixed text (see
//! [`crate::pre_tokenizer_hash`]) and looking the hash up in a table of known tokenizers; `--tokenizer-pre`
//! overrides it, and an unrecognised tokenizer falls back to `gpt-2` with a warning (the
//! behaviour the golden fixtures were made with).

use std::path::Path;

use dynquant_gguf::{Array, Metadata, Value};
use serde_json::Value as Json;

use crate::config::read_json;
use crate::error::{HfError, Result};

/// llama.cpp token types (`gguf.TokenType`).
pub mod token_type {
    /// Ordinary token.
    pub const NORMAL: i32 = 1;
    /// Unknown token.
    pub const UNKNOWN: i32 = 2;
    /// Control (special) token.
    pub const CONTROL: i32 = 3;
    /// User-defined added token.
    pub const USER_DEFINED: i32 = 4;
    /// Unused slot.
    pub const UNUSED: i32 = 5;
    /// Byte-fallback token.
    pub const BYTE: i32 = 6;
}
use token_type::*;

/// Special token kinds in SpecialVocab's order, with their GGUF id key.
const SPECIAL_TYPES: [(&str, &str); 7] = [
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("cls", "tokenizer.ggml.cls_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
];

/// How the vocabulary was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// `tokenizer.json` byte-level BPE (`tokenizer.ggml.model = gpt2`).
    Bpe,
    /// `tokenizer.model` SentencePiece (`tokenizer.ggml.model = llama`).
    SentencePiece,
}

/// Options for the vocabulary.
#[derive(Debug, Clone, Default)]
pub struct VocabOptions {
    /// The BPE pre-tokenizer name to write; `None` falls back to `gpt-2` with a warning.
    pub pre: Option<String>,
    /// Prefer SentencePiece when `tokenizer.model` exists (the llama family does).
    pub prefer_spm: bool,
    /// Write `tokenizer.ggml.add_space_prefix` from `tokenizer_config.json`'s
    /// `add_prefix_space` (llama family).
    pub add_space_prefix: bool,
    /// Write `tokenizer.ggml.add_space_prefix = false` after a SentencePiece vocabulary (Gemma).
    pub space_prefix_off_after_spm: bool,
    /// Read Kimi-K2's `tiktoken.model` when there is no `tokenizer.json` (deepseek2).
    pub kimi_tiktoken: bool,
    /// Special tokens the architecture names by content (type, added token's content), set
    /// after the tokenizer files' own where those leave the type unset (`tokenizer.json` only).
    pub named_specials: &'static [(&'static str, &'static str)],
}

fn json_opt(path: &Path) -> Result<Option<Json>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// Largest vocabulary accepted (guards allocations against absurd `vocab_size` values).
pub const MAX_VOCAB: u64 = 1 << 24;

/// How far token ids may run past the number of tokens (and config.json's `vocab_size`), leaving
/// holes filled with padding tokens.
const MAX_ID_HOLES: u64 = 1 << 16;

/// Writes the vocabulary keys for `dir` into `md`, returning the kind and any warnings.
pub fn write_vocab(
    dir: &Path,
    vocab_size: Option<u64>,
    opts: &VocabOptions,
    md: &mut Metadata,
) -> Result<(VocabKind, Vec<String>)> {
    if let Some(v) = vocab_size.filter(|&v| v > MAX_VOCAB) {
        return Err(HfError::Tokenizer(format!(
            "config.json vocab_size {v} is above the supported {MAX_VOCAB}"
        )));
    }
    let mut warnings = Vec::new();
    let tc = json_opt(&dir.join("tokenizer_config.json"))?;
    if opts.add_space_prefix {
        if let Some(b) = tc
            .as_ref()
            .and_then(|t| t.get("add_prefix_space"))
            .and_then(Json::as_bool)
        {
            md.set("tokenizer.ggml.add_space_prefix", Value::Bool(b));
        }
    }
    let spm_path = dir.join("tokenizer.model");
    let kind = if opts.prefer_spm && spm_path.is_file() {
        let n = write_spm(dir, &spm_path, vocab_size, tc.as_ref(), md)?;
        special_vocab(dir, tc.as_ref(), None, Some(n), true, &[], md)?;
        if opts.space_prefix_off_after_spm {
            md.set("tokenizer.ggml.add_space_prefix", Value::Bool(false));
        }
        VocabKind::SentencePiece
    } else if opts.kimi_tiktoken
        && !dir.join("tokenizer.json").is_file()
        && dir.join("tiktoken.model").is_file()
    {
        let vocab_size = vocab_size.ok_or_else(|| {
            HfError::Tokenizer("a tiktoken.model vocabulary needs config.json's vocab_size".into())
        })?;
        write_tiktoken(&dir.join("tiktoken.model"), tc.as_ref(), vocab_size, md)?;
        special_vocab(dir, tc.as_ref(), None, None, false, &[], md)?;
        VocabKind::Bpe
    } else {
        let tj_path = dir.join("tokenizer.json");
        let tj = json_opt(&tj_path)?.ok_or_else(|| {
            HfError::Tokenizer(format!(
                "{}: no tokenizer.json{}",
                dir.display(),
                if opts.prefer_spm {
                    " or tokenizer.model"
                } else {
                    ""
                }
            ))
        })?;
        let pre = match &opts.pre {
            Some(p) => p.clone(),
            None => match crate::pre_tokenizer_hash::chkhsh(&tj, tc.as_ref()) {
                Ok(h) => match crate::pre_tokenizer_hash::name_for_hash(&h) {
                    Some(name) => name.to_string(),
                    None => {
                        warnings.push(format!(
                            "BPE pre-tokenizer not recognized (chkhsh {h}); writing 'gpt-2' (pass --tokenizer-pre NAME to name it)"
                        ));
                        "gpt-2".into()
                    }
                },
                Err(what) => {
                    warnings.push(format!(
                        "BPE pre-tokenizer not identified (the tokenizer uses {what}, which dynquant cannot run to hash it); writing 'gpt-2' (pass --tokenizer-pre NAME to name it)"
                    ));
                    "gpt-2".into()
                }
            },
        };
        write_bpe(&tj_path, &tj, vocab_size, &pre, md)?;
        special_vocab(
            dir,
            tc.as_ref(),
            Some(&tj),
            None,
            true,
            opts.named_specials,
            md,
        )?;
        VocabKind::Bpe
    };
    Ok((kind, warnings))
}

fn write_bpe(
    path: &Path,
    tj: &Json,
    vocab_size: Option<u64>,
    pre: &str,
    md: &mut Metadata,
) -> Result<()> {
    let bad = |r: &str| HfError::Tokenizer(format!("{}: {r}", path.display()));
    let model = tj.get("model").ok_or_else(|| bad("no 'model'"))?;
    if model
        .get("type")
        .and_then(Json::as_str)
        .is_some_and(|t| t != "BPE")
    {
        return Err(bad("model type is not BPE"));
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("no model.vocab object"))?;
    let mut by_id: Vec<Option<(String, i32)>> = Vec::new();
    // Ids index a table, so bound them by what the file and config.json declare (plus room for
    // holes), not only by MAX_VOCAB: a 30-byte tokenizer.json claiming id 2^24 - 1 must not
    // allocate a 16M-entry table.
    let n_entries = vocab.len()
        + tj.get("added_tokens")
            .and_then(Json::as_array)
            .map_or(0, Vec::len);
    let id_limit = (n_entries as u64)
        .max(vocab_size.unwrap_or(0))
        .saturating_add(MAX_ID_HOLES)
        .min(MAX_VOCAB);
    let put =
        |id: u64, tok: String, ty: i32, by_id: &mut Vec<Option<(String, i32)>>| -> Result<()> {
            let id = usize::try_from(id)
                .ok()
                .filter(|&i| (i as u64) < id_limit)
                .ok_or_else(|| {
                    bad(&format!(
                        "token id {id} out of range (the tokenizer has {n_entries} tokens)"
                    ))
                })?;
            if by_id.len() <= id {
                by_id.resize(id + 1, None);
            }
            by_id[id] = Some((tok, ty));
            Ok(())
        };
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad("vocab id is not an integer"))?;
        put(id, tok.clone(), NORMAL, &mut by_id)?;
    }
    if let Some(added) = tj.get("added_tokens").and_then(Json::as_array) {
        for a in added {
            let (Some(id), Some(content)) = (
                a.get("id").and_then(Json::as_u64),
                a.get("content").and_then(Json::as_str),
            ) else {
                return Err(bad("added token without id/content"));
            };
            let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
            let ty = if special || looks_special(content) {
                CONTROL
            } else {
                USER_DEFINED
            };
            let tok = if ty == USER_DEFINED {
                content.replace('\u{2581}', " ")
            } else {
                content.to_string()
            };
            put(id, tok, ty, &mut by_id)?;
        }
    }
    let n = match vocab_size {
        Some(v) => {
            if by_id.len() as u64 > v {
                return Err(bad(&format!(
                    "tokenizer has ids up to {}, config.json vocab_size is {v}",
                    by_id.len() - 1
                )));
            }
            v as usize
        }
        None => by_id.len(),
    };
    by_id.resize(n, None);
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for (i, t) in by_id.into_iter().enumerate() {
        match t {
            Some((tok, ty)) => {
                tokens.push(tok);
                types.push(ty);
            }
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(UNUSED);
            }
        }
    }
    let merges = match model.get("merges").and_then(Json::as_array) {
        None => Vec::new(),
        Some(m) => m
            .iter()
            .map(|e| match e {
                Json::String(s) => Ok(s.clone()),
                Json::Array(p) if p.len() == 2 => {
                    let part = |x: &Json| {
                        x.as_str()
                            .map(|s| s.replace(' ', "\u{0120}"))
                            .ok_or_else(|| bad("merge part is not a string"))
                    };
                    Ok(format!("{} {}", part(&p[0])?, part(&p[1])?))
                }
                _ => Err(bad("unknown merges format")),
            })
            .collect::<Result<Vec<_>>>()?,
    };
    md.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.set("tokenizer.ggml.pre", Value::String(pre.into()));
    md.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    md.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    if !merges.is_empty() {
        md.set("tokenizer.ggml.merges", Value::Array(Array::String(merges)));
    }
    Ok(())
}

/// Standard base64 (with `=` padding) to bytes; `None` when malformed.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, q) in s.chunks(4).enumerate() {
        let last = i + 1 == s.len() / 4;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// GPT-2's byte-to-character map (`bytes_to_unicode`): printable Latin-1 bytes stand for
/// themselves, the others for U+0100 onwards in byte order.
fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\0');
            next += 1;
            c
        };
    }
    map
}

/// The two parts the rank-`max_rank` token was merged from: byte pairs merged lowest rank
/// first, using only ranks below `max_rank` (llama.cpp's `QwenModel.bpe`).
fn tiktoken_parts<'a>(
    ranks: &std::collections::HashMap<&[u8], u32>,
    token: &'a [u8],
    max_rank: u32,
) -> Vec<&'a [u8]> {
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..bounds.len().saturating_sub(2) {
            if let Some(&r) = ranks.get(&token[bounds[i]..bounds[i + 2]]) {
                if best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        match best {
            Some((r, i)) if r < max_rank => {
                bounds.remove(i + 1);
            }
            _ => break,
        }
    }
    bounds.windows(2).map(|w| &token[w[0]..w[1]]).collect()
}

/// Kimi-K2's tiktoken vocabulary as llama.cpp's converter writes it (`kimi-k2`): the ranks of
/// `tiktoken.model` (one `base64 rank` per line) as byte-level token strings, merges recovered
/// from the ranks, then 256 special ids after the ranks named by `added_tokens_decoder` or
/// `<|reserved_token_N|>` (as Kimi-K2's tokenizer class names them), `[PAD<i>]` up to
/// `vocab_size`.
fn write_tiktoken(
    path: &Path,
    tc: Option<&Json>,
    vocab_size: u64,
    md: &mut Metadata,
) -> Result<()> {
    let bad = |r: String| HfError::Tokenizer(format!("{}: {r}", path.display()));
    let text = std::fs::read(path).map_err(|e| HfError::io("read", path, e))?;
    let mut entries: Vec<(Vec<u8>, u32)> = Vec::new();
    for (ln, line) in text.split(|&b| b == b'\n').enumerate() {
        let mut f = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|p| !p.is_empty());
        let Some(tok) = f.next() else { continue };
        let rank = f
            .next()
            .and_then(|r| std::str::from_utf8(r).ok()?.parse::<u32>().ok())
            .ok_or_else(|| bad(format!("line {}: no rank", ln + 1)))?;
        let tok = base64_decode(tok).ok_or_else(|| bad(format!("line {}: bad base64", ln + 1)))?;
        entries.push((tok, rank));
    }
    if vocab_size > MAX_VOCAB || entries.len() as u64 + 256 > vocab_size.max(1) + MAX_ID_HOLES {
        return Err(bad(format!(
            "{} ranks do not fit config.json vocab_size {vocab_size}",
            entries.len()
        )));
    }
    // Later lines with the same bytes replace earlier ones, as a Python dict does.
    let mut ranks: std::collections::HashMap<&[u8], u32> = Default::default();
    for (t, r) in &entries {
        ranks.insert(t.as_slice(), *r);
    }
    let chars = byte_to_char();
    let to_str = |b: &[u8]| b.iter().map(|&x| chars[x as usize]).collect::<String>();
    // {**vocab, **special_tokens}: string -> id, insertion-ordered, later keys replace values.
    let mut order: Vec<String> = Vec::new();
    let mut ids: std::collections::HashMap<String, u32> = Default::default();
    let mut put = |k: String, v: u32| {
        if ids.insert(k.clone(), v).is_none() {
            order.push(k);
        }
    };
    let mut merges = Vec::new();
    let mut seen: std::collections::HashSet<&[u8]> = Default::default();
    for (t, _) in &entries {
        if !seen.insert(t.as_slice()) {
            continue;
        }
        let rank = ranks[t.as_slice()];
        put(to_str(t), rank);
        if t.len() > 1 {
            let parts = tiktoken_parts(&ranks, t, rank);
            if parts.len() == 2 {
                merges.push(format!("{} {}", to_str(parts[0]), to_str(parts[1])));
            }
        }
    }
    let n_base = ranks.len() as u64;
    let named: std::collections::HashMap<u64, String> = tc
        .and_then(|t| t.get("added_tokens_decoder"))
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, special_content(v)?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    // Kimi's class: {name: id for id in n_base..n_base+256}; a repeated name keeps the last id.
    let mut special: Vec<(String, u64)> = Vec::new();
    for id in n_base..n_base + 256 {
        let name = named
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("<|reserved_token_{id}|>"));
        match special.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 = id,
            None => special.push((name, id)),
        }
    }
    let special_ids: std::collections::HashSet<u64> = special.iter().map(|(_, i)| *i).collect();
    for (name, id) in &special {
        put(name.clone(), *id as u32);
    }
    let mut by_id: std::collections::HashMap<u64, &str> = Default::default();
    for k in &order {
        by_id.insert(u64::from(ids[k]), k.as_str());
    }
    let mut tokens = Vec::with_capacity(vocab_size as usize);
    let mut types = Vec::with_capacity(vocab_size as usize);
    for i in 0..vocab_size {
        match by_id.get(&i) {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(UNUSED);
            }
            Some(t) => {
                tokens.push((*t).to_string());
                types.push(if special_ids.contains(&i) {
                    CONTROL
                } else {
                    NORMAL
                });
            }
        }
    }
    md.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.set("tokenizer.ggml.pre", Value::String("kimi-k2".into()));
    md.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    md.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    md.set("tokenizer.ggml.merges", Value::Array(Array::String(merges)));
    Ok(())
}

/// One `SentencePiece` entry of a `ModelProto`.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece text.
    pub piece: String,
    /// Its score.
    pub score: f32,
    /// `sentencepiece_model.proto` type: 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED,
    /// 5 UNUSED, 6 BYTE.
    pub kind: i32,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Skips one field of wire type `wt`; `None` on truncation or an unknown wire type.
fn skip(b: &[u8], pos: &mut usize, wt: u64) -> Option<()> {
    match wt {
        0 => varint(b, pos).map(|_| ()),
        1 => {
            *pos = pos.checked_add(8).filter(|&p| p <= b.len())?;
            Some(())
        }
        2 => {
            let n = usize::try_from(varint(b, pos)?).ok()?;
            *pos = pos.checked_add(n).filter(|&p| p <= b.len())?;
            Some(())
        }
        5 => {
            *pos = pos.checked_add(4).filter(|&p| p <= b.len())?;
            Some(())
        }
        _ => None,
    }
}

/// Decodes the `pieces` (field 1) of a SentencePiece `ModelProto`; other fields are skipped.
pub fn parse_spm_pieces(b: &[u8]) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let (field, wt) = (key >> 3, key & 7);
        if field == 1 && wt == 2 {
            let n = usize::try_from(varint(b, &mut pos)?).ok()?;
            let end = pos.checked_add(n).filter(|&e| e <= b.len())?;
            let m = &b[pos..end];
            pos = end;
            let mut p = Piece {
                piece: String::new(),
                score: 0.0,
                kind: 1,
            };
            let mut q = 0;
            while q < m.len() {
                let key = varint(m, &mut q)?;
                match (key >> 3, key & 7) {
                    (1, 2) => {
                        let n = usize::try_from(varint(m, &mut q)?).ok()?;
                        let e = q.checked_add(n).filter(|&e| e <= m.len())?;
                        p.piece = String::from_utf8(m[q..e].to_vec()).ok()?;
                        q = e;
                    }
                    (2, 5) => {
                        let e = q.checked_add(4).filter(|&e| e <= m.len())?;
                        p.score = f32::from_le_bytes(m[q..e].try_into().ok()?);
                        q = e;
                    }
                    (3, 0) => p.kind = i32::try_from(varint(m, &mut q)?).ok()?,
                    (_, wt) => skip(m, &mut q, wt)?,
                }
            }
            pieces.push(p);
        } else {
            skip(b, &mut pos, wt)?;
        }
    }
    Some(pieces)
}

fn write_spm(
    dir: &Path,
    path: &Path,
    vocab_size: Option<u64>,
    tc: Option<&Json>,
    md: &mut Metadata,
) -> Result<usize> {
    let bytes = std::fs::read(path).map_err(|e| HfError::io("read", path, e))?;
    let pieces = parse_spm_pieces(&bytes).ok_or_else(|| {
        HfError::Tokenizer(format!(
            "{}: not a valid SentencePiece model",
            path.display()
        ))
    })?;
    if pieces.is_empty() {
        return Err(HfError::Tokenizer(format!("{}: no pieces", path.display())));
    }
    let n = vocab_size.map_or(pieces.len(), |v| v as usize);
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000f32; n];
    let mut types = vec![UNUSED; n];
    for (i, p) in pieces.iter().enumerate().take(n) {
        tokens[i] = p.piece.clone();
        scores[i] = p.score;
        // The converter asks IsUnknown / IsControl / IsUnused / IsByte; everything else
        // (user-defined pieces included) is NORMAL.
        types[i] = match p.kind {
            2 => UNKNOWN,
            3 => CONTROL,
            5 => UNUSED,
            6 => BYTE,
            _ => NORMAL,
        };
    }
    if let Some(added) = json_opt(&dir.join("added_tokens.json"))? {
        if let Some(o) = added.as_object() {
            for (k, id) in o {
                if let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < n) {
                    tokens[id] = k.clone();
                    scores[id] = -1000.0;
                    types[id] = USER_DEFINED;
                }
            }
        }
    }
    if let Some(dec) = tc
        .and_then(|t| t.get("added_tokens_decoder"))
        .and_then(Json::as_object)
    {
        for (id, data) in dec {
            let Some(id) = id.parse::<usize>().ok().filter(|&i| i < n) else {
                continue;
            };
            let Some(content) = data.get("content").and_then(Json::as_str) else {
                continue;
            };
            let special = data.get("special").and_then(Json::as_bool).unwrap_or(false);
            if special || looks_special(content) {
                types[id] = CONTROL;
                tokens[id] = content.to_string();
            } else {
                types[id] = USER_DEFINED;
                tokens[id] = content.replace('\u{2581}', " ");
            }
            scores[id] = -1000.0;
        }
    }
    md.set("tokenizer.ggml.model", Value::String("llama".into()));
    md.set("tokenizer.ggml.pre", Value::String("default".into()));
    md.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    md.set("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    md.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    Ok(n)
}

fn special_content(v: &Json) -> Option<&str> {
    match v {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content").and_then(Json::as_str),
        _ => None,
    }
}

/// SpecialVocab: special token ids, add_* flags, chat template.
fn special_vocab(
    dir: &Path,
    tc: Option<&Json>,
    tj: Option<&Json>,
    n_vocab: Option<usize>,
    always_add_flags: bool,
    named: &[(&'static str, &'static str)],
    md: &mut Metadata,
) -> Result<()> {
    let mut ids: Vec<(&str, &str, u64)> = Vec::new();
    let set_id = |typ: &'static str,
                  key: &'static str,
                  id: Option<u64>,
                  ids: &mut Vec<(&str, &str, u64)>| {
        if let Some(id) = id {
            if n_vocab.is_none_or(|n| (id as usize) < n) && !ids.iter().any(|(t, _, _)| *t == typ) {
                ids.push((typ, key, id));
            }
        }
    };
    let mut add: Vec<(&str, bool)> = Vec::new();
    let set_add = |typ: &'static str, v: bool, add: &mut Vec<(&str, bool)>| match add
        .iter_mut()
        .find(|(t, _)| *t == typ)
    {
        Some(e) => e.1 = v,
        None => add.push((typ, v)),
    };
    let tc_str = |k: &str| {
        tc.and_then(|t| t.get(k))
            .and_then(special_content)
            .map(str::to_string)
    };
    let mut special_bos = tc_str("bos_token");
    let special_cls = tc_str("cls_token");
    let mut special_eos = tc_str("eos_token");
    let special_sep = tc_str("sep_token");
    if special_bos.is_none() {
        special_bos = special_cls.clone();
    }
    if special_eos.is_none() {
        special_eos = special_sep.clone();
    }
    let added: Vec<&Json> = tj
        .and_then(|t| t.get("added_tokens"))
        .and_then(Json::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if let Some(pp) = tj
        .and_then(|t| t.get("post_processor"))
        .filter(|p| !p.is_null())
    {
        let procs: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(a) => a.iter().collect(),
            None => vec![pp],
        };
        for p in procs {
            match p.get("type").and_then(Json::as_str) {
                Some("RobertaProcessing") => {
                    set_add("bos", true, &mut add);
                    set_add("eos", true, &mut add);
                    set_add("sep", true, &mut add);
                }
                Some("TemplateProcessing") => {
                    let sp = |e: &Json| {
                        e.get("SpecialToken")
                            .and_then(|s| s.get("id"))
                            .and_then(Json::as_str)
                            .map(str::to_string)
                    };
                    let seq = |e: &Json| {
                        e.get("Sequence")
                            .and_then(|s| s.get("id"))
                            .and_then(Json::as_str)
                            .map(str::to_string)
                    };
                    let single: Vec<&Json> = p
                        .get("single")
                        .and_then(Json::as_array)
                        .map(|a| a.iter().collect())
                        .unwrap_or_default();
                    let pair: Vec<&Json> = p
                        .get("pair")
                        .and_then(Json::as_array)
                        .map(|a| a.iter().collect())
                        .unwrap_or_default();
                    let mut first = None;
                    let mut last = None;
                    if single.len() > 1 {
                        first = sp(single[0]);
                        if let Some(f) = &first {
                            if tc.is_none() {
                                special_bos = Some(f.clone());
                            }
                            let b =
                                Some(f) == special_bos.as_ref() || Some(f) == special_cls.as_ref();
                            set_add("bos", b, &mut add);
                        }
                        last = sp(single[single.len() - 1]);
                        if let Some(l) = &last {
                            if tc.is_none() {
                                special_eos = Some(l.clone());
                            }
                            set_add("eos", Some(l) == special_eos.as_ref(), &mut add);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(first.is_some() && sp(pair[0]) == first);
                        let stop = if last.is_some() && sp(pair[pair.len() - 1]) == last {
                            pair.len() - 1
                        } else {
                            pair.len()
                        };
                        if start < stop {
                            let mid = &pair[start..stop];
                            let a = seq(mid[0]);
                            let b = seq(mid[mid.len() - 1]);
                            if a.as_deref() == Some("A")
                                && b.as_deref() == Some("B")
                                && mid.len() > 2
                            {
                                let inner = &mid[1..mid.len() - 1];
                                let is_sep = |e: &Json| {
                                    let s = sp(e);
                                    s.is_some() && (s == special_sep || s == special_eos)
                                };
                                let mut add_sep = is_sep(inner[0]) && last.is_none();
                                if inner.len() == 2 && is_sep(inner[1]) {
                                    add_sep = true;
                                }
                                set_add("sep", add_sep, &mut add);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut chat_template = None;
    if let Some(tc) = tc {
        let jinja = dir.join("chat_template.jinja");
        let alt = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| HfError::io("read", &jinja, e))?)
        } else {
            json_opt(&dir.join("chat_template.json"))?.and_then(|j| {
                j.get("chat_template")
                    .and_then(Json::as_str)
                    .map(str::to_string)
            })
        };
        chat_template = match tc.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(list)) => list
                .iter()
                .find(|e| e.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|e| e.get("template"))
                .and_then(Json::as_str)
                .map(str::to_string),
            _ => alt,
        };
        for (typ, key) in SPECIAL_TYPES {
            if let Some(b) = tc.get(format!("add_{typ}_token")).and_then(Json::as_bool) {
                set_add(typ, b, &mut add);
            }
            let content = match typ {
                "bos" => special_bos.clone(),
                "eos" => special_eos.clone(),
                _ => tc_str(&format!("{typ}_token")),
            };
            let Some(content) = content else { continue };
            let id = added
                .iter()
                .find(|a| a.get("content").and_then(Json::as_str) == Some(content.as_str()))
                .and_then(|a| a.get("id"))
                .and_then(Json::as_u64);
            set_id(typ, key, id, &mut ids);
        }
    }
    if let Some(cfg) = json_opt(&dir.join("config.json"))? {
        for (typ, key) in SPECIAL_TYPES {
            let v = cfg.get(format!("{typ}_token_id")).or_else(|| {
                cfg.get("text_config")
                    .and_then(|t| t.get(format!("{typ}_token_id")))
            });
            set_id(typ, key, v.and_then(Json::as_u64), &mut ids);
        }
    }
    for &(typ, content) in named {
        let key = match typ {
            "eot" => "tokenizer.ggml.eot_token_id",
            "eom" => "tokenizer.ggml.eom_token_id",
            t => SPECIAL_TYPES
                .iter()
                .find(|(s, _)| *s == t)
                .map(|(_, k)| *k)
                .ok_or_else(|| HfError::Tokenizer(format!("unknown special token type {t}")))?,
        };
        let id = added
            .iter()
            .find(|a| a.get("content").and_then(Json::as_str) == Some(content))
            .and_then(|a| a.get("id"))
            .and_then(Json::as_u64)
            .ok_or_else(|| {
                HfError::Tokenizer(format!(
                    "tokenizer.json has no added token '{content}' (the {typ} token this architecture needs)"
                ))
            })?;
        set_id(typ, key, Some(id), &mut ids);
    }
    for (_, key, id) in &ids {
        let id = u32::try_from(*id)
            .map_err(|_| HfError::Tokenizer(format!("special token id {id} out of range")))?;
        md.set(*key, Value::U32(id));
    }
    // add_bos / add_eos are always written (false when nothing says otherwise), then the others
    // that were determined, as in the reference files.
    // (gguf-py writes them only when a source sets them: so does the tiktoken path.)
    let get = |t: &str| add.iter().find(|(k, _)| *k == t).map(|(_, v)| *v);
    for typ in ["bos", "eos"] {
        if always_add_flags || get(typ).is_some() {
            md.set(
                format!("tokenizer.ggml.add_{typ}_token"),
                Value::Bool(get(typ).unwrap_or(false)),
            );
        }
    }
    for (typ, _) in SPECIAL_TYPES.iter().skip(2) {
        if let Some(v) = get(typ) {
            md.set(format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(v));
        }
    }
    if let Some(t) = chat_template {
        md.set("tokenizer.chat_template", Value::String(t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_tiktoken_merges() {
        assert_eq!(base64_decode(b"aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode(b"IQ=="), Some(b"!".to_vec()));
        assert_eq!(base64_decode(b"aGVs"), Some(b"hel".to_vec()));
        assert_eq!(base64_decode(b"aGV"), None);
        assert_eq!(base64_decode(b"a=Vs"), None);
        assert_eq!(base64_decode(b"IQ==IQ=="), None);
        let map = byte_to_char();
        assert_eq!((map[b' ' as usize], map[b'a' as usize]), ('\u{0120}', 'a'));
        // "abc" (rank 4) is made of "ab" (rank 3) + "c": the merge uses ranks below 4 only.
        let ranks: std::collections::HashMap<&[u8], u32> = [
            (&b"a"[..], 0),
            (b"b", 1),
            (b"c", 2),
            (b"ab", 3),
            (b"abc", 4),
            (b"bc", 5),
        ]
        .into_iter()
        .collect();
        assert_eq!(tiktoken_parts(&ranks, b"abc", 4), vec![&b"ab"[..], b"c"]);
        assert_eq!(tiktoken_parts(&ranks, b"bc", 5), vec![&b"b"[..], b"c"]);
        assert_eq!(
            tiktoken_parts(&ranks, b"abc", 3),
            vec![&b"a"[..], b"b", b"c"]
        );
    }

    #[test]
    fn protobuf_reader_rejects_truncation_and_reads_pieces() {
        // field 1 (len 9): piece "ab" (1), score 1.5 (2), type 3 (3)
        let mut msg = vec![0x0a, 2, b'a', b'b', 0x15];
        msg.extend_from_slice(&1.5f32.to_le_bytes());
        msg.extend_from_slice(&[0x18, 3]);
        let mut b = vec![0x0a, msg.len() as u8];
        b.extend_from_slice(&msg);
        // an unknown varint field 7 is skipped
        b.extend_from_slice(&[0x38, 0x96, 0x01]);
        let p = parse_spm_pieces(&b).expect("valid");
        assert_eq!(
            p,
            vec![Piece {
                piece: "ab".into(),
                score: 1.5,
                kind: 3
            }]
        );
        for cut in 1..b.len() - 3 {
            assert!(parse_spm_pieces(&b[..cut]).is_none(), "cut {cut}");
        }
    }
}
