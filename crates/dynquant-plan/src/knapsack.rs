//! An exact solver for the multiple-choice knapsack the allocator poses: pick one choice per
//! item (a type per tensor) minimizing the summed cost (predicted ΔKLD, or bytes) with the
//! summed weight (bytes, or predicted ΔKLD) at most a capacity.
//!
//! 1. Each item's choices are cut to its efficient frontier (dominated choices never help).
//! 2. **Relaxation**: on each item's lower convex hull the LP relaxation is solved greedily
//!    (hull steps in order of cost saved per unit of weight, one step fractional); its optimum
//!    is the Lagrangian dual's, a lower bound on every solution, and the multiplier λ is the
//!    price of weight at the critical step.
//! 3. **Incumbent**: the greedy's integer part, topped up with later steps that still fit.
//! 4. **Exact finishing**: with λ's reduced costs `rc = c + λw − min_k(c_k + λw_k)`, every
//!    solution costs at least `bound + Σ rc + λ·(capacity left unused)`, so choices whose reduced cost exceeds the gap
//!    between incumbent and bound are eliminated; the few items left with several choices are
//!    searched depth first, pruned by the same bound and by weight. Within the node limit the
//!    result is proven optimal; past it, the incumbent is kept and the gap to the bound is
//!    reported.
//!
//! Everything is deterministic (ties broken by item and choice index).

/// One choice of an item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// What it uses of the capacity.
    pub weight: f64,
    /// What it costs (minimized).
    pub cost: f64,
}

/// The solution.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// Per item, the index of the chosen choice (into the item's list as given).
    pub picks: Vec<usize>,
    /// Summed cost.
    pub cost: f64,
    /// Summed weight.
    pub weight: f64,
    /// The relaxation's bound: no solution costs less.
    pub lower_bound: f64,
    /// The price of weight at the relaxation's optimum (cost saved per unit of weight).
    pub lambda: f64,
    /// Whether the search finished, so `cost` is the optimum.
    pub proven_optimal: bool,
    /// Search nodes visited.
    pub nodes: u64,
}

/// Why there is no solution.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KnapsackError {
    /// Even the lightest choices weigh more than the capacity.
    #[error("the lightest choices weigh {min_weight}, over the capacity {capacity}")]
    Infeasible {
        /// Summed lightest weights.
        min_weight: f64,
        /// The capacity.
        capacity: f64,
    },
    /// An item with no choice.
    #[error("item {0} has no choice")]
    EmptyItem(usize),
}

/// An item's efficient frontier: choice indices by weight ascending, cost strictly descending.
fn frontier(choices: &[Choice]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..choices.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (choices[a], choices[b]);
        x.weight
            .total_cmp(&y.weight)
            .then(x.cost.total_cmp(&y.cost))
            .then(a.cmp(&b))
    });
    let mut out: Vec<usize> = Vec::new();
    for i in order {
        if out
            .last()
            .is_none_or(|&l| choices[i].cost < choices[l].cost)
        {
            out.push(i);
        }
    }
    out
}

/// The lower convex hull of a frontier (positions into it), from lightest to cheapest.
fn hull(choices: &[Choice], front: &[usize]) -> Vec<usize> {
    let mut h: Vec<usize> = Vec::new();
    for (pos, &i) in front.iter().enumerate() {
        while h.len() >= 2 {
            let a = choices[front[h[h.len() - 2]]];
            let b = choices[front[h[h.len() - 1]]];
            let c = choices[i];
            // b lies on or above the segment a-c: not on the lower hull.
            let cross = (b.weight - a.weight) * (c.cost - a.cost)
                - (b.cost - a.cost) * (c.weight - a.weight);
            if cross <= 0.0 {
                h.pop();
            } else {
                break;
            }
        }
        h.push(pos);
    }
    h
}

struct Step {
    item: usize,
    /// Position in the item's hull it leads to.
    to: usize,
    gain: f64,
    dw: f64,
}

