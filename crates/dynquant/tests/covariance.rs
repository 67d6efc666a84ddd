//! `imatrix --covariance` and `quantize --covariance` (error feedback across a row's blocks) on
//! a mixture-of-experts model (`synth-qwen3moe`: 16 experts of 512 columns).
//!
//! The covariance is collected in the imatrix's own pass: the imatrix written beside it is the
//! one `imatrix` writes alone, byte for byte, and the covariance's diagonal is its sums. A quant
//! with feedback has the plain quant's size and types, the same bytes whatever the thread
//! count, and other bytes than the plain quant; bad covariance input is one line, nothing
//! written.

mod common;

use common::{clean_failure, dynquant, ok, oracle};
use dynquant_gguf::covariance::CovarianceFile;
use dynquant_gguf::imatrix::Imatrix;
use dynquant_testkit::oracle::shared_dir;

#[test]
fn covariance_is_the_imatrix_pass_and_feeds_a_deterministic_quant() {
    let Some(o) = oracle() else { return };
    let model = o.test_models().dir.join("synth-qwen3moe.gguf");
    let text = shared_dir().join("data/text/groups_merged.txt");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);

    let calib = |im: &std::path::Path, extra: &[&std::ffi::OsStr]| {
        let mut a: Vec<&std::ffi::OsStr> =
            args!["imatrix", model, "--text", text, "-o", im, "--ctx", "64", "--chunks", "3"]
                .to_vec();
        a.extend_from_slice(extra);
        ok(dynquant(&a), "imatrix");
    };
    calib(&p("alone.imatrix"), &[]);
    calib(&p("im.gguf"), args!["--covariance", p("cov.gguf")]);
    assert_eq!(
        std::fs::read(p("alone.imatrix")).unwrap(),
        std::fs::read(p("im.gguf")).unwrap(),
        "the imatrix of the covariance pass differs"
    );

    // The covariance's diagonal is the imatrix's sums, its counts the imatrix's counts, and it
    // is symmetric.
    let im = Imatrix::read(p("im.gguf")).expect("imatrix");
    let cov = CovarianceFile::open(p("cov.gguf")).expect("covariance");
    assert_eq!(cov.names().len(), im.entries.len());
    for name in ["blk.1.attn_q.weight", "blk.2.ffn_down_exps.weight"] {
        let e = cov.get(name).expect("read").expect("entry");
        let i = im.get(name).expect("imatrix entry");
        assert_eq!(e.counts, i.counts, "{name}");
        let k = e.n_per_mat;
        assert_eq!(k, i.n_per_mat, "{name}");
        for m in 0..e.n_mat() {
            let s = &e.sums[m * k * k..(m + 1) * k * k];
            for c in 0..k {
                let want = i.in_sum2[m * k + c];
                let got = s[c * k + c];
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1e-6),
                    "{name} matrix {m} column {c}: {got} vs {want}"
                );
                assert_eq!(s[c * k + (c + 7) % k], s[((c + 7) % k) * k + c]);
            }
        }
    }

    // Plain and fed quants: same size, other bytes; the fed one the same on 1 and 2 threads.
    let im_path = p("im.gguf");
    let quant = |out: &std::path::Path, threads: &str, cov: bool| {
        let mut a: Vec<&std::ffi::OsStr> = args![
            "quantize",
            model,
            out,
            "--recipe",
            "q2_k",
            "--imatrix",
            im_path,
            "--imatrix-fallback",
            "--threads",
            threads
        ]
        .to_vec();
        let cov_path = p("cov.gguf");
        if cov {
            a.push("--covariance".as_ref());
            a.push(cov_path.as_os_str());
        }
        let out = dynquant(&a);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ok(out, "quantize");
        stderr
    };
    quant(&p("plain.gguf"), "2", false);
    let said = quant(&p("fed1.gguf"), "1", true);
    assert!(said.contains("error feedback (GPTQ)"), "{said}");
    quant(&p("fed2.gguf"), "2", true);
    let (plain, fed1, fed2) = (
        std::fs::read(p("plain.gguf")).unwrap(),
        std::fs::read(p("fed1.gguf")).unwrap(),
        std::fs::read(p("fed2.gguf")).unwrap(),
    );
    assert_eq!(fed1, fed2, "thread count changed the fed quant");
    assert_eq!(plain.len(), fed1.len());
    assert_ne!(plain, fed1);

    // Bad covariance input: an imatrix given as a covariance file, and a covariance of another
    // model (deepseek2's shapes). One line, exit 1, nothing written.
    let deepseek = o.test_models().dir.join("synth-deepseek2-mla.gguf");
    let other_im = p("ds.imatrix");
    let other_cov = p("ds.cov");
    ok(
        dynquant(args![
            "imatrix",
            deepseek,
            "--text",
            text,
            "-o",
            other_im,
            "--ctx",
            "32",
            "--chunks",
            "1",
            "--covariance",
            other_cov
        ]),
        "deepseek2 covariance",
    );
    for (bad, says) in [
        (p("im.gguf"), "not a covariance file"),
        (other_cov.clone(), "was made for another model"),
    ] {
        let out_path = p("bad.gguf");
        let msg = clean_failure(
            dynquant(args![
                "quantize",
                model,
                out_path,
                "--recipe",
                "q2_k",
                "--imatrix",
                p("im.gguf"),
                "--imatrix-fallback",
                "--covariance",
                bad
            ]),
            "bad covariance",
        );
        assert!(msg.contains(says), "{msg}");
        assert!(!out_path.exists());
    }
    // An existing covariance output is not replaced without --force.
    let before = std::fs::read(p("cov.gguf")).unwrap();
    let msg = clean_failure(
        dynquant(args![
            "imatrix",
            model,
            "--text",
            text,
            "-o",
            p("im3.gguf"),
            "--ctx",
            "64",
            "--chunks",
            "1",
            "--covariance",
            p("cov.gguf")
        ]),
        "existing covariance",
    );
    assert!(msg.contains("exists"), "{msg}");
    assert_eq!(std::fs::read(p("cov.gguf")).unwrap(), before);
}
