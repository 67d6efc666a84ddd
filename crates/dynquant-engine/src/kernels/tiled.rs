//! The skeleton the integer-dot kernels share: activations quantized once per token, weight rows
//! decoded in tiles, a kernel filling each tile's results, then a transpose.

use rayon::prelude::*;

use crate::weight::Weight;

/// The shared skeleton of the integer-dot products: every token's activations quantized once
/// (`quantize`), weight rows decoded (`decode`) in tiles of 16 so each activation block is
/// reused from cache for 16 rows, `tile` filling a tile's rows x tokens results, then the
/// rows-major result transposed to tokens x rows. Each output value is computed by one task in a
/// fixed order, so results do not depend on the thread count.
pub(super) fn tiled_product<A: Send + Sync, R: Send>(
    w: &Weight<'_>,
    x: &[f32],
    n_tok: usize,
    quantize: impl Fn(&[f32]) -> A + Sync,
    decode: impl Fn(&[u8]) -> R + Sync,
    tile: impl Fn(&[R], &[A], usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    const TILE: usize = 16;
    let acts: Vec<A> = x.par_chunks(w.cols).map(&quantize).collect();
    let mut yt = zeroed(w.rows * n_tok);
    yt.par_chunks_mut(TILE * n_tok)
        .enumerate()
        .for_each(|(ti, out)| {
            let r0 = ti * TILE;
            let nr = out.len() / n_tok;
            let rows: Vec<R> = (r0..r0 + nr).map(|r| decode(w.row_data(r))).collect();
            tile(&rows, &acts, n_tok, out);
        });
    tokens_major(yt, w.rows, n_tok)
}

/// Below this many values a buffer is zeroed on the calling thread.
const PAR_ZERO_MIN: usize = 1 << 16;

/// `n` zeros, written by the thread pool when `n` is large: a fresh large buffer's pages are
/// faulted in and cleared by whoever writes them first, which on one thread was a serial part
/// of every big product (the output head's 256 x 49152 results).
pub(crate) fn zeroed(n: usize) -> Vec<f32> {
    if n < PAR_ZERO_MIN {
        return vec![0f32; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// The rows-major results `yt` (`rows` x `n_tok`) transposed to tokens x rows, in blocks of
/// tokens so that each row's values are read contiguously (one token: already in order).
pub(crate) fn tokens_major(yt: Vec<f32>, rows: usize, n_tok: usize) -> Vec<f32> {
    const TOKENS: usize = 16;
    if n_tok == 1 {
        return yt;
    }
    let mut y = zeroed(n_tok * rows);
    y.par_chunks_mut(TOKENS * rows)
        .enumerate()
        .for_each(|(b, block)| {
            let t0 = b * TOKENS;
            let nt = block.len() / rows;
            for r in 0..rows {
                for (tl, &v) in yt[r * n_tok + t0..][..nt].iter().enumerate() {
                    block[tl * rows + r] = v;
                }
            }
        });
    y
}
