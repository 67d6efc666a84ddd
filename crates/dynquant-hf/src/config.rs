//! `config.json` access: typed look-ups with clear errors, numbers kept as JSON gives them.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{HfError, Result};

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| HfError::io("read", path, e))?;
    serde_json::from_str(&text).map_err(|e| HfError::json(path, format!("invalid JSON: {e}")))
}

/// A model's `config.json` (with a nested `text_config` merged into the top level, as
/// llama.cpp's converter does).
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    /// The merged JSON object.
    pub json: Json,
}

impl Config {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        Self::read_file(&dir.join("config.json"))
    }

    /// Reads a `config.json` at `path`.
    pub fn read_file(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        if !path.is_file() {
            return Err(HfError::json(
                &path,
                "missing (an HF model folder needs config.json)",
            ));
        }
        let mut json = read_json(&path)?;
        if !json.is_object() {
            return Err(HfError::json(&path, "not a JSON object"));
        }
        if let Some(tc) = json.get("text_config").cloned() {
            if let (Some(o), Some(t)) = (json.as_object_mut(), tc.as_object()) {
                for (k, v) in t {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(Config { path, json })
    }

    /// The file this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A key's value, if present and not null.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// The first of `keys` present.
    pub fn find(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// A non-negative integer.
    pub fn u64_of(&self, keys: &[&str]) -> Result<Option<u64>> {
        match self.find(keys) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                HfError::json(
                    &self.path,
                    format!("'{}' is {v}, not a non-negative integer", keys[0]),
                )
            }),
        }
    }

    /// A required non-negative integer.
    pub fn req_u64(&self, keys: &[&str]) -> Result<u64> {
        self.u64_of(keys)?
            .ok_or_else(|| HfError::json(&self.path, format!("missing '{}'", keys[0])))
    }

    /// A number.
    pub fn f64_of(&self, keys: &[&str]) -> Result<Option<f64>> {
        match self.find(keys) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                HfError::json(&self.path, format!("'{}' is {v}, not a number", keys[0]))
            }),
        }
    }

    /// A string.
    pub fn str_of(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Json::as_str)
    }

    /// A boolean.
    pub fn bool_of(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Json::as_bool)
    }

    /// The first entry of `architectures`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Json::as_str)
    }

    /// `quantization_config.weight_block_size` of block-scaled FP8 checkpoints.
    pub fn fp8_block(&self) -> Result<Option<[usize; 2]>> {
        let Some(q) = self.get("quantization_config") else {
            return Ok(None);
        };
        let method = q.get("quant_method").and_then(Json::as_str);
        match method {
            Some("fp8") => {}
            // MXFP4 `*_blocks` / `*_scales` pairs are copied by the architecture that maps them
            // (gpt-oss); there is no block size to read.
            None | Some("mxfp4") => return Ok(None),
            Some(m) => {
                return Err(HfError::json(
                    &self.path,
                    format!("quantization_config.quant_method '{m}' is not supported (only block-scaled fp8, and mxfp4 for gpt-oss)"),
                ))
            }
        }
        let b = q.get("weight_block_size").and_then(Json::as_array);
        match b.map(|b| b.iter().map(Json::as_u64).collect::<Vec<_>>()) {
            Some(v) if v.len() == 2 && v.iter().all(|x| x.is_some_and(|x| x > 0)) => Ok(Some([
                v[0].unwrap_or(128) as usize,
                v[1].unwrap_or(128) as usize,
            ])),
            None => Ok(Some([128, 128])),
            Some(_) => Err(HfError::json(
                &self.path,
                "quantization_config.weight_block_size must be two positive integers",
            )),
        }
    }
}
