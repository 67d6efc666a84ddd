//! dynquant-report: the evidence that a quant is good, in one place. It measures quants against
//! their unquantized base with the engine (KL divergence and its percentiles, top-1 agreement,
//! perplexity; [`measure`]), describes each file (size, bits per weight, where its bits went by
//! layer and tensor role; [`facts`]), checks what the models generate (loops, gibberish, collapse
//! over a built-in prompt suite, [`sanity`]; small tasks a program can check, [`functional`]),
//! and renders it all from one [`Report`] as JSON, a terminal table, a Markdown model-card table
//! ([`render`]) or one self-contained HTML page with inline SVG charts ([`html`]).
//!
//! Invariants: the library prints nothing (progress goes to callbacks) and writes no files; a
//! [`Report`] holds no timings, absolute paths or thread counts, so the same inputs and seeds give
//! the same JSON byte for byte whatever the thread count; the HTML page needs no network and no
//! JavaScript.
#![deny(missing_docs)]

pub mod charts;
pub mod error;
pub mod facts;
pub mod functional;
pub mod html;
pub mod measure;
pub mod render;
pub mod report;
pub mod sanity;

pub use error::{ReportError, Result};
pub use report::Report;
