//! Token sampling for generation, in llama.cpp's default order: top-k, top-p, min-p,
//! temperature, then a draw from the remaining distribution (greedy when the temperature is 0).

/// Sampler settings (llama.cpp's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerParams {
    /// Temperature; <= 0 picks the most probable token.
    pub temp: f32,
    /// Keep the k most probable tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens less probable than min_p times the most probable (0 = none).
    pub min_p: f32,
    /// Random seed.
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
        }
    }
}

/// A seeded sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
    state: u64,
}

impl Sampler {
    /// A sampler with `params`.
    pub fn new(params: SamplerParams) -> Self {
        let state = params.seed ^ 0x9E37_79B9_7F4A_7C15;
        Sampler { params, state }
    }

    /// splitmix64, uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.temp <= 0.0 || cand.len() == 1 {
            return cand[0].0;
        }
        if p.top_k > 0 {
            cand.truncate(p.top_k.max(1));
        }
        let softmax = |c: &[(u32, f32)], t: f32| -> Vec<f64> {
            let m = c[0].1 as f64;
            let e: Vec<f64> = c
                .iter()
                .map(|x| ((x.1 as f64 - m) / t as f64).exp())
                .collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect()
        };
        if p.top_p < 1.0 {
            let pr = softmax(&cand, 1.0);
            let mut acc = 0.0;
            let mut keep = cand.len();
            for (i, q) in pr.iter().enumerate() {
                acc += q;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
        }
        if p.min_p > 0.0 {
            let pr = softmax(&cand, 1.0);
            let thr = pr[0] * p.min_p as f64;
            let keep = pr.iter().take_while(|&&q| q >= thr).count().max(1);
            cand.truncate(keep);
        }
        let pr = softmax(&cand, p.temp);
        let mut u = self.uniform();
        for (c, q) in cand.iter().zip(&pr) {
            if u < *q {
                return c.0;
            }
            u -= q;
        }
        cand[cand.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_filters() {
        let logits = [0.0, 5.0, 4.9, -3.0];
        let mut s = Sampler::new(SamplerParams {
            temp: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits), 1);
        let mut s = Sampler::new(SamplerParams {
            top_k: 2,
            seed: 7,
            ..Default::default()
        });
        for _ in 0..50 {
            let t = s.sample(&logits);
            assert!(t == 1 || t == 2);
        }
    }
}
