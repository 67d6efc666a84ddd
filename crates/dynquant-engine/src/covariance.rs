//! Input covariance collection: for every matrix product with a stored weight, the sum over
//! tokens of `x xᵀ` per matrix (expert) and the tokens each matrix saw, the full second moment
//! whose diagonal the imatrix keeps ([`crate::imatrix`]). Written as a covariance file
//! (`dynquant_gguf::covariance`) for the error-feedback quantizer.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rayon::prelude::*;

use dynquant_gguf::covariance::CovarianceEntry;

use crate::block::MatmulObserver;
use crate::matmul::Weight;

#[derive(Debug)]
struct Sums {
    /// Upper triangles (row-major, `k²` slots per matrix, the lower half unused until
    /// [`CovarianceCollector::entries`] mirrors it).
    sums: Vec<f64>,
    k: usize,
    counts: Vec<u64>,
}

/// Collects `Σ x xᵀ` per weight and matrix (a [`MatmulObserver`]).
#[derive(Debug, Default)]
pub struct CovarianceCollector {
    sums: Mutex<BTreeMap<String, Sums>>,
    /// Weight names not collected.
    pub skip: Vec<String>,
}

impl CovarianceCollector {
    /// A collector that ignores the weights named in `skip`.
    pub fn new(skip: Vec<String>) -> Self {
        CovarianceCollector {
            sums: Mutex::new(BTreeMap::new()),
            skip,
        }
    }

    /// The collected sums, symmetric, as covariance entries sorted by name.
    pub fn entries(&self) -> Vec<CovarianceEntry> {
        let sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        sums.iter()
            .map(|(name, s)| {
                let k = s.k;
                let mut out = vec![0f32; s.sums.len()];
                for (dst, src) in out.chunks_exact_mut(k * k).zip(s.sums.chunks_exact(k * k)) {
                    for i in 0..k {
                        for j in i..k {
                            let v = src[i * k + j] as f32;
                            dst[i * k + j] = v;
                            dst[j * k + i] = v;
                        }
                    }
                }
                CovarianceEntry {
                    name: name.clone(),
                    n_per_mat: k,
                    sums: out,
                    counts: s.counts.iter().map(|&c| c as f32).collect(),
                }
            })
            .collect()
    }

    fn record(&self, w: &Weight<'_>, mat: usize, n_mat: usize, x: &[f32], n_tok: usize) {
        if self.skip.iter().any(|s| s == &w.name) || n_tok == 0 {
            return;
        }
        let k = w.cols;
        // Columns as contiguous token vectors, so each sum is one dot product.
        let mut cols = vec![0f32; k * n_tok];
        for (t, row) in x.chunks_exact(k).take(n_tok).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                cols[c * n_tok + t] = v;
            }
        }
        // Upper triangle, rows in parallel; each sum is in a fixed order (deterministic).
        let mut local = vec![0f64; k * k];
        local.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
            let a = &cols[i * n_tok..(i + 1) * n_tok];
            for (j, slot) in row.iter_mut().enumerate().skip(i) {
                let b = &cols[j * n_tok..(j + 1) * n_tok];
                *slot = dot_f64(a, b);
            }
        });
        let mut sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        let e = sums.entry(w.name.clone()).or_insert_with(|| Sums {
            sums: vec![0.0; k * k * n_mat],
            k,
            counts: vec![0; n_mat],
        });
        if e.k != k || e.counts.len() != n_mat {
            return;
        }
        e.sums[mat * k * k..(mat + 1) * k * k]
            .iter_mut()
            .zip(&local)
            .for_each(|(a, b)| *a += b);
        e.counts[mat] += n_tok as u64;
    }
}

/// `Σ a·b` with f32 products summed in eight f64 lanes (vectorizes; fixed order).
fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += f64::from(x[l]) * f64::from(y[l]);
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += f64::from(*x) * f64::from(*y);
    }
    s
}

impl MatmulObserver for CovarianceCollector {
    fn observe(&self, w: &Weight<'_>, x: &[f32], n_tok: usize) {
        self.record(w, 0, 1, x, n_tok);
    }

    fn observe_expert(
        &self,
        w: &Weight<'_>,
        expert: usize,
        n_expert: usize,
        x: &[f32],
        n_tok: usize,
    ) {
        if expert < n_expert {
            self.record(w, expert, n_expert, x, n_tok);
        }
    }
}
