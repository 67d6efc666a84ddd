//! dynquant-tokenizer against real llama.cpp (node-llama-cpp 3.21.1, `tests/oracle/tokenize.mjs`):
//! token ids of whole texts and edge strings (with and without special-token parsing),
//! detokenization, BOS/EOS/EOG, and chat templates rendered by llama.cpp's own Jinja engine and
//! by @huggingface/jinja. One node run per model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::oracle::{shared_dir, Oracle};
use dynquant_tokenizer::{ChatMessage, Tokenizer, TokenizerError};
use serde_json::{json, Value};

const EDGE: &[&str] = &[
    "",
    " ",
    "   ",
    "\n\n\n",
    "\r\n \r\n\t x",
    "Hello world",
    " Hello  world  ",
    "héllo wörld — naïve café",
    "emoji 🙂🙃 👩‍👩‍👧 flags 🇫🇷",
    "中文分词测试，日本語のテキスト、한국어 텍스트",
    "I'm sure you'll say it's 'quoted' isn't it? We've, they're, I'd.",
    "numbers 1 12 123 1234 12345 3.14159 1,000,000 ٣٤٥ ①②",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "a<|im_start|>b <|endoftext|><|endoftext|> <start_of_turn>user\n<end_of_turn><bos><eos></s>",
    "<|im_start|",
    "user <user_tok> defined<user_tok>x <|im_end|> \n\t y",
    "tabs\tand\u{a0}nbsp\u{2003}em space\u{3000}ideographic",
    "x\u{0}y\u{1f}z \u{200b}zero width",
    "    indented code\n        more = 1 + 2 ** 3 // 4\n",
];

fn texts() -> Vec<(String, PathBuf)> {
    let dir = shared_dir().join("data/text");
    ["wiki.test.raw", "groups_merged.txt"]
        .iter()
        .map(|f| (f.to_string(), dir.join(f)))
        .collect()
}

