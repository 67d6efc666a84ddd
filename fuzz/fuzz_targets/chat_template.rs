//! Fuzzes chat template rendering (`Tokenizer::render_chat_template`, minijinja) with the bytes as
//! the template and a small real vocabulary. Any template must give Ok or a typed error.
#![no_main]

use std::sync::OnceLock;

use dynquant_gguf::parse_header;
use dynquant_tokenizer::{ChatMessage, Tokenizer};
use libfuzzer_sys::fuzz_target;

/// SmolLM2's tokenizer keys, cut to its first 400 tokens (`fuzz/gguf_kv_seed.py`).
const VOCAB: &[u8] = include_bytes!("../seeds/tokenizer_gguf/smollm2-768.kv.gguf");

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let header = parse_header(VOCAB, VOCAB.len() as u64).expect("the vocabulary seed parses");
        Tokenizer::from_gguf(&header.metadata).expect("the vocabulary seed builds")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hello"),
        ChatMessage::new("assistant", "Hi."),
    ];
    let _ = tokenizer().render_chat_template(template, &messages, true);
});
