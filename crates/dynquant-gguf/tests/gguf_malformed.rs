//! Malformed GGUF input: every case gives a typed error, never a panic.

use dynquant_gguf::types::GgmlType;
use dynquant_gguf::{
    build_header, copy_model, parse_header, Access, GgufError, GgufFile, GgufModel, GgufWriter,
    Metadata, OutputTarget, SplitSpec, StreamEncoder, TensorInfo, Value, WriteOptions,
};

/// Hand-rolled GGUF bytes, so that any field can hold any value.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn header(n_tensors: u64, n_kv: u64) -> Self {
        Raw::default()
            .bytes(b"GGUF")
            .u32(3)
            .u64(n_tensors)
            .u64(n_kv)
    }
    /// Tensor info: name, dims, type id, offset.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(mut self, n: usize) -> Self {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.extend((0..n).map(|i| i as u8));
        self
    }
    fn parse(&self) -> Result<dynquant_gguf::GgufHeader, GgufError> {
        parse_header(&self.0[..], self.0.len() as u64)
    }
}

/// A small valid file written by our own writer: metadata of every kind, three tensors.
fn small_valid_file() -> Vec<u8> {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("a.u8", Value::U8(7));
    md.set("a.f64", Value::F64(1.5));
    md.set("a.bool", Value::Bool(true));
    md.set(
        "a.strings",
        Value::Array(dynquant_gguf::Array::String(vec!["x".into(), "yz".into()])),
    );
    md.set(
        "a.nested",
        Value::Array(dynquant_gguf::Array::Array(vec![
            dynquant_gguf::Array::I16(vec![1, -2]),
        ])),
    );
    let tensors = vec![
        TensorInfo::new("a.weight", vec![32, 2], GgmlType::Q4_0).unwrap(),
        TensorInfo::new("b.weight", vec![3], GgmlType::F32).unwrap(),
        TensorInfo::new("c.weight", vec![256], GgmlType::Q4_K).unwrap(),
    ];
    let header = build_header(md, tensors).unwrap();
    let p = std::path::Path::new("<mem>");
    let mut enc = StreamEncoder::new(Vec::new(), &header, p).unwrap();
    for t in &header.tensors {
        enc.write(&t.name, &vec![1u8; t.n_bytes as usize], p)
            .unwrap();
    }
    enc.finish(p).unwrap().0
}

#[test]
fn every_truncation_is_an_error_and_padding_is_optional() {
    let bytes = small_valid_file();
    let full = GgufFile::from_bytes("x", bytes.clone()).unwrap();
    let h = full.header();
    let last = h.tensors.last().unwrap();
    let data_end = (h.data_offset + last.offset + last.n_bytes) as usize;
    for len in 0..bytes.len() {
        let r = parse_header(&bytes[..len], len as u64);
        if len < data_end {
            let err = r.expect_err(&format!("prefix of {len} bytes must fail"));
            assert!(
                matches!(
                    err,
                    GgufError::Truncated { .. } | GgufError::TensorOutOfBounds { .. }
                ),
                "len {len}: {err}"
            );
        } else {
            // Only the zero padding after the last tensor is missing.
            assert!(r.is_ok(), "len {len}");
        }
    }
}

#[test]
fn bad_magic_and_versions() {
    let mut b = small_valid_file();
    b[0] = b'X';
    assert!(matches!(
        parse_header(&b[..], b.len() as u64),
        Err(GgufError::BadMagic { .. })
    ));
    for v in [0u32, 1, 4, 0xFFFF_FFFF] {
        let r = Raw::default().bytes(b"GGUF").u32(v).u64(0).u64(0);
        assert!(matches!(r.parse(), Err(GgufError::UnsupportedVersion(x)) if x == v));
    }
    // Version 2 is accepted.
    let r = Raw::default().bytes(b"GGUF").u32(2).u64(0).u64(0);
    assert_eq!(r.parse().unwrap().version, 2);
}

#[test]
fn huge_counts_are_rejected_before_allocating() {
    assert!(matches!(
        Raw::header(u64::MAX, 0).parse(),
        Err(GgufError::TooLarge {
            what: "tensor count",
            ..
        })
    ));
    assert!(matches!(
        Raw::header(0, u64::MAX).parse(),
        Err(GgufError::TooLarge {
            what: "metadata entry count",
            ..
        })
    ));
    // Counts that are small in absolute terms but larger than the file can hold.
    assert!(matches!(
        Raw::header(1000, 0).parse(),
        Err(GgufError::Truncated { .. })
    ));
    // A string that claims 2^40 bytes.
    let r = Raw::header(0, 1).u64(1 << 40).bytes(&[0; 16]);
    assert!(matches!(
        r.parse(),
        Err(GgufError::TooLarge {
            what: "string length",
            ..
        })
    ));
    // A u32 array claiming 2^60 elements.
    let r = Raw::header(0, 1)
        .str("k")
        .u32(9)
        .u32(4)
        .u64(1 << 60)
        .bytes(&[0; 64]);
    assert!(matches!(
        r.parse(),
        Err(GgufError::TooLarge {
            what: "array length",
            ..
        })
    ));
    // A string array whose count fits in memory arithmetic but not in the file.
    let r = Raw::header(0, 1)
        .str("k")
        .u32(9)
        .u32(8)
        .u64(1 << 20)
        .bytes(&[0; 64]);
    assert!(matches!(r.parse(), Err(GgufError::Truncated { .. })));
}

