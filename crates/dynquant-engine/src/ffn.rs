//! The feed-forward part of a block; one variant per family: a dense GLU, or a mixture of
//! experts ([`crate::moe`]).

use rayon::prelude::*;

use crate::config::Config;
use crate::error::Result;
use crate::matmul::Weight;
use crate::model::{Ctx, Loader};
use crate::moe::MoeFfn;

/// The feed-forward weights of one block.
#[derive(Debug)]
pub(crate) enum FeedForward<'a> {
    /// Gated linear unit: `down(act(gate(x)) * up(x))`.
    Dense(DenseFfn<'a>),
    /// Routed experts (and shared experts), see [`crate::moe`].
    Moe(MoeFfn<'a>),
}

/// A dense GLU feed-forward.
#[derive(Debug)]
pub(crate) struct DenseFfn<'a> {
    gate: Weight<'a>,
    up: Weight<'a>,
    down: Weight<'a>,
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
    pub(crate) fn forward(&self, ctx: &Ctx<'_, 'a>, h: &[f32]) -> Result<Vec<f32>> {
        let c = ctx.config();
        let n_ff = self.gate.rows;
        let mut g = ctx.mm(&self.gate, h)?;
        let u = ctx.mm(&self.up, h)?;
        g.par_chunks_mut(n_ff)
            .zip(u.par_chunks(n_ff))
            .for_each(|(g, u)| c.act.apply(g, u));
        ctx.mm(&self.down, &g)
    }
}

impl<'a> FeedForward<'a> {
    /// Experts when the block has a router (`ffn_gate_inp`) and is not one of the leading
    /// dense blocks, a dense GLU otherwise.
    pub(crate) fn load(ld: &Loader<'a>, c: &Config, il: usize) -> Result<Self> {
        let dense_lead = c.moe.as_ref().map_or(0, |m| m.n_dense_lead);
        if il >= dense_lead && ld.find(&format!("blk.{il}.ffn_gate_inp.weight")).is_some() {
            return MoeFfn::load(ld, c, il).map(FeedForward::Moe);
        }
        DenseFfn::load(ld, c, il, "", c.n_ff).map(FeedForward::Dense)
    }

    /// Matrix weights (for experts: one 2-D view per expert, all named after the 3-D tensor).
    pub(crate) fn weights(&self) -> Vec<&Weight<'a>> {
        match self {
            FeedForward::Dense(d) => d.weights(),
            FeedForward::Moe(m) => m.weights(),
        }
    }

    /// The block's feed-forward output (before the post norm and residual) of the normed `h`.
    pub(crate) fn forward(&self, ctx: &Ctx<'_, 'a>, h: &[f32]) -> Result<Vec<f32>> {
        match self {
            FeedForward::Dense(d) => d.forward(ctx, h),
            FeedForward::Moe(m) => m.forward(ctx, h),
        }
    }
}
