//! The engine entry points a probe relies on, on the synthetic MoE model: continuing an
//! evaluation from any block's kept input gives the bits of a whole evaluation, an override
//! with the file's own bytes changes nothing while one with other bytes changes the logits,
//! and the model identity is stable and sees a changed weight.

use std::path::PathBuf;

use dynquant_engine::{Logits, Model, WeightOverrides};
use dynquant_gguf::{Access, GgufModel};

fn model_path() -> Option<PathBuf> {
    let dir = std::env::var_os("DYNQUANT_TEST_MODELS")?;
    let p = PathBuf::from(dir).join("synth-qwen3moe.gguf");
    p.exists().then_some(p)
}

#[test]
fn eval_from_any_block_gives_the_bits_of_a_whole_evaluation() {
    let Some(path) = model_path() else { return };
    let gguf = GgufModel::open(&path, Access::Mmap).unwrap();
    let model = Model::load(&gguf).unwrap();
    let tokens: Vec<u32> = (0..24u32).map(|i| (i * 7919 + 13) % 5000).collect();
    let mut s = model.session(tokens.len());
    let whole = s.eval(&tokens, Logits::From(12), None).unwrap();
    let states = s.hidden_states(&tokens).unwrap();
    assert_eq!(states.len(), model.n_layer() + 1);
    for (b, state) in states.iter().enumerate() {
        s.clear();
        let part = s.eval_from(b, state, Logits::From(12)).unwrap();
        assert!(
            part.iter()
                .zip(&whole)
                .all(|(a, c)| a.to_bits() == c.to_bits()),
            "from block {b}"
        );
    }

    // overriding a tensor with its own bytes changes nothing; with other bytes, the logits
    let t = gguf
        .tensors()
        .find(|t| t.info.name == "blk.1.attn_v.weight")
        .unwrap();
    let own = gguf.tensor_data(&t).unwrap().to_vec();
    let mut same = WeightOverrides::new();
    same.insert("blk.1.attn_v.weight", t.info.ggml_type, own.clone());
    let m2 = Model::load_with(&gguf, &same).unwrap();
    let mut s2 = m2.session(tokens.len());
    let again = s2.eval_from(1, &states[1], Logits::From(12)).unwrap();
    assert!(again
        .iter()
        .zip(&whole)
        .all(|(a, c)| a.to_bits() == c.to_bits()));
    let mut zeroed = WeightOverrides::new();
    zeroed.insert(
        "blk.1.attn_v.weight",
        t.info.ggml_type,
        vec![0u8; own.len()],
    );
    let m3 = Model::load_with(&gguf, &zeroed).unwrap();
    let mut s3 = m3.session(tokens.len());
    let changed = s3.eval_from(1, &states[1], Logits::From(12)).unwrap();
    assert!(changed.iter().zip(&whole).any(|(a, c)| a != c));
    // a later block's cached input is unaffected by blocks after it, so from block 2 the
    // override of block 1 is not seen
    s3.clear();
    let later = s3.eval_from(2, &states[2], Logits::From(12)).unwrap();
    assert!(later
        .iter()
        .zip(&whole)
        .all(|(a, c)| a.to_bits() == c.to_bits()));
    // bytes of the wrong length are refused, not read out of bounds
    let mut short = WeightOverrides::new();
    short.insert("blk.1.attn_v.weight", t.info.ggml_type, vec![0u8; 10]);
    assert!(Model::load_with(&gguf, &short).is_err());
}

#[test]
fn model_identity_is_stable_and_sees_changed_weights() {
    let Some(path) = model_path() else { return };
    let gguf = GgufModel::open(&path, Access::Mmap).unwrap();
    let a = dynquant_measure::gguf_identity(&gguf).unwrap();
    assert_eq!(a.len(), 64);
    assert_eq!(a, dynquant_measure::gguf_identity(&gguf).unwrap());
    // the same model with one sampled value changed: copy the file, flip a byte of the
    // first tensor's first row
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("m.gguf");
    let mut bytes = std::fs::read(&path).unwrap();
    let t = gguf.tensors().next().unwrap();
    let at = gguf.parts()[0].header().data_offset + t.info.offset;
    bytes[at as usize] ^= 0x01;
    std::fs::write(&copy, &bytes).unwrap();
    let changed = GgufModel::open(&copy, Access::Mmap).unwrap();
    assert_ne!(a, dynquant_measure::gguf_identity(&changed).unwrap());
}
