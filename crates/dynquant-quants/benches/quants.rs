//! Row conversion throughput, single thread: dequantization of every type (f32 output bytes
//! per second; the goal is >= 1 GB/s per core) and quantization of every type dynquant can
//! quantize, with an importance vector (input f32 bytes per second). The ratio against ggml
//! is measured by the oracle test `quantize_oracle` (same data, same thread count) and
//! recorded in docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dynquant_gguf::types::TYPE_TABLE;
use dynquant_quants::{can_dequantize, can_quantize, dequantize, quantize_rows};

const N_PER_ROW: usize = 4096;
const ROWS: usize = 64;

fn input() -> (Vec<f32>, Vec<f32>) {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let x = (0..N_PER_ROW * ROWS)
        .map(|_| (next() * 2.0 - 1.0).powi(3))
        .collect();
    let w = (0..N_PER_ROW).map(|_| 0.05 + next()).collect();
    (x, w)
}

fn bench(c: &mut Criterion) {
    let (x, w) = input();
    let n = x.len();
    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Bytes((n * 4) as u64));
    for info in TYPE_TABLE.iter().filter(|t| can_dequantize(t.ty)) {
        let Some(bytes) = info.ty.row_bytes(n as u64) else {
            continue;
        };
        // Zero blocks: dequantization cost does not depend on the values.
        let src = vec![0u8; bytes as usize];
        let mut out = vec![0f32; n];
        g.bench_function(info.name, |b| {
            b.iter(|| dequantize(info.ty, &src, &mut out).unwrap())
        });
    }
    g.finish();
    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Bytes((n * 4) as u64));
    g.sample_size(10);
    for info in TYPE_TABLE.iter().filter(|t| can_quantize(t.ty)) {
        let bytes = info.ty.row_bytes(n as u64).unwrap() as usize;
        let mut out = vec![0u8; bytes];
        g.bench_function(info.name, |b| {
            b.iter(|| quantize_rows(info.ty, &x, N_PER_ROW, Some(&w), &mut out).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
