//! Importance-matrix collection: for every matrix product with a stored weight, the sum over
//! tokens of each input column's squared activation, and the number of tokens, as
//! llama-imatrix collects them (the f32 activations, before any rounding to the dot type).
//!
//! Expert tensors (`*_exps`, llama.cpp's `mul_mat_id`) get one row of sums and one count per
//! expert: `in_sum2` of ne `{ne0, n_expert}` and `counts` of ne `{1, n_expert}`, where an
//! expert's count is the number of (token, slot) pairs routed to it
//! (tools/imatrix/imatrix.cpp, `collect_imatrix`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use dynquant_gguf::imatrix::{Imatrix, ImatrixEntry};

use crate::block::MatmulObserver;
use crate::matmul::Weight;

#[derive(Debug, Default)]
struct Sums {
    /// `counts.len()` rows of `n_per_mat` sums.
    sum2: Vec<f64>,
    n_per_mat: usize,
    /// Per matrix (expert); one for a dense weight.
    counts: Vec<u64>,
    /// The matrices of a batched (not routed) product: one count for the tensor.
    batched: bool,
}

impl Sums {
    fn add(&mut self, mat: usize, x: &[f32], n_tok: usize) {
        let k = self.n_per_mat;
        let dst = &mut self.sum2[mat * k..(mat + 1) * k];
        for row in x.chunks_exact(k).take(n_tok) {
            for (s, &v) in dst.iter_mut().zip(row) {
                *s += (v * v) as f64;
            }
        }
        self.counts[mat] += n_tok as u64;
    }
}

/// An expert tensor some of whose experts saw no token (llama-imatrix warns of "partial
/// data"; such experts are stored with zero sums and count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusedExperts {
    /// Weight name.
    pub name: String,
    /// Experts with a zero count.
    pub experts: Vec<usize>,
    /// Experts of the tensor.
    pub n_expert: usize,
}

/// Collects squared activations per weight (a [`MatmulObserver`]).
#[derive(Debug, Default)]
pub struct Collector {
    sums: Mutex<BTreeMap<String, Sums>>,
    /// Weight names not collected (llama-imatrix skips the output projection by default).
    pub skip: Vec<String>,
}

impl Collector {
    /// A collector that ignores the weights named in `skip`.
    pub fn new(skip: Vec<String>) -> Self {
        Collector {
            sums: Mutex::new(BTreeMap::new()),
            skip,
        }
    }

    /// The collected data as an imatrix.
    pub fn to_imatrix(&self, datasets: Vec<String>, chunk_count: u32, chunk_size: u32) -> Imatrix {
        let sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        Imatrix {
            datasets,
            chunk_count,
            chunk_size,
            entries: sums
                .iter()
                .map(|(name, s)| {
                    // llama-imatrix: a batched 3-D product is one entry of ne0 * n_mat sums
                    // with a single count (tools/imatrix/imatrix.cpp, collect_imatrix).
                    let one = s.batched && s.counts.windows(2).all(|c| c[0] == c[1]);
                    ImatrixEntry {
                        name: name.clone(),
                        n_per_mat: if one { s.sum2.len() } else { s.n_per_mat },
                        in_sum2: s.sum2.iter().map(|&v| v as f32).collect(),
                        counts: if one {
                            s.counts
                                .first()
                                .map(|&c| vec![c as f32])
                                .unwrap_or_default()
                        } else {
                            s.counts.iter().map(|&c| c as f32).collect()
                        },
                    }
                })
                .collect(),
        }
    }

    /// Expert tensors with experts that no token was routed to.
    pub fn unused_experts(&self) -> Vec<UnusedExperts> {
        let sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        sums.iter()
            .filter(|(_, s)| s.counts.len() > 1)
            .filter_map(|(name, s)| {
                let experts: Vec<usize> =
                    (0..s.counts.len()).filter(|&e| s.counts[e] == 0).collect();
                (!experts.is_empty()).then(|| UnusedExperts {
                    name: name.clone(),
                    experts,
                    n_expert: s.counts.len(),
                })
            })
            .collect()
    }

    fn record(
        &self,
        w: &Weight<'_>,
        mat: usize,
        n_mat: usize,
        batched: bool,
        x: &[f32],
        n_tok: usize,
    ) {
        if self.skip.iter().any(|s| s == &w.name) {
            return;
        }
        let k = w.cols;
        // Square outside the lock, then add.
        let mut local = Sums {
            sum2: vec![0.0; k],
            n_per_mat: k,
            counts: vec![0],
            batched: false,
        };
        local.add(0, x, n_tok);
        let mut sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        let e = sums.entry(w.name.clone()).or_insert_with(|| Sums {
            sum2: vec![0.0; k * n_mat],
            n_per_mat: k,
            counts: vec![0; n_mat],
            batched,
        });
        if e.n_per_mat != k || e.counts.len() != n_mat {
            // A name seen with another shape: keep the first (names are unique per model).
            return;
        }
        e.sum2[mat * k..(mat + 1) * k]
            .iter_mut()
            .zip(&local.sum2)
            .for_each(|(a, b)| *a += b);
        e.counts[mat] += n_tok as u64;
    }
}

impl MatmulObserver for Collector {
    fn observe(&self, w: &Weight<'_>, x: &[f32], n_tok: usize) {
        self.record(w, 0, 1, false, x, n_tok);
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
            self.record(w, expert, n_expert, false, x, n_tok);
        }
    }

    fn observe_batched(&self, w: &Weight<'_>, mat: usize, n_mat: usize, x: &[f32], n_tok: usize) {
        if mat < n_mat {
            self.record(w, mat, n_mat, true, x, n_tok);
        }
    }
}

/// Per-tensor summary statistics of an imatrix (llama-imatrix `--show-statistics`).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorStats {
    /// Weight name.
    pub name: String,
    /// Sum of all mean squared activations.
    pub sum: f64,
    /// Smallest per-column mean.
    pub min: f64,
    /// Largest per-column mean.
    pub max: f64,
    /// Mean of the per-column means.
    pub mean: f64,
    /// Standard deviation of the per-column means.
    pub std: f64,
    /// Columns.
    pub n: usize,
    /// Tokens seen.
    pub count: f64,
}

/// Statistics of every entry (first matrix of each; per-column mean = sum2 / count).
pub fn statistics(im: &Imatrix) -> Vec<TensorStats> {
    im.entries
        .iter()
        .map(|e| {
            let count = e.counts.iter().map(|&c| c as f64).sum::<f64>();
            let v: Vec<f64> = (0..e.n_mat())
                .flat_map(|m| e.weights(m))
                .map(|w| w as f64)
                .collect();
            let n = v.len().max(1) as f64;
            let sum: f64 = v.iter().sum();
            let mean = sum / n;
            let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
            TensorStats {
                name: e.name.clone(),
                sum,
                min: v.iter().copied().fold(f64::INFINITY, f64::min),
                max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                mean,
                std: var.sqrt(),
                n: v.len(),
                count,
            }
        })
        .collect()
}
