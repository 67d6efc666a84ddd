//! The mixture-of-experts feed-forward (llama's Mixtral layout, qwen3moe, deepseek2), with the
//! routing of llama.cpp's `build_moe_ffn` (src/llama-graph.cpp):
//!
//! 1. router logits `ffn_gate_inp · h` (plus `ffn_gate_inp.bias`, gpt-oss), turned into
//!    probabilities by softmax or sigmoid (gpt-oss: left as logits, see [`Gating::SoftmaxWeight`]);
//! 2. selection scores = probabilities + `exp_probs_b` (the bias only steers selection);
//! 3. group-limited routing: experts in `n_group` equal groups, a group scored by the sum of
//!    its two best selection scores, all but the best `n_group_used` groups masked out;
//! 4. the `n_expert_used` best experts; their weights are the unbiased probabilities,
//!    optionally divided by their sum (clamped to 2^-14) and multiplied by a scale
//!    (gpt-oss: the softmax of the selected logits);
//! 5. each selected expert's GLU, `down_e(act(gate_e(h)) * up_e(h))` (each product plus its
//!    expert's bias when the model has them, gpt-oss), times its weight,
//!    summed over the token's slots in selection order (as llama.cpp adds the slot views);
//! 6. plus the shared experts' dense GLU when present (deepseek2).
//!
//! Expert tensors stay in their stored 3-D layout (ggml `{cols, rows, n_expert}`): each expert
//! is a 2-D [`Weight`] view of its slice of the mapped bytes. Tokens are batched per expert (the
//! rows routed to expert e gathered, one matrix product per expert), and every output value is
//! computed in one fixed order, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::block::BlockCtx;
use crate::config::{Config, Gating, MoeConfig};
use crate::error::{EngineError, Result};
use crate::ffn::DenseFfn;
use crate::loader::Loader;
use crate::matmul::Weight;

/// The expert weights of one block.
#[derive(Debug)]
pub(crate) struct MoeFfn<'a> {
    router: Weight<'a>,
    probs_bias: Option<Vec<f32>>,
    /// The router's and the experts' biases, when the model has them (gpt-oss).
    biases: Option<Box<MoeBiases>>,
    gate: Vec<Weight<'a>>,
    up: Vec<Weight<'a>>,
    down: Vec<Weight<'a>>,
    shared: Option<DenseFfn<'a>>,
}

/// gpt-oss's biases: on the router logits, and per expert on the gate, up and down products
/// (`[n_expert][rows]`).
#[derive(Debug)]
pub(crate) struct MoeBiases {
    router: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

/// The experts a token goes to (selection order) and their weights.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Smallest normal f16 (2^-14 = 6.103515625e-5), llama.cpp's clamp of the weight sum before
/// normalizing.
const MIN_WEIGHT_SUM: f32 = 1.0 / 16384.0;

/// Indices of the `k` largest values, largest first, ties to the lower index.
fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// ggml's f32 softmax (`ggml_soft_max`): `exp(x - max)` in f32 (ggml's vector exp over whole
/// registers, libm's for the rest), summed in f64 (a register's values first summed in f32),
/// times the f32 inverse sum.
fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut y = x.to_vec();
    let sum = crate::fa::soft_max(crate::cpu::flavor(), &mut y, max);
    let inv = (1.0 / sum) as f32;
    y.iter_mut().for_each(|v| *v *= inv);
    y
}