/// Solves the problem; `node_limit` caps the exact search.
pub fn solve(
    items: &[Vec<Choice>],
    capacity: f64,
    node_limit: u64,
) -> Result<Solution, KnapsackError> {
    let fronts: Vec<Vec<usize>> = items.iter().map(|c| frontier(c)).collect();
    if let Some(i) = fronts.iter().position(Vec::is_empty) {
        return Err(KnapsackError::EmptyItem(i));
    }
    let min_weight: f64 = items.iter().zip(&fronts).map(|(c, f)| c[f[0]].weight).sum();
    if min_weight > capacity {
        return Err(KnapsackError::Infeasible {
            min_weight,
            capacity,
        });
    }
    let hulls: Vec<Vec<usize>> = items.iter().zip(&fronts).map(|(c, f)| hull(c, f)).collect();
    let mut steps = Vec::new();
    for (item, (c, (f, h))) in items.iter().zip(fronts.iter().zip(&hulls)).enumerate() {
        for to in 1..h.len() {
            let (a, b) = (c[f[h[to - 1]]], c[f[h[to]]]);
            let (dw, dc) = (b.weight - a.weight, a.cost - b.cost);
            steps.push(Step {
                item,
                to,
                gain: dc / dw,
                dw,
            });
        }
    }
    steps.sort_by(|x, y| {
        y.gain
            .total_cmp(&x.gain)
            .then(x.item.cmp(&y.item))
            .then(x.to.cmp(&y.to))
    });

    // Relaxation and greedy incumbent.
    let mut at = vec![0usize; items.len()];
    let mut room = capacity - min_weight;
    let mut lambda = 0.0;
    let mut critical: Option<usize> = None;
    for (k, s) in steps.iter().enumerate() {
        if s.to != at[s.item] + 1 {
            continue;
        }
        if s.dw <= room {
            room -= s.dw;
            at[s.item] = s.to;
        } else if critical.is_none() {
            critical = Some(k);
            lambda = s.gain;
        }
    }
    // The greedy above kept filling after the critical step; the relaxation stops there.
    let mut picks: Vec<usize> = (0..items.len())
        .map(|i| fronts[i][hulls[i][at[i]]])
        .collect();
    let total = |picks: &[usize]| -> (f64, f64) {
        picks
            .iter()
            .enumerate()
            .fold((0.0, 0.0), |(w, c), (i, &j)| {
                (w + items[i][j].weight, c + items[i][j].cost)
            })
    };
    let (_, mut best_cost) = total(&picks);
    let min_shifted: Vec<f64> = items
        .iter()
        .zip(&fronts)
        .map(|(c, f)| {
            f.iter()
                .map(|&j| c[j].cost + lambda * c[j].weight)
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let lower_bound = min_shifted.iter().sum::<f64>() - lambda * capacity;
    if critical.is_none() {
        // Every item at its cheapest hull point: the relaxation is integral.
        let (weight, cost) = total(&picks);
        return Ok(Solution {
            picks,
            cost,
            weight,
            lower_bound: cost,
            lambda,
            proven_optimal: true,
            nodes: 0,
        });
    }

    // Exact finishing by reduced costs.
    let eps = 1e-12 * best_cost.abs().max(1.0);
    let reduced = |i: usize, j: usize| {
        (items[i][j].cost + lambda * items[i][j].weight - min_shifted[i]).max(0.0)
    };
    let gap = (best_cost - lower_bound).max(0.0);
    let options: Vec<Vec<(usize, f64)>> = fronts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut o: Vec<(usize, f64)> = f
                .iter()
                .map(|&j| (j, reduced(i, j)))
                .filter(|&(_, rc)| rc <= gap + eps)
                .collect();
            o.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            o
        })
        .collect();
    // Interchangeable items (the same choices, as layers of one role under priors) are kept
    // adjacent and searched in non-decreasing option order only: every solution has a
    // permutation of that form, and the search skips the rest.
    let key = |i: usize| -> Vec<(u64, u64)> {
        options[i]
            .iter()
            .map(|&(j, _)| (items[i][j].weight.to_bits(), items[i][j].cost.to_bits()))
            .collect()
    };
    let mut core: Vec<usize> = (0..items.len()).filter(|&i| options[i].len() > 1).collect();
    let keys: Vec<Vec<(u64, u64)>> = (0..items.len()).map(key).collect();
    core.sort_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
    let same_as_previous: Vec<bool> = (0..core.len())
        .map(|k| k > 0 && keys[core[k]] == keys[core[k - 1]])
        .collect();
    let mut fixed_weight = 0.0;
    let mut fixed_rc = 0.0;
    let mut current: Vec<usize> = picks.clone();
    for (i, o) in options.iter().enumerate() {
        if o.len() == 1 {
            current[i] = o[0].0;
            fixed_weight += items[i][o[0].0].weight;
            fixed_rc += o[0].1;
        }
    }
    // Lightest and heaviest remaining weight from core position k on.
    let mut tail_min = vec![0.0; core.len() + 1];
    let mut tail_max = vec![0.0; core.len() + 1];
    for k in (0..core.len()).rev() {
        let i = core[k];
        let weights = options[i].iter().map(|&(j, _)| items[i][j].weight);
        tail_min[k] = tail_min[k + 1] + weights.clone().fold(f64::INFINITY, f64::min);
        tail_max[k] = tail_max[k + 1] + weights.fold(0.0, f64::max);
    }
    struct Search<'a> {
        items: &'a [Vec<Choice>],
        options: &'a [Vec<(usize, f64)>],
        core: &'a [usize],
        same_as_previous: &'a [bool],
        /// Option position chosen at each core depth.
        chosen: Vec<usize>,
        tail_min: &'a [f64],
        tail_max: &'a [f64],
        lambda: f64,
        capacity: f64,
        lower_bound: f64,
        eps: f64,
        nodes: u64,
        node_limit: u64,
        best_cost: f64,
        best: Vec<usize>,
        current: Vec<usize>,
    }
    impl Search<'_> {
        fn go(&mut self, k: usize, weight: f64, rc: f64) -> bool {
            self.nodes += 1;
            if self.nodes > self.node_limit {
                return false;
            }
            if k == self.core.len() {
                let cost: f64 = self
                    .current
                    .iter()
                    .enumerate()
                    .map(|(i, &j)| self.items[i][j].cost)
                    .sum();
                if cost < self.best_cost - self.eps {
                    self.best_cost = cost;
                    self.best.clone_from(&self.current);
                }
                return true;
            }
            let i = self.core[k];
            let first = if self.same_as_previous[k] {
                self.chosen[k - 1]
            } else {
                0
            };
            for o in first..self.options[i].len() {
                let (j, r) = self.options[i][o];
                // Options are in reduced-cost order: once the bound fails it fails for all.
                if self.lower_bound + rc + r >= self.best_cost - self.eps {
                    break;
                }
                let w = weight + self.items[i][j].weight;
                if w + self.tail_min[k + 1] > self.capacity {
                    continue;
                }
                // Every solution costs bound + Σrc + λ·(unused capacity): capacity this branch
                // cannot fill any more is paid for.
                let unused = (self.capacity - w - self.tail_max[k + 1]).max(0.0);
                if self.lower_bound + rc + r + self.lambda * unused >= self.best_cost - self.eps {
                    continue;
                }
                self.current[i] = j;
                self.chosen[k] = o;
                if !self.go(k + 1, w, rc + r) {
                    return false;
                }
            }
            true
        }
    }
    let mut search = Search {
        items,
        options: &options,
        core: &core,
        same_as_previous: &same_as_previous,
        chosen: vec![0; core.len()],
        tail_min: &tail_min,
        tail_max: &tail_max,
        lambda,
        capacity,
        lower_bound,
        eps,
        nodes: 0,
        node_limit,
        best_cost,
        best: picks.clone(),
        current,
    };
    let finished = search.go(0, fixed_weight, fixed_rc);
    if search.best_cost < best_cost {
        best_cost = search.best_cost;
        picks = search.best;
    }
    let (weight, cost) = total(&picks);
    debug_assert!((cost - best_cost).abs() <= 1e-9 * best_cost.abs().max(1.0));
    Ok(Solution {
        picks,
        cost,
        weight,
        lower_bound: if finished { cost } else { lower_bound },
        lambda,
        proven_optimal: finished,
        nodes: search.nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exhaustive optimum, for small problems.
    fn brute(items: &[Vec<Choice>], capacity: f64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut idx = vec![0usize; items.len()];
        loop {
            let (w, c) = idx.iter().enumerate().fold((0.0, 0.0), |(w, c), (i, &j)| {
                (w + items[i][j].weight, c + items[i][j].cost)
            });
            if w <= capacity && best.is_none_or(|b| c < b) {
                best = Some(c);
            }
            let mut k = 0;
            loop {
                if k == items.len() {
                    return best;
                }
                idx[k] += 1;
                if idx[k] < items[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn matches_exhaustive_search_on_random_problems() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let n = 1 + case % 7;
            let items: Vec<Vec<Choice>> = (0..n)
                .map(|_| {
                    let k = 1 + (rng.next() * 5.0) as usize;
                    (0..k)
                        .map(|_| Choice {
                            weight: (1.0 + rng.next() * 20.0).round(),
                            cost: rng.next() * 10.0,
                        })
                        .collect()
                })
                .collect();
            let lightest: f64 = items
                .iter()
                .map(|c| c.iter().map(|x| x.weight).fold(f64::INFINITY, f64::min))
                .sum();
            let capacity = lightest + (rng.next() * 30.0).round();
            let s = solve(&items, capacity, 1_000_000).unwrap();
            let want = brute(&items, capacity).unwrap();
            assert!(s.proven_optimal, "case {case}");
            assert!(s.weight <= capacity, "case {case}");
            assert!(
                (s.cost - want).abs() < 1e-9,
                "case {case}: {} vs {want}",
                s.cost
            );
            assert!(s.lower_bound <= s.cost + 1e-9);
        }
    }

    #[test]
    fn infeasible_and_empty() {
        let c = |weight, cost| Choice { weight, cost };
        let items = vec![vec![c(5.0, 1.0), c(3.0, 2.0)], vec![c(4.0, 0.0)]];
        assert_eq!(
            solve(&items, 6.0, 10).unwrap_err(),
            KnapsackError::Infeasible {
                min_weight: 7.0,
                capacity: 6.0
            }
        );
        assert_eq!(
            solve(&[vec![]], 6.0, 10).unwrap_err(),
            KnapsackError::EmptyItem(0)
        );
        let s = solve(&items, 100.0, 10).unwrap();
        assert_eq!(s.picks, vec![0, 0]);
        assert!(s.proven_optimal);
    }

    #[test]
    fn node_limit_keeps_a_feasible_incumbent_and_reports_the_bound() {
        let mut rng = Rng(7);
        let items: Vec<Vec<Choice>> = (0..60)
            .map(|_| {
                (0..6)
                    .map(|_| Choice {
                        weight: (1.0 + rng.next() * 50.0).round(),
                        cost: rng.next(),
                    })
                    .collect()
            })
            .collect();
        let s = solve(&items, 900.0, 1).unwrap();
        assert!(s.weight <= 900.0);
        assert!(s.lower_bound <= s.cost);
        let full = solve(&items, 900.0, 50_000_000).unwrap();
        assert!(full.cost <= s.cost + 1e-12);
        assert!(full.lower_bound <= full.cost + 1e-12);
    }
}
