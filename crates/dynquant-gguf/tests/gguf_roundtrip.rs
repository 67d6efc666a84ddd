//! Property tests: any metadata table and tensor table written by the streaming writer reads
//! back identically, and re-encoding the parsed header reproduces the bytes exactly.

use dynquant_gguf::types::{GgmlType, TYPE_TABLE};
use dynquant_gguf::{
    build_header, encode_header, keys, Array, GgufFile, Metadata, StreamEncoder, TensorInfo, Value,
};
use proptest::prelude::*;

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z._]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ]
}

fn arb_array(depth: u32) -> BoxedStrategy<Array> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..6).prop_map(Array::U8),
        prop::collection::vec(any::<i8>(), 0..6).prop_map(Array::I8),
        prop::collection::vec(any::<u16>(), 0..6).prop_map(Array::U16),
        prop::collection::vec(any::<i16>(), 0..6).prop_map(Array::I16),
        prop::collection::vec(any::<u32>(), 0..6).prop_map(Array::U32),
        prop::collection::vec(any::<i32>(), 0..6).prop_map(Array::I32),
        prop::collection::vec(any::<f32>(), 0..6).prop_map(Array::F32),
        prop::collection::vec(any::<bool>(), 0..6).prop_map(Array::Bool),
        prop::collection::vec(arb_string(), 0..6).prop_map(Array::String),
        prop::collection::vec(any::<u64>(), 0..6).prop_map(Array::U64),
        prop::collection::vec(any::<i64>(), 0..6).prop_map(Array::I64),
        prop::collection::vec(any::<f64>(), 0..6).prop_map(Array::F64),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![
            4 => leaf,
            1 => prop::collection::vec(arb_array(depth - 1), 0..3).prop_map(Array::Array),
        ]
        .boxed()
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<f32>().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        arb_string().prop_map(Value::String),
        arb_array(2).prop_map(Value::Array),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<f64>().prop_map(Value::F64),
    ]
}

fn arb_metadata() -> impl Strategy<Value = Metadata> {
    (
        prop::collection::vec(("[a-z]{1,6}(\\.[a-z_]{1,8}){0,2}", arb_value()), 0..12),
        prop::option::of(prop::sample::select(vec![1u32, 8, 32, 64, 256])),
    )
        .prop_map(|(entries, alignment)| {
            let mut md = Metadata::new();
            for (k, v) in entries {
                if k != keys::general::ALIGNMENT {
                    md.set(k, v);
                }
            }
            if let Some(a) = alignment {
                md.set(keys::general::ALIGNMENT, Value::U32(a));
            }
            md
        })
}

fn arb_tensors() -> impl Strategy<Value = Vec<TensorInfo>> {
    let weight_types: Vec<GgmlType> = TYPE_TABLE.iter().map(|t| t.ty).collect();
    prop::collection::vec(
        (
            prop::sample::select(weight_types),
            1u64..3,
            prop::collection::vec(0u64..4, 0..3),
        ),
        0..8,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (ty, blocks, rest))| {
                let mut shape = vec![blocks * ty.block_size()];
                shape.extend(rest);
                TensorInfo::new(format!("blk.{i}.t.weight"), shape, ty).unwrap()
            })
            .collect()
    })
}

fn fake_data(t: &TensorInfo, seed: usize) -> Vec<u8> {
    (0..t.n_bytes as usize)
        .map(|j| (j.wrapping_mul(31) ^ seed) as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn written_files_read_back_identically(md in arb_metadata(), tensors in arb_tensors(), chunk in 1usize..97) {
        let header = build_header(md.clone(), tensors).unwrap();
        let path = std::path::Path::new("<memory>");
        let mut enc = StreamEncoder::new(Vec::new(), &header, path).unwrap();
        for (i, t) in header.tensors.iter().enumerate() {
            let data = fake_data(t, i);
            if data.is_empty() {
                enc.write(&t.name, &data, path).unwrap();
            }
            for piece in data.chunks(chunk) {
                enc.write(&t.name, piece, path).unwrap();
            }
        }
        let (bytes, n) = enc.finish(path).unwrap();
        prop_assert_eq!(n as usize, bytes.len());

        let file = GgufFile::from_bytes(path, bytes.clone()).unwrap();
        prop_assert_eq!(&file.header().metadata, &md);
        prop_assert_eq!(&file.header().tensors, &header.tensors);
        prop_assert_eq!(file.header().data_offset, header.data_offset);
        prop_assert!(file.header().layout_is_canonical());
        for (i, t) in header.tensors.iter().enumerate() {
            prop_assert_eq!(&*file.tensor_data(i).unwrap(), &fake_data(t, i)[..]);
        }
        // Re-encoding the parsed header gives the same header bytes.
        let again = encode_header(file.header());
        prop_assert_eq!(&again[..], &bytes[..header.data_offset as usize]);
    }
}
