//! Identifying a BPE pre-tokenizer the way llama.cpp's converter does: encode a fixed text
//! (`CHKTXT`) with the model's `tokenizer.json`, hash `str(token_ids)` with sha256, and look the
//! hash up in a table of known tokenizers (`data/pre_tokenizers.tsv`, as data).
//!
//! The encoder is a faithful subset of Hugging Face `tokenizers`: added tokens split out first,
//! normalizers NFC/NFD/NFKC/NFKD/Lowercase (and sequences of them), pre-tokenizers ByteLevel,
//! Split (regex or string; isolated/removed/merged behaviours), Digits, WhitespaceSplit (and
//! sequences), the BPE model (merges by rank, `ignore_merges`, `byte_fallback`, `unk_token`),
//! and the Template/Roberta/Bert/ByteLevel post-processors. A tokenizer that uses anything else
//! is reported as unsupported, and the caller falls back to `gpt-2` with a warning.

use std::collections::{BinaryHeap, HashMap};

use fancy_regex::Regex;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

/// The text llama.cpp encodes to identify pre-tokenizers (`get_vocab_base_pre`'s `chktxt`).
pub const CHKTXT: &str = include_str!("../data/chktxt.txt");

const TABLE: &str = include_str!("../data/pre_tokenizers.tsv");

/// The pre-tokenizer name of a known hash (the last table entry wins, as in the converter).
pub fn name_for_hash(hash: &str) -> Option<&'static str> {
    TABLE
        .lines()
        .rev()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .find(|(h, _)| *h == hash)
        .map(|(_, n)| n.trim())
}

/// GPT-2's split pattern (`tokenizers` ByteLevel with `use_regex`).
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to U+0100...
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    table
}

enum Norm {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
    Lower,
}

enum Behavior {
    Isolated,
    Removed,
    MergedWithPrevious,
    MergedWithNext,
}

enum Pre {
    ByteLevel {
        prefix_space: bool,
        regex: Option<Regex>,
    },
    Split {
        re: Regex,
        behavior: Behavior,
        invert: bool,
    },
    WhitespaceSplit,
}

enum PostItem {
    Special(Vec<u32>),
    Sequence,
}

struct Encoder {
    added: Vec<(String, u32)>,
    norms: Vec<Norm>,
    pres: Vec<Pre>,
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), (usize, String)>,
    ignore_merges: bool,
    byte_fallback: bool,
    unk: Option<u32>,
    post: Option<Vec<PostItem>>,
    bytes: [char; 256],
}

type R<T> = std::result::Result<T, String>;

fn ty(j: &Json) -> &str {
    j.get("type").and_then(Json::as_str).unwrap_or("")
}

fn norms_of(j: &Json, out: &mut Vec<Norm>) -> R<()> {
    match ty(j) {
        "NFC" => out.push(Norm::Nfc),
        "NFD" => out.push(Norm::Nfd),
        "NFKC" => out.push(Norm::Nfkc),
        "NFKD" => out.push(Norm::Nfkd),
        "Lowercase" => out.push(Norm::Lower),
        "Sequence" => {
            for n in j
                .get("normalizers")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                norms_of(n, out)?;
            }
        }
        other => return Err(format!("normalizer {other}")),
    }
    Ok(())
}

fn regex(p: &str) -> R<Regex> {
    Regex::new(p).map_err(|e| format!("regex {p:?}: {e}"))
}

