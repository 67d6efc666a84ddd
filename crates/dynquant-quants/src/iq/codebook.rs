//! Quantizers for the codebook i-quants: IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M.
//!
//! Our own search, not a port of ggml's `quantize_row_iq*_impl`. It minimises the
//! importance-weighted squared error `Σ w_j (x_j − x̂_j)²` where `x̂` is exactly what ggml's
//! `dequantize_row_iq*` reads back from our bytes (f16 super-scale, integer sub-block scale
//! codes, grid magnitudes, signs / IQ1 deltas, evaluated in ggml's f32 operation order).
//!
//! **Codebooks.** Each grid (`tables.rs`) is described by its level set (IQ2: {8, 25, 43};
//! IQ3_XXS: {4, …, 52, 62}; IQ3_S: {1, 3, …, 15}; IQ1: {−1, 0, 1}) and, once per process
//! (`OnceLock`, deterministic), a lookup table over *every* pattern of per-element levels:
//! a pattern that is a grid entry maps to itself; any other pattern maps to the grid entries
//! within its two smallest distinct (level-index) squared distances (full list) and, in a
//! second table, to those at the smallest distance only (short list, used by the phase-1
//! scale sweep). A group of 8 (or 4) targets is searched by rounding each target to its
//! nearest level (which is the exact weighted optimum when that pattern is on the grid) and
//! otherwise scoring the listed neighbours with the weighted error in value units.
//!
//! **Signs.** Signed types search magnitudes `|x|`; the sign byte is the signs of `x`. Where
//! the format stores signs with even parity (IQ2_XXS, IQ2_XS, IQ3_XXS: 7 stored bits, the
//! eighth implied by `ksigns_iq2xs`) and the parity is odd, each element is tried as the one
//! whose sign flips (its target becomes `−|x_j|`, so the grid search picks the best magnitude
//! for the wrong sign) and the cheapest total is kept. IQ2_S/IQ3_S store plain sign bytes.
//! IQ1 types have no signs; their values are `dl·(g + δ)` with `δ = ±1/8` per sub-block
//! (IQ1_S) or per group of 8 (IQ1_M); both deltas are tried.
//!
//! **Scales.** Phase 1, per scale unit (32 or 16 weights): a sweep of trial scales mapping
//! `max|x|` to `f` × the top level (clipping the largest weights often pays). The fast types
//! (IQ3_XXS, IQ3_S, IQ2_XS, IQ1_M) try six coarse `f` in 0.6, 0.9, …, 2.1, then the best
//! `f ± 0.1`; the slow ones (large neighbour lists or two deltas per trial) try only the four
//! coarse `f` that win most often (IQ2_XXS, IQ2_S: 0.9–1.8; IQ1_S: 1.2–2.1), which costs
//! ~0.02–0.04 of error ratio. Each trial assigns grid entries with the short neighbour
//! lists and one sign-flip candidate, re-fits the scale by weighted least squares for that
//! assignment, and the re-fit with the least predicted error is kept. Phase 2, per super-block: two candidate super-scales `d`, each rounded to f16:
//! the largest unit scale mapped to the top code, then the least-squares re-fit of `d` for
//! that assignment (it wins ~93% of super-blocks; shrunk ratios of the first candidate won
//! too rarely to pay for their evaluation). For each unit the two codes bracketing its
//! phase-1 scale are tried with a full re-assignment (full lists, `FLIPS` sign-flip
//! candidates) at the exact stored scale; the `d` with the least exact total wins, and a
//! candidate is abandoned as soon as its running total reaches the best total so far.
//! Everything is a pure function of the row: no randomness, no thread dependence.
//!
//! **Speed without changing a byte.** A candidate's error is a sum of one per-level error per
//! element, so the search tabulates those (the same IEEE operations as a direct evaluation)
//! and sums table entries in a fixed tree order; with AVX2 the neighbour lists are packed
//! words scored 8 at a time (`search_avx2`, equal to the scalar loop bit for bit). Work that
//! cannot change the result is skipped: sign-flip candidates whose lower bound (summed least
//! level errors; rounded addition is monotone) reaches the best flip, and phase-2 unit fits
//! once their running error can no longer be kept (non-negative importance only).

use std::sync::OnceLock;

use crate::float::{f16_to_f32, f32_to_f16};
use crate::tables::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};

const QK_K: usize = 256;

/// Sign-flip candidates tried per odd-parity group in the final assignment.
const FLIPS: usize = 4;

/// A grid with its level set and pattern → candidate-entries lookup.
pub(super) struct Codebook {
    /// Elements per grid entry (8 or 4).
    n: usize,
    nlev: usize,
    /// Midpoints between consecutive levels (rounding thresholds).
    mids: Vec<f32>,
    /// Level values of every entry (first `n` used).
    vals: Vec<[f32; 8]>,
    /// Level indices of every entry (first `n` used), for the per-level error tables.
    lev: Vec<[u8; 8]>,
    /// The level values, zero-padded to 8.
    levels: [f32; 8],
    /// `list` and `list1` again for the AVX2 search (8-wide grids of at most 4 levels, 4-wide
    /// grids of at most 8): per key, its candidates in chunks of 8 lanes, each lane a word
    /// holding the candidate's level indices (2 bits each for 8-wide grids, element `j` at bit
    /// `2j`; 3 bits each for 4-wide ones) and its grid index (bits 16..32).
    /// A short last chunk repeats its last candidate, which never wins over the original.
    /// `packed_start[key]..packed_start[key + 1]` are the key's chunks. Empty for other grids.
    packed_start: Vec<u32>,
    packed: Vec<[u32; 8]>,
    packed_start1: Vec<u32>,
    packed1: Vec<[u32; 8]>,
    /// AVX2 is available (checked once).
    avx2: bool,
    /// Per pattern key: (start, len) into `list`.
    lut: Vec<(u32, u32)>,
    list: Vec<u16>,
    /// The same with only the nearest entries (the smallest distance), for the scale sweep.
    lut1: Vec<(u32, u32)>,
    list1: Vec<u16>,
    /// Largest level magnitude.
    top: f32,
}

