//! Causal GQA attention over a KV cache, with llama.cpp's CPU flash-attention numerics and an
//! optional sliding window. Keys and values are stored in f16 (llama.cpp's default cache).
//! ggml-cpu has two paths (ops.cpp, `ggml_compute_forward_flash_attn_ext_f16`): batches of at
//! least [`Q_TILE`] queries take the tiled path (queries stay f32, f32 accumulators); smaller
//! batches (generation) take the one-chunk path (queries rounded to f16, the value accumulator
//! rounded to f16 after every step). Both are reproduced bit for bit in `fa`; exact numerics
//! (f32 cache) use a plain online softmax here.

use half::f16;
use rayon::prelude::*;

use crate::config::Config;

/// Keys and values of one layer for every cached position.
#[derive(Debug, Clone)]
pub struct KvCache {
    k_dim: usize,
    v_dim: usize,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Values are the first `v_dim` entries of each cached key row (MLA: the latent), not
    /// stored separately (llama.cpp's K-only cache with V a view of K).
    v_in_k: bool,
}

#[inline]
fn h(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

impl KvCache {
    /// An empty cache for rows of `k_dim` key and `v_dim` value values.
    pub fn new(k_dim: usize, v_dim: usize) -> Self {
        KvCache {
            k_dim,
            v_dim,
            k: Vec::new(),
            v: Vec::new(),
            v_in_k: false,
        }
    }

    /// A cache whose values are the first `v_dim` entries of each key row of `k_dim`
    /// (one key/value head); [`append`](Self::append) then takes no values.
    pub fn values_in_keys(k_dim: usize, v_dim: usize) -> Self {
        KvCache {
            v_in_k: true,
            ..KvCache::new(k_dim, v_dim.min(k_dim))
        }
    }

    /// The cached values and their row stride (a view of the keys when they live there).
    fn values(&self) -> (&[f32], usize) {
        if self.v_in_k {
            (&self.k, self.k_dim)
        } else {
            (&self.v, self.v_dim)
        }
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.k.len() / self.k_dim.max(1)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.k.is_empty()
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.k.clear();
        self.v.clear();
    }

    /// Appends rows of keys and values (rounded to f16 as llama.cpp's default cache stores
    /// them, unless `exact`); `v` is ignored when the values live in the keys.
    pub fn append(&mut self, k: &[f32], v: &[f32], exact: bool) {
        let v = if self.v_in_k { &[][..] } else { v };
        if exact {
            self.k.extend_from_slice(k);
            self.v.extend_from_slice(v);
        } else {
            append_f16(&mut self.k, k);
            append_f16(&mut self.v, v);
        }
    }
}

/// `dst` extended by `src` rounded to f16, a batch's rows rounded by the thread pool.
fn append_f16(dst: &mut Vec<f32>, src: &[f32]) {
    if src.len() < crate::ops::PAR_MIN_VALUES {
        dst.extend(src.iter().map(|&x| h(x)));
        return;
    }
    let start = dst.len();
    dst.resize(start + src.len(), 0.0);
    dst[start..]
        .par_iter_mut()
        .with_min_len(crate::ops::PAR_MIN_VALUES / 4)
        .zip(src)
        .for_each(|(d, &x)| *d = h(x));
}

pub use crate::fa::Q_TILE;

/// Attention outputs (`n_tok` rows of `n_head * head_dim_v`) for queries `q` (`n_tok` rows of
/// `n_head * head_dim_k`, RoPE applied) at positions `p0..p0 + n_tok`, whose keys and values
/// are already in `cache`.
pub fn attend(
    c: &Config,
    q: &[f32],
    cache: &KvCache,
    p0: usize,
    n_tok: usize,
    window: Option<usize>,
    exact: bool,
) -> Vec<f32> {
    attend_with_sinks(c, q, cache, p0, n_tok, window, None, exact)
}

/// [`attend`] with per-head attention sinks (gpt-oss): `sinks[h]` is a logit that joins head
/// `h`'s softmax with no value, as ggml's flash attention applies it after the keys.
#[allow(clippy::too_many_arguments)]
pub fn attend_with_sinks(
    c: &Config,
    q: &[f32],
    cache: &KvCache,
    p0: usize,
    n_tok: usize,
    window: Option<usize>,
    sinks: Option<&[f32]>,
    exact: bool,
) -> Vec<f32> {
    let (dk, dv) = (c.head_dim_k, c.head_dim_v);
    let od = c.n_head * dv;
    let mut out = vec![0f32; n_tok * od];
    if !exact {
        let (values, v_stride) = cache.values();
        let shape = crate::fa::Shape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            dk,
            dv,
            k_stride: cache.k_dim,
            v_stride,
            scale: c.kq_scale,
            window,
            sinks,
        };
        let flavor = crate::cpu::flavor();
        crate::fa::attend(&shape, flavor, q, &cache.k, values, p0, n_tok, &mut out);
        return out;
    }
    // fused multiply-adds where the reproduced ggml build fuses, AVX2 instructions when allowed
    let (fused, simd) = (crate::cpu::fused(), crate::cpu::simd());
    out.par_chunks_mut(od).enumerate().for_each(|(t, orow)| {
        let job = Row {
            c,
            q: &q[t * c.n_head * dk..(t + 1) * c.n_head * dk],
            cache,
            pos: p0 + t,
            window,
            sinks,
        };
        match (fused, simd) {
            (true, true) => job.run_fma(orow),
            (true, false) => job.run::<true>(orow),
            (false, _) => job.run::<false>(orow),
        }
    });
    out
}

