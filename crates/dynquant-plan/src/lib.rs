//! dynquant-plan: what each tensor is, and (as it grows) which type it gets and why.
//!
//! * [`role`]: one parser from GGUF tensor names to roles (token embedding, attention parts
//!   in both DeepSeek layouts, dense and routed and shared FFNs, router, norms...), with the
//!   layer index and whether the layer is dense or MoE.
//!
//! Everything here is a pure function of its inputs: no I/O, no printing.
#![deny(missing_docs)]

pub mod role;

pub use role::{classify, parse_name, LayerKind, Role, TensorClass};