impl Codebook {
    fn build(entries: &[[u8; 8]], n: usize, level_bytes: &[u8], level_vals: &[f32]) -> Self {
        const NDIST: usize = 2;
        let nlev = level_bytes.len();
        let lev_of = |b: u8| {
            level_bytes
                .iter()
                .position(|&l| l == b)
                .expect("grid byte is a level") as u8
        };
        let glev: Vec<[u8; 8]> = entries
            .iter()
            .map(|e| core::array::from_fn(|j| if j < n { lev_of(e[j]) } else { 0 }))
            .collect();
        let vals = glev
            .iter()
            .map(|l| {
                core::array::from_fn(|j| {
                    if j < n {
                        level_vals[l[j] as usize]
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let key_of = |l: &[u8; 8]| (0..n).rev().fold(0usize, |k, j| k * nlev + l[j] as usize);
        let nkeys = nlev.pow(n as u32);
        let mut on_grid = vec![u32::MAX; nkeys];
        for (i, l) in glev.iter().enumerate() {
            on_grid[key_of(l)] = i as u32;
        }
        let mut lut = Vec::with_capacity(nkeys);
        let mut list: Vec<u16> = Vec::new();
        let mut lut1 = Vec::with_capacity(nkeys);
        let mut list1: Vec<u16> = Vec::new();
        let mut dist = vec![0u32; glev.len()];
        for (key, &grid_index) in on_grid.iter().enumerate() {
            let start = list.len() as u32;
            let start1 = list1.len() as u32;
            if grid_index != u32::MAX {
                list.push(grid_index as u16);
                list1.push(grid_index as u16);
            } else {
                let mut l = [0u8; 8];
                let mut k = key;
                for lj in l.iter_mut().take(n) {
                    *lj = (k % nlev) as u8;
                    k /= nlev;
                }
                for (d, g) in dist.iter_mut().zip(&glev) {
                    *d = (0..n)
                        .map(|j| {
                            let e = i32::from(l[j]) - i32::from(g[j]);
                            (e * e) as u32
                        })
                        .sum();
                }
                // The NDIST-th smallest distinct distance.
                let mut limit = 0;
                let mut below = 0u32;
                let mut nearest = u32::MAX;
                for _ in 0..NDIST {
                    let next = dist.iter().copied().filter(|&d| d >= below).min();
                    match next {
                        Some(m) => {
                            nearest = nearest.min(m);
                            limit = m;
                            below = m + 1;
                        }
                        None => break,
                    }
                }
                list.extend(
                    dist.iter()
                        .enumerate()
                        .filter(|(_, &d)| d <= limit)
                        .map(|(i, _)| i as u16),
                );
                list1.extend(
                    dist.iter()
                        .enumerate()
                        .filter(|(_, &d)| d <= nearest)
                        .map(|(i, _)| i as u16),
                );
            }
            lut.push((start, list.len() as u32 - start));
            lut1.push((start1, list1.len() as u32 - start1));
        }
        let mids = level_vals.windows(2).map(|p| 0.5 * (p[0] + p[1])).collect();
        let top = level_vals.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut levels = [0f32; 8];
        levels[..nlev].copy_from_slice(level_vals);
        let packable = ((n == 8 && nlev <= 4) || (n == 4 && nlev <= 8)) && glev.len() <= 1 << 16;
        let (packed_start, packed) = if packable {
            lane_chunks(&lut, &list, &glev, n)
        } else {
            Default::default()
        };
        let (packed_start1, packed1) = if packable {
            lane_chunks(&lut1, &list1, &glev, n)
        } else {
            Default::default()
        };
        Codebook {
            n,
            nlev,
            mids,
            vals,
            lev: glev,
            levels,
            packed_start,
            packed,
            packed_start1,
            packed1,
            avx2: packable && avx2_available(),
            lut,
            list,
            lut1,
            list1,
            top,
        }
    }

    /// Best entry for targets `a` (n values) at reconstruction `sigma·(g + delta)`:
    /// (entry, weighted error). `short`: score only the nearest-distance neighbours.
    #[inline]
    fn search(&self, a: &[f32], w: &[f32], sigma: f32, delta: f32, short: bool) -> (u16, f32) {
        if self.n == 8 {
            self.search_g::<8>(a, w, sigma, delta, short, Targets::Plain)
        } else {
            self.search_g::<4>(a, w, sigma, delta, short, Targets::Plain)
        }
    }

    /// `search` for a grid of `N`-wide entries (`N == self.n`), the targets derived from `x`.
    #[inline(always)]
    fn search_g<const N: usize>(
        &self,
        x: &[f32],
        w: &[f32],
        sigma: f32,
        delta: f32,
        short: bool,
        targets: Targets,
    ) -> (u16, f32) {
        let x: &[f32; N] = x[..N].try_into().expect("group");
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            let w: &[f32; N] = w[..N].try_into().expect("group");
            // SAFETY: `avx2` is true only where the CPU has AVX2.
            return unsafe { self.search_avx2::<N>(x, w, sigma, delta, short, targets) };
        }
        let a: [f32; N] = core::array::from_fn(|j| targets.of(x[j], j));
        self.search_n::<N>(&a, w, sigma, delta, short)
    }

    /// `search_n::<N>` with AVX2, the same result bit for bit: the key from the same
    /// roundings, every candidate's error as the sum of its `N` per-element table entries (the
    /// same operations as a direct evaluation) in `tree_sum`'s order, 8 candidates per step.
    /// Each lane keeps its first strict minimum; lanes are merged by (error, list position),
    /// which is the scalar loop's first least error (`<`, so NaN never wins).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn search_avx2<const N: usize>(
        &self,
        x: &[f32; N],
        w: &[f32; N],
        sigma: f32,
        delta: f32,
        short: bool,
        targets: Targets,
    ) -> (u16, f32) {
        use std::arch::x86_64::*;
        // The targets are formed in registers from the caller's row (a vector load of values
        // just stored one by one would stall on store forwarding).
        let xv = if N == 8 {
            _mm256_loadu_ps(x.as_ptr())
        } else {
            _mm256_set_m128(_mm_setzero_ps(), _mm_loadu_ps(x.as_ptr()))
        };
        let av = match targets {
            Targets::Plain => xv,
            Targets::Abs { flip } => {
                let sign = _mm256_set1_ps(-0.0);
                let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
                let hit = _mm256_cmpeq_epi32(
                    _mm256_and_si256(_mm256_set1_epi32(i32::from(flip)), bits),
                    bits,
                );
                let abs = _mm256_andnot_ps(sign, xv);
                _mm256_xor_ps(abs, _mm256_and_ps(_mm256_castsi256_ps(hit), sign))
            }
        };
        let inv = 1.0 / sigma;
        let v = _mm256_sub_ps(
            _mm256_mul_ps(av, _mm256_set1_ps(inv)),
            _mm256_set1_ps(delta),
        );
        // Level index per element: how many midpoints it exceeds (compare masks are -1).
        let mut lev = _mm256_setzero_si256();
        for &m in &self.mids {
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_set1_ps(m));
            lev = _mm256_sub_epi32(lev, _mm256_castps_si256(gt));
        }
        let mut pow = [0i32; 8];
        let mut p = 1;
        for pj in pow.iter_mut().take(N) {
            *pj = p;
            p *= self.nlev as i32;
        }
        let mut parts = [0i32; 8];
        let pow = _mm256_loadu_si256(pow.as_ptr().cast());
        _mm256_storeu_si256(parts.as_mut_ptr().cast(), _mm256_mullo_epi32(lev, pow));
        let key = parts.iter().sum::<i32>() as usize;
        let (starts, chunks) = if short {
            (&self.packed_start1, &self.packed1)
        } else {
            (&self.packed_start, &self.packed)
        };
        let chunks = &chunks[starts[key] as usize..starts[key + 1] as usize];
        // Per element j, the error of each level: w_j·(t_j − sigma·level)² with
        // t_j = a_j − sigma·delta, in the scalar order ((w·d)·d). 8-wide grids have at most 4
        // levels, repeated in lanes 4..8, so an index's bit 2 (the next element's) is ignored.
        let mut t = [0f32; 8];
        _mm256_storeu_ps(
            t.as_mut_ptr(),
            _mm256_sub_ps(av, _mm256_set1_ps(sigma * delta)),
        );
        let levels = if N == 8 {
            let lv = _mm_loadu_ps(self.levels.as_ptr());
            _mm256_set_m128(lv, lv)
        } else {
            _mm256_loadu_ps(self.levels.as_ptr())
        };
        let scaled = _mm256_mul_ps(_mm256_set1_ps(sigma), levels);
        let mut tab = [_mm256_setzero_ps(); N];
        for (j, e) in tab.iter_mut().enumerate() {
            let d = _mm256_sub_ps(_mm256_set1_ps(t[j]), scaled);
            *e = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w[j]), d), d);
        }
        let mut best_v = _mm256_set1_ps(f32::INFINITY);
        let mut best_p = _mm256_set1_epi32(-1);
        let mut best_w = _mm256_setzero_si256();
        let mut pos = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let step = _mm256_set1_epi32(8);
        for chunk in chunks {
            let words = _mm256_loadu_si256(chunk.as_ptr().cast());
            // Element j's level index is in the low bits of `words >> (bits · j)`.
            macro_rules! err {
                ($j:expr, $shift:literal) => {
                    _mm256_permutevar8x32_ps(tab[$j], _mm256_srli_epi32::<$shift>(words))
                };
            }
            let sum = if N == 8 {
                _mm256_add_ps(
                    _mm256_add_ps(
                        _mm256_add_ps(err!(0, 0), err!(4 % N, 8)),
                        _mm256_add_ps(err!(1, 2), err!(5 % N, 10)),
                    ),
                    _mm256_add_ps(
                        _mm256_add_ps(err!(2, 4), err!(6 % N, 12)),
                        _mm256_add_ps(err!(3, 6), err!(7 % N, 14)),
                    ),
                )
            } else {
                _mm256_add_ps(
                    _mm256_add_ps(err!(0, 0), err!(2, 6)),
                    _mm256_add_ps(err!(1, 3), err!(3, 9)),
                )
            };
            let lt = _mm256_cmp_ps::<_CMP_LT_OQ>(sum, best_v);
            let lti = _mm256_castps_si256(lt);
            best_v = _mm256_blendv_ps(best_v, sum, lt);
            best_p = _mm256_blendv_epi8(best_p, pos, lti);
            best_w = _mm256_blendv_epi8(best_w, words, lti);
            pos = _mm256_add_epi32(pos, step);
        }
        // Merge the lanes: the least error, then among the lanes holding it the first list
        // position. Lanes that never won hold +inf and position -1; errors are never NaN here.
        let v = _mm256_min_ps(best_v, _mm256_permute2f128_ps::<1>(best_v, best_v));
        let v = _mm256_min_ps(v, _mm256_shuffle_ps::<0b0100_1110>(v, v));
        let least = _mm256_min_ps(v, _mm256_shuffle_ps::<0b1011_0001>(v, v));
        if _mm256_cvtss_f32(least) == f32::INFINITY {
            return (0, f32::INFINITY);
        }
        let holds = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(best_v, least));
        let p = _mm256_blendv_epi8(_mm256_set1_epi32(i32::MAX), best_p, holds);
        let p = _mm256_min_epi32(p, _mm256_permute2x128_si256::<1>(p, p));
        let p = _mm256_min_epi32(p, _mm256_shuffle_epi32::<0b0100_1110>(p));
        let first = _mm256_min_epi32(p, _mm256_shuffle_epi32::<0b1011_0001>(p));
        let lane = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(best_p, first)))
            .trailing_zeros() as i32;
        let at = _mm256_set1_epi32(lane);
        let word = _mm256_cvtsi256_si32(_mm256_permutevar8x32_epi32(best_w, at)) as u32;
        // The winning lane's own error (a zero keeps its sign, as in the scalar loop).
        let err = _mm256_cvtss_f32(_mm256_permutevar8x32_ps(best_v, at));
        ((word >> 16) as u16, err)
    }

    #[inline(always)]
    fn search_n<const N: usize>(
        &self,
        a: &[f32],
        w: &[f32],
        sigma: f32,
        delta: f32,
        short: bool,
    ) -> (u16, f32) {
        let a: &[f32; N] = a[..N].try_into().expect("group");
        let w: &[f32; N] = w[..N].try_into().expect("group");
        let inv = 1.0 / sigma;
        let mut key = 0usize;
        for j in (0..N).rev() {
            let v = a[j] * inv - delta;
            let lev: usize = self.mids.iter().map(|&m| usize::from(v > m)).sum();
            key = key * self.nlev + lev;
        }
        let (lut, list) = if short {
            (&self.lut1, &self.list1)
        } else {
            (&self.lut, &self.list)
        };
        let (start, len) = lut[key];
        let cands = &list[start as usize..(start + len) as usize];
        // Targets in value units with the delta folded in: x̂ − a = sigma·g − t.
        let t: [f32; N] = core::array::from_fn(|j| a[j] - sigma * delta);
        let mut best = (0u16, f32::INFINITY);
        if cands.len() <= self.nlev {
            for &i in cands {
                let g = &self.vals[usize::from(i)];
                let mut e = [0f32; N];
                for j in 0..N {
                    let d = t[j] - sigma * g[j];
                    e[j] = w[j] * d * d;
                }
                let e = tree_sum::<N>(&e);
                if e < best.1 {
                    best = (i, e);
                }
            }
            return best;
        }
        // Every candidate's per-element error is one of `nlev` values per element: tabulate
        // them once (the same operations as a direct evaluation, so the same bits) and sum
        // table entries per candidate.
        let mut tab = [[0f32; 8]; N];
        for (j, row) in tab.iter_mut().enumerate() {
            for (l, e) in row.iter_mut().enumerate().take(self.nlev) {
                let d = t[j] - sigma * self.levels[l];
                *e = w[j] * d * d;
            }
        }
        for &i in cands {
            let lv = &self.lev[usize::from(i)];
            let e: [f32; N] = core::array::from_fn(|j| tab[j][usize::from(lv[j] & 7)]);
            let e = tree_sum::<N>(&e);
            if e < best.1 {
                best = (i, e);
            }
        }
        best
    }
}