fn pres_of(j: &Json, out: &mut Vec<Pre>) -> R<()> {
    match ty(j) {
        "ByteLevel" => out.push(Pre::ByteLevel {
            prefix_space: j
                .get("add_prefix_space")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            regex: if j.get("use_regex").and_then(Json::as_bool).unwrap_or(true) {
                Some(regex(GPT2_PATTERN)?)
            } else {
                None
            },
        }),
        "Split" => {
            let pat = j.get("pattern").ok_or("Split without pattern")?;
            let re = if let Some(r) = pat.get("Regex").and_then(Json::as_str) {
                regex(r)?
            } else if let Some(s) = pat.get("String").and_then(Json::as_str) {
                regex(&fancy_regex::escape(s))?
            } else {
                return Err("Split pattern".into());
            };
            let behavior = match j.get("behavior").and_then(Json::as_str).unwrap_or("") {
                "Isolated" => Behavior::Isolated,
                "Removed" => Behavior::Removed,
                "MergedWithPrevious" => Behavior::MergedWithPrevious,
                "MergedWithNext" => Behavior::MergedWithNext,
                other => return Err(format!("Split behavior {other}")),
            };
            let invert = j.get("invert").and_then(Json::as_bool).unwrap_or(false);
            out.push(Pre::Split {
                re,
                behavior,
                invert,
            });
        }
        "Digits" => {
            let individual = j
                .get("individual_digits")
                .and_then(Json::as_bool)
                .unwrap_or(false);
            out.push(Pre::Split {
                re: regex(if individual { r"\p{N}" } else { r"\p{N}+" })?,
                behavior: Behavior::Isolated,
                invert: false,
            });
        }
        "WhitespaceSplit" => out.push(Pre::WhitespaceSplit),
        "Sequence" => {
            for p in j
                .get("pretokenizers")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                pres_of(p, out)?;
            }
        }
        other => return Err(format!("pre-tokenizer {other}")),
    }
    Ok(())
}

