//! Fuzzes GGUF tokenizer metadata -> tokenizer (`dynquant_tokenizer::Tokenizer::from_gguf` on the
//! header `dynquant_gguf::parse_header` reads), then encodes and decodes a short text. Any input
//! must give Ok or a typed error.
#![no_main]

use dynquant_gguf::parse_header;
use dynquant_tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse_header(data, data.len() as u64) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_gguf(&header.metadata) else {
        return;
    };
    for text in ["Hello world, 123 héllo", " <|im_start|>user\n\t\tx</s>"] {
        if let Ok(ids) = tok.encode(text, true, true) {
            let _ = tok.detokenize(&ids, false, true);
        }
    }
    let n = tok.n_vocab().min(64) as u32;
    let _ = tok.decode(&(0..n).collect::<Vec<_>>());
});
