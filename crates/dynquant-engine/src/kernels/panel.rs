//! The 16-row AVX-512 VNNI panels shared by the Q4_0/IQ4_NL/MXFP4, IQ4_XS and Q4_K kernels: 32
//! elements of sixteen rows interleaved so that the dword lane `r` of a `vpdpbusd` against
//! broadcast activations is row `r`'s sum, with no horizontal reduction, and the driver that runs
//! a panel over a tile's tokens four at a time.

/// Rows in the 16-row AVX-512 panels (lane `r` of a 512-bit vector is row `r`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const PANEL_ROWS: usize = 16;

/// Drives a 16-row panel kernel over a tile's `n_tok` tokens: whole groups of four through
/// `four(t0, y)`, the rest one at a time through `one(t0, y)` (each fills `y[token][row]`), and
/// stores the values rows-major into the tile's `out` (`out[r * n_tok + t]`).
pub(crate) fn panel_tokens(
    n_tok: usize,
    out: &mut [f32],
    mut four: impl FnMut(usize, &mut [[f32; PANEL_ROWS]; 4]),
    mut one: impl FnMut(usize, &mut [[f32; PANEL_ROWS]; 1]),
) {
    let mut put = |t0: usize, y: &[[f32; PANEL_ROWS]]| {
        for (dt, y) in y.iter().enumerate() {
            for (r, &v) in y.iter().enumerate() {
                out[r * n_tok + t0 + dt] = v;
            }
        }
    };
    let mut t0 = 0;
    while t0 + 4 <= n_tok {
        let mut y = [[0f32; PANEL_ROWS]; 4];
        four(t0, &mut y);
        put(t0, &y);
        t0 += 4;
    }
    while t0 < n_tok {
        let mut y = [[0f32; PANEL_ROWS]; 1];
        one(t0, &mut y);
        put(t0, &y);
        t0 += 1;
    }
}

/// Row `r`'s 32 bytes of one group into a panel's interleaved bytes: elements `4k .. 4k + 4` at
/// `64k + 4r` (the dword lane `r` of step `k`).
pub(crate) fn interleave_group(
    group: impl IntoIterator<Item = u8>,
    r: usize,
    q: &mut [u8; 8 * 64],
) {
    for (e, v) in group.into_iter().enumerate() {
        q[64 * (e / 4) + 4 * r + e % 4] = v;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// The eight 64-byte steps of one interleaved group (see [`super::interleave_group`]).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn load_group(q: &[u8; 8 * 64]) -> [__m512i; 8] {
        // SAFETY: eight 64-byte loads inside `q`, which panels keep 64-byte aligned.
        std::array::from_fn(|k| unsafe { _mm512_loadu_si512(q.as_ptr().add(64 * k).cast()) })
    }

    /// `init` plus every row's exact sum of one group's unsigned bytes `wk` times the token's 32
    /// signed activations at `y` (eight words, broadcast one per step).
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    pub(crate) unsafe fn group_sums(wk: &[__m512i; 8], y: *const i32, init: __m512i) -> __m512i {
        // two chains of four, so the adds do not all wait on each other
        let mut s0 = init;
        let mut s1 = _mm512_setzero_si512();
        for k in (0..8).step_by(2) {
            // SAFETY: the caller's `y` points at 32 activation bytes.
            let (y0, y1) = unsafe { (y.add(k).read_unaligned(), y.add(k + 1).read_unaligned()) };
            s0 = _mm512_dpbusd_epi32(s0, wk[k], _mm512_set1_epi32(y0));
            s1 = _mm512_dpbusd_epi32(s1, wk[k + 1], _mm512_set1_epi32(y1));
        }
        _mm512_add_epi32(s0, s1)
    }
}