/// How a search's targets come from the row's values.
#[derive(Clone, Copy)]
enum Targets {
    /// The values themselves (IQ1 grids).
    Plain,
    /// Magnitudes, the elements of the bit set `flip` negated (sign-flip candidates).
    Abs { flip: u8 },
}

impl Targets {
    #[inline(always)]
    fn of(self, x: f32, j: usize) -> f32 {
        match self {
            Targets::Plain => x,
            Targets::Abs { flip } if flip >> j & 1 != 0 => -x.abs(),
            Targets::Abs { .. } => x.abs(),
        }
    }
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The candidate lists of every key packed for the AVX2 search (see `Codebook::packed`):
/// (first chunk per key and one past the last, chunks).
fn lane_chunks(
    lut: &[(u32, u32)],
    list: &[u16],
    glev: &[[u8; 8]],
    n: usize,
) -> (Vec<u32>, Vec<[u32; 8]>) {
    let bits = if n == 8 { 2 } else { 3 };
    let mut starts = Vec::with_capacity(lut.len() + 1);
    let mut chunks = Vec::new();
    for &(start, len) in lut {
        starts.push(chunks.len() as u32);
        let cands = &list[start as usize..(start + len) as usize];
        for part in cands.chunks(8) {
            chunks.push(core::array::from_fn(|lane| {
                let i = part[lane.min(part.len() - 1)];
                let levels = glev[usize::from(i)][..n]
                    .iter()
                    .enumerate()
                    .fold(0u32, |p, (j, &l)| p | u32::from(l) << (bits * j));
                levels | u32::from(i) << 16
            }));
        }
    }
    starts.push(chunks.len() as u32);
    (starts, chunks)
}

/// The fixed summation order of a group's per-element errors.
#[inline(always)]
fn tree_sum<const N: usize>(e: &[f32; N]) -> f32 {
    if N == 8 {
        ((e[0] + e[4]) + (e[1] + e[5])) + ((e[2] + e[6]) + (e[3] + e[7 % N]))
    } else {
        (e[0] + e[2 % N]) + (e[1] + e[3 % N])
    }
}

fn entries8(grid: &[u64]) -> Vec<[u8; 8]> {
    grid.iter().map(|g| g.to_le_bytes()).collect()
}

fn entries4(grid: &[u32]) -> Vec<[u8; 8]> {
    grid.iter()
        .map(|g| {
            let b = g.to_le_bytes();
            [b[0], b[1], b[2], b[3], 0, 0, 0, 0]
        })
        .collect()
}

const IQ2_LEVELS: ([u8; 3], [f32; 3]) = ([8, 25, 43], [8.0, 25.0, 43.0]);

fn book_iq2xxs() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(&entries8(&IQ2XXS_GRID), 8, &IQ2_LEVELS.0, &IQ2_LEVELS.1))
}