#[test]
fn bad_values() {
    let r = Raw::header(0, 1).str("k").u32(13).u32(0);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidValueType { type_id: 13, .. })
    ));
    let r = Raw::header(0, 1).str("k").u32(7).bytes(&[2]);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidBool { byte: 2, .. })
    ));
    let r = Raw::header(0, 1)
        .str("k")
        .u32(8)
        .u64(2)
        .bytes(&[0xff, 0xfe]);
    assert!(matches!(r.parse(), Err(GgufError::InvalidUtf8 { .. })));
    let r = Raw::header(0, 1).str("").u32(4).u32(0);
    assert!(matches!(r.parse(), Err(GgufError::EmptyKey { index: 0 })));
    let r = Raw::header(0, 2)
        .str("k")
        .u32(4)
        .u32(0)
        .str("k")
        .u32(4)
        .u32(1);
    assert!(matches!(r.parse(), Err(GgufError::DuplicateKey(k)) if k == "k"));
    // Arrays nested 100 deep.
    let mut r = Raw::header(0, 1).str("k").u32(9);
    for _ in 0..100 {
        r = r.u32(9).u64(1);
    }
    r = r.u32(4).u64(0);
    assert!(matches!(r.parse(), Err(GgufError::NestingTooDeep { .. })));
}

#[test]
fn bad_alignment() {
    let r = Raw::header(0, 1).str("general.alignment").u32(4).u32(3);
    assert!(matches!(r.parse(), Err(GgufError::BadAlignment(_))));
    let r = Raw::header(0, 1).str("general.alignment").u32(4).u32(0);
    assert!(matches!(r.parse(), Err(GgufError::BadAlignment(_))));
    let r = Raw::header(0, 1).str("general.alignment").u32(10).u64(32);
    assert!(matches!(r.parse(), Err(GgufError::BadAlignment(_))));
}

#[test]
fn bad_tensor_infos() {
    let f32_id = GgmlType::F32.id();
    // Unknown and retired type ids.
    for id in [4u32, 31, 43, 9999] {
        let r = Raw::header(1, 0).tensor("t", &[4], id, 0).data(64);
        assert!(
            matches!(r.parse(), Err(GgufError::UnknownTensorType { type_id, .. }) if type_id == id)
        );
    }
    let r = Raw::header(1, 0)
        .tensor("t", &[1, 1, 1, 1, 1], f32_id, 0)
        .data(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::TooManyDims { n_dims: 5, .. })
    ));
    let long = "n".repeat(64);
    let r = Raw::header(1, 0).tensor(&long, &[4], f32_id, 0).data(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::NameTooLong { len: 64, .. })
    ));
    // A name length of 2^62 is also "too long", not an allocation.
    let r = Raw::header(1, 0).u64(1 << 62).bytes(&[b'a'; 80]);
    assert!(matches!(r.parse(), Err(GgufError::NameTooLong { .. })));
    // Row not a multiple of the block, negative dims, element-count overflow.
    let r = Raw::header(1, 0)
        .tensor("t", &[33], GgmlType::Q4_0.id(), 0)
        .data(64);
    assert!(matches!(r.parse(), Err(GgufError::BadShape { .. })));
    let r = Raw::header(1, 0)
        .tensor("t", &[u64::MAX], f32_id, 0)
        .data(64);
    assert!(matches!(r.parse(), Err(GgufError::BadShape { .. })));
    let r = Raw::header(1, 0)
        .tensor("t", &[1 << 32, 1 << 32], f32_id, 0)
        .data(64);
    assert!(matches!(r.parse(), Err(GgufError::BadShape { .. })));
    // Duplicate names.
    let r = Raw::header(2, 0)
        .tensor("t", &[8], f32_id, 0)
        .tensor("t", &[8], f32_id, 32)
        .data(64);
    assert!(matches!(r.parse(), Err(GgufError::DuplicateTensor(_))));
}

