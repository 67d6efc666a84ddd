//! dynquant-plan: what each tensor is, which type it gets and why.
//!
//! * [`role`]: one parser from GGUF tensor names to roles (token embedding, attention parts
//!   in both DeepSeek layouts, dense and routed and shared FFNs, router, norms...), with the
//!   layer index and whether the layer is dense or MoE.
//! * [`inventory`]: tensor lists without data, the planner's input.
//! * [`quantizable`]: which tensors may be quantized at all (llama.cpp's list).
//! * [`recipe`]: recipes as data (TOML rules, first match wins).
//! * [`planner`]: the pure planning function for a recipe, and the plan types.
//! * [`llamacpp`]: llama.cpp's own mixes (`q4_k_m`, `iq1_s`...), exactly as llama-quantize
//!   chooses them.
//! * [`sensitivity`]: measurements `dynquant measure` writes and the allocator reads.
//! * [`costs`], [`knapsack`], [`allocate`]: allocation to a target (size, bits per weight or
//!   predicted KLD): predicted costs from a sensitivity scan or priors, an exact
//!   multiple-choice knapsack solver, and the allocated plan with its explanations.
//! * [`preset`]: [`Preset`], a recipe or a mix, and the table of every preset name.
//!
//! Everything here is a pure function of its inputs: no I/O, no printing. Modules depend one
//! way: `preset` on `planner` and `llamacpp`, those two on `quantizable`, `recipe` and `role`.
#![deny(missing_docs)]

pub mod allocate;
pub mod costs;
pub mod inventory;
pub mod knapsack;
pub mod llamacpp;
pub mod planner;
pub mod preset;
pub mod quantizable;
pub mod recipe;
pub mod role;
pub mod sensitivity;

pub use allocate::{
    allocate, to_recipe_toml, to_tensor_type_file, AllocateError, Allocation, AllocationOptions,
    AllocationReport, FileLayout, Target, DEFAULT_CANDIDATES,
};
pub use costs::{CostModel, Priors, SensitivityCosts};
pub use inventory::{Inventory, MlaLayout};
pub use llamacpp::{plan_llamacpp, Ftype, RULES};
pub use planner::{plan, Decision, Plan, PlanError, PlanOptions, TensorPlan, MXFP4_KEPT};
pub use preset::{preset_names, preset_table, Preset, PresetFamily, PresetInfo};
pub use quantizable::keep_reason;
pub use recipe::{Recipe, RecipeError};
pub use role::{classify, parse_name, LayerKind, Role, TensorClass};
pub use sensitivity::{GroupProbe, Sensitivity, SensitivityError, SensitivityKey, TensorError};