fn book_iq2xs() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(&entries8(&IQ2XS_GRID), 8, &IQ2_LEVELS.0, &IQ2_LEVELS.1))
}

fn book_iq2s() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(&entries8(&IQ2S_GRID), 8, &IQ2_LEVELS.0, &IQ2_LEVELS.1))
}

fn book_iq3xxs() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| {
        let bytes = [4, 12, 20, 28, 36, 44, 52, 62];
        let vals = bytes.map(f32::from);
        Codebook::build(&entries4(&IQ3XXS_GRID), 4, &bytes, &vals)
    })
}

fn book_iq3s() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| {
        let bytes = [1, 3, 5, 7, 9, 11, 13, 15];
        let vals = bytes.map(f32::from);
        Codebook::build(&entries4(&IQ3S_GRID), 4, &bytes, &vals)
    })
}

fn book_iq1s() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(&entries8(&IQ1S_GRID), 8, &[0xff, 0, 1], &[-1.0, 0.0, 1.0]))
}

/// IQ1 delta magnitude (`IQ1S_DELTA` = `IQ1M_DELTA`).
const DELTA: f32 = 0.125;

#[derive(Clone, Copy)]
enum Kind {
    /// Magnitude grid with a sign bit per weight; `parity`: signs stored with even parity.
    Signed { parity: bool },
    /// IQ1 grid with a ±1/8 delta per sub-block (`per_group` false) or per group of 8.
    Iq1 { per_group: bool },
}

struct Spec {
    book: fn() -> &'static Codebook,
    /// Weights per scale code (32 or 16).
    unit: usize,
    ncodes: u32,
    /// The stored sub-block scale, exactly as ggml computes it from `d` and the code.
    db: fn(f32, u32) -> f32,
    kind: Kind,
    /// Phase-1 coarse trial factors: `max|x|` at `f` × the top level.
    sweep: &'static [f32],
    /// Phase 1 also tries the best coarse factor ± 0.1.
    fine: bool,
}

/// The full phase-1 sweep (the fast types: IQ3_XXS, IQ3_S, IQ2_XS, IQ1_M).
const SWEEP: &[f32] = &[0.6, 0.9, 1.2, 1.5, 1.8, 2.1];

/// One group of 8 weights: grid entries (two for 4-wide grids), sign byte, delta sign.
#[derive(Clone, Copy, Default)]
struct Group {
    idx: [u16; 2],
    signs: u8,
    delta_neg: bool,
}

/// Result of assigning one scale unit at a given scale.
#[derive(Clone, Copy, Default)]
struct UnitFit {
    err: f32,
    /// Σ w·x·b and Σ w·b² with `x̂ = scale·b` (least-squares re-fit of the scale); summed in
    /// the phase-1 sweep only (`unit_stats` gives them for a phase-2 fit).
    sxb: f32,
    sbb: f32,
    groups: [Group; 4],
}

/// Best entries and signs for a group of 8 signed weights at scale `sigma`:
/// (group, error, basis values `b` with `x̂ = sigma·b`).
fn search_signed(
    book: &Codebook,
    x: &[f32],
    w: &[f32],
    sigma: f32,
    parity: bool,
    fast: bool,
) -> (Group, f32) {
    if book.n == 8 {
        search_signed_n::<8>(book, x, w, sigma, parity, fast)
    } else {
        search_signed_n::<4>(book, x, w, sigma, parity, fast)
    }
}

/// `search_signed` for a grid of `N`-wide entries (`N == book.n`).
#[inline(always)]
fn search_signed_n<const N: usize>(
    book: &Codebook,
    x: &[f32],
    w: &[f32],
    sigma: f32,
    parity: bool,
    fast: bool,
) -> (Group, f32) {
    let flips = if fast { 1 } else { FLIPS };
    let n = N;
    let parts = 8 / n;
    let mut a = [0f32; 8];
    let mut signs = 0u8;
    for j in 0..8 {
        a[j] = x[j].abs();
        if x[j] < 0.0 {
            signs |= 1 << j;
        }
    }
    // Half `h` of the group searched with the elements of `flip` (bits 0..8) negated.
    let half = |flip: u8, h: usize| {
        let flip = (u32::from(flip) >> (h * n)) as u8;
        book.search_g::<N>(
            &x[h * n..h * n + n],
            &w[h * n..],
            sigma,
            0.0,
            fast,
            Targets::Abs { flip },
        )
    };
    let mut res = [(0u16, 0f32); 2];
    for (h, r) in res.iter_mut().enumerate().take(parts) {
        *r = half(0, h);
    }
    let mut best = (res, signs);
    if parity && signs.count_ones() % 2 == 1 {
        // The `flips` elements of least w·|x|, in a stable sort's order (ties: lower index
        // first), by selection: no sort of all 8 per group.
        let cost: [f32; 8] = core::array::from_fn(|j| w[j] * a[j]);
        // Each element's least error over the levels, with its sign kept and flipped: a
        // candidate's error is a sum of one level error per element, and rounded addition is
        // monotone, so these sums bound a flip's result from below. A flip whose bound
        // already reaches the best flip's error cannot win (`<`) and is not searched.
        let mut bounds: Option<([f32; 8], [f32; 8])> = None;
        let mut taken = 0u8;
        let mut best_err = f32::INFINITY;
        for _ in 0..flips {
            let mut j = taken.trailing_ones() as usize;
            for k in j + 1..8 {
                if taken & (1 << k) == 0 && cost[k].total_cmp(&cost[j]).is_lt() {
                    j = k;
                }
            }
            taken |= 1 << j;
            let h = j / n;
            if best_err < f32::INFINITY {
                let (kept, flipped) =
                    *bounds.get_or_insert_with(|| least_level_errors(book, &a, w, sigma));
                let e: [f32; N] = core::array::from_fn(|i| {
                    let k = h * n + i;
                    if k == j {
                        flipped[k]
                    } else {
                        kept[k]
                    }
                });
                let bound = tree_sum::<N>(&e);
                let bound = if h == 0 {
                    bound + res[1].1
                } else {
                    res[0].1 + bound
                };
                if bound >= best_err {
                    continue;
                }
            }
            let mut rr = res;
            rr[h] = half(1 << j, h);
            let e = rr[0].1 + rr[1].1;
            if e < best_err {
                best_err = e;
                best = (rr, signs ^ (1 << j));
            }
        }
    }
    let (rr, signs) = best;
    let group = Group {
        idx: [rr[0].0, rr[1].0],
        signs,
        delta_neg: false,
    };
    (group, rr[0].1 + rr[1].1)
}