fn open(path: &Path) -> Tokenizer {
    let model = GgufModel::open(path, Access::Mmap).expect("open gguf");
    Tokenizer::from_gguf(model.metadata()).expect("tokenizer from gguf")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("token array")
        .iter()
        .map(|t| u32::try_from(t.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

/// Fails on the first differing token, showing the neighbourhood in both tokenizations.
fn assert_same_tokens(tok: &Tokenizer, what: &str, ours: &[u32], theirs: &[u32]) {
    if ours == theirs {
        return;
    }
    let i = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let show = |v: &[u32]| {
        let lo = i.saturating_sub(6);
        let hi = (i + 6).min(v.len());
        v[lo..hi]
            .iter()
            .map(|&id| {
                format!(
                    "{id}:{:?}",
                    String::from_utf8_lossy(&tok.token_to_piece_with(id, true))
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let ctx = String::from_utf8_lossy(&tok.detokenize(&theirs[..i.min(theirs.len())], false, true))
        .chars()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<String>();
    panic!(
        "{what}: first mismatch at token {i} (ours {} tokens, llama.cpp {})\n  text before: {ctx:?}\n  ours:      {}\n  llama.cpp: {}",
        ours.len(),
        theirs.len(),
        show(ours),
        show(theirs)
    );
}

/// Equal byte strings, or a panic showing where they first differ (no multi-megabyte dumps).
fn assert_same_text(what: &str, ours: &[u8], theirs: &[u8]) {
    if ours == theirs {
        return;
    }
    let i = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let around = |v: &[u8]| {
        String::from_utf8_lossy(&v[i.saturating_sub(40)..(i + 40).min(v.len())]).into_owned()
    };
    panic!(
        "{what}: first difference at byte {i} (ours {} bytes, expected {})\n  ours:     {:?}\n  expected: {:?}",
        ours.len(),
        theirs.len(),
        around(ours),
        around(theirs)
    );
}

struct Case {
    name: String,
    text: String,
    file: Option<PathBuf>,
    special: bool,
}

/// What to check on one model.
struct Opts<'a> {
    /// Tokenize wiki.test.raw whole too (groups_merged.txt always).
    wiki: bool,
    /// decode(encode(x)) == x is expected (false where the vocabulary cleans up spaces).
    lossless: bool,
    /// A chat template to render instead of the model's own.
    template: Option<&'a str>,
}

fn check_model(oracle: &Oracle, model: &Path, label: &str, opts: Opts<'_>) {
    let gemma_template = opts.template;
    let t0 = Instant::now();
    let tok = open(model);
    eprintln!(
        "{label}: GGUF open + tokenizer build {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let mut cases: Vec<Case> = Vec::new();
    for (name, path) in texts() {
        if name == "wiki.test.raw" && !opts.wiki {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read text");
        cases.push(Case {
            name: name.clone(),
            text: text.clone(),
            file: Some(path.clone()),
            special: false,
        });
        if name == "groups_merged.txt" {
            cases.push(Case {
                name: format!("{name} (parse_special)"),
                text,
                file: Some(path),
                special: true,
            });
        }
    }
    for (k, s) in EDGE.iter().enumerate() {
        for special in [false, true] {
            cases.push(Case {
                name: format!("edge #{k} {s:?}"),
                text: s.to_string(),
                file: None,
                special,
            });
        }
    }

    let sys = ChatMessage::new("system", "You are terse.");
    let u1 = ChatMessage::new("user", "Hi there!  ");
    let a1 = ChatMessage::new("assistant", "Hello. How can I help?");
    let u2 = ChatMessage::new("user", "Say <b>\"ok\"</b> & stop.\nNow.");
    let conversations: Vec<(Vec<ChatMessage>, bool)> = vec![
        (vec![u1.clone()], true),
        (vec![sys.clone(), u1.clone(), a1.clone(), u2.clone()], true),
        (vec![u1.clone(), a1.clone(), u2.clone()], false),
        // Not alternating: templates that check roles raise_exception in every engine.
        (vec![u1.clone(), u2.clone()], true),
    ];
    let template: Option<String> = match gemma_template {
        Some(t) => Some(t.to_owned()),
        None => tok.chat_template().map(str::to_owned),
    };
    let bos_text = tok
        .bos()
        .and_then(|b| tok.token_text(b))
        .unwrap_or("")
        .to_owned();
    let eos_text = tok
        .eos()
        .and_then(|b| tok.token_text(b))
        .unwrap_or("")
        .to_owned();
    let chat: Vec<Value> = match &template {
        Some(t) => conversations
            .iter()
            .map(|(m, gen)| {
                json!({"template": t, "messages": m, "add_generation_prompt": gen,
                       "bos_token": bos_text, "eos_token": eos_text})
            })
            .collect(),
        None => Vec::new(),
    };
    let items: Vec<Value> = cases
        .iter()
        .map(|c| match &c.file {
            Some(p) => json!({"file": p, "special": c.special}),
            None => json!({"text": c.text, "special": c.special}),
        })
        .collect();
    let req = json!({"items": items, "info": true, "n_vocab": tok.n_vocab(), "chat": chat});
    let dir = tempfile::tempdir().expect("tempdir");
    let req_path = dir.path().join("req.json");
    std::fs::write(&req_path, serde_json::to_vec(&req).expect("json")).expect("write request");
    let out: Value = serde_json::from_str(&oracle.node(
        "tokenize.mjs",
        &[
            model.as_os_str(),
            "--request".as_ref(),
            req_path.as_os_str(),
        ],
    ))
    .expect("oracle json");

    // Special tokens and flags.
    let info = &out["info"];
    let opt = |v: &Value| v.as_u64().map(|x| x as u32);
    assert_eq!(tok.bos(), opt(&info["bos"]), "{label}: bos");
    assert_eq!(tok.eos(), opt(&info["eos"]), "{label}: eos");
    // With several end-of-turn-named tokens llama.cpp's pick follows its hash-map order; ours is
    // the lowest id. Either way it is one of the end-of-generation tokens.
    let their_eot = opt(&info["eot"]);
    if tok.eot() != their_eot {
        let (ours, theirs) = (tok.eot().expect("eot"), their_eot.expect("llama.cpp eot"));
        assert!(
            tok.is_eog(ours) && tok.is_eog(theirs) && ours < theirs,
            "{label}: eot {ours} vs llama.cpp {theirs}"
        );
        eprintln!("{label}: several EOT candidates; llama.cpp took {theirs}, we take {ours}");
    }
    assert_eq!(
        tok.add_bos(),
        info["add_bos"].as_bool().expect("add_bos"),
        "{label}: add_bos"
    );
    assert_eq!(
        tok.add_eos(),
        info["add_eos"].as_bool().expect("add_eos"),
        "{label}: add_eos"
    );
    assert_eq!(
        tok.eog_tokens(),
        ids(&info["eog"]).as_slice(),
        "{label}: EOG set"
    );
    eprintln!(
        "{label}: bos {:?} eos {:?} eot {:?} add_bos {} EOG {:?}",
        tok.bos(),
        tok.eos(),
        tok.eot(),
        tok.add_bos(),
        tok.eog_tokens()
    );
    let eog0 = tok.eog_tokens()[0];
    assert!(tok.is_eog(eog0) && !tok.is_eog(u32::MAX));
    assert_eq!(
        tok.chat_template(),
        info["chat_template"].as_str(),
        "{label}: chat template text"
    );

    for (c, r) in cases.iter().zip(out["items"].as_array().expect("items")) {
        let what = format!("{label} {} (parse_special={})", c.name, c.special);
        let t0 = Instant::now();
        let ours = tok.encode(&c.text, false, c.special).expect("encode");
        let dt = t0.elapsed();
        let theirs = ids(&r["tokens"]);
        assert_same_tokens(&tok, &what, &ours, &theirs);
        if c.file.is_some() {
            eprintln!(
                "{what}: {} tokens, ours {:.1} ms, llama.cpp {:.1} ms",
                ours.len(),
                dt.as_secs_f64() * 1e3,
                r["ms"].as_f64().unwrap_or(f64::NAN)
            );
        }
        // Detokenization as llama_detokenize (remove_special = false).
        let decoded = tok.decode(&ours);
        assert_same_text(
            &format!("{what}: decode"),
            decoded.as_bytes(),
            r["detok"].as_str().expect("detok").as_bytes(),
        );
        assert_same_text(
            &format!("{what}: detokenize with special tokens rendered"),
            String::from_utf8_lossy(&tok.detokenize(&ours, false, true)).as_bytes(),
            r["detok_special"]
                .as_str()
                .expect("detok_special")
                .as_bytes(),
        );
        if opts.lossless {
            // Lossless round trip of text without special tokens in it.
            if !c.special {
                assert_same_text(
                    &format!("{what}: decode(encode(x))"),
                    decoded.as_bytes(),
                    c.text.as_bytes(),
                );
            }
            // Streaming pieces concatenate to the same bytes (no space clean-up here).
            let streamed: Vec<u8> = ours.iter().flat_map(|&id| tok.token_to_piece(id)).collect();
            let skip = usize::from(tok.add_space_prefix() && streamed.first() == Some(&b' '));
            assert_same_text(
                &format!("{what}: pieces"),
                &streamed[skip..],
                &tok.detokenize(&ours, false, false),
            );
        }
        // add_special wraps with BOS/EOS exactly when the vocabulary says so.
        let with = tok
            .encode(&c.text, true, c.special)
            .expect("encode add_special");
        let mut expect = Vec::new();
        if tok.add_bos() {
            expect.push(tok.bos().expect("bos"));
        }
        expect.extend_from_slice(&theirs);
        if tok.add_eos() {
            expect.push(tok.eos().expect("eos"));
        }
        assert_eq!(with, expect, "{what}: add_special");
    }

    // Chat templates: ours vs llama.cpp's Jinja engine and @huggingface/jinja.
    let rendered = out["chat"].as_array().expect("chat");
    assert_eq!(rendered.len(), chat.len());
    for ((msgs, gen), r) in conversations.iter().zip(rendered) {
        let ours = match gemma_template {
            Some(t) => tok.render_chat_template(t, msgs, *gen),
            None => tok.apply_chat_template(msgs, *gen),
        };
        // A template that rejects the conversation must fail in every engine.
        let native = r["native"].as_str();
        let js = r["js"].as_str();
        match &ours {
            Ok(s) => {
                assert_eq!(
                    Some(s.as_str()),
                    native,
                    "{label}: chat template vs llama.cpp jinja ({msgs:?}) {r}"
                );
                assert_eq!(
                    Some(s.as_str()),
                    js,
                    "{label}: chat template vs @huggingface/jinja ({msgs:?})"
                );
            }
            Err(e) => {
                assert!(
                    native.is_none() && js.is_none(),
                    "{label}: we failed ({e}) but the oracle rendered {r}"
                );
            }
        }
    }
    if template.is_none() {
        assert!(matches!(
            tok.apply_chat_template(&[u1], true),
            Err(TokenizerError::NoChatTemplate)
        ));
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    let Some(oracle) = Oracle::get() else { return };
    let opts = Opts {
        wiki: true,
        lossless: true,
        template: None,
    };
    check_model(&oracle, &oracle.smollm2(), "SmolLM2", opts);
}

#[test]
fn gemma3_matches_llama_cpp() {
    let Some(oracle) = Oracle::get() else { return };
    let template = include_str!("data/gemma3-chat-template.jinja");
    let opts = Opts {
        wiki: true,
        lossless: true,
        template: Some(template),
    };
    check_model(&oracle, &oracle.gemma(), "Gemma-3", opts);
}

/// The tiny converter fixtures in shared/golden/hf (vocabularies trained on wiki.test.raw):
/// GPT-2 pre-tokenizer with BOS (llama-bpe) and without (qwen2), both with space clean-up on
/// decode, and a SentencePiece vocabulary that adds the leading space (llama-spm).
#[test]
fn golden_vocabularies_match_llama_cpp() {
    let Some(oracle) = Oracle::get() else { return };
    let dir = shared_dir().join("golden/hf");
    for (name, lossless) in [("llama-bpe", false), ("qwen2", false), ("llama-spm", true)] {
        let opts = Opts {
            wiki: false,
            lossless,
            template: None,
        };
        check_model(
            &oracle,
            &dir.join(format!("{name}.llamacpp.gguf")),
            name,
            opts,
        );
    }
}

/// Every supported pre-tokenizer, through real llama.cpp: the llama-bpe fixture's vocabulary
/// and merges written into vocabulary-only GGUFs (no tensors; llama.cpp loads them with
/// `vocab_only`) whose `tokenizer.ggml.pre` names each family, some without
/// `add_bos_token` so that llama.cpp's per-family default applies.
#[test]
fn pre_tokenizers_match_llama_cpp() {
    use dynquant_gguf::{build_header, encode_header, Array, Value};
    let Some(oracle) = Oracle::get() else { return };
    let src = shared_dir().join("golden/hf/llama-bpe.llamacpp.gguf");
    let base = GgufModel::open(&src, Access::Mmap)
        .expect("open fixture")
        .metadata()
        .clone();
    let dir = tempfile::tempdir().expect("tempdir");
    for (pre, keep_add_bos) in [
        ("llama-bpe", false),
        ("qwen2", false),
        ("default", true),
        ("smollm", true),
        ("starcoder", false),
    ] {
        let mut meta = base.clone();
        meta.replace("tokenizer.ggml.pre", Value::String(pre.to_owned()));
        if !keep_add_bos {
            meta.remove("tokenizer.ggml.add_bos_token");
        }
        let header = build_header(meta, Vec::new()).expect("header");
        let path = dir.path().join(format!("{pre}.gguf"));
        std::fs::write(&path, encode_header(&header)).expect("write gguf");
        let opts = Opts {
            wiki: false,
            lossless: false,
            template: None,
        };
        check_model(&oracle, &path, &format!("pre={pre}"), opts);
    }

    // Phi-3 (found by general.name): llama.cpp makes every special token swallow the whitespace
    // to its right, except <unk>, <s> and <|endoftext|> (which must exist); a user-defined token
    // is cut out of the text even without parse_special.
    let mut meta = base.clone();
    meta.replace("general.name", Value::String("Phi-3 Mini Fixture".into()));
    let Some(Value::Array(Array::String(tokens))) = meta.get("tokenizer.ggml.tokens").cloned()
    else {
        panic!("fixture tokens")
    };
    let Some(Value::Array(Array::I32(types))) = meta.get("tokenizer.ggml.token_type").cloned()
    else {
        panic!("fixture token types")
    };
    let (mut tokens, mut types) = (tokens, types);
    for (t, ty) in [("<unk>", 2), ("<|endoftext|>", 3), ("<user_tok>", 4)] {
        tokens.push(t.to_owned());
        types.push(ty);
    }
    meta.replace("llama.vocab_size", Value::U32(tokens.len() as u32));
    meta.replace("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    meta.replace("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    let header = build_header(meta, Vec::new()).expect("header");
    let path = dir.path().join("phi3.gguf");
    std::fs::write(&path, encode_header(&header)).expect("write gguf");
    let opts = Opts {
        wiki: false,
        lossless: false,
        template: None,
    };
    check_model(&oracle, &path, "phi-3 strip rules", opts);
}

/// Kimi-K2's pre-tokenizer (`tokenizer.ggml.pre = kimi-k2`) through real llama.cpp, on the
/// repository's `kimi-k2` fixture (converted by llama.cpp's converter; its vocabulary is a small
/// one trained on English text): the first 5,000 characters of wiki.test.raw and a string with Han
/// runs next to letters and spaces, cased contractions, digit runs, punctuation runs, newlines
/// and spaces, with and without special-token parsing.
///
/// The fixture's merges never join pieces across the places where Kimi-K2's expression and
/// Llama-3's cut differently (Han next to letters, a contraction glued to its word), so the same
/// vocabulary is also run with five merges appended that do (`' s`, `Ġit 's`, and `x` + the bytes
/// of 中): there, the Llama-3 expression (`dbrx`: same merges, no whole-word lookup) must give
/// other tokens than llama.cpp, so the texts tell the two splitters apart.
#[test]
fn kimi_k2_pre_tokenizer_matches_llama_cpp() {
    use dynquant_gguf::{build_header, encode_header, Array, Value as GgufValue};
    let Some(oracle) = Oracle::get() else { return };
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/kimi-k2.llamacpp.gguf");
    let meta = GgufModel::open(&fixture, Access::Mmap)
        .expect("open fixture")
        .metadata()
        .clone();
    let dir = tempfile::tempdir().expect("tempdir");
    assert_o200k_texts(
        &oracle,
        &fixture,
        &meta,
        dir.path(),
        KIMI_K2_MIXED,
        &["dbrx"],
    );

    let mut extended = meta.clone();
    let Some(GgufValue::Array(Array::String(mut tokens))) =
        meta.get("tokenizer.ggml.tokens").cloned()
    else {
        panic!("fixture tokens")
    };
    let Some(GgufValue::Array(Array::I32(mut types))) =
        meta.get("tokenizer.ggml.token_type").cloned()
    else {
        panic!("fixture token types")
    };
    let Some(GgufValue::Array(Array::String(mut merges))) =
        meta.get("tokenizer.ggml.merges").cloned()
    else {
        panic!("fixture merges")
    };
    // 中 is e4 b8 ad: `ä`, `¸`, `Ń` in GPT-2's byte-to-character map.
    for (left, right) in [
        ("'", "s"),
        ("Ġit", "'s"),
        ("ä", "¸"),
        ("ä¸", "Ń"),
        ("x", "ä¸Ń"),
    ] {
        assert!(!tokens.contains(&format!("{left}{right}")));
        tokens.push(format!("{left}{right}"));
        types.push(1);
        merges.push(format!("{left} {right}"));
    }
    extended.replace("deepseek2.vocab_size", GgufValue::U32(tokens.len() as u32));
    extended.replace(
        "tokenizer.ggml.tokens",
        GgufValue::Array(Array::String(tokens)),
    );
    extended.replace(
        "tokenizer.ggml.token_type",
        GgufValue::Array(Array::I32(types)),
    );
    extended.replace(
        "tokenizer.ggml.merges",
        GgufValue::Array(Array::String(merges)),
    );
    let header = build_header(extended.clone(), Vec::new()).expect("header");
    let path = dir.path().join("kimi-k2-cross-merges.gguf");
    std::fs::write(&path, encode_header(&header)).expect("write gguf");
    assert!(
        assert_o200k_texts(
            &oracle,
            &path,
            &extended,
            dir.path(),
            KIMI_K2_MIXED,
            &["dbrx"]
        )[0],
        "the Llama-3 expression gives llama.cpp's kimi-k2 tokens too"
    );
}

const KIMI_K2_MIXED: &str =
    "中文分词测试：Kimi的tokenizer。 中文 x中y  漢字\u{3400}\u{20000}\u{F900}ひらがな 한국어\n\
     I'm SURE you'LL say it's 'quoted' isn'T it? We'Ve, THEY'RE, I'd.'s 's\n\
     HelloWorld iPhone ÉCOLE naïve\u{301} 1 12 123 1234 1234567 3.14159 ٣٤٥ ①②\n\
     !!! ...??? --- \"x\" (y) [z]; a+b=c <tag/>\r\n\r\n\n   \t \u{a0} end   ";

/// The GPT-4o (o200k) pre-tokenizer against llama.cpp's, on a vocabulary-only GGUF: Kimi-K2's
/// fixture vocabulary renamed `tokenizer.ggml.pre = "gpt-4o"`. GPT-4o's expression differs from
/// Llama-3's (contractions glued to their word, words cut at a lower-to-upper case change,
/// `/` and newlines after punctuation) and from Kimi-K2's (no Han runs, the case cut, the `/`),
/// so the vocabulary gets merges that only some cuts can use (`Ġit 's`, `x` + 中, `.Ċ /`,
/// `q Z`, `é A`): with them, both the Llama-3 (`dbrx`) and the Kimi-K2 expression must give other
/// tokens than llama.cpp, so the texts tell the splitters apart.
#[test]
fn gpt4o_pre_tokenizer_matches_llama_cpp() {
    use dynquant_gguf::{build_header, encode_header, Array, Value as GgufValue};
    let Some(oracle) = Oracle::get() else { return };
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/kimi-k2.llamacpp.gguf");
    let mut meta = GgufModel::open(&fixture, Access::Mmap)
        .expect("open fixture")
        .metadata()
        .clone();
    meta.replace("tokenizer.ggml.pre", GgufValue::String("gpt-4o".to_owned()));
    let Some(GgufValue::Array(Array::String(mut tokens))) =
        meta.get("tokenizer.ggml.tokens").cloned()
    else {
        panic!("fixture tokens")
    };
    let Some(GgufValue::Array(Array::I32(mut types))) =
        meta.get("tokenizer.ggml.token_type").cloned()
    else {
        panic!("fixture token types")
    };
    let Some(GgufValue::Array(Array::String(mut merges))) =
        meta.get("tokenizer.ggml.merges").cloned()
    else {
        panic!("fixture merges")
    };
    // 中 is e4 b8 ad: `ä`, `¸`, `Ń` in GPT-2's byte-to-character map; `Ċ` is a newline.
    for (left, right) in [
        ("'", "s"),
        ("Ġit", "'s"),
        ("ä", "¸"),
        ("ä¸", "Ń"),
        ("x", "ä¸Ń"),
        (".", "Ċ"),
        (".Ċ", "/"),
        ("q", "Z"),
        ("Ã", "©"),
        ("Ã©", "A"),
    ] {
        if tokens.contains(&format!("{left}{right}")) {
            continue;
        }
        tokens.push(format!("{left}{right}"));
        types.push(1);
        merges.push(format!("{left} {right}"));
    }
    meta.replace("deepseek2.vocab_size", GgufValue::U32(tokens.len() as u32));
    meta.replace(
        "tokenizer.ggml.tokens",
        GgufValue::Array(Array::String(tokens)),
    );
    meta.replace(
        "tokenizer.ggml.token_type",
        GgufValue::Array(Array::I32(types)),
    );
    meta.replace(
        "tokenizer.ggml.merges",
        GgufValue::Array(Array::String(merges)),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let header = build_header(meta.clone(), Vec::new()).expect("header");
    let path = dir.path().join("gpt-4o-cross-merges.gguf");
    std::fs::write(&path, encode_header(&header)).expect("write gguf");
    let mixed = format!(
        "{KIMI_K2_MIXED}\n\
         ABcdEF éAB AÉb McDonald's O'NEIL'S dON'T iT'S xYz ÀÉÎ 中x中 ABCd'Ve HTTPServer (qZ (éAB\n\
         a./b !!/\n/ x.\n/y http://x.y/z?q=1&r=2/ 1/2/3 ;// .\r\n/\r/ end./\n\n\
         0123456789 12,345.67 v2.0.1 \u{fff0}\u{e000} é\u{301}x\t\t\n \n"
    );
    let differs = assert_o200k_texts(
        &oracle,
        &path,
        &meta,
        dir.path(),
        &mixed,
        &["dbrx", "kimi-k2"],
    );
    assert!(
        differs[0],
        "the Llama-3 expression gives llama.cpp's gpt-4o tokens too"
    );
    assert!(
        differs[1],
        "the Kimi-K2 expression gives llama.cpp's gpt-4o tokens too"
    );
}

/// Our tokens (and their decoding) equal llama.cpp's on the test texts (wiki.test.raw's start and
/// `mixed`); returns, for each pre-tokenizer name in `alternatives`, whether it gives other
/// tokens on the same vocabulary for at least one of them.
fn assert_o200k_texts(
    oracle: &Oracle,
    model: &Path,
    meta: &dynquant_gguf::Metadata,
    dir: &Path,
    mixed: &str,
    alternatives: &[&str],
) -> Vec<bool> {
    let tok = Tokenizer::from_gguf(meta).expect("tokenizer");
    let wiki = std::fs::read_to_string(shared_dir().join("data/text/wiki.test.raw")).expect("text");
    let cut = wiki
        .char_indices()
        .nth(5_000)
        .map_or(wiki.len(), |(i, _)| i);
    let texts = [
        ("wiki.test.raw[..5000 chars]", &wiki[..cut]),
        ("mixed", mixed),
    ];
    let items: Vec<Value> = texts
        .iter()
        .flat_map(|(_, t)| [false, true].map(|special| json!({"text": t, "special": special})))
        .collect();
    let req_path = dir.join("req.json");
    std::fs::write(
        &req_path,
        serde_json::to_vec(&json!({"items": items})).expect("json"),
    )
    .expect("write request");
    let out: Value = serde_json::from_str(&oracle.node(
        "tokenize.mjs",
        &[
            model.as_os_str(),
            "--request".as_ref(),
            req_path.as_os_str(),
        ],
    ))
    .expect("oracle json");
    let others: Vec<Tokenizer> = alternatives
        .iter()
        .map(|pre| {
            let mut other_meta = meta.clone();
            other_meta.replace(
                "tokenizer.ggml.pre",
                dynquant_gguf::Value::String((*pre).to_owned()),
            );
            Tokenizer::from_gguf(&other_meta).expect("alternative tokenizer")
        })
        .collect();
    let mut differs = vec![false; alternatives.len()];
    let label = model.file_name().expect("name").to_string_lossy();
    for (k, r) in out["items"].as_array().expect("items").iter().enumerate() {
        let (name, text) = texts[k / 2];
        let special = k % 2 == 1;
        let what = format!("{label} {name} (parse_special={special})");
        let theirs = ids(&r["tokens"]);
        let ours = tok.encode(text, false, special).expect("encode");
        assert_same_tokens(&tok, &what, &ours, &theirs);
        assert_same_text(
            &format!("{what}: decode"),
            tok.decode(&ours).as_bytes(),
            r["detok"].as_str().expect("detok").as_bytes(),
        );
        for ((pre, other), differ) in alternatives.iter().zip(&others).zip(&mut differs) {
            let other = other.encode(text, false, special).expect("encode");
            let equal = other.iter().zip(&theirs).filter(|(a, b)| a == b).count();
            *differ |= other != theirs;
            eprintln!(
                "{what}: {} chars, {} tokens equal to llama.cpp's; `{pre}` expression: {} tokens, \
                 {} equal in place, identical: {}",
                text.chars().count(),
                ours.len(),
                other.len(),
                equal,
                other == theirs
            );
        }
    }
    differs
}
