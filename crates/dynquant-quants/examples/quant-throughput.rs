//! Quantization throughput per thread, per type, on a real model's weights with its imatrix:
//! every 2-D `blk.*` tensor of the chosen layers, quantized row block by row block on this
//! thread. Prints one line per type: weights, CPU seconds of this thread, weights per second
//! and an FNV-1a hash of every output byte (to check that a speed-up changed no byte).
//! The per-type rates feed `scripts/r1-projection.py`.
//!
//! ```text
//! cargo run --release -p dynquant-quants --example quant-throughput -- \
//!     MODEL.gguf IMATRIX.gguf [--types iq2_xxs,iq1_s] [--layers 0,14,29] [--json]
//! ```

use std::time::Duration;

use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{Access, GgufModel};
use dynquant_quants::{dequantize, quantize_rows};

const DEFAULT_TYPES: &str =
    "iq2_xxs,iq2_xs,iq2_s,iq3_xxs,iq3_s,iq1_s,iq1_m,q2_K,q3_K,q4_K,q5_K,q6_K,q8_0,iq4_xs";

/// CPU time of the calling thread (user + system), from `/proc/thread-self/stat`.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the ')'.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a)
        .collect();
    if args.iter().any(|a| a == "--synthetic") {
        synthetic(flag("--types").as_deref().unwrap_or(DEFAULT_TYPES));
        return;
    }
    let (Some(model), Some(imatrix)) = (positional.first(), positional.get(1)) else {
        eprintln!("usage: quant-throughput MODEL.gguf IMATRIX.gguf [--types a,b] [--layers 0,14,29] [--json]");
        std::process::exit(1);
    };
    let json = args.iter().any(|a| a == "--json");
    let types: Vec<GgmlType> = flag("--types")
        .unwrap_or_else(|| DEFAULT_TYPES.to_string())
        .split(',')
        .map(|t| t.trim().parse().expect("ggml type name"))
        .collect();
    let layers: Option<Vec<String>> =
        flag("--layers").map(|l| l.split(',').map(|n| format!("blk.{}.", n.trim())).collect());
    let model = GgufModel::open(model, Access::Mmap).expect("model");
    let imatrix = Imatrix::read(imatrix).expect("imatrix");
    // (row length, f32 rows, importance) of every picked tensor, decoded once.
    let tensors: Vec<(usize, Vec<f32>, Vec<f32>)> = model
        .tensors()
        .filter(|t| t.info.shape.len() == 2 && t.info.name.starts_with("blk."))
        .filter(|t| {
            layers
                .as_ref()
                .is_none_or(|ls| ls.iter().any(|p| t.info.name.starts_with(p)))
        })
        .filter_map(|t| {
            let w = imatrix.get(&t.info.name)?.weights(0);
            let n = t.info.shape[0] as usize;
            let mut x = vec![0f32; t.info.n_elements() as usize];
            dequantize(t.info.ggml_type, &model.tensor_data(&t).unwrap(), &mut x).unwrap();
            Some((n, x, w))
        })
        .collect();
    let weights: usize = tensors.iter().map(|t| t.1.len()).sum();
    for ty in types {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut cpu = Duration::ZERO;
        for (n, x, w) in &tensors {
            let bytes = ty.row_bytes(*n as u64).expect("row length fits the type") as usize;
            let mut out = vec![0u8; bytes * (x.len() / n)];
            let start = thread_cpu();
            quantize_rows(ty, x, *n, Some(w), &mut out).expect("quantize");
            cpu += thread_cpu() - start;
            fnv1a(&mut hash, &out);
        }
        let s = cpu.as_secs_f64();
        if json {
            println!(
                "{{\"type\":\"{ty}\",\"weights\":{weights},\"cpu_s\":{s:.3},\"weights_per_s\":{:.0},\"hash\":\"{hash:016x}\"}}",
                weights as f64 / s
            );
        } else {
            println!(
                "{ty:<8} {weights} weights  {s:.2} CPU s  {:.2} M weights/s  {hash:016x}",
                weights as f64 / s / 1e6
            );
        }
    }
}

/// `--synthetic`: hashes of every type over edge-case rows (zero, tiny, huge, an outlier,
/// constant, heavy-tailed) times edge-case importance (zero, negative, huge, tiny entries),
/// to check a speed-up for identical bytes beyond real weights.
fn synthetic(types: &str) {
    let n = 512;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for scale in [1.0f32, 1e-30, 1e-8, 1e4, 1e30] {
        rows.push((0..n).map(|_| next().powi(3) * scale).collect());
    }
    rows.push(vec![0.0; n]);
    rows.push(vec![0.25; n]);
    rows.push(
        (0..n)
            .map(|i| if i == 77 { 100.0 } else { next() * 0.01 })
            .collect(),
    );
    rows.push(
        (0..n)
            .map(|i| if i % 3 == 0 { 0.0 } else { next() })
            .collect(),
    );
    let mut imps: Vec<Vec<f32>> = Vec::new();
    imps.push((0..n).map(|_| next().abs() + 0.01).collect());
    imps.push(
        (0..n)
            .map(|i| if i % 5 == 0 { 0.0 } else { next().abs() })
            .collect(),
    );
    imps.push((0..n).map(|_| next()).collect());
    imps.push((0..n).map(|_| next().abs() * 1e30).collect());
    imps.push((0..n).map(|_| next().abs() * 1e-30).collect());
    imps.push(vec![1.0; n]);
    for ty in types.split(',') {
        let ty: GgmlType = ty.trim().parse().expect("ggml type name");
        let bytes = ty.row_bytes(n as u64).expect("row length fits the type") as usize;
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut failed = 0;
        for x in &rows {
            for w in &imps {
                let mut out = vec![0u8; bytes];
                match quantize_rows(ty, x, n, Some(w), &mut out) {
                    Ok(()) => fnv1a(&mut hash, &out),
                    Err(_) => failed += 1,
                }
            }
        }
        println!("{ty:<8} synthetic  failed {failed}  {hash:016x}");
    }
}