/// Each element's least error over the levels at scale `sigma`, with its sign kept (target
/// `a_j`) and flipped (`−a_j`), each level's error computed exactly as the search computes it.
fn least_level_errors(
    book: &Codebook,
    a: &[f32; 8],
    w: &[f32],
    sigma: f32,
) -> ([f32; 8], [f32; 8]) {
    let w: &[f32; 8] = w[..8].try_into().expect("group");
    #[cfg(target_arch = "x86_64")]
    if book.avx2 {
        // SAFETY: `avx2` is true only where the CPU has AVX2.
        return unsafe { least_level_errors_avx2(book, a, w, sigma) };
    }
    let least = |t: f32, j: usize| {
        book.levels[..book.nlev]
            .iter()
            .map(|&l| {
                let d = t - sigma * l;
                w[j] * d * d
            })
            .fold(f32::INFINITY, |m, e| if e < m { e } else { m })
    };
    (
        core::array::from_fn(|j| least(a[j], j)),
        core::array::from_fn(|j| least(-a[j], j)),
    )
}

/// `least_level_errors` with AVX2 (the same values: the same operations per level, and the
/// minimum keeps the running value unless a level's error is `<` it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn least_level_errors_avx2(
    book: &Codebook,
    a: &[f32; 8],
    w: &[f32; 8],
    sigma: f32,
) -> ([f32; 8], [f32; 8]) {
    use std::arch::x86_64::*;
    let t = _mm256_loadu_ps(a.as_ptr());
    let neg = _mm256_xor_ps(t, _mm256_set1_ps(-0.0));
    let wv = _mm256_loadu_ps(w.as_ptr());
    let mut kept = _mm256_set1_ps(f32::INFINITY);
    let mut flipped = kept;
    for &l in &book.levels[..book.nlev] {
        let sl = _mm256_set1_ps(sigma * l);
        let d = _mm256_sub_ps(t, sl);
        let e = _mm256_mul_ps(_mm256_mul_ps(wv, d), d);
        kept = _mm256_blendv_ps(kept, e, _mm256_cmp_ps::<_CMP_LT_OQ>(e, kept));
        let d = _mm256_sub_ps(neg, sl);
        let e = _mm256_mul_ps(_mm256_mul_ps(wv, d), d);
        flipped = _mm256_blendv_ps(flipped, e, _mm256_cmp_ps::<_CMP_LT_OQ>(e, flipped));
    }
    let (mut k, mut f) = ([0f32; 8], [0f32; 8]);
    _mm256_storeu_ps(k.as_mut_ptr(), kept);
    _mm256_storeu_ps(f.as_mut_ptr(), flipped);
    (k, f)
}

/// Best IQ1 entry for a group of 8 at scale `sigma` and delta `delta`.
fn search_iq1(
    book: &Codebook,
    x: &[f32],
    w: &[f32],
    sigma: f32,
    delta: f32,
    fast: bool,
) -> (Group, f32) {
    let (i, e) = book.search(x, w, sigma, delta, fast);
    let group = Group {
        idx: [i, 0],
        signs: 0,
        delta_neg: delta < 0.0,
    };
    (group, e)
}

/// Adds a group to a unit's fit; the re-fit sums only with `stats` (phase 2 needs them for
/// few units: `unit_stats` computes them there afterwards, in the same order).
#[inline(always)]
fn accumulate(
    fit: &mut UnitFit,
    k: usize,
    (g, e): (Group, f32),
    x: &[f32],
    w: &[f32],
    stats: Option<(&Codebook, Kind)>,
) {
    fit.groups[k] = g;
    fit.err += e;
    if let Some((book, kind)) = stats {
        add_stats(fit, &basis(book, kind, &g), x, w);
    }
}

/// The basis values `b` of a group (`x̂ = scale·b`): signed grid magnitudes, or IQ1 grid
/// values plus the group's delta.
#[inline(always)]
fn basis(book: &Codebook, kind: Kind, g: &Group) -> [f32; 8] {
    match kind {
        Kind::Signed { .. } => core::array::from_fn(|j| {
            let v = book.vals[usize::from(g.idx[j / book.n])][j % book.n];
            if g.signs & (1 << j) != 0 {
                -v
            } else {
                v
            }
        }),
        Kind::Iq1 { .. } => {
            let delta = if g.delta_neg { -DELTA } else { DELTA };
            let v = &book.vals[usize::from(g.idx[0])];
            core::array::from_fn(|j| v[j] + delta)
        }
    }
}

#[inline(always)]
fn add_stats(fit: &mut UnitFit, b: &[f32; 8], x: &[f32], w: &[f32]) {
    for j in 0..8 {
        fit.sxb += w[j] * x[j] * b[j];
        fit.sbb += w[j] * b[j] * b[j];
    }
}

/// The re-fit sums `(Σ w·x·b, Σ w·b²)` of a unit fitted without them, in `accumulate`'s order.
fn unit_stats(spec: &Spec, fit: &UnitFit, x: &[f32], w: &[f32]) -> (f32, f32) {
    let book = (spec.book)();
    let mut sums = UnitFit::default();
    for (k, g) in fit.groups[..x.len() / 8].iter().enumerate() {
        let b = basis(book, spec.kind, g);
        add_stats(&mut sums, &b, &x[8 * k..8 * k + 8], &w[8 * k..8 * k + 8]);
    }
    (sums.sxb, sums.sbb)
}

/// Assigns every group of a unit at scale `sigma`.
fn assign_unit(spec: &Spec, x: &[f32], w: &[f32], sigma: f32, fast: bool) -> UnitFit {
    assign_unit_until(spec, x, w, sigma, fast, |_| false).expect("never stopped")
}