/// One query token's attention over the cache.
struct Row<'a> {
    c: &'a Config,
    q: &'a [f32],
    cache: &'a KvCache,
    pos: usize,
    window: Option<usize>,
    sinks: Option<&'a [f32]>,
}

impl Row<'_> {
    fn run_fma(&self, orow: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn inner(r: &Row<'_>, orow: &mut [f32]) {
                r.run::<true>(orow)
            }
            // SAFETY: only called when `cpu::simd` detected AVX2 and FMA at runtime.
            unsafe { inner(self, orow) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.run::<false>(orow)
    }

    #[inline(always)]
    fn run<const FMA: bool>(&self, orow: &mut [f32]) {
        let c = self.c;
        let cache = self.cache;
        let (dk, dv) = (c.head_dim_k, c.head_dim_v);
        let group = c.n_head / c.n_head_kv;
        let pos = self.pos;
        let madd = |a: f32, b: f32, acc: f32| if FMA { a.mul_add(b, acc) } else { a * b + acc };
        let lo = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let mut qh = vec![0f32; dk];
        let mut acc = vec![0f32; dv];
        for head in 0..c.n_head {
            let kvh = head / group;
            let qsrc = &self.q[head * dk..(head + 1) * dk];
            for (d, &s) in qh.iter_mut().zip(qsrc) {
                *d = s;
            }
            acc.fill(0.0);
            let mut m = f32::NEG_INFINITY;
            let mut sum = 0f32;
            for j in lo..=pos {
                let kr = &cache.k[j * cache.k_dim + kvh * dk..][..dk];
                let mut lanes = [0f32; 8];
                let mut i = 0;
                while i + 8 <= dk {
                    for l in 0..8 {
                        lanes[l] = madd(qh[i + l], kr[i + l], lanes[l]);
                    }
                    i += 8;
                }
                let mut dot = lanes.iter().sum::<f32>();
                while i < dk {
                    dot = madd(qh[i], kr[i], dot);
                    i += 1;
                }
                let s = dot * c.kq_scale;
                let (mut ms, mut vs) = (1f32, 1f32);
                if s > m {
                    let old = m;
                    m = s;
                    ms = (old - m).exp();
                    for a in acc.iter_mut() {
                        *a *= ms;
                    }
                } else {
                    vs = (s - m).exp();
                }
                let (values, v_stride) = cache.values();
                let vr = &values[j * v_stride + kvh * dv..][..dv];
                for (a, &x) in acc.iter_mut().zip(vr) {
                    *a = madd(x, vs, *a);
                }
                sum = sum * ms + vs;
            }
            if let Some(s) = self.sinks.map(|s| s[head]) {
                // the sink joins the softmax as a key with no value
                crate::fa::add_sink(s, m, &mut sum, &mut acc);
            }
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            for (o, a) in orow[head * dv..(head + 1) * dv].iter_mut().zip(&acc) {
                *o = a * inv;
            }
        }
    }
}
