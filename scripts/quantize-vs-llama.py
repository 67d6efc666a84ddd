#!/usr/bin/env python3
"""dynquant quantize against real llama.cpp quantization (issue 6), on the same input, mix,
imatrix and thread count.

For each llama.cpp mix: quantize `smollm2-768` with `dynquant quantize --recipe MIX` and with
llama.cpp's `llama_model_quantize` (libllama from node-llama-cpp, through
`dynquant-dev llama-quantize`), both with the test models' imatrix and --threads 1; measure
wall and CPU time (GNU time); then the perplexity of both files in node-llama-cpp (threads 1,
first 4096 tokens of wiki.test.raw, llama-perplexity's method). Prints a table and writes it
into docs/benchmarks.md between the quantize-vs-llama markers.

Usage (after scripts/prepare-oracles.sh and building the test models):
    . .oracle/env.sh && python3 scripts/quantize-vs-llama.py [--mixes q4_k_m,iq1_s] [--tokens 4096]
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import smollm2_768_and_tools, timed  # scripts/timing.py

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MIXES = "q4_k_m,q2_k,iq2_xxs,iq1_s,iq1_m"


def perplexity(model, tokens):
    r = subprocess.run(
        [
            "node",
            str(ROOT / "tests/oracle/perplexity.mjs"),
            str(model),
            str(ROOT / "../shared/data/text/wiki.test.raw"),
            "--max-tokens",
            str(tokens),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        sys.exit(f"perplexity failed for {model}:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])["ppl"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixes", default=DEFAULT_MIXES)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    a = ap.parse_args()
    src, imatrix, dq, dq_dev = smollm2_768_and_tools(ROOT)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mix in a.mixes.split(","):
            ours, ref = Path(tmp) / f"dq-{mix}.gguf", Path(tmp) / f"llama-{mix}.gguf"
            t_ours = timed(
                [dq, "quantize", src, ours, "--recipe", mix, "--imatrix", imatrix, "--threads", "1", "--quiet"],
                tmp,
            )
            t_ref = timed(
                [dq_dev, "llama-quantize", src, ref, "--ftype", mix, "--imatrix", imatrix, "--threads", "1"],
                tmp,
            )
            p_ours, p_ref = perplexity(ours, a.tokens), perplexity(ref, a.tokens)
            row = {
                "mix": mix,
                "bytes_ours": ours.stat().st_size,
                "bytes_llama": ref.stat().st_size,
                "ppl_ours": p_ours,
                "ppl_llama": p_ref,
                "ppl_ratio": p_ours / p_ref,
                "wall_ours": t_ours[0],
                "wall_llama": t_ref[0],
                "cpu_ours": t_ours[1],
                "cpu_llama": t_ref[1],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    lines = [
        "| mix | size ours / llama.cpp (bytes) | PPL ours | PPL llama.cpp | PPL ratio | CPU s ours / llama.cpp | speed ours/llama.cpp (CPU) | wall s ours / llama.cpp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mix']} | {r['bytes_ours']} / {r['bytes_llama']} | {r['ppl_ours']:.4f} | {r['ppl_llama']:.4f} "
            f"| {r['ppl_ratio']:.4f} | {r['cpu_ours']:.1f} / {r['cpu_llama']:.1f} "
            f"| {r['cpu_llama'] / r['cpu_ours']:.2f}x | {r['wall_ours']:.1f} / {r['wall_llama']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if not a.no_write:
        p = ROOT / "docs/benchmarks.md"
        s = p.read_text()
        start, end = "<!-- quantize-vs-llama:start -->", "<!-- quantize-vs-llama:end -->"
        block = f"{start}\n{table}\n{end}"
        if start in s:
            s = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, s, flags=re.S)
        else:
            s += "\n" + block + "\n"
        p.write_text(s)


if __name__ == "__main__":
    main()
