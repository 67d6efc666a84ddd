//! Token sampling for generation.
