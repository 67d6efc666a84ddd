//! The skeleton the integer-dot kernels share: activations quantized once per token, weight rows
//! decoded in tiles, a kernel filling each tile's results, each tile transposed into the result.

use rayon::prelude::*;

use crate::weight::Weight;

/// The shared skeleton of the integer-dot products: every token's activations quantized once
/// (`quantize`), weight rows decoded (`decode`) in tiles of 16 so each activation block is
/// reused from cache for 16 rows, `tile` filling a tile's rows x tokens results, which its task
/// transposes into the tokens x rows result while they are in cache (a transpose of the whole
/// result afterwards reads it with a stride: for the output layer as slow as its kernel). Each output value is computed by one task in a
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
    let mut y = vec![0f32; n_tok * w.rows];
    let out = SharedOut(y.as_mut_ptr());
    (0..w.rows.div_ceil(TILE)).into_par_iter().for_each(|ti| {
        let r0 = ti * TILE;
        let nr = TILE.min(w.rows - r0);
        let rows: Vec<R> = (r0..r0 + nr).map(|r| decode(w.row_data(r))).collect();
        // the tile's results rows-major (small, so its transpose below stays in cache)
        let mut yt = vec![0f32; nr * n_tok];
        tile(&rows, &acts, n_tok, &mut yt);
        for t in 0..n_tok {
            for r in 0..nr {
                // SAFETY: `y` holds `n_tok * w.rows` values and outlives the loop; the tasks
                // write disjoint values (tile `ti` only rows `r0..r0 + nr` of each token).
                unsafe { out.write(t * w.rows + r0 + r, yt[r * n_tok + t]) };
            }
        }
    });
    y
}

/// The result's pointer, shared by the tasks that each write their own tile's values.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

impl SharedOut {
    /// # Safety
    /// `i` is within the result, and no other task writes it.
    unsafe fn write(&self, i: usize, v: f32) {
        // SAFETY: the caller's.
        unsafe { self.0.add(i).write(v) }
    }
}

// SAFETY: the tasks write disjoint values through it (see `tiled_product`).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}
