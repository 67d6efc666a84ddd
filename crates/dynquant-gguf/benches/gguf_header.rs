//! Header parse speed: the real SmolLM2 header (1.7 MB: 49,152 tokens, 48,900 merges) when
//! the oracle cache is prepared (`DYNQUANT_ORACLE`), and always a synthetic header of the
//! same shape built in memory. Compare with gguf-py's `GGUFReader` open (2.9 s on this
//! machine class, `scripts/bench-ggufpy-open.sh`); see docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, Criterion};
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{
    build_header, encode_header, parse_header, Access, Array, GgufFile, Metadata, TensorInfo, Value,
};

fn synthetic_header() -> Vec<u8> {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    let tokens = (0..49152).map(|i| format!("tok{i:05}")).collect();
    md.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    md.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; 49152])),
    );
    let merges = (0..48900).map(|i| format!("a{i} b{i}")).collect();
    md.set("tokenizer.ggml.merges", Value::Array(Array::String(merges)));
    let tensors = (0..272)
        .map(|i| {
            TensorInfo::new(
                format!("blk.{i}.ffn_up.weight"),
                vec![576, 1536],
                GgmlType::Q4_1,
            )
            .unwrap()
        })
        .collect();
    encode_header(&build_header(md, tensors).unwrap())
}

fn bench(c: &mut Criterion) {
    let synthetic = synthetic_header();
    c.bench_function("parse_header/synthetic-smollm2-shape", |b| {
        // The data section is absent; give the parser a file length that covers it.
        b.iter(|| parse_header(&synthetic[..], u64::MAX / 2).unwrap())
    });
    if let Some(dir) = std::env::var_os("DYNQUANT_ORACLE") {
        let path = std::path::Path::new(&dir).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        c.bench_function("open/smollm2-q4_1/mmap", |b| {
            b.iter(|| GgufFile::open(&path, Access::Mmap).unwrap())
        });
        c.bench_function("open/smollm2-q4_1/pread", |b| {
            b.iter(|| GgufFile::open(&path, Access::Pread).unwrap())
        });
    } else {
        eprintln!("DYNQUANT_ORACLE not set: skipping the SmolLM2 file benchmarks");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
