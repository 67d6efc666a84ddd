#!/usr/bin/env python3
"""Measured allocation against hand recipes and llama.cpp's own files, at equal size (issue 16).

For a model, its imatrix and a sensitivity scan (`dynquant measure`, on groups_merged.txt):
  * budgets: the byte sizes of reference files (llama.cpp's own mixes made by llama_model_quantize,
    or dynquant's hand presets);
  * for each budget: `dynquant quantize --target-size BYTES --sensitivity SENS` (the allocated file),
    dynquant's own quant of the same mix/preset, and the llama.cpp file;
  * mean KLD (± standard error) of each against the unquantized model on wiki.test.raw (never the
    calibration text), by `dynquant kld` against one base file; the allocated files' perplexity in
    llama.cpp (node-llama-cpp) beside ours; predicted vs measured KLD (Spearman).
With --context-rounds N, each allocation is refined N times: `dynquant measure context` of the last
allocated file (on groups_merged.txt, adding its in-context costs to the scan), then a new allocation
with the result; the last one is the allocated file.
Resumable: files already in WORKDIR are reused. Prints a Markdown table and a JSON summary.

Usage (after scripts/prepare-oracles.sh, with the test models and a .sens file):
  . .oracle/env.sh && python3 scripts/allocation-bench.py --model M.gguf --imatrix M.imatrix.gguf \
      --sens M.sens --work /tmp/alloc-M --mixes iq2_xs,q2_k,q3_k_m [--presets ud-iq1_s,...] \
      [--llama-pool iq1_s,iq1_m,...] [--chunks 8]
--mixes: budgets are llama.cpp's files of these mixes (compared with llama.cpp's file and ours).
--presets: budgets are dynquant's plans of these presets (compared with the preset and with the
  smallest llama.cpp file of --llama-pool at or above that size; the pool is ranked by dynquant's
  plan of each mix, and only the chosen mix is made by llama.cpp).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIKI = ROOT / "../shared/data/text/wiki.test.raw"
CALIB = ROOT / "../shared/data/text/groups_merged.txt"
# DYNQUANT_BIN_DIR: run binaries copied elsewhere (so a rebuild during a long run cannot swap them).
BIN = Path(os.environ.get("DYNQUANT_BIN_DIR", ROOT / "target/release"))
DQ = BIN / "dynquant"
DEV = BIN / "dynquant-dev"


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


def once(path, cmd):
    path = Path(path)
    if not path.exists():
        run(cmd)
    return path


def kld(model, base, cache):
    cache = Path(cache)
    if not cache.exists():
        out = run([DQ, "kld", model, "--base", base, "--json"])
        cache.write_text(out)
    return json.loads(cache.read_text())


def llama_ppl(model, tokens, cache):
    cache = Path(cache)
    if not cache.exists():
        out = run(["node", ROOT / "tests/oracle/perplexity.mjs", model, WIKI, "--max-tokens", tokens])
        cache.write_text(out.strip().splitlines()[-1])
    return json.loads(cache.read_text())["ppl"]


def our_ppl(model, chunks, cache):
    cache = Path(cache)
    if not cache.exists():
        out = run([DQ, "perplexity", model, "-f", WIKI, "--chunks", chunks, "--json"])
        cache.write_text(out.strip().splitlines()[-1])
    return json.loads(cache.read_text())["ppl"]


def spearman(xs, ys):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for k, i in enumerate(order):
            r[i] = float(k)
        return r

    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--imatrix", required=True)
    ap.add_argument("--sens", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mixes", default="")
    ap.add_argument("--presets", default="")
    ap.add_argument("--llama-pool", default="iq1_s,iq1_m,iq2_xxs,iq2_xs,iq2_s,iq2_m,q2_k_s,q2_k,iq3_xxs,iq3_xs,q3_k_s,q3_k_m")
    ap.add_argument("--chunks", default="8")
    ap.add_argument("--no-llama-ppl", action="store_true")
    ap.add_argument("--extra", default="", help="extra quantize flags for the allocated files")
    ap.add_argument("--context-rounds", type=int, default=0, help="in-context refinements of each allocation")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    tokens = str(int(a.chunks) * 512)
    base = once(work / "base.kldbase", [DQ, "perplexity", a.model, "-f", WIKI, "--chunks", a.chunks, "--save-logits", work / "base.kldbase"])
    im = ["--imatrix", a.imatrix]

    def llama_file(mix):
        return once(work / f"llama-{mix}.gguf", [DEV, "llama-quantize", a.model, work / f"llama-{mix}.gguf", "--ftype", mix, *im, "--threads", "2"])

    def ours(recipe):
        return once(work / f"ours-{recipe}.gguf", [DQ, "quantize", a.model, work / f"ours-{recipe}.gguf", "--recipe", recipe, *im, "--imatrix-fallback", "--quiet"])

    def alloc(label, size):
        sens = a.sens
        for r in range(a.context_rounds + 1):
            stem = f"alloc-{label}" if r == a.context_rounds else f"alloc-{label}.round{r}"
            if r > 0:
                ctx = work / f"alloc-{label}.round{r}.sens"
                once(ctx, [DQ, "measure", "context", a.model, out, "--sensitivity", sens, "--text", CALIB, "-o", ctx, "-q"])
                sens = ctx
            out = work / f"{stem}.gguf"
            plan = work / f"{stem}.plan.json"
            if not plan.exists():
                plan.write_text(run([DQ, "plan", a.model, "--target-size", size, "--sensitivity", sens, *im, "--json", *a.extra.split()]))
            once(out, [DQ, "quantize", a.model, out, "--target-size", size, "--sensitivity", sens, *im, "--imatrix-fallback", "--quiet", *a.extra.split()])
        return out, json.loads(plan.read_text())["allocation"]

    def planned_tensor_bytes(recipe):
        plan = json.loads(run([DQ, "plan", a.model, "--recipe", recipe, *im, "--json"]))
        return plan["total_bytes"]

    rows = []
    preds, meas = [], []

    def stats(path):
        k = kld(path, base, str(path) + ".kld.json")
        return k

    for mix in [m for m in a.mixes.split(",") if m]:
        ref = llama_file(mix)
        size = ref.stat().st_size
        mine = ours(mix)
        out, rep = alloc(mix, size)
        r = {"budget": f"llama.cpp {mix}", "bytes": size, "alloc_bytes": out.stat().st_size,
             "predicted": rep["predicted_kld"], "alloc": stats(out), "hand": stats(mine),
             "hand_label": f"dynquant {mix}", "hand_bytes": mine.stat().st_size,
             "llama": stats(ref), "llama_label": f"llama.cpp {mix}", "llama_bytes": size}
        rows.append(r)
    pool = [m for m in a.llama_pool.split(",") if m]
    pool_files = None
    for preset in [p for p in a.presets.split(",") if p]:
        mine = ours(preset)
        size = mine.stat().st_size
        if pool_files is None:
            # Rank the pool by dynquant's plan of each mix (the same tensor bytes as llama.cpp's
            # file, checked below), so only the chosen mix is quantized by llama.cpp.
            pool_files = sorted((planned_tensor_bytes(m), m) for m in pool)
        mine_tensor_bytes = planned_tensor_bytes(preset)
        above = [(s, m) for s, m in pool_files if s >= mine_tensor_bytes]
        if above:
            ref = llama_file(above[0][1])
            if ref.stat().st_size < size:
                sys.exit(f"llama.cpp {above[0][1]} ({ref.stat().st_size} B) is below the {preset} budget ({size} B)")
            above = [(ref.stat().st_size, above[0][1])]
        out, rep = alloc(preset, size)
        r = {"budget": f"dynquant {preset}", "bytes": size, "alloc_bytes": out.stat().st_size,
             "predicted": rep["predicted_kld"], "alloc": stats(out), "hand": stats(mine),
             "hand_label": f"dynquant {preset}", "hand_bytes": size}
        if above:
            s, m = above[0]
            r.update({"llama": stats(work / f"llama-{m}.gguf"), "llama_label": f"llama.cpp {m}", "llama_bytes": s})
        rows.append(r)
    for r in rows:
        preds.append(r["predicted"])
        meas.append(r["alloc"]["kld_mean"])
        if not a.no_llama_ppl:
            out = work / f"alloc-{r['budget'].split()[-1]}.gguf"
            r["ppl_llama"] = llama_ppl(out, tokens, str(out) + ".llama-ppl.json")
            r["ppl_ours"] = our_ppl(out, a.chunks, str(out) + ".ppl.json")

    def fmt(k):
        return f"{k['kld_mean']:.4f} ± {k['kld_err']:.4f}"

    print("| budget | bytes (budget / allocated) | allocated KLD | hand KLD (file) | llama.cpp KLD (file) | alloc/hand | alloc/llama.cpp | predicted | PPL llama.cpp / ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        la = r.get("llama")
        print(
            f"| {r['budget']} | {r['bytes']} / {r['alloc_bytes']} | {fmt(r['alloc'])} | {fmt(r['hand'])} ({r['hand_label']}, {r['hand_bytes']}) | "
            + (f"{fmt(la)} ({r['llama_label']}, {r['llama_bytes']})" if la else "n/a")
            + f" | {r['alloc']['kld_mean'] / r['hand']['kld_mean']:.3f} | "
            + (f"{r['alloc']['kld_mean'] / la['kld_mean']:.3f}" if la else "n/a")
            + f" | {r['predicted']:.4f} | "
            + (f"{r['ppl_llama']:.4f} / {r['ppl_ours']:.4f} ({100 * (r['ppl_ours'] / r['ppl_llama'] - 1):+.3f}%)" if "ppl_llama" in r else "n/a")
            + " |"
        )
    print(f"\nSpearman(predicted, measured) over {len(rows)} allocated files: {spearman(preds, meas):.3f}")
    (work / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
