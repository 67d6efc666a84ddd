//! Compares the engine's next-token distributions with a dump of real llama.cpp's
//! (`tests/oracle/distributions.mjs`, with or without `--single`); prints per-position KLD
//! samples, the mean KLD and top-1 agreement.
//!
//! ```text
//! node tests/oracle/distributions.mjs MODEL wiki.test.raw --n-tokens 512 > ref.json
//! cargo run --release -p dynquant-engine --example compare_llamacpp -- MODEL ref.json
//! ```
//! Environment: `EXACT=1` exact f32 activations; `ALL=1` every position; `SAVE=F` writes our
//! logits; `SELF=F` also reports the KLD between logits saved earlier and this run (the
//! engine's own sensitivity to last-bit changes, e.g. a build without FMA).
use dynquant_engine::eval::TopK;
use dynquant_engine::ops::log_softmax;
use dynquant_engine::{Logits, Model, Numerics};
use dynquant_gguf::{Access, GgufModel};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&a[2]).unwrap()).unwrap();
    let ids = |a: &serde_json::Value| -> Vec<u32> {
        a.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let tokens = ids(&v["tokens"]);
    let gguf = GgufModel::open(&a[1], Access::Mmap).unwrap();
    let mut model = Model::load(&gguf).unwrap();
    if std::env::var("EXACT").is_ok() {
        model.numerics = Numerics::Exact;
    }
    let t0 = std::time::Instant::now();
    let mut s = model.session(tokens.len());
    let logits = if v["single"].as_bool() == Some(true) {
        let mut all = Vec::new();
        for &t in &tokens {
            s.clear();
            all.extend(s.eval(&[t], Logits::Last, None).unwrap());
        }
        all
    } else if let Ok(b) = std::env::var("SPLITS") {
        // consecutive batches of these sizes (e.g. "512,8": llama.cpp's n_batch split)
        let mut l = Vec::new();
        let mut at = 0;
        for n in b.split(',').map(|x| x.parse::<usize>().unwrap()) {
            l.extend(s.eval(&tokens[at..at + n], Logits::From(0), None).unwrap());
            at += n;
        }
        l
    } else {
        s.eval(&tokens, Logits::From(0), None).unwrap()
    };
    eprintln!("forward {:.2}s", t0.elapsed().as_secs_f64());
    let nv = model.n_vocab;
    if let Ok(f) = std::env::var("SAVE") {
        let b: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(f, b).unwrap();
    }
    if let Ok(f) = std::env::var("SELF") {
        let b = std::fs::read(f).unwrap();
        let other: Vec<f32> = b
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut kl = 0.0;
        let n = other.len() / nv;
        for j in 0..n {
            let a = log_softmax(&other[j * nv..(j + 1) * nv]);
            let bq = log_softmax(&logits[j * nv..(j + 1) * nv]);
            kl += a
                .iter()
                .zip(&bq)
                .map(|(x, y)| x.exp() * (x - y))
                .sum::<f64>();
        }
        eprintln!("self KLD {:.4e}", kl / n as f64);
    }
    let (mut kl, mut same) = (0.0, 0);
    let pos = v["positions"].as_array().unwrap();
    for (j, p) in pos.iter().enumerate() {
        let t = TopK {
            ids: ids(&p["ids"]),
            logp: p["logp"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
            tail: p["tail"].as_f64().unwrap() as f32,
        };
        let lp = log_softmax(&logits[j * nv..(j + 1) * nv]);
        let k = t.kld(&lp);
        if j < 4 || j % 64 == 0 || std::env::var("ALL").is_ok() {
            eprintln!(
                "pos {j}: kld {k:.3e} ref top {} {:.4} ours {:.4}",
                t.ids[0], t.logp[0], lp[t.ids[0] as usize]
            );
        }
        kl += k;
        let best = lp
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        same += usize::from(best == t.ids[0]);
    }
    eprintln!(
        "mean KLD {:.4e} top1 {:.4}",
        kl / pos.len() as f64,
        same as f64 / pos.len() as f64
    );
}
