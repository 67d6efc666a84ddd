//! Helpers every block family shares: the super-block size, reading an f16 field, and
//! walking whole blocks as fixed-size arrays.

use crate::float::f16_to_f32;

/// Elements per super-block.
pub(crate) const QK_K: usize = 256;

/// The binary16 at byte `at` of `b` (little-endian), widened exactly to f32.
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Pairs each `BYTES`-byte block of `src` with its `ELEMS` outputs in `dst`, as fixed-size
/// arrays so that the per-block code indexes without bounds checks.
pub(crate) fn blocks<'a, const BYTES: usize, const ELEMS: usize>(
    src: &'a [u8],
    dst: &'a mut [f32],
) -> impl Iterator<Item = (&'a [u8; BYTES], &'a mut [f32; ELEMS])> {
    src.chunks_exact(BYTES)
        .zip(dst.chunks_exact_mut(ELEMS))
        .map(|(b, y)| {
            let b: &[u8; BYTES] = b.try_into().expect("exact chunk");
            let y: &mut [f32; ELEMS] = y.try_into().expect("exact chunk");
            (b, y)
        })
}
