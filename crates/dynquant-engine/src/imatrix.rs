//! Importance-matrix collection: for every matrix product with a stored weight, the sum over
//! tokens of each input column's squared activation, and the number of tokens, as
//! llama-imatrix collects them (the f32 activations, before any rounding to the dot type).

use std::collections::BTreeMap;
use std::sync::Mutex;

use dynquant_core::imatrix::{Imatrix, ImatrixEntry};

use crate::matmul::Weight;
use crate::model::MatmulObserver;

#[derive(Debug, Default)]
struct Sums {
    sum2: Vec<f64>,
    count: u64,
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
                .map(|(name, s)| ImatrixEntry {
                    name: name.clone(),
                    n_per_mat: s.sum2.len(),
                    in_sum2: s.sum2.iter().map(|&v| v as f32).collect(),
                    counts: vec![s.count as f32],
                })
                .collect(),
        }
    }
}

impl MatmulObserver for Collector {
    fn observe(&self, w: &Weight<'_>, x: &[f32], n_tok: usize) {
        if self.skip.iter().any(|s| s == &w.name) {
            return;
        }
        let k = w.cols;
        let mut local = vec![0f64; k];
        for row in x.chunks_exact(k).take(n_tok) {
            for (s, &v) in local.iter_mut().zip(row) {
                *s += (v * v) as f64;
            }
        }
        let mut sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        let e = sums.entry(w.name.clone()).or_insert_with(|| Sums {
            sum2: vec![0.0; k],
            count: 0,
        });
        e.sum2.iter_mut().zip(&local).for_each(|(a, b)| *a += b);
        e.count += n_tok as u64;
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
