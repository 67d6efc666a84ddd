//! What the chat-template sandbox costs: N renders of a small template in one batch (one child
//! process) and one by one (a child each), in a process holding BALLAST MiB of touched
//! anonymous memory (fork copies the page tables of such memory; a loaded model's file-backed
//! mappings cost nothing).
//!   cargo run --release -p dynquant-tokenizer --example sandbox_cost -- [BALLAST_MIB] [N]
use dynquant_gguf::{Array, Metadata, Value};
use dynquant_tokenizer::{ChatMessage, Tokenizer};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let ballast_mib = args.next().and_then(Result::ok).unwrap_or(0);
    let n = args.next().and_then(Result::ok).unwrap_or(200);
    let mut m = Metadata::new();
    m.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.set("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    let tokens = ["<|endoftext|>", "a", "b"].map(String::from).to_vec();
    m.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    m.set("tokenizer.ggml.merges", Value::Array(Array::String(vec![])));
    m.set("tokenizer.ggml.eos_token_id", Value::U32(0));
    let tok = Tokenizer::from_gguf(&m).expect("a vocabulary");
    let ballast = vec![1u8; ballast_mib << 20];
    let msgs = [ChatMessage::new("user", "hi")];
    let template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
    let convs: Vec<&[ChatMessage]> = (0..n).map(|_| &msgs[..]).collect();
    let t0 = std::time::Instant::now();
    tok.render_chat_template_batch(template, &convs, true)
        .expect("renders");
    let batch = t0.elapsed();
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        tok.render_chat_template(template, &msgs, true)
            .expect("renders");
    }
    let single = t0.elapsed();
    println!(
        "ballast {ballast_mib} MiB, {n} renders: one batch {batch:.1?}; one child each {single:.1?} \
         ({:.2?} per render)",
        single / n as u32
    );
    std::hint::black_box(&ballast);
}
