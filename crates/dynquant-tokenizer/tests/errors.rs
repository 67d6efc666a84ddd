//! Bad tokenizer metadata gives typed errors, never a panic; no oracle needed.

use dynquant_gguf::{Array, Metadata, Value};
use dynquant_tokenizer::{ChatMessage, Tokenizer, TokenizerError};

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

/// A tiny valid BPE vocabulary: bytes "a", "b", "Ġ" and merges to "ab", "Ġab".
fn bpe_meta() -> Metadata {
    let mut m = Metadata::new();
    m.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.set("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    m.set(
        "tokenizer.ggml.tokens",
        strings(&["<|endoftext|>", "a", "b", "Ġ", "ab", "Ġab"]),
    );
    m.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![3, 1, 1, 1, 1, 1])),
    );
    m.set("tokenizer.ggml.merges", strings(&["a b", "Ġ ab"]));
    m.set("tokenizer.ggml.bos_token_id", Value::U32(0));
    m.set("tokenizer.ggml.eos_token_id", Value::U32(0));
    m
}

#[test]
fn small_bpe_vocabulary_works() {
    let tok = Tokenizer::from_gguf(&bpe_meta()).expect("valid");
    assert_eq!(tok.encode("ab ab", false, false).unwrap(), [4, 5]);
    assert_eq!(tok.encode("ab<|endoftext|>", false, true).unwrap(), [4, 0]);
    assert_eq!(tok.decode(&[4, 5]), "ab ab");
    assert_eq!(tok.token_to_piece(0), b"");
    assert_eq!(tok.token_to_piece_with(0, true), b"<|endoftext|>");
    assert!(tok.is_eog(0));
    assert!(!tok.add_bos());
    // Unknown characters have no byte token in this vocabulary: dropped, as llama.cpp does.
    assert_eq!(tok.encode("abc", false, false).unwrap(), [4]);
    assert!(tok.decode(&[999]).is_empty());
}

/// A metadata edit and the error it must produce.
type Case = (Box<dyn Fn(&mut Metadata)>, fn(&TokenizerError) -> bool);

#[test]
fn bad_metadata_is_a_typed_error() {
    let cases: Vec<Case> = vec![
        (
            Box::new(|m| {
                m.remove("tokenizer.ggml.model");
            }),
            |e| matches!(e, TokenizerError::MissingKey("tokenizer.ggml.model")),
        ),
        (
            Box::new(|m| m.replace("tokenizer.ggml.model", Value::String("bert".into()))),
            |e| matches!(e, TokenizerError::UnsupportedModel(s) if s == "bert"),
        ),
        (
            Box::new(|m| m.replace("tokenizer.ggml.pre", Value::String("mystery".into()))),
            |e| matches!(e, TokenizerError::UnsupportedPre(s) if s == "mystery"),
        ),
        (
            Box::new(|m| m.replace("tokenizer.ggml.model", Value::U32(3))),
            |e| {
                matches!(
                    e,
                    TokenizerError::BadType {
                        key: "tokenizer.ggml.model",
                        ..
                    }
                )
            },
        ),
        (
            Box::new(|m| m.replace("tokenizer.ggml.tokens", Value::Array(Array::I32(vec![1])))),
            |e| {
                matches!(
                    e,
                    TokenizerError::BadType {
                        key: "tokenizer.ggml.tokens",
                        ..
                    }
                )
            },
        ),
        (
            Box::new(|m| {
                m.replace(
                    "tokenizer.ggml.token_type",
                    Value::Array(Array::I32(vec![1, 1])),
                )
            }),
            |e| {
                matches!(
                    e,
                    TokenizerError::LengthMismatch {
                        found: 2,
                        n_vocab: 6,
                        ..
                    }
                )
            },
        ),
        (
            Box::new(|m| m.replace("tokenizer.ggml.tokens", strings(&["a", "b", "a"]))),
            |e| {
                matches!(
                    e,
                    TokenizerError::DuplicateToken {
                        first: 0,
                        second: 2,
                        ..
                    }
                )
            },
        ),
        (
            Box::new(|m| {
                m.remove("tokenizer.ggml.merges");
            }),
            |e| matches!(e, TokenizerError::MissingKey("tokenizer.ggml.merges")),
        ),
        (
            Box::new(|m| {
                m.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
                m.replace("tokenizer.ggml.bos_token_id", Value::U32(77));
                m.remove("tokenizer.ggml.eos_token_id");
            }),
            // bos 77 is out of range, and the BPE default (11) is too: no BOS to add.
            |e| matches!(e, TokenizerError::MissingSpecialToken(_)),
        ),
        (
            Box::new(|m| m.set("tokenizer.ggml.add_bos_token", Value::U8(1))),
            |e| {
                matches!(
                    e,
                    TokenizerError::BadType {
                        key: "tokenizer.ggml.add_bos_token",
                        ..
                    }
                )
            },
        ),
    ];
    for (i, (edit, check)) in cases.iter().enumerate() {
        let mut m = bpe_meta();
        edit(&mut m);
        match Tokenizer::from_gguf(&m) {
            Ok(_) => panic!("case {i}: accepted bad metadata"),
            Err(e) => assert!(check(&e), "case {i}: unexpected error {e}"),
        }
    }
}

#[test]
fn spm_without_byte_tokens_is_an_error_not_a_panic() {
    let mut m = Metadata::new();
    m.set("tokenizer.ggml.model", Value::String("llama".into()));
    m.set(
        "tokenizer.ggml.tokens",
        strings(&["<unk>", "<s>", "</s>", "▁a"]),
    );
    m.set(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vec![0.0; 4])),
    );
    m.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![2, 3, 3, 1])),
    );
    let tok = Tokenizer::from_gguf(&m).expect("valid");
    assert!(tok.add_bos() && tok.add_space_prefix());
    assert_eq!(tok.encode("a", true, false).unwrap(), [1, 3]);
    assert!(matches!(
        tok.encode("a\u{e9}", false, false),
        Err(TokenizerError::MissingByteToken(0xC3))
    ));
}

#[test]
fn chat_template_errors_are_typed() {
    let mut m = bpe_meta();
    m.set(
        "tokenizer.chat_template",
        Value::String("{{ raise_exception('no ' + messages[0]['role']) }}".into()),
    );
    let tok = Tokenizer::from_gguf(&m).unwrap();
    let msgs = [ChatMessage::new("user", "hi")];
    match tok.apply_chat_template(&msgs, true) {
        Err(TokenizerError::Template(s)) => assert!(s.contains("no user"), "{s}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        tok.render_chat_template("{% for %}", &msgs, false),
        Err(TokenizerError::Template(_))
    ));
    let ok = tok
        .render_chat_template(
            "{% for m in messages %}{{ m.content.strip().upper() }}|{{ eos_token }}{% endfor %}",
            &[ChatMessage::new("user", "  hi ")],
            false,
        )
        .unwrap();
    assert_eq!(ok, "HI|<|endoftext|>");
    assert!(matches!(
        Tokenizer::from_gguf(&bpe_meta())
            .unwrap()
            .apply_chat_template(&msgs, true),
        Err(TokenizerError::NoChatTemplate)
    ));
}
