//! Building every test model into one folder, idempotently, with checksums; and the one
//! place tests get their paths from.
//!
//! `manifest.json` in the folder records the generator version, the sha256 of the inputs (the
//! SmolLM2 Q4_1 file and llama.cpp's imatrix) and the sha256 and size of every output. A
//! rebuild happens only for outputs that are missing, whose checksum no longer matches, or
//! when the generator or an input changed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::{Access, GgufModel, WriteOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::synth::{self, Deepseek2Spec, MlaLayout, Qwen3MoeSpec};
use crate::{smollm2, Result, TestkitError};

/// Bump when any construction changes, so cached folders are rebuilt.
pub const GENERATOR_VERSION: &str = "test-models/4";

/// Environment variable naming the built folder.
pub const ENV_VAR: &str = "DYNQUANT_TEST_MODELS";

/// The outputs, in build order.
pub const FILES: [&str; 8] = [
    "smollm2-f16.gguf",
    "smollm2-768.gguf",
    "smollm2-768.imatrix.gguf",
    "smollm2-768-moe.gguf",
    "smollm2-768-moe.imatrix.gguf",
    "synth-deepseek2-mla.gguf",
    "synth-deepseek2-legacy.gguf",
    "synth-qwen3moe.gguf",
];

/// Paths of the built models. Tests get them from here (through [`ENV_VAR`]).
#[derive(Debug, Clone)]
pub struct TestModels {
    /// The folder.
    pub dir: PathBuf,
}

impl TestModels {
    /// The folder named by `DYNQUANT_TEST_MODELS`, if set.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(ENV_VAR).map(|d| TestModels { dir: d.into() })
    }
    /// SmolLM2-135M-Instruct, every tensor dequantized, F16 (the reference).
    pub fn smollm2_f16(&self) -> PathBuf {
        self.dir.join(FILES[0])
    }
    /// The exactly equivalent 768-wide SmolLM2.
    pub fn smollm2_768(&self) -> PathBuf {
        self.dir.join(FILES[1])
    }
    /// Its imatrix (llama.cpp's, remapped).
    pub fn smollm2_768_imatrix(&self) -> PathBuf {
        self.dir.join(FILES[2])
    }
    /// The same model as a 6-expert llama MoE.
    pub fn smollm2_768_moe(&self) -> PathBuf {
        self.dir.join(FILES[3])
    }
    /// Its per-expert imatrix.
    pub fn smollm2_768_moe_imatrix(&self) -> PathBuf {
        self.dir.join(FILES[4])
    }
    /// Synthetic deepseek2, MLA layout.
    pub fn deepseek2_mla(&self) -> PathBuf {
        self.dir.join(FILES[5])
    }
    /// Synthetic deepseek2, legacy `attn_kv_b` layout (the same weights).
    pub fn deepseek2_legacy(&self) -> PathBuf {
        self.dir.join(FILES[6])
    }
    /// Synthetic qwen3moe.
    pub fn qwen3moe(&self) -> PathBuf {
        self.dir.join(FILES[7])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct FileRecord {
    sha256: String,
    bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    generator: String,
    inputs: BTreeMap<String, String>,
    files: BTreeMap<String, FileRecord>,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// Outputs written this time.
    pub built: Vec<String>,
    /// Outputs found valid in the cache.
    pub cached: Vec<String>,
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> TestkitError {
    TestkitError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err("open", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err("read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn read_manifest(path: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn build_one(name: &str, out: &Path, src: &GgufModel, imatrix: &Imatrix) -> Result<()> {
    let opts = WriteOptions {
        overwrite: true,
        protected_inputs: src.paths(),
    };
    match name {
        "smollm2-f16.gguf" => smollm2::write_f16_reference(src, out),
        "smollm2-768.gguf" => smollm2::write_768(src, out),
        "smollm2-768.imatrix.gguf" => Ok(smollm2::imatrix_768(imatrix)?.write(out, &opts)?),
        "smollm2-768-moe.gguf" => smollm2::write_768_moe(src, out),
        "smollm2-768-moe.imatrix.gguf" => Ok(smollm2::imatrix_768_moe(imatrix)?.write(out, &opts)?),
        "synth-deepseek2-mla.gguf" => Ok(synth::write_deepseek2(
            &Deepseek2Spec::default(),
            MlaLayout::Mla,
            src.metadata(),
            out,
        )?),
        "synth-deepseek2-legacy.gguf" => Ok(synth::write_deepseek2(
            &Deepseek2Spec::default(),
            MlaLayout::Legacy,
            src.metadata(),
            out,
        )?),
        "synth-qwen3moe.gguf" => Ok(synth::write_qwen3moe(
            &Qwen3MoeSpec::default(),
            src.metadata(),
            out,
        )?),
        other => Err(TestkitError::BadSource(format!("unknown output {other}"))),
    }
}

/// Builds every test model into `out_dir` from the SmolLM2 Q4_1 file and llama.cpp's imatrix
/// of it, skipping outputs whose checksums match the manifest. `progress` is told each step.
pub fn build_all(
    out_dir: &Path,
    smollm2_q4_1: &Path,
    golden_imatrix: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<BuildReport> {
    std::fs::create_dir_all(out_dir).map_err(|e| io_err("create", out_dir, e))?;
    let manifest_path = out_dir.join("manifest.json");
    let mut inputs = BTreeMap::new();
    inputs.insert("smollm2".to_string(), sha256_file(smollm2_q4_1)?);
    inputs.insert("imatrix".to_string(), sha256_file(golden_imatrix)?);
    let old = read_manifest(&manifest_path)
        .filter(|m| m.generator == GENERATOR_VERSION && m.inputs == inputs);

    let src = GgufModel::open(smollm2_q4_1, Access::Mmap)?;
    let imatrix = Imatrix::read(golden_imatrix)?;
    let mut files = BTreeMap::new();
    let mut report = BuildReport {
        built: Vec::new(),
        cached: Vec::new(),
    };
    for name in FILES {
        let out = out_dir.join(name);
        let recorded = old.as_ref().and_then(|m| m.files.get(name));
        if let Some(rec) = recorded {
            let size_ok = std::fs::metadata(&out).is_ok_and(|m| m.len() == rec.bytes);
            if size_ok && sha256_file(&out)? == rec.sha256 {
                progress(&format!("{name}: cached, checksum ok"));
                files.insert(name.to_string(), rec.clone());
                report.cached.push(name.to_string());
                continue;
            }
        }
        progress(&format!("{name}: building"));
        build_one(name, &out, &src, &imatrix)?;
        let rec = FileRecord {
            sha256: sha256_file(&out)?,
            bytes: std::fs::metadata(&out)
                .map_err(|e| io_err("stat", &out, e))?
                .len(),
        };
        progress(&format!(
            "{name}: {} bytes, sha256 {}",
            rec.bytes, rec.sha256
        ));
        files.insert(name.to_string(), rec);
        report.built.push(name.to_string());
    }
    let manifest = Manifest {
        generator: GENERATOR_VERSION.to_string(),
        inputs,
        files,
    };
    let tmp = out_dir.join(".manifest.json.tmp");
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(&tmp, text).map_err(|e| io_err("write", &tmp, e))?;
    std::fs::rename(&tmp, &manifest_path).map_err(|e| io_err("rename", &manifest_path, e))?;
    Ok(report)
}
