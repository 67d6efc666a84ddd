//! Quantized bytes depend only on the rows and their importance: the same whatever the
//! chunking and however many threads share the work.

use dynquant_gguf::types::TYPE_TABLE;
use dynquant_quants::{can_quantize, quantize_rows};

fn data(rows: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let x = (0..rows * n)
        .map(|_| (next() * 2.0 - 1.0).powi(3) * 4.0)
        .collect();
    let w = (0..n).map(|_| 0.1 + next()).collect();
    (x, w)
}

#[test]
fn bytes_do_not_depend_on_chunking_or_threads() {
    let (rows, n) = (12, 512);
    let (x, w) = data(rows, n);
    for info in TYPE_TABLE.iter().filter(|t| can_quantize(t.ty)) {
        let ty = info.ty;
        let row_bytes = ty.row_bytes(n as u64).unwrap() as usize;
        let mut whole = vec![0u8; rows * row_bytes];
        quantize_rows(ty, &x, n, Some(&w), &mut whole).unwrap();
        // Row by row.
        let mut single = vec![0u8; rows * row_bytes];
        for (r, out) in single.chunks_exact_mut(row_bytes).enumerate() {
            quantize_rows(ty, &x[r * n..(r + 1) * n], n, Some(&w), out).unwrap();
        }
        assert_eq!(whole, single, "{}", info.name);
        // Uneven chunks on 3 threads.
        let mut threaded = vec![0u8; rows * row_bytes];
        std::thread::scope(|s| {
            let mut rest_out = &mut threaded[..];
            let mut start = 0;
            for chunk_rows in [5, 4, 3] {
                let (out, tail) = rest_out.split_at_mut(chunk_rows * row_bytes);
                rest_out = tail;
                let src = &x[start * n..(start + chunk_rows) * n];
                let w = &w;
                s.spawn(move || quantize_rows(ty, src, n, Some(w), out).unwrap());
                start += chunk_rows;
            }
        });
        assert_eq!(whole, threaded, "{}", info.name);
    }
}
