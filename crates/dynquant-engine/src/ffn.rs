//! The dense feed-forward block: a gated linear unit (also the shared experts of a
//! mixture-of-experts block, [`crate::moe`]).

use rayon::prelude::*;

use crate::block::BlockCtx;
use crate::config::Config;
use crate::error::Result;
use crate::loader::Loader;
use crate::matmul::Weight;

/// A dense GLU feed-forward.
#[derive(Debug)]
pub(crate) struct DenseFfn<'a> {
    pub(crate) gate: Weight<'a>,
    pub(crate) up: Weight<'a>,
    pub(crate) down: Weight<'a>,
}

impl<'a> DenseFfn<'a> {
    /// Binds `blk.{il}.ffn_{gate,up,down}{suffix}.weight` with hidden size `n_ff`.
    pub(crate) fn load(
        ld: &Loader<'a>,
        c: &Config,
        il: usize,
        suffix: &str,
        n_ff: usize,
    ) -> Result<Self> {
        let n = |s: &str| format!("blk.{il}.ffn_{s}{suffix}.weight");
        Ok(DenseFfn {
            gate: ld.weight(&n("gate"), c.n_embd, n_ff)?,
            up: ld.weight(&n("up"), c.n_embd, n_ff)?,
            down: ld.weight(&n("down"), n_ff, c.n_embd)?,
        })
    }

    pub(crate) fn weights(&self) -> Vec<&Weight<'a>> {
        vec![&self.gate, &self.up, &self.down]
    }

    /// `down(act(gate(h)) * up(h))` for the `ctx.n_tok` rows of `h`.
    pub(crate) fn forward(&self, ctx: &BlockCtx<'_>, h: &[f32]) -> Result<Vec<f32>> {
        let c = ctx.config;
        let n_ff = self.gate.rows;
        let mut g = ctx.mm(&self.gate, h)?;
        let u = ctx.mm(&self.up, h)?;
        g.par_chunks_mut(n_ff)
            .zip(u.par_chunks(n_ff))
            .for_each(|(g, u)| c.act.apply(g, u));
        ctx.mm(&self.down, &g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::testing::{self, Matrix};

    /// `down(silu(gate(h)) * up(h))` for three tokens against the same in f64.
    #[test]
    fn matches_a_plain_swiglu() {
        let c = testing::config(2, 2, 8, 24);
        let (e, ff) = (c.n_embd, c.n_ff);
        let (gate, up, down) = (
            Matrix::random(ff, e, 1),
            Matrix::random(ff, e, 2),
            Matrix::random(e, ff, 3),
        );
        let ffn = DenseFfn {
            gate: gate.weight("ffn_gate"),
            up: up.weight("ffn_up"),
            down: down.weight("ffn_down"),
        };
        let h = testing::values(3 * e, 4, 3.0);
        let ours = ffn.forward(&testing::ctx(&c, 0, 3), &h).expect("forward");
        let reference: Vec<f64> = testing::rows(&h, e)
            .iter()
            .flat_map(|x| down.apply(&testing::swiglu(&gate.apply(x), &up.apply(x))))
            .collect();
        testing::assert_close(&ours, &reference, 1e-5, "feed-forward output");
    }
}
