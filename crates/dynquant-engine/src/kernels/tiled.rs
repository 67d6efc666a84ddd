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
    let mut yt = vec![0f32; w.rows * n_tok];
    yt.par_chunks_mut(TILE * n_tok)
        .enumerate()
        .for_each(|(ti, out)| {
            let r0 = ti * TILE;
            let nr = out.len() / n_tok;
            let rows: Vec<R> = (r0..r0 + nr).map(|r| decode(w.row_data(r))).collect();
            tile(&rows, &acts, n_tok, out);
        });
    let mut y = vec![0f32; n_tok * w.rows];
    y.par_chunks_mut(w.rows).enumerate().for_each(|(t, yrow)| {
        for (r, v) in yrow.iter_mut().enumerate() {
            *v = yt[r * n_tok + t];
        }
    });
    y
}
