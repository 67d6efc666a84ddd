//! Fuzzes the safetensors reader (`dynquant_hf::safetensors::Checkpoint::open`): a single
//! `model.safetensors`, or a `model.safetensors.index.json` over one fixed valid shard. The first
//! byte picks the mode. Any input must give Ok or a typed error; tensors that opened must read.
#![no_main]

#[path = "common.rs"]
mod common;

use dynquant_hf::safetensors::Checkpoint;
use libfuzzer_sys::fuzz_target;

/// A valid shard with one F32 tensor `w` of shape [2, 2].
fn shard() -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&[0u8; 16]);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        common::remove_scratch("model.safetensors.index.json");
        common::write_scratch("model.safetensors", rest);
    } else {
        common::remove_scratch("model.safetensors");
        common::write_scratch("model.safetensors.index.json", rest);
        common::write_scratch("a.safetensors", &shard());
    }
    let fp8_block = (mode & 2 != 0).then_some([2, 2]);
    let Ok(ckpt) = Checkpoint::open(common::scratch_dir(), fp8_block) else {
        return;
    };
    let _ = ckpt.check_fp8();
    for name in ckpt.names().to_vec() {
        let t = ckpt.get(&name).expect("a listed tensor exists");
        if t.n_rows() == 0 || t.row_len() > 1 << 16 {
            continue;
        }
        let mut row = vec![0f32; t.row_len()];
        let _ = ckpt.read_rows(&name, 0, &mut row);
    }
});
