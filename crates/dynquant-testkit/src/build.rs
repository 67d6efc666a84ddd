//! Building every test model into one folder, idempotently, with checksums; and the one
//! place tests get their paths from.
//!
//! `manifest.json` in the folder records the generator version, the sha256 of the inputs (the
//! SmolLM2 Q4_1 file, llama.cpp's imatrix and the calibration text of `smollm2-moe-routed`)
//! and the sha256 and size of every output. A rebuild happens only for outputs that are
//! missing, whose checksum no longer matches, or when the generator or an input changed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use dynquant_gguf::imatrix::Imatrix;
use dynquant_gguf::{Access, GgufModel, WriteOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::moe_routed::{self, RoutedSpec};
use crate::synth::{self, Deepseek2Spec, MlaLayout, Qwen3MoeSpec};
use crate::{smollm2, Result, TestkitError};

/// Bump when any construction changes, so cached folders are rebuilt.
pub const GENERATOR_VERSION: &str = "test-models/5";

/// Environment variable naming the built folder.
pub const ENV_VAR: &str = "DYNQUANT_TEST_MODELS";

/// The outputs, in build order (`smollm2-moe-routed` is built from `smollm2-768`).
pub const FILES: [&str; 10] = [
    "smollm2-f16.gguf",
    "smollm2-768.gguf",
    "smollm2-768.imatrix.gguf",
    "smollm2-768-moe.gguf",
    "smollm2-768-moe.imatrix.gguf",
    "synth-deepseek2-mla.gguf",
    "synth-deepseek2-legacy.gguf",
    "synth-qwen3moe.gguf",
    "smollm2-moe-routed.gguf",
    "smollm2-moe-routed.imatrix.gguf",
];

/// The calibration text of `smollm2-moe-routed` (router, refit and imatrix):
/// `../shared/data/text/groups_merged.txt`, as for llama.cpp's imatrix of SmolLM2.
pub fn calibration_text() -> PathBuf {
    crate::oracle::shared_dir().join("data/text/groups_merged.txt")
}

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
    /// SmolLM2 as a 4-expert llama MoE with a router fitted to real text
    /// ([`crate::moe_routed`]).
    pub fn smollm2_moe_routed(&self) -> PathBuf {
        self.dir.join(FILES[8])
    }
    /// Its per-expert imatrix, collected by dynquant's engine on the calibration text.
    pub fn smollm2_moe_routed_imatrix(&self) -> PathBuf {
        self.dir.join(FILES[9])
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

fn record(path: &Path) -> Result<FileRecord> {
    Ok(FileRecord {
        sha256: sha256_file(path)?,
        bytes: std::fs::metadata(path)
            .map_err(|e| io_err("stat", path, e))?
            .len(),
    })
}

fn read_manifest(path: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// What the builders read besides the SmolLM2 source.
struct Inputs<'a> {
    src: &'a GgufModel,
    imatrix: &'a Imatrix,
    calibration: &'a Path,
    out_dir: &'a Path,
}

fn build_one(
    name: &str,
    out: &Path,
    inp: &Inputs<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let src = inp.src;
    let opts = WriteOptions {
        overwrite: true,
        protected_inputs: src.paths(),
    };
    match name {
        "smollm2-f16.gguf" => smollm2::write_f16_reference(src, out),
        "smollm2-768.gguf" => smollm2::write_768(src, out),
        "smollm2-768.imatrix.gguf" => Ok(smollm2::imatrix_768(inp.imatrix)?.write(out, &opts)?),
        "smollm2-768-moe.gguf" => smollm2::write_768_moe(src, out),
        "smollm2-768-moe.imatrix.gguf" => {
            Ok(smollm2::imatrix_768_moe(inp.imatrix)?.write(out, &opts)?)
        }
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
        // The model and its imatrix come from one run: either file triggers both.
        "smollm2-moe-routed.gguf" | "smollm2-moe-routed.imatrix.gguf" => {
            let dense = GgufModel::open(inp.out_dir.join(FILES[1]), Access::Mmap)?;
            let text = std::fs::read_to_string(inp.calibration)
                .map_err(|e| io_err("read", inp.calibration, e))?;
            let dataset = inp
                .calibration
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            moe_routed::write_moe_routed(
                &dense,
                &text,
                &dataset,
                &RoutedSpec::default(),
                &inp.out_dir.join(FILES[8]),
                &inp.out_dir.join(FILES[9]),
                progress,
            )
            .map(|_| ())
        }
        other => Err(TestkitError::BadSource(format!("unknown output {other}"))),
    }
}

/// Builds every test model into `out_dir` from the SmolLM2 Q4_1 file, llama.cpp's imatrix of
/// it and the [`calibration_text`], skipping outputs whose checksums match the manifest.
/// `progress` is told each step.
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
    let calibration = calibration_text();
    inputs.insert("calibration".to_string(), sha256_file(&calibration)?);
    let old = read_manifest(&manifest_path)
        .filter(|m| m.generator == GENERATOR_VERSION && m.inputs == inputs);

    let src = GgufModel::open(smollm2_q4_1, Access::Mmap)?;
    let imatrix = Imatrix::read(golden_imatrix)?;
    let inp = Inputs {
        src: &src,
        imatrix: &imatrix,
        calibration: &calibration,
        out_dir,
    };
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
        let paired = name == FILES[9] && report.built.iter().any(|b| b == FILES[8]);
        if !paired {
            progress(&format!("{name}: building"));
            build_one(name, &out, &inp, progress)?;
        }
        if name == FILES[9] && !paired {
            // Its model was rewritten with it (the same bytes, being deterministic): record
            // what is there now.
            let model = out_dir.join(FILES[8]);
            files.insert(FILES[8].to_string(), record(&model)?);
        }
        let rec = record(&out)?;
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
