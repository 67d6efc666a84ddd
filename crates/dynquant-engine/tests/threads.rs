//! The forward pass gives the same bits whatever the number of threads: every output value is
//! computed by one task in a fixed order (matrix products, flash-attention tiles, activations).

use dynquant_engine::{Logits, Model};
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::oracle::Oracle;

fn logits(model: &Model<'_>, tokens: &[u32], threads: usize) -> Vec<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    pool.install(|| {
        let mut s = model.session(tokens.len());
        // a batch of 100 (tiled attention, batched products), then 3 single tokens
        let mut out = s
            .eval(&tokens[..100], Logits::From(90), None)
            .expect("eval");
        for t in &tokens[100..] {
            out.extend(
                s.eval(std::slice::from_ref(t), Logits::Last, None)
                    .expect("eval"),
            );
        }
        out
    })
}

#[test]
fn logits_do_not_depend_on_the_thread_count() {
    let Some(o) = Oracle::get() else { return };
    let gguf = GgufModel::open(o.gemma(), Access::Mmap).expect("open");
    let model = Model::load(&gguf).expect("load");
    let tokens: Vec<u32> = (0..103u32).map(|i| 2 + (i * 7919) % 20000).collect();
    let one = logits(&model, &tokens, 1);
    let three = logits(&model, &tokens, 3);
    assert_eq!(one.len(), three.len());
    let differ = one
        .iter()
        .zip(&three)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} of {} logits differ", one.len());
}