#[test]
fn bad_offsets() {
    let f32_id = GgmlType::F32.id();
    let r = Raw::header(1, 0).tensor("t", &[8], f32_id, 8).data(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::MisalignedOffset { offset: 8, .. })
    ));
    let r = Raw::header(1, 0).tensor("t", &[8], f32_id, 64).data(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
    let r = Raw::header(1, 0)
        .tensor("t", &[8], f32_id, u64::MAX - 31)
        .data(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
    let r = Raw::header(2, 0)
        .tensor("a", &[16], f32_id, 0)
        .tensor("b", &[8], f32_id, 32)
        .data(128);
    assert!(matches!(
        r.parse(),
        Err(GgufError::OverlappingTensors { .. })
    ));
    // Non-contiguous but valid (gaps, reversed order) is accepted and reported non-canonical.
    let h = Raw::header(2, 0)
        .tensor("a", &[8], f32_id, 64)
        .tensor("b", &[8], f32_id, 0)
        .data(128)
        .parse()
        .unwrap();
    assert!(!h.layout_is_canonical());
}

fn write_model(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, small_valid_file()).unwrap();
    path
}

fn split_small(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let src = write_model(dir, "m.gguf");
    let model = GgufModel::open(&src, Access::Pread).unwrap();
    let spec = SplitSpec {
        max_bytes: None,
        max_tensors: Some(1),
    };
    let target = OutputTarget::Split {
        prefix: dir.join("s"),
        spec,
    };
    copy_model(&model, &target, &WriteOptions::default())
        .unwrap()
        .paths
}

#[test]
fn split_sets_round_trip_and_bad_sets_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let parts = split_small(dir.path());
    assert_eq!(parts.len(), 3);
    assert!(parts[0].ends_with("s-00001-of-00003.gguf"));
    let model = GgufModel::open(&parts[0], Access::Mmap).unwrap();
    assert_eq!(model.n_tensors(), 3);
    let merged = dir.path().join("merged.gguf");
    copy_model(
        &model,
        &OutputTarget::Single(merged.clone()),
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(dir.path().join("m.gguf")).unwrap()
    );

    // Opening a middle shard names the first one.
    let err = GgufModel::open(&parts[1], Access::Pread).unwrap_err();
    assert!(matches!(err, GgufError::BadSplit { .. }), "{err}");
    assert!(err.to_string().contains("open the first part"), "{err}");

    // A missing shard.
    let moved = dir.path().join("moved.gguf");
    std::fs::rename(&parts[2], &moved).unwrap();
    let err = GgufModel::open(&parts[0], Access::Pread).unwrap_err();
    assert!(matches!(err, GgufError::BadSplit { .. }), "{err}");
    assert!(err.to_string().contains("missing"));

    // A shard from another set (wrong split.no) in its place.
    std::fs::copy(&parts[1], &parts[2]).unwrap();
    let err = GgufModel::open(&parts[0], Access::Pread).unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::BadSplit { .. } | GgufError::DuplicateTensor(_)
        ),
        "{err}"
    );

    // A first shard renamed so that its name no longer says which set it heads.
    let renamed = dir.path().join("renamed.gguf");
    std::fs::copy(&parts[0], &renamed).unwrap();
    let err = GgufModel::open(&renamed, Access::Pread).unwrap_err();
    assert!(matches!(err, GgufError::BadSplit { .. }), "{err}");
}

#[test]
fn split_tensor_count_mismatch_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let parts = split_small(dir.path());
    // Rewrite shard 3 with a wrong split.tensors.count.
    let f = GgufFile::open_pread(&parts[2]).unwrap();
    let mut md = f.header().metadata.clone();
    md.set("split.tensors.count", Value::I32(7));
    let tensors = f.header().tensors.clone();
    let data = f.tensor_data(0).unwrap().into_owned();
    drop(f);
    std::fs::remove_file(&parts[2]).unwrap();
    // GgufWriter drops split keys by design, so encode this shard by hand.
    let header = build_header(md, tensors).unwrap();
    let p = std::path::Path::new("<mem>");
    let mut enc = StreamEncoder::new(Vec::new(), &header, p).unwrap();
    enc.write(&header.tensors[0].name, &data, p).unwrap();
    std::fs::write(&parts[2], enc.finish(p).unwrap().0).unwrap();
    let err = GgufModel::open(&parts[0], Access::Pread).unwrap_err();
    assert!(matches!(err, GgufError::BadSplit { .. }), "{err}");
}