impl Encoder {
    fn new(tj: &Json, tc: Option<&Json>) -> R<Self> {
        let model = tj.get("model").ok_or("no model")?;
        if ty(model) != "BPE" {
            return Err(format!("model {}", ty(model)));
        }
        for k in ["continuing_subword_prefix", "end_of_word_suffix", "dropout"] {
            if model.get(k).is_some_and(|v| !v.is_null()) {
                return Err(format!("BPE {k}"));
            }
        }
        let vocab: HashMap<String, u32> = model
            .get("vocab")
            .and_then(Json::as_object)
            .ok_or("no vocab")?
            .iter()
            .filter_map(|(k, v)| v.as_u64().map(|v| (k.clone(), v as u32)))
            .collect();
        let mut ranks = HashMap::new();
        for (i, m) in model
            .get("merges")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (a, b) = match m {
                Json::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or("merge")?,
                Json::Array(p) if p.len() == 2 => (
                    p[0].as_str().ok_or("merge")?.to_string(),
                    p[1].as_str().ok_or("merge")?.to_string(),
                ),
                _ => return Err("merge format".into()),
            };
            let merged = format!("{a}{b}");
            ranks.entry((a, b)).or_insert((i, merged));
        }
        let mut added: Vec<(String, u32)> = tj
            .get("added_tokens")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a.get("content")?.as_str()?.to_string(),
                    a.get("id")?.as_u64()? as u32,
                ))
            })
            .collect();
        // Longest first, so that a token containing another wins.
        added.sort_by_key(|a| std::cmp::Reverse(a.0.len()));
        let mut norms = Vec::new();
        if let Some(n) = tj.get("normalizer").filter(|n| !n.is_null()) {
            norms_of(n, &mut norms)?;
        }
        let mut pres = Vec::new();
        if let Some(p) = tj.get("pre_tokenizer").filter(|p| !p.is_null()) {
            pres_of(p, &mut pres)?;
        }
        let unk = model
            .get("unk_token")
            .and_then(Json::as_str)
            .and_then(|u| vocab.get(u).copied());
        let special_ids = |name: &str, pp: &Json| -> Option<Vec<u32>> {
            let st = pp.get("special_tokens")?.get(name)?;
            st.get("ids")?
                .as_array()?
                .iter()
                .map(|i| i.as_u64().map(|v| v as u32))
                .collect()
        };
        let mut post: Option<Vec<PostItem>> = None;
        let class = tc
            .and_then(|t| t.get("tokenizer_class"))
            .and_then(Json::as_str);
        if class == Some("LlamaTokenizerFast") {
            // transformers rebuilds this class's template from add_bos_token/add_eos_token.
            let flag = |k: &str, d: bool| {
                tc.and_then(|t| t.get(k))
                    .and_then(Json::as_bool)
                    .unwrap_or(d)
            };
            let id_of = |k: &str| {
                tc.and_then(|t| t.get(k))
                    .and_then(|v| {
                        v.as_str()
                            .or_else(|| v.get("content").and_then(Json::as_str))
                    })
                    .and_then(|c| {
                        vocab
                            .get(c)
                            .copied()
                            .or_else(|| added.iter().find(|(a, _)| a == c).map(|(_, i)| *i))
                    })
            };
            let mut items = Vec::new();
            if flag("add_bos_token", true) {
                items.extend(id_of("bos_token").map(|i| PostItem::Special(vec![i])));
            }
            items.push(PostItem::Sequence);
            if flag("add_eos_token", false) {
                items.extend(id_of("eos_token").map(|i| PostItem::Special(vec![i])));
            }
            post = Some(items);
        } else if let Some(pp) = tj.get("post_processor").filter(|p| !p.is_null()) {
            let procs: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
                Some(a) => a.iter().collect(),
                None => vec![pp],
            };
            for p in procs {
                match ty(p) {
                    "ByteLevel" => {}
                    "TemplateProcessing" => {
                        let mut items = Vec::new();
                        for e in p
                            .get("single")
                            .and_then(Json::as_array)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(id) = e
                                .get("SpecialToken")
                                .and_then(|s| s.get("id"))
                                .and_then(Json::as_str)
                            {
                                items.push(PostItem::Special(
                                    special_ids(id, p).ok_or("template special token")?,
                                ));
                            } else if e.get("Sequence").is_some() {
                                items.push(PostItem::Sequence);
                            }
                        }
                        post = Some(items);
                    }
                    "RobertaProcessing" | "BertProcessing" => {
                        let id = |k: &str| {
                            p.get(k)
                                .and_then(|v| v.get(1))
                                .and_then(Json::as_u64)
                                .map(|v| v as u32)
                        };
                        post = Some(vec![
                            PostItem::Special(vec![id("cls").ok_or("cls")?]),
                            PostItem::Sequence,
                            PostItem::Special(vec![id("sep").ok_or("sep")?]),
                        ]);
                    }
                    other => return Err(format!("post-processor {other}")),
                }
            }
        }
        Ok(Encoder {
            added,
            norms,
            pres,
            vocab,
            ranks,
            ignore_merges: model
                .get("ignore_merges")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            byte_fallback: model
                .get("byte_fallback")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            unk,
            post,
            bytes: byte_to_char(),
        })
    }

    fn normalize(&self, s: &str) -> String {
        let mut s = s.to_string();
        for n in &self.norms {
            s = match n {
                Norm::Nfc => s.nfc().collect(),
                Norm::Nfd => s.nfd().collect(),
                Norm::Nfkc => s.nfkc().collect(),
                Norm::Nfkd => s.nfkd().collect(),
                Norm::Lower => s.to_lowercase(),
            };
        }
        s
    }

    /// Splits `s` at the matches of `re` as `tokenizers`' `split` does.
    fn split(s: &str, re: &Regex, behavior: &Behavior, invert: bool) -> R<Vec<String>> {
        // (piece, is_match)
        let mut parts: Vec<(&str, bool)> = Vec::new();
        let mut last = 0;
        for m in re.find_iter(s) {
            let m = m.map_err(|e| e.to_string())?;
            if m.start() > last {
                parts.push((&s[last..m.start()], false));
            }
            if m.end() > m.start() {
                parts.push((m.as_str(), true));
            }
            last = m.end();
        }
        if last < s.len() {
            parts.push((&s[last..], false));
        }
        if invert {
            for p in &mut parts {
                p.1 = !p.1;
            }
        }
        let mut out: Vec<String> = Vec::new();
        match behavior {
            Behavior::Isolated => out.extend(parts.iter().map(|p| p.0.to_string())),
            Behavior::Removed => out.extend(parts.iter().filter(|p| !p.1).map(|p| p.0.to_string())),
            Behavior::MergedWithPrevious => {
                for (p, is_m) in parts {
                    match out.last_mut() {
                        Some(prev) if is_m => prev.push_str(p),
                        _ => out.push(p.to_string()),
                    }
                }
            }
            Behavior::MergedWithNext => {
                let mut pending = String::new();
                for (p, is_m) in parts {
                    if is_m {
                        pending.push_str(p);
                    } else {
                        pending.push_str(p);
                        out.push(std::mem::take(&mut pending));
                    }
                }
                if !pending.is_empty() {
                    out.push(pending);
                }
            }
        }
        Ok(out)
    }

    fn pre_tokenize(&self, s: String) -> R<Vec<String>> {
        let mut pieces = vec![s];
        for p in &self.pres {
            let mut next = Vec::new();
            for piece in pieces {
                match p {
                    Pre::ByteLevel {
                        prefix_space,
                        regex,
                    } => {
                        let piece = if *prefix_space && !piece.starts_with(' ') {
                            format!(" {piece}")
                        } else {
                            piece
                        };
                        let split = match regex {
                            Some(re) => Self::split(&piece, re, &Behavior::Isolated, false)?,
                            None => vec![piece],
                        };
                        for w in split {
                            next.push(w.bytes().map(|b| self.bytes[b as usize]).collect());
                        }
                    }
                    Pre::Split {
                        re,
                        behavior,
                        invert,
                    } => next.extend(Self::split(&piece, re, behavior, *invert)?),
                    Pre::WhitespaceSplit => {
                        next.extend(piece.split_whitespace().map(str::to_string))
                    }
                }
            }
            pieces = next;
        }
        Ok(pieces.into_iter().filter(|p| !p.is_empty()).collect())
    }

    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(word) {
                out.push(id);
                return;
            }
        }
        let mut syms: Vec<Option<String>> = word.chars().map(|c| Some(c.to_string())).collect();
        // Lowest (rank, position) first, as `tokenizers`' Word::merge_all.
        let next_of =
            |syms: &Vec<Option<String>>, i: usize| (i + 1..syms.len()).find(|&j| syms[j].is_some());
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<std::cmp::Reverse<(usize, usize, String, String)>>,
                    syms: &Vec<Option<String>>,
                    i: usize| {
            if let (Some(a), Some(j)) = (syms[i].as_ref(), next_of(syms, i)) {
                if let Some(b) = syms[j].as_ref() {
                    if let Some((r, _)) = self.ranks.get(&(a.clone(), b.clone())) {
                        heap.push(std::cmp::Reverse((*r, i, a.clone(), b.clone())));
                    }
                }
            }
        };
        for i in 0..syms.len() {
            push(&mut heap, &syms, i);
        }
        while let Some(std::cmp::Reverse((_, i, a, b))) = heap.pop() {
            // Stale entries: the pair at i changed since it was queued.
            let Some(j) = next_of(&syms, i) else { continue };
            if syms[i].as_deref() != Some(a.as_str()) || syms[j].as_deref() != Some(b.as_str()) {
                continue;
            }
            syms[i] = Some(format!("{a}{b}"));
            syms[j] = None;
            push(&mut heap, &syms, i);
            if let Some(p) = (0..i).rev().find(|&k| syms[k].is_some()) {
                push(&mut heap, &syms, p);
            }
        }
        for s in syms.into_iter().flatten() {
            if let Some(&id) = self.vocab.get(&s) {
                out.push(id);
            } else if self.byte_fallback {
                for b in s.bytes() {
                    if let Some(&id) = self.vocab.get(&format!("<0x{b:02X}>")) {
                        out.push(id);
                    }
                }
            } else if let Some(u) = self.unk {
                out.push(u);
            }
        }
    }

    fn encode(&self, text: &str) -> R<Vec<u32>> {
        // Added tokens split out first (leftmost, longest).
        let mut segments: Vec<(String, Option<u32>)> = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let hit = self
                .added
                .iter()
                .filter(|(c, _)| !c.is_empty())
                .filter_map(|(c, id)| rest.find(c.as_str()).map(|p| (p, c, *id)))
                .min_by_key(|(p, c, _)| (*p, std::cmp::Reverse(c.len())));
            match hit {
                Some((p, c, id)) => {
                    if p > 0 {
                        segments.push((rest[..p].to_string(), None));
                    }
                    segments.push((c.clone(), Some(id)));
                    rest = &rest[p + c.len()..];
                }
                None => {
                    segments.push((rest.to_string(), None));
                    rest = "";
                }
            }
        }
        let mut ids = Vec::new();
        for (s, id) in segments {
            match id {
                Some(id) => ids.push(id),
                None => {
                    for w in self.pre_tokenize(self.normalize(&s))? {
                        self.bpe(&w, &mut ids);
                    }
                }
            }
        }
        Ok(match &self.post {
            None => ids,
            Some(items) => {
                let mut out = Vec::new();
                for it in items {
                    match it {
                        PostItem::Special(v) => out.extend(v),
                        PostItem::Sequence => out.extend(&ids),
                    }
                }
                out
            }
        })
    }
}

