//! dynquant-plan: what each tensor is, and (as it grows) which type it gets and why.
//!
//! * [`role`]: one parser from GGUF tensor names to roles (token embedding, attention parts
//!   in both DeepSeek layouts, dense and routed and shared FFNs, router, norms...), with the
//!   layer index and whether the layer is dense or MoE.
//!
//! * [`inventory`]: tensor lists without data, from GGUF headers or Hugging Face configs.
//! * [`recipe`]: recipes as data (TOML rules, first match wins) and the shipped presets.
//! * [`planner`]: the pure planning function and its precedence.
//! * [`llamacpp`]: llama.cpp's own mixes (`q4_k_m`, `iq1_s`...), exactly as llama-quantize
//!   chooses them.
//!
//! Everything here is a pure function of its inputs: no I/O, no printing.
#![deny(missing_docs)]

pub mod inventory;
pub mod llamacpp;
pub mod planner;
pub mod recipe;
pub mod role;

pub use llamacpp::{plan_llamacpp, plan_recipe, Ftype};
pub use planner::{plan, Decision, Plan, PlanError, PlanOptions, TensorPlan};
pub use recipe::{preset, Recipe, RecipeError};
pub use role::{classify, parse_name, LayerKind, Role, TensorClass};