/// `assign_unit`, given up (None) as soon as the running error satisfies `stop`, which must
/// be upward closed (true for an error, true for every larger one). Errors of groups are
/// never negative when no importance is (the caller checks), and rounded addition of a
/// non-negative term never decreases a sum, so a stopped fit's full error satisfies `stop`
/// too: the caller loses only fits it would have rejected.
#[inline(always)]
fn assign_unit_until(
    spec: &Spec,
    x: &[f32],
    w: &[f32],
    sigma: f32,
    fast: bool,
    stop: impl Fn(f32) -> bool,
) -> Option<UnitFit> {
    let book = (spec.book)();
    let ng = x.len() / 8;
    let stats = fast.then_some((book, spec.kind));
    match spec.kind {
        Kind::Signed { parity } => {
            let mut fit = UnitFit::default();
            for k in 0..ng {
                let (xs, ws) = (&x[8 * k..8 * k + 8], &w[8 * k..8 * k + 8]);
                accumulate(
                    &mut fit,
                    k,
                    search_signed(book, xs, ws, sigma, parity, fast),
                    xs,
                    ws,
                    stats,
                );
                if stop(fit.err) {
                    return None;
                }
            }
            Some(fit)
        }
        Kind::Iq1 { per_group: true } => {
            let mut fit = UnitFit::default();
            for k in 0..ng {
                let (xs, ws) = (&x[8 * k..8 * k + 8], &w[8 * k..8 * k + 8]);
                let p = search_iq1(book, xs, ws, sigma, DELTA, fast);
                let m = search_iq1(book, xs, ws, sigma, -DELTA, fast);
                accumulate(&mut fit, k, if m.1 < p.1 { m } else { p }, xs, ws, stats);
                if stop(fit.err) {
                    return None;
                }
            }
            Some(fit)
        }
        Kind::Iq1 { per_group: false } => {
            // The second delta also stops once it cannot beat the best so far (`<`); a fit
            // that beats no finite error leaves the infinite default, as it always did.
            let mut best = UnitFit {
                err: f32::INFINITY,
                ..UnitFit::default()
            };
            let mut completed = false;
            'delta: for delta in [DELTA, -DELTA] {
                let mut fit = UnitFit::default();
                for k in 0..ng {
                    let (xs, ws) = (&x[8 * k..8 * k + 8], &w[8 * k..8 * k + 8]);
                    accumulate(
                        &mut fit,
                        k,
                        search_iq1(book, xs, ws, sigma, delta, fast),
                        xs,
                        ws,
                        stats,
                    );
                    if stop(fit.err) || (completed && fit.err >= best.err) {
                        continue 'delta;
                    }
                }
                completed = true;
                if fit.err < best.err {
                    best = fit;
                }
            }
            completed.then_some(best)
        }
    }
}

/// Phase 1: the least-squares scale of a unit over a coarse-to-fine sweep of trial scales
/// (0 if all zero).
fn fit_unit(spec: &Spec, x: &[f32], w: &[f32]) -> f32 {
    /// `±FINE` around the best coarse trial factor, when the spec asks for it.
    const FINE: f32 = 0.1;
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        return 0.0;
    }
    let top = (spec.book)().top
        + if matches!(spec.kind, Kind::Iq1 { .. }) {
            DELTA
        } else {
            0.0
        };
    let swxx: f32 = x.iter().zip(w).map(|(x, w)| w * x * x).sum();
    // (predicted error, re-fitted scale, trial factor)
    let mut best = (f32::INFINITY, amax / top, 1.0f32);
    let trial = |f: f32, best: &mut (f32, f32, f32)| {
        let fit = assign_unit(spec, x, w, amax / (top * f), true);
        if fit.sbb > 0.0 && fit.sxb > 0.0 {
            let e = swxx - fit.sxb * fit.sxb / fit.sbb;
            if e < best.0 {
                *best = (e, fit.sxb / fit.sbb, f);
            }
        }
    };
    for &f in spec.sweep {
        trial(f, &mut best);
    }
    if spec.fine {
        let f = best.2;
        for f in [f - FINE, f + FINE] {
            trial(f, &mut best);
        }
    }
    best.1
}

/// A quantized super-block: f16 bits of `d`, scale codes per unit, groups.
struct SuperBlock {
    d: u16,
    codes: [u8; 16],
    groups: [Group; 32],
}

fn stored(d: f32) -> f32 {
    f16_to_f32(f32_to_f16(d))
}

fn quantize_superblock(spec: &Spec, x: &[f32], w: &[f32]) -> SuperBlock {
    let nunits = QK_K / spec.unit;
    let gpu = spec.unit / 8;
    let sig: Vec<f32> = (0..nunits)
        .map(|k| {
            let r = k * spec.unit..(k + 1) * spec.unit;
            fit_unit(spec, &x[r.clone()], &w[r])
        })
        .collect();
    let smax = sig.iter().fold(0f32, |m, &v| m.max(v));
    let mut out = SuperBlock {
        d: 0,
        codes: [0; 16],
        groups: [Group::default(); 32],
    };
    if smax <= 0.0 {
        return out;
    }
    let mults: Vec<f32> = (0..spec.ncodes).map(|s| (spec.db)(1.0, s)).collect();
    let d0 = smax / mults[spec.ncodes as usize - 1];
    // Exact total error at super-scale `d` (already f16-representable), with per-unit codes.
    // Gives up (None) once the running total reaches `limit`.
    let eval = |d: f32, limit: f32| {
        let mut total = 0f32;
        let mut codes = [0u8; 16];
        let mut fits = Vec::with_capacity(nunits);
        for k in 0..nunits {
            let r = k * spec.unit..(k + 1) * spec.unit;
            let (xs, ws) = (&x[r.clone()], &w[r]);
            let c = sig[k] / d;
            let hi = mults
                .iter()
                .position(|&m| m >= c)
                .unwrap_or(mults.len() - 1);
            let lo = hi.saturating_sub(1);
            // A code's fit is given up once it cannot be kept: it reaches the other code's
            // error, or the total reaches `limit` (valid where no importance is negative:
            // errors only grow as groups are added).
            let prune = ws.iter().all(|&v| v >= 0.0);
            let mut best: Option<(u8, UnitFit)> = None;
            for s in [lo, hi] {
                let db = (spec.db)(d, s as u32);
                if db <= 0.0 {
                    continue;
                }
                let kept = best.as_ref().map(|b| b.1.err);
                let fit = assign_unit_until(spec, xs, ws, db, false, |err| {
                    prune && (total + err >= limit || kept.is_some_and(|k| err >= k))
                });
                if let Some(fit) = fit {
                    if best.as_ref().is_none_or(|b| fit.err < b.1.err) {
                        best = Some((s as u8, fit));
                    }
                }
                if lo == hi {
                    break;
                }
            }
            let (s, fit) = best?;
            total += fit.err;
            if total >= limit {
                return None;
            }
            codes[k] = s;
            fits.push(fit);
        }
        Some((total, codes, fits))
    };
    let mut best: Option<(f32, f32, [u8; 16], Vec<UnitFit>)> = None;
    let consider = |d: f32, best: &mut Option<(f32, f32, [u8; 16], Vec<UnitFit>)>| {
        let d = stored(d);
        if !(d > 0.0 && d.is_finite()) {
            return;
        }
        let limit = best.as_ref().map_or(f32::INFINITY, |b| b.0);
        if let Some((total, codes, fits)) = eval(d, limit) {
            if best.as_ref().is_none_or(|b| total < b.0) {
                *best = Some((total, d, codes, fits));
            }
        }
    };
    consider(d0, &mut best);
    if let Some((_, _, codes, fits)) = best.clone() {
        let (mut num, mut den) = (0f32, 0f32);
        for (k, fit) in fits.iter().enumerate() {
            let m = mults[usize::from(codes[k])];
            let r = k * spec.unit..(k + 1) * spec.unit;
            let (sxb, sbb) = unit_stats(spec, fit, &x[r.clone()], &w[r]);
            num += m * sxb;
            den += m * m * sbb;
        }
        if den > 0.0 && num > 0.0 {
            consider(num / den, &mut best);
        }
    }
    match best {
        Some((_, d, codes, fits)) => {
            out.d = f32_to_f16(d);
            out.codes = codes;
            for (k, fit) in fits.iter().enumerate() {
                out.groups[k * gpu..(k + 1) * gpu].copy_from_slice(&fit.groups[..gpu]);
            }
        }
        // Out of f16 range (inf: the caller reports an invalid block) or below it (zero).
        None => out.d = f32_to_f16(d0),
    }
    out
}