/// Encodes `text` with a `tokenizer.json` (special tokens added, as `tokenizer.encode`).
pub fn encode(tj: &Json, tc: Option<&Json>, text: &str) -> std::result::Result<Vec<u32>, String> {
    Encoder::new(tj, tc)?.encode(text)
}

/// llama.cpp's `chkhsh` of a tokenizer: sha256 of Python's `str()` of the ids of [`CHKTXT`].
/// `Err` names what this encoder does not support.
pub fn chkhsh(tj: &Json, tc: Option<&Json>) -> std::result::Result<String, String> {
    let ids = encode(tj, tc, CHKTXT)?;
    let list = format!(
        "[{}]",
        ids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Sha256::digest(list.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str, file: &str) -> Option<Json> {
        let p = dynquant_testkit::oracle::shared_dir()
            .join("golden/hf")
            .join(name)
            .join(file);
        std::fs::read_to_string(p)
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap())
    }

    #[test]
    fn fixture_hashes_are_the_ones_the_converter_computed() {
        // The fixtures' README records the chkhsh llama.cpp's converter (through transformers)
        // computed for their tokenizers.
        for (name, want) in [
            (
                "llama-bpe",
                "ca33e16666d326214f7f5ef7198b806b03d51cc144b8239bb1009d8e2a48c71d",
            ),
            (
                "deepseek-v3",
                "ca33e16666d326214f7f5ef7198b806b03d51cc144b8239bb1009d8e2a48c71d",
            ),
            (
                "qwen2",
                "563057d9ddf9189d8093132794a4327d071d02c6fe59b2b110afd334c0bf637a",
            ),
            (
                "qwen3",
                "563057d9ddf9189d8093132794a4327d071d02c6fe59b2b110afd334c0bf637a",
            ),
        ] {
            let tj = fixture(name, "tokenizer.json").expect("fixture present");
            let tc = fixture(name, "tokenizer_config.json");
            assert_eq!(chkhsh(&tj, tc.as_ref()).unwrap(), want, "{name}");
            assert_eq!(name_for_hash(want), None);
        }
    }

    #[test]
    fn table_lookup() {
        assert_eq!(
            name_for_hash("0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5"),
            Some("llama-bpe")
        );
        // A repeated hash takes the later name, as the converter's chain of `if`s.
        assert_eq!(
            name_for_hash("b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166"),
            Some("olmo")
        );
        assert_eq!(CHKTXT.chars().count(), 350);
    }
}
