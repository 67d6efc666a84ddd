//! Fuzzes `tokenizer.json` -> GGUF vocabulary keys (`dynquant_hf::tokenizer::write_vocab`), then
//! builds the tokenizer from those keys and encodes a short text. Any input must give Ok or a
//! typed error.
#![no_main]

#[path = "common.rs"]
mod common;

use dynquant_gguf::Metadata;
use dynquant_hf::tokenizer::{write_vocab, VocabOptions};
use dynquant_tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::write_scratch("tokenizer.json", data);
    let mut md = Metadata::new();
    let opts = VocabOptions {
        pre: Some("smollm".into()),
        ..VocabOptions::default()
    };
    if write_vocab(common::scratch_dir(), None, &opts, &mut md).is_err() {
        return;
    }
    let Ok(tok) = Tokenizer::from_gguf(&md) else {
        return;
    };
    if let Ok(ids) = tok.encode("Hello world, 123 héllo <|im_start|>", true, true) {
        let _ = tok.decode(&ids);
    }
});