fn quantize_with(
    spec: &Spec,
    x: &[f32],
    w: &[f32],
    out: &mut [u8],
    bytes: usize,
    pack: fn(&SuperBlock, &mut [u8]),
) {
    for ((xb, wb), ob) in x
        .chunks_exact(QK_K)
        .zip(w.chunks_exact(QK_K))
        .zip(out.chunks_exact_mut(bytes))
    {
        let sb = quantize_superblock(spec, xb, wb);
        ob.fill(0);
        pack(&sb, ob);
    }
}

fn iq2_db(d: f32, s: u32) -> f32 {
    d * (0.5 + s as f32) * 0.25
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// IQ2_XXS: `d`, then per sub-block 4 grid bytes and a u32 of four 7-bit sign patterns and
/// the 4-bit scale code in bits 28..32.
pub(super) fn quantize_iq2_xxs(x: &[f32], w: &[f32], out: &mut [u8]) {
    let spec = Spec {
        book: book_iq2xxs,
        unit: 32,
        ncodes: 16,
        db: iq2_db,
        kind: Kind::Signed { parity: true },
        sweep: &[0.9, 1.2, 1.5, 1.8],
        fine: false,
    };
    quantize_with(&spec, x, w, out, 66, |sb, b| {
        put_u16(b, 0, sb.d);
        for ib in 0..8 {
            let at = 2 + 8 * ib;
            let mut aux = u32::from(sb.codes[ib]) << 28;
            for l in 0..4 {
                let g = sb.groups[4 * ib + l];
                b[at + l] = g.idx[0] as u8;
                aux |= u32::from(g.signs & 127) << (7 * l);
            }
            put_u32(b, at + 4, aux);
        }
    });
}

/// IQ2_XS: `d`, 32 × u16 (9-bit grid index | 7-bit signs << 9), 8 bytes of two 4-bit codes.
pub(super) fn quantize_iq2_xs(x: &[f32], w: &[f32], out: &mut [u8]) {
    let spec = Spec {
        book: book_iq2xs,
        unit: 16,
        ncodes: 16,
        db: iq2_db,
        kind: Kind::Signed { parity: true },
        sweep: SWEEP,
        fine: true,
    };
    quantize_with(&spec, x, w, out, 74, |sb, b| {
        put_u16(b, 0, sb.d);
        for (g, grp) in sb.groups.iter().enumerate() {
            put_u16(b, 2 + 2 * g, grp.idx[0] | (u16::from(grp.signs & 127) << 9));
        }
        for ib in 0..8 {
            b[66 + ib] = sb.codes[2 * ib] | (sb.codes[2 * ib + 1] << 4);
        }
    });
}

/// IQ2_S: `d`, 32 low index bytes, 32 sign bytes, 8 bytes of 2-bit high index parts, codes.
pub(super) fn quantize_iq2_s(x: &[f32], w: &[f32], out: &mut [u8]) {
    let spec = Spec {
        book: book_iq2s,
        unit: 16,
        ncodes: 16,
        db: iq2_db,
        kind: Kind::Signed { parity: false },
        sweep: &[0.9, 1.2, 1.5, 1.8],
        fine: false,
    };
    quantize_with(&spec, x, w, out, 82, |sb, b| {
        put_u16(b, 0, sb.d);
        for (g, grp) in sb.groups.iter().enumerate() {
            b[2 + g] = grp.idx[0] as u8;
            b[34 + g] = grp.signs;
            b[66 + g / 4] |= (((grp.idx[0] >> 8) & 3) as u8) << (2 * (g % 4));
        }
        for ib in 0..8 {
            b[74 + ib] = sb.codes[2 * ib] | (sb.codes[2 * ib + 1] << 4);
        }
    });
}

/// IQ3_XXS: `d`, 64 grid bytes (one per 4 weights), per sub-block a u32 of four 7-bit sign
/// patterns and the 4-bit code.
pub(super) fn quantize_iq3_xxs(x: &[f32], w: &[f32], out: &mut [u8]) {
    let spec = Spec {
        book: book_iq3xxs,
        unit: 32,
        ncodes: 16,
        db: |d, s| d * (0.5 + s as f32) * 0.5,
        kind: Kind::Signed { parity: true },
        sweep: SWEEP,
        fine: true,
    };
    quantize_with(&spec, x, w, out, 98, |sb, b| {
        put_u16(b, 0, sb.d);
        for ib in 0..8 {
            let mut aux = u32::from(sb.codes[ib]) << 28;
            for l in 0..4 {
                let g = sb.groups[4 * ib + l];
                b[2 + 8 * ib + 2 * l] = g.idx[0] as u8;
                b[2 + 8 * ib + 2 * l + 1] = g.idx[1] as u8;
                aux |= u32::from(g.signs & 127) << (7 * l);
            }
            put_u32(b, 66 + 4 * ib, aux);
        }
    });
}

/// IQ3_S: `d`, 64 low index bytes, 8 bytes of ninth index bits, 32 sign bytes, 4 code bytes.
pub(super) fn quantize_iq3_s(x: &[f32], w: &[f32], out: &mut [u8]) {
    let spec = Spec {
        book: book_iq3s,
        unit: 32,
        ncodes: 16,
        db: |d, s| d * (1 + 2 * s) as f32,
        kind: Kind::Signed { parity: false },
        sweep: SWEEP,
        fine: true,
    };
    quantize_with(&spec, x, w, out, 110, |sb, b| {
        put_u16(b, 0, sb.d);
        for ib in 0..8 {
            for l in 0..4 {
                let g = sb.groups[4 * ib + l];
                for h in 0..2 {
                    let k = 2 * l + h;
                    b[2 + 8 * ib + k] = g.idx[h] as u8;
                    b[66 + ib] |= (((g.idx[h] >> 8) & 1) as u8) << k;
                }
                b[74 + 4 * ib + l] = g.signs;
            }
            b[106 + ib / 2] |= sb.codes[ib] << (4 * (ib % 2));
        }
    });
}

fn iq1_db(d: f32, s: u32) -> f32 {
    d * (2 * s + 1) as f32
}

/// IQ1_S: `d`, 32 low index bytes, per sub-block a u16: 3 high index bits per group, the
/// 3-bit code in bits 12..15, the delta sign in bit 15.
pub(super) fn quantize_iq1_s(x: &[f32], w: &[f32], out: &mut [u8]) {
    let spec = Spec {
        book: book_iq1s,
        unit: 32,
        ncodes: 8,
        db: iq1_db,
        kind: Kind::Iq1 { per_group: false },
        sweep: &[1.2, 1.5, 1.8, 2.1],
        fine: false,
    };
    quantize_with(&spec, x, w, out, 50, |sb, b| {
        put_u16(b, 0, sb.d);
        for ib in 0..8 {
            let mut qh = u16::from(sb.codes[ib]) << 12;
            for l in 0..4 {
                let g = sb.groups[4 * ib + l];
                b[2 + 4 * ib + l] = g.idx[0] as u8;
                qh |= (g.idx[0] >> 8) << (3 * l);
            }
            if sb.groups[4 * ib].delta_neg {
                qh |= 0x8000;
            }
            put_u16(b, 34 + 2 * ib, qh);
        }
    });
}

/// IQ1_M: 32 low index bytes, 16 bytes of per-group nibbles (3 high index bits, delta sign),
/// four u16 scale words (3-bit codes per 16 weights; the f16 `d` in their top nibbles).
pub(super) fn quantize_iq1_m(x: &[f32], w: &[f32], out: &mut [u8]) {
    let spec = Spec {
        book: book_iq1s,
        unit: 16,
        ncodes: 8,
        db: iq1_db,
        kind: Kind::Iq1 { per_group: true },
        sweep: SWEEP,
        fine: true,
    };
    quantize_with(&spec, x, w, out, 56, |sb, b| {
        let mut sc = [0u16; 4];
        for ib in 0..8 {
            for l in 0..4 {
                let g = sb.groups[4 * ib + l];
                b[4 * ib + l] = g.idx[0] as u8;
                let nib = ((g.idx[0] >> 8) & 7) as u8 | if g.delta_neg { 8 } else { 0 };
                b[32 + 2 * ib + l / 2] |= nib << (4 * (l % 2));
            }
            let s = u16::from(sb.codes[2 * ib]) | (u16::from(sb.codes[2 * ib + 1]) << 3);
            sc[ib / 2] |= s << (6 * (ib % 2));
        }
        for (i, s) in sc.iter_mut().enumerate() {
            *s |= ((sb.d >> (4 * i)) & 0xf) << 12;
            put_u16(b, 48 + 2 * i, *s);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// The AVX2 search and the flip bounds give the scalar results bit for bit (where the CPU
    /// has AVX2), over both list kinds, both delta signs, zero and uneven importance.
    #[test]
    fn avx2_search_matches_the_scalar_search() {
        let mut next = xorshift(0x5eed_cafe);
        for book in [
            book_iq2xxs(),
            book_iq2xs(),
            book_iq2s(),
            book_iq3xxs(),
            book_iq3s(),
            book_iq1s(),
        ] {
            if !book.avx2 {
                return;
            }
            let iq1 = book.levels[0] < 0.0;
            for trial in 0..20_000 {
                let a: [f32; 8] = core::array::from_fn(|_| {
                    let v = next() * book.top * 1.3;
                    if iq1 {
                        v * 2.0 - book.top * 1.3
                    } else {
                        v
                    }
                });
                let w: [f32; 8] = core::array::from_fn(|j| {
                    if trial % 7 == 0 && j % 3 == 0 {
                        0.0
                    } else {
                        next() * next() * 4.0
                    }
                });
                let sigma = 0.5 + next();
                let delta = if iq1 && trial % 2 == 0 {
                    -DELTA
                } else if iq1 {
                    DELTA
                } else {
                    0.0
                };
                let short = trial % 3 == 0;
                // Signed grids: the row's signs are random and one element may be flipped.
                let (x, targets) = if iq1 {
                    (a, Targets::Plain)
                } else {
                    let flip = if trial % 2 == 0 {
                        0
                    } else {
                        1u8 << (trial % book.n)
                    };
                    let x = core::array::from_fn(|j| if next() < 0.5 { -a[j] } else { a[j] });
                    (x, Targets::Abs { flip })
                };
                let a: [f32; 8] = core::array::from_fn(|j| targets.of(x[j], j % book.n));
                let (scalar, simd) = if book.n == 8 {
                    (
                        book.search_n::<8>(&a, &w, sigma, delta, short),
                        // SAFETY: `book.avx2` says the CPU has AVX2.
                        unsafe { book.search_avx2::<8>(&x, &w, sigma, delta, short, targets) },
                    )
                } else {
                    let (a4, x4, w4): (&[f32; 4], &[f32; 4], &[f32; 4]) = (
                        a[..4].try_into().unwrap(),
                        x[..4].try_into().unwrap(),
                        w[..4].try_into().unwrap(),
                    );
                    (
                        book.search_n::<4>(a4, w4, sigma, delta, short),
                        // SAFETY: as above.
                        unsafe { book.search_avx2::<4>(x4, w4, sigma, delta, short, targets) },
                    )
                };
                assert_eq!(scalar.0, simd.0, "entry, trial {trial}");
                assert_eq!(scalar.1.to_bits(), simd.1.to_bits(), "error, trial {trial}");
                if !iq1 {
                    // SAFETY: as above.
                    let simd = unsafe { least_level_errors_avx2(book, &a, &w, sigma) };
                    let mut scalar = ([0f32; 8], [0f32; 8]);
                    for j in 0..8 {
                        for (t, out) in [(a[j], &mut scalar.0[j]), (-a[j], &mut scalar.1[j])] {
                            *out = book.levels[..book.nlev]
                                .iter()
                                .map(|&l| {
                                    let d = t - sigma * l;
                                    w[j] * d * d
                                })
                                .fold(f32::INFINITY, |m, e| if e < m { e } else { m });
                        }
                    }
                    assert_eq!(scalar.0.map(f32::to_bits), simd.0.map(f32::to_bits));
                    assert_eq!(scalar.1.map(f32::to_bits), simd.1.map(f32::to_bits));
                }
            }
        }
    }

    #[test]
    fn lookup_lists_are_small_and_on_grid_entries_map_to_themselves() {
        for (name, book) in [
            ("iq2xxs", book_iq2xxs()),
            ("iq2xs", book_iq2xs()),
            ("iq2s", book_iq2s()),
            ("iq3xxs", book_iq3xxs()),
            ("iq3s", book_iq3s()),
            ("iq1s", book_iq1s()),
        ] {
            let max = book.lut.iter().map(|l| l.1).max().unwrap();
            let mean = book.list.len() as f64 / book.lut.len() as f64;
            println!(
                "{name}: {} keys, mean list {mean:.1}, max {max}",
                book.lut.len()
            );
            assert!(book.lut.iter().all(|l| l.1 >= 1));
        }
    }
}
