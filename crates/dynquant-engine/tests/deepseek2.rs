//! deepseek2 (multi-head latent attention, both layouts) gives the same logits and imatrix
//! whatever the number of threads, in a prompt batch and token by token (the one-chunk
//! flash-attention path over the 320-dimension latent keys).

use dynquant_engine::imatrix::Collector;
use dynquant_engine::{Logits, Model};
use dynquant_gguf::{Access, GgufModel};
use dynquant_testkit::oracle::{shared_dir, Oracle};
use dynquant_tokenizer::Tokenizer;

#[test]
fn deepseek2_results_do_not_depend_on_the_thread_count() {
    let Some(o) = Oracle::get() else { return };
    for layout in ["mla", "legacy"] {
        let path = o
            .test_models()
            .dir
            .join(format!("synth-deepseek2-{layout}.gguf"));
        let gguf = GgufModel::open(&path, Access::Mmap).expect("open");
        let model = Model::load(&gguf).expect("load");
        let text = std::fs::read(shared_dir().join("data/text/wiki.test.raw")).expect("text");
        let text = String::from_utf8_lossy(&text[..4096]).into_owned();
        let tok = Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
        let mut tokens = tok.encode(&text, false, false).expect("tokenize");
        tokens.truncate(40);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let collector = Collector::new(Vec::new());
                let mut s = model.session(tokens.len() + 4);
                let mut logits = s
                    .eval(&tokens, Logits::From(0), Some(&collector))
                    .expect("eval");
                for &t in &tokens[..4] {
                    logits.extend(s.eval(&[t], Logits::Last, None).expect("eval"));
                }
                (logits, collector.to_imatrix(Vec::new(), 1, 40))
            })
        };
        let (l1, i1) = run(1);
        let (l2, i2) = run(2);
        let (l3, i3) = run(3);
        assert!(
            l1 == l2 && l1 == l3,
            "{layout}: logits differ between thread counts"
        );
        assert!(
            i1 == i2 && i1 == i3,
            "{layout}: imatrix differs between thread counts"
        );
        assert!(l1.iter().all(|v| v.is_finite()), "{layout}");
    }
}