#[test]
fn writer_refuses_inputs_and_existing_outputs_and_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = write_model(dir.path(), "m.gguf");
    let model = GgufModel::open(&src, Access::Mmap).unwrap();
    // Output == input, even through another spelling of the path.
    let same = dir.path().join(".").join("m.gguf");
    let err = copy_model(
        &model,
        &OutputTarget::Single(same),
        &WriteOptions {
            overwrite: true,
            protected_inputs: vec![],
        },
    )
    .unwrap_err();
    assert!(matches!(err, GgufError::WouldOverwriteInput(_)), "{err}");
    // Existing output without overwrite.
    let other = write_model(dir.path(), "other.gguf");
    let err = copy_model(
        &model,
        &OutputTarget::Single(other),
        &WriteOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, GgufError::OutputExists(_)), "{err}");

    // An abandoned writer leaves neither the final file nor a temp file.
    let out = dir.path().join("abandoned.gguf");
    let tensors: Vec<TensorInfo> = model.tensors().map(|t| t.info.clone()).collect();
    let mut w = GgufWriter::create(
        &OutputTarget::Single(out.clone()),
        model.merged_metadata(),
        tensors.clone(),
        &WriteOptions::default(),
    )
    .unwrap();
    w.write(&tensors[0].name, &[0u8; 4]).unwrap();
    let err = w.write(&tensors[1].name, &[0u8; 4]).unwrap_err();
    assert!(matches!(err, GgufError::OutOfOrder { .. }), "{err}");
    let err = w.finish().unwrap_err();
    assert!(matches!(err, GgufError::Incomplete { .. }), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!out.exists());
    assert!(
        leftovers.iter().all(|n| !n.contains("dynquant-tmp")),
        "{leftovers:?}"
    );
    // Too much data for a tensor.
    let mut w = GgufWriter::create(
        &OutputTarget::Single(out.clone()),
        model.merged_metadata(),
        tensors.clone(),
        &WriteOptions::default(),
    )
    .unwrap();
    let err = w
        .write(
            &tensors[0].name,
            &vec![0u8; tensors[0].n_bytes as usize + 1],
        )
        .unwrap_err();
    assert!(matches!(err, GgufError::TooMuchData { .. }), "{err}");
}

#[test]
fn split_options_are_checked() {
    let t = vec![TensorInfo::new("a", vec![8], GgmlType::F32).unwrap()];
    let r = dynquant_gguf::plan_shards(
        &t,
        32,
        SplitSpec {
            max_bytes: None,
            max_tensors: Some(0),
        },
    );
    assert!(matches!(r, Err(GgufError::BadSplitOptions(_))));
}

#[test]
fn shards_follow_gguf_split_size_rule() {
    // Four tensors of 100 bytes (128 padded): max 300 bytes puts two per shard.
    let t: Vec<TensorInfo> = (0..4)
        .map(|i| TensorInfo::new(format!("t{i}"), vec![25], GgmlType::F32).unwrap())
        .collect();
    let spec = SplitSpec {
        max_bytes: Some(300),
        max_tensors: None,
    };
    let shards = dynquant_gguf::plan_shards(&t, 32, spec).unwrap();
    assert_eq!(shards, vec![0..2, 2..4]);
    // A tensor bigger than the limit still gets a shard of its own.
    let spec = SplitSpec {
        max_bytes: Some(10),
        max_tensors: None,
    };
    assert_eq!(dynquant_gguf::plan_shards(&t, 32, spec).unwrap().len(), 4);
    // Both limits: whichever comes first.
    let spec = SplitSpec {
        max_bytes: Some(1000),
        max_tensors: Some(3),
    };
    assert_eq!(
        dynquant_gguf::plan_shards(&t, 32, spec).unwrap(),
        vec![0..3, 3..4]
    );
    assert_eq!(dynquant_gguf::parse_size("50G"), Some(50_000_000_000));
    assert_eq!(dynquant_gguf::parse_size("1.5M"), Some(1_500_000));
    assert_eq!(dynquant_gguf::parse_size("4GiB"), Some(4 << 30));
    assert_eq!(dynquant_gguf::parse_size("12x"), None);
    assert_eq!(dynquant_gguf::parse_size("0"), None);
}

/// A SIGKILLed writer leaves its temporary (`.<name>.<pid>.dynquant-tmp`): the next writer of
/// the same output removes it once that process is gone, and leaves alone a live process's
/// temporary and other outputs' temporaries.
#[cfg(unix)]
#[test]
fn a_dead_writers_temporaries_are_removed_and_a_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let src = write_model(dir.path(), "m.gguf");
    let model = GgufModel::open(&src, Access::Pread).unwrap();
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    let dead = ended.id();
    ended.wait().unwrap();
    let dead_tmp = dir.path().join(format!(".out.gguf.{dead}.dynquant-tmp"));
    // Process 1 (init) always runs.
    let live_tmp = dir.path().join(".out.gguf.1.dynquant-tmp");
    let other_output = dir.path().join(format!(".other.gguf.{dead}.dynquant-tmp"));
    for p in [&dead_tmp, &live_tmp, &other_output] {
        std::fs::write(p, b"partial").unwrap();
    }
    let out = dir.path().join("out.gguf");
    copy_model(
        &model,
        &OutputTarget::Single(out.clone()),
        &WriteOptions::default(),
    )
    .unwrap();
    assert!(!dead_tmp.exists());
    assert!(live_tmp.exists());
    assert!(other_output.exists());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
}
