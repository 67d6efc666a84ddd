//! llama.cpp's own imatrix of SmolLM2 (`../shared/golden/smollm2-135m.imatrix.gguf`) reads
//! and writes back byte for byte.

use std::path::PathBuf;

use dynquant_core::gguf::WriteOptions;
use dynquant_core::imatrix::Imatrix;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/golden/smollm2-135m.imatrix.gguf")
}

#[test]
fn golden_imatrix_round_trips_byte_for_byte() {
    let im = Imatrix::read(golden()).unwrap();
    assert_eq!(im.entries.len(), 210);
    assert_eq!(im.chunk_size, 512);
    let e = im.get("blk.0.ffn_down.weight").unwrap();
    assert_eq!((e.n_per_mat, e.n_mat()), (1536, 1));
    assert!(e.counts[0] > 0.0);
    let w = e.weights(0);
    assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.imatrix.gguf");
    im.write(&out, &WriteOptions::default()).unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(golden()).unwrap());
}
