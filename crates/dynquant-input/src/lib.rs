//! dynquant-input: what `plan` and `quantize` read, opened one way for both.
//!
//! * [`ModelInput`]: a model to quantize, a GGUF file (or split set) or a Hugging Face
//!   checkpoint folder streamed from its safetensors; its [`Inventory`] and metadata.
//! * [`plan_targets`]: what `plan` can plan without tensor data, which adds a bare
//!   `config.json` (a DeepSeek-V3/R1 one in both attention layouts).
//! * [`load_preset`]: a preset name or a recipe file.
//! * [`load_imatrix`]: an importance matrix file.
//!
//! Errors are typed and name the file; nothing is printed.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use dynquant_gguf::imatrix::{Imatrix, ImatrixError};
use dynquant_gguf::{Access, GgufError, GgufModel, Metadata};
use dynquant_hf::{config_inventory, is_hf_dir, ConvertOptions, HfError, HfModel};
use dynquant_plan::{preset_names, Inventory, MlaLayout, Preset, Recipe, RecipeError};
use dynquant_quantize::TensorSource;

/// Errors opening inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A GGUF model that cannot be opened.
    #[error("reading {path}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<GgufError>,
    },
    /// A Hugging Face folder or config that cannot be used.
    #[error("reading {path}")]
    Hf {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<HfError>,
    },
    /// `--recipe` names neither a preset nor an existing file.
    #[error("'{spec}' is neither a preset ({presets}) nor a recipe file")]
    UnknownRecipe {
        /// What was given.
        spec: String,
        /// The preset names.
        presets: String,
    },
    /// A recipe file that cannot be read.
    #[error("reading {path}")]
    RecipeFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A malformed recipe (the message names the file and line).
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// An importance matrix that cannot be read.
    #[error("reading {path}")]
    Imatrix {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ImatrixError,
    },
}

type Result<T, E = InputError> = std::result::Result<T, E>;

/// A model to quantize: a GGUF file or split set, or a Hugging Face checkpoint folder
/// presented as the GGUF `convert` would write (streamed from its safetensors).
pub enum ModelInput {
    /// A GGUF model.
    Gguf(GgufModel),
    /// A Hugging Face checkpoint folder.
    Hf(Box<HfModel>),
}

impl ModelInput {
    /// Opens `path`: a Hugging Face folder (config.json and safetensors), else a GGUF file or
    /// the first shard of a split set, read with `access`. Reads headers only.
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        if is_hf_dir(path) {
            HfModel::open(path, &ConvertOptions::default())
                .map(|m| ModelInput::Hf(Box::new(m)))
                .map_err(|source| InputError::Hf {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })
        } else {
            GgufModel::open(path, access)
                .map(ModelInput::Gguf)
                .map_err(|source| InputError::Gguf {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })
        }
    }

    /// The model's tensors, for the pipeline.
    pub fn source(&self) -> &dyn TensorSource {
        match self {
            ModelInput::Gguf(m) => m,
            ModelInput::Hf(m) => m.as_ref(),
        }
    }

    /// The inventory to plan.
    pub fn inventory(&self) -> Inventory {
        match self {
            ModelInput::Gguf(m) => Inventory::from_gguf(m),
            ModelInput::Hf(m) => m.inventory(),
        }
    }

    /// The metadata a quant starts from (a split set's merged).
    pub fn metadata(&self) -> Metadata {
        match self {
            ModelInput::Gguf(m) => m.merged_metadata(),
            ModelInput::Hf(m) => m.metadata().clone(),
        }
    }

    /// What the user should know about the conversion (a Hugging Face folder's pre-tokenizer
    /// fallback, for one).
    pub fn warnings(&self) -> &[String] {
        match self {
            ModelInput::Gguf(_) => &[],
            ModelInput::Hf(m) => m.warnings(),
        }
    }
}

/// One inventory to plan; `layout` is set for a DeepSeek config, planned in both layouts.
#[derive(Debug, Clone)]
pub struct PlanTarget {
    /// The deepseek2 attention layout this inventory has, for a bare config.
    pub layout: Option<MlaLayout>,
    /// The inventory.
    pub inventory: Inventory,
}

/// What `plan` plans for `path`, reading headers only: a Hugging Face folder or GGUF model (one
/// target), or a bare `config.json` (a file ending in `.json`, or a folder holding one and no
/// weights). A config of a deepseek2 model gives both attention layouts, `first` first.
pub fn plan_targets(path: &Path, first: MlaLayout) -> Result<Vec<PlanTarget>> {
    let is_config = path.is_dir() || path.extension().is_some_and(|e| e == "json");
    if is_hf_dir(path) || !is_config {
        let inventory = ModelInput::open(path, Access::Pread)?.inventory();
        return Ok(vec![PlanTarget {
            layout: None,
            inventory,
        }]);
    }
    let from_config = |layout: MlaLayout| {
        config_inventory(path, layout).map_err(|source| InputError::Hf {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    };
    let inventory = from_config(first)?;
    if inventory.architecture() != Some("deepseek2") {
        return Ok(vec![PlanTarget {
            layout: None,
            inventory,
        }]);
    }
    let other = match first {
        MlaLayout::Mla => MlaLayout::Legacy,
        MlaLayout::Legacy => MlaLayout::Mla,
    };
    Ok(vec![
        PlanTarget {
            layout: Some(first),
            inventory,
        },
        PlanTarget {
            layout: Some(other),
            inventory: from_config(other)?,
        },
    ])
}

/// The preset `spec` names (see [`Preset::named`]), or else the recipe file at that path.
pub fn load_preset(spec: &str) -> Result<Preset> {
    if let Some(preset) = Preset::named(spec) {
        return Ok(preset?);
    }
    let path = Path::new(spec);
    if !path.exists() {
        return Err(InputError::UnknownRecipe {
            spec: spec.to_string(),
            presets: preset_names(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| InputError::RecipeFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Preset::Rules(Recipe::parse(&text, spec)?))
}

/// Reads an importance matrix (llama.cpp's GGUF format or its legacy `.dat`).
pub fn load_imatrix(path: &Path) -> Result<Imatrix> {
    Imatrix::read(path).map_err(|source| InputError::Imatrix {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_files_and_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "name = \"mine\"\ndefault = \"q4_K\"\n").unwrap();
        let preset = load_preset(file.to_str().unwrap()).unwrap();
        assert_eq!(preset.name(), "mine");
        assert!(matches!(load_preset("q4_k_m"), Ok(Preset::Mix(_))));
        let e = load_preset("no-such-recipe").unwrap_err().to_string();
        assert!(e.contains("ud-iq1_s") && e.contains("q4_k_m"), "{e}");
    }
}
