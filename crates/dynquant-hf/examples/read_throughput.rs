//! Read throughput per thread of Hugging Face weights, as `dynquant quantize` reads them: a
//! synthetic `model.safetensors` with one FP8 (e4m3, 128x128 block scales) and one BF16 tensor
//! of DeepSeek expert shape is written to a temporary folder, then read back with
//! `Checkpoint::read_rows` in slabs of 16 Mi values on a one-thread pool, after one warm-up
//! pass (the file is in the page cache: this is the decode cost, not the disk's). Prints f32
//! weights per second per thread for each dtype, one JSON line each with `--json`. Feeds
//! `scripts/r1-projection.py`.
//!
//! ```text
//! cargo run --release -p dynquant-hf --example read_throughput [-- --rows 4096 --json]
//! ```

use std::io::Write;
use std::time::Instant;

use dynquant_hf::safetensors::Checkpoint;

const COLS: usize = 7168;
const SLAB_VALUES: usize = 16 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: usize = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(4096);
    let json = args.iter().any(|a| a == "--json");
    let dir = tempfile::tempdir().expect("temporary folder");
    let n = rows * COLS;
    let scales = rows.div_ceil(128) * COLS.div_ceil(128);
    // Data: FP8 bytes (finite e4m3 codes), f32 scales, BF16 words.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let fp8: Vec<u8> = (0..n)
        .map(|_| {
            let b = (next() >> 56) as u8;
            // 0x7f / 0xff are NaN in e4m3fn: keep weights finite.
            if b & 0x7f == 0x7f {
                b & 0xfe
            } else {
                b
            }
        })
        .collect();
    let scale_bytes: Vec<u8> = (0..scales)
        .flat_map(|i| (1e-3f32 * (1.0 + (i % 7) as f32)).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = (0..n)
        .flat_map(|_| {
            let v = ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
            ((v.to_bits() >> 16) as u16).to_le_bytes()
        })
        .collect();
    let mut off = 0usize;
    let mut entry = |dtype: &str, shape: Vec<usize>, len: usize| {
        let e =
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + len]});
        off += len;
        e
    };
    let header = serde_json::json!({
        "w.weight": entry("F8_E4M3", vec![rows, COLS], fp8.len()),
        "w.weight_scale_inv": entry("F32", vec![rows.div_ceil(128), COLS.div_ceil(128)], scale_bytes.len()),
        "b.weight": entry("BF16", vec![rows, COLS], bf16.len()),
    });
    let mut h = serde_json::to_vec(&header).expect("header");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f = std::fs::File::create(dir.path().join("model.safetensors")).expect("create");
    f.write_all(&(h.len() as u64).to_le_bytes()).expect("write");
    for part in [&h[..], &fp8, &scale_bytes, &bf16] {
        f.write_all(part).expect("write");
    }
    drop(f);
    let ckpt = Checkpoint::open(dir.path(), Some([128, 128])).expect("open");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let slab_rows = (SLAB_VALUES / COLS).max(1);
    let mut out = vec![0f32; slab_rows * COLS];
    for (name, dtype) in [("w.weight", "fp8_e4m3"), ("b.weight", "bf16")] {
        let mut pass = || {
            let start = Instant::now();
            pool.install(|| {
                for first in (0..rows).step_by(slab_rows) {
                    let r = slab_rows.min(rows - first);
                    ckpt.read_rows(name, first, &mut out[..r * COLS])
                        .expect("read");
                }
            });
            start.elapsed().as_secs_f64()
        };
        pass();
        let s = (0..3).map(|_| pass()).fold(f64::INFINITY, f64::min);
        if json {
            println!(
                "{{\"read\":\"{dtype}\",\"weights\":{n},\"seconds\":{s:.4},\"weights_per_s\":{:.0}}}",
                n as f64 / s
            );
        } else {
            println!(
                "{dtype:<9} {n} weights  {s:.3} s  {:.1} M weights/s (1 thread, page-cached)",
                n as f64 / s / 1e6
            );
        }
    }
}