/// Routing of one token from its router logits.
pub(crate) fn route(m: &MoeConfig, logits: &[f32], bias: Option<&[f32]>) -> Route {
    let probs: Vec<f32> = match m.gating {
        Gating::Softmax => softmax(logits),
        Gating::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
        Gating::SoftmaxWeight => logits.to_vec(),
    };
    let mut sel = probs.clone();
    if let Some(b) = bias {
        sel.iter_mut().zip(b).for_each(|(s, b)| *s += b);
    }
    if m.n_group > 1 {
        let per = m.n_expert / m.n_group;
        let scores: Vec<f32> = sel
            .chunks_exact(per)
            .map(|g| {
                let t = top_k(g, 2);
                g[t[0]] + g[t[1]]
            })
            .collect();
        let keep = top_k(&scores, m.n_group_used);
        for (gi, g) in sel.chunks_exact_mut(per).enumerate() {
            if !keep.contains(&gi) {
                g.iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
            }
        }
    }
    let experts = top_k(&sel, m.n_expert_used);
    let mut weights: Vec<f32> = experts.iter().map(|&e| probs[e]).collect();
    if m.gating == Gating::SoftmaxWeight {
        weights = softmax(&weights);
    }
    if m.norm_weights {
        let sum = weights.iter().map(|&w| w as f64).sum::<f64>() as f32;
        let sum = sum.max(MIN_WEIGHT_SUM);
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    if m.weights_scale != 1.0 {
        weights.iter_mut().for_each(|w| *w *= m.weights_scale);
    }
    Route { experts, weights }
}

impl<'a> MoeFfn<'a> {
    /// Binds block `il`'s router, experts, selection bias and shared experts.
    pub(crate) fn load(ld: &Loader<'a>, c: &Config, il: usize) -> Result<Self> {
        let m = c.moe.as_ref().ok_or_else(|| EngineError::BadHparam {
            key: format!("{}.expert_count", c.arch),
            reason: format!("missing, but blk.{il}.ffn_gate_inp.weight routes to experts"),
        })?;
        let n = |s: &str| format!("blk.{il}.{s}");
        let (e, ff, ne) = (c.n_embd, m.n_ff_exp, m.n_expert);
        let shared = if m.n_ff_shexp > 0 {
            Some(DenseFfn::load(ld, c, il, "_shexp", m.n_ff_shexp)?)
        } else if ld.find(&n("ffn_gate_shexp.weight")).is_some() {
            return Err(EngineError::BadHparam {
                key: format!("{}.expert_shared_count", c.arch),
                reason: format!("missing or 0, but blk.{il} has shared experts"),
            });
        } else {
            None
        };
        // All four or none (llama.cpp's gpt-oss requires each).
        let biases = match ld.vector_opt(&n("ffn_gate_inp.bias"), ne)? {
            None => None,
            Some(router) => Some(Box::new(MoeBiases {
                router,
                gate: ld.vector(&n("ffn_gate_exps.bias"), ne * ff)?,
                up: ld.vector(&n("ffn_up_exps.bias"), ne * ff)?,
                down: ld.vector(&n("ffn_down_exps.bias"), ne * e)?,
            })),
        };
        Ok(MoeFfn {
            router: ld.weight(&n("ffn_gate_inp.weight"), e, ne)?,
            probs_bias: ld.vector_opt(&n("exp_probs_b.bias"), ne)?,
            biases,
            gate: ld.experts(&n("ffn_gate_exps.weight"), e, ff, ne)?,
            up: ld.experts(&n("ffn_up_exps.weight"), e, ff, ne)?,
            down: ld.experts(&n("ffn_down_exps.weight"), ff, e, ne)?,
            shared,
        })
    }

    pub(crate) fn weights(&self) -> Vec<&Weight<'a>> {
        let mut w = vec![&self.router];
        w.extend(self.gate.iter().chain(&self.up).chain(&self.down));
        if let Some(s) = &self.shared {
            w.extend(s.weights());
        }
        w
    }

    /// The block's feed-forward output for the `ctx.n_tok` normed rows of `h`.
    pub(crate) fn forward(&self, ctx: &BlockCtx<'_>, h: &[f32]) -> Result<Vec<f32>> {
        let c = ctx.config;
        let m = c.moe.as_ref().ok_or_else(|| {
            EngineError::Invalid("a mixture-of-experts block without its configuration".into())
        })?;
        let (e, nt, k) = (c.n_embd, ctx.n_tok, m.n_expert_used);
        let mut logits = ctx.mm(&self.router, h)?;
        if let Some(b) = self.biases.as_ref().map(|b| &b.router) {
            for row in logits.chunks_exact_mut(b.len()) {
                row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
        }
        let bias = self.probs_bias.as_deref();
        let routes: Vec<Route> = logits
            .par_chunks(m.n_expert)
            .map(|l| route(m, l, bias))
            .collect();
        // (token, slot) pairs of each expert, in token order.
        let mut assigned: Vec<Vec<(usize, usize)>> = vec![Vec::new(); m.n_expert];
        for (t, r) in routes.iter().enumerate() {
            for (s, &x) in r.experts.iter().enumerate() {
                assigned[x].push((t, s));
            }
        }
        let outs = assigned
            .par_iter()
            .enumerate()
            .map(|(x, rows)| -> Result<Vec<f32>> {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let n = rows.len();
                let mut xin = Vec::with_capacity(n * e);
                for &(t, _) in rows {
                    xin.extend_from_slice(&h[t * e..(t + 1) * e]);
                }
                // llama.cpp runs the up product first, then the gate.
                let n_expert = self.gate.len();
                // Expert x's slice of a per-expert bias, added to every row of `y`.
                let add_bias = |y: &mut [f32], pick: fn(&MoeBiases) -> &Vec<f32>| {
                    if let Some(b) = self.biases.as_deref().map(pick) {
                        let len = b.len() / n_expert;
                        let b = &b[x * len..(x + 1) * len];
                        for row in y.chunks_exact_mut(len) {
                            row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                        }
                    }
                };
                let mut u = ctx.mm_expert(&self.up[x], x, n_expert, &xin, n)?;
                add_bias(&mut u, |b| &b.up);
                let mut g = ctx.mm_expert(&self.gate[x], x, n_expert, &xin, n)?;
                add_bias(&mut g, |b| &b.gate);
                let ff = self.gate[x].rows;
                g.chunks_exact_mut(ff)
                    .zip(u.chunks_exact(ff))
                    .for_each(|(g, u)| c.act.apply(g, u));
                let mut d = ctx.mm_expert(&self.down[x], x, n_expert, &g, n)?;
                add_bias(&mut d, |b| &b.down);
                Ok(d)
            })
            .collect::<Result<Vec<_>>>()?;
        // Where each (token, slot) output sits: (expert, row within its batch).
        let mut at = vec![(0usize, 0usize); nt * k];
        for (x, rows) in assigned.iter().enumerate() {
            for (i, &(t, s)) in rows.iter().enumerate() {
                at[t * k + s] = (x, i);
            }
        }
        // Each expert output times its weight, added slot after slot (llama.cpp: ggml_mul by
        // the weights, then the slot views summed in order).
        let mut out = vec![0f32; nt * e];
        out.par_chunks_mut(e).enumerate().for_each(|(t, o)| {
            for s in 0..k {
                let (x, i) = at[t * k + s];
                let w = routes[t].weights[s];
                let y = &outs[x][i * e..(i + 1) * e];
                if s == 0 {
                    o.iter_mut().zip(y).for_each(|(a, v)| *a = v * w);
                } else {
                    o.iter_mut().zip(y).for_each(|(a, v)| *a += v * w);
                }
            }
        });
        if let Some(sh) = &self.shared {
            let d = sh.forward(ctx, h)?;
            out.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MoeConfig {
        MoeConfig {
            n_expert: 8,
            n_expert_used: 2,
            n_ff_exp: 4,
            n_ff_shexp: 0,
            gating: Gating::Softmax,
            norm_weights: false,
            weights_scale: 1.0,
            n_group: 1,
            n_group_used: 1,
            n_dense_lead: 0,
        }
    }

    #[test]
    fn softmax_routing_picks_the_largest_and_normalizes() {
        let mut m = cfg();
        let logits = [0.0, 3.0, 1.0, 2.9, -1.0, 0.5, 0.0, 0.0];
        let r = route(&m, &logits, None);
        assert_eq!(r.experts, vec![1, 3]);
        let p = softmax(&logits);
        assert_eq!(r.weights, vec![p[1], p[3]]);
        m.norm_weights = true;
        m.weights_scale = 2.5;
        let r = route(&m, &logits, None);
        let s = p[1] + p[3];
        assert!((r.weights[0] - 2.5 * p[1] / s).abs() < 1e-6);
        assert!((r.weights[0] + r.weights[1] - 2.5).abs() < 1e-5);
    }

    /// gpt-oss: the raw logits select, the softmax of the two selected logits weights.
    #[test]
    fn softmax_weight_routing_weights_the_selected_logits() {
        let mut m = cfg();
        m.gating = Gating::SoftmaxWeight;
        let logits = [0.0, 3.0, 1.0, 2.5, -1.0, 0.5, 0.0, 0.0];
        let r = route(&m, &logits, None);
        assert_eq!(r.experts, vec![1, 3]);
        let w1 = 1.0 / (1.0 + (-0.5f64).exp());
        assert!(
            (f64::from(r.weights[0]) - w1).abs() < 1e-6,
            "{:?}",
            r.weights
        );
        assert!((r.weights[0] + r.weights[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let mut m = cfg();
        m.n_expert_used = 8;
        let r = route(&m, &[0.0; 8], None);
        assert_eq!(r.experts, (0..8).collect::<Vec<_>>());
        assert!(r.weights.iter().all(|&w| w == 0.125));
    }

    #[test]
    fn bias_steers_selection_only_and_groups_mask() {
        let mut m = cfg();
        m.gating = Gating::Sigmoid;
        let logits = [2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.5, 1.4];
        let bias = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let r = route(&m, &logits, Some(&bias));
        assert_eq!(r.experts, vec![7, 0]);
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        assert_eq!(r.weights, vec![sig(1.4), sig(2.0)]);
        // 4 groups of 2: group scores 2.0+1.0 (g0), 0+0, 0+0, 1.5+1.4+1 (g3); keep 1 group.
        m.n_group = 4;
        m.n_group_used = 1;
        let r = route(&m, &logits, Some(&bias));
        assert_eq!(r.experts, vec![7, 6]);
    }

    /// Four experts, two per token, softmax routing with normalized and scaled weights, plus a
    /// shared expert, for five tokens: each token's selected experts' GLUs weighted and summed
    /// in f64.
    #[test]
    fn matches_plain_routed_experts() {
        use crate::block::testing::{self, Matrix};

        let mut c = testing::config(2, 2, 8, 24);
        let m = MoeConfig {
            n_expert: 4,
            n_expert_used: 2,
            n_ff_exp: 12,
            n_ff_shexp: 16,
            norm_weights: true,
            weights_scale: 1.5,
            ..cfg()
        };
        c.moe = Some(m.clone());
        let (e, ne, ff) = (c.n_embd, m.n_expert, m.n_ff_exp);
        let router = Matrix::random(ne, e, 1);
        let experts = |seed: u64, rows: usize, cols: usize| -> Vec<Matrix> {
            (0..ne)
                .map(|x| Matrix::random(rows, cols, seed + x as u64))
                .collect()
        };
        let (gate, up, down) = (experts(10, ff, e), experts(20, ff, e), experts(30, e, ff));
        let shared = [
            Matrix::random(m.n_ff_shexp, e, 2),
            Matrix::random(m.n_ff_shexp, e, 3),
            Matrix::random(e, m.n_ff_shexp, 4),
        ];
        let views = |ms: &[Matrix], name: &str| ms.iter().map(|w| w.weight(name)).collect();
        let moe = MoeFfn {
            router: router.weight("ffn_gate_inp"),
            probs_bias: None,
            biases: None,
            gate: views(&gate, "ffn_gate_exps"),
            up: views(&up, "ffn_up_exps"),
            down: views(&down, "ffn_down_exps"),
            shared: Some(DenseFfn {
                gate: shared[0].weight("ffn_gate_shexp"),
                up: shared[1].weight("ffn_up_shexp"),
                down: shared[2].weight("ffn_down_shexp"),
            }),
        };
        let h = testing::values(5 * e, 5, 3.0);
        let ours = moe.forward(&testing::ctx(&c, 0, 5), &h).expect("forward");

        let glu = |g: &Matrix, u: &Matrix, d: &Matrix, x: &[f64]| {
            d.apply(&testing::swiglu(&g.apply(x), &u.apply(x)))
        };
        let mut reference = Vec::new();
        for x in testing::rows(&h, e) {
            let logits = router.apply(&x);
            let max = logits.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let p: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = p.iter().sum();
            let mut order: Vec<usize> = (0..ne).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let chosen = &order[..m.n_expert_used];
            let chosen_sum: f64 = chosen.iter().map(|&x| p[x] / total).sum();
            let mut out = glu(&shared[0], &shared[1], &shared[2], &x);
            for &x_ in chosen {
                let w = 1.5 * (p[x_] / total) / chosen_sum;
                let y = glu(&gate[x_], &up[x_], &down[x_], &x);
                out.iter_mut().zip(&y).for_each(|(o, y)| *o += w * y);
            }
            reference.extend(out);
        }
        testing::assert_close(&ours, &reference, 1e-5, "mixture-of-experts output");
    }
}
