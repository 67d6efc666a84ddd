#!/usr/bin/env python3
"""Whole-file quantization speed against real llama.cpp, per i-quant file type (issue 19).

For each llama.cpp mix: `smollm2-768` quantized by `dynquant quantize --recipe MIX` and by
llama.cpp's `llama_model_quantize` (libllama from node-llama-cpp, through `dynquant-dev
llama-quantize`), same imatrix, --threads 1, timed with GNU time (CPU = user + sys of the whole
command, load and write included), back to back in one run. `--before BIN` times an older
dynquant binary too (before/after in the same run) and checks that both wrote the same bytes.
`--scaling` also times ours on 2 threads (parallel efficiency = wall(1) / (2 x wall(2)); the
load average is printed with it, since the machine is shared). Prints a Markdown table.

Usage (after scripts/prepare-oracles.sh and the test models):
    . .oracle/env.sh && python3 scripts/quantize-speed-vs-llama.py [--mixes iq2_xxs,iq1_s]
        [--before old/dynquant] [--scaling] [--json]
"""

import argparse
import filecmp
import json
import sys
import tempfile
from pathlib import Path

from timing import smollm2_768_and_tools, timed  # scripts/timing.py

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MIXES = "iq2_xxs,iq2_xs,iq2_s,iq3_xxs,iq3_s,iq1_s,iq1_m"


def load():
    return float(Path("/proc/loadavg").read_text().split()[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixes", default=DEFAULT_MIXES)
    ap.add_argument("--before", help="an older dynquant binary, timed in the same run")
    ap.add_argument("--scaling", action="store_true", help="also time ours on 2 threads")
    ap.add_argument("--json", action="store_true", help="one JSON line per mix as well")
    a = ap.parse_args()
    src, imatrix, dq, dq_dev = smollm2_768_and_tools(ROOT)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mix in a.mixes.split(","):
            ours, ref, old = (Path(tmp) / f"{p}-{mix}.gguf" for p in ("dq", "llama", "before"))
            common = [src, "--recipe", mix, "--imatrix", imatrix, "--quiet"]
            row = {"mix": mix, "load_before": load()}
            if a.before:
                row["wall_before"], row["cpu_before"] = timed([a.before, "quantize", common[0], old, *common[1:], "--threads", "1"], tmp)
            row["wall_ours"], row["cpu_ours"] = timed([dq, "quantize", common[0], ours, *common[1:], "--threads", "1"], tmp)
            row["wall_llama"], row["cpu_llama"] = timed(
                [dq_dev, "llama-quantize", src, ref, "--ftype", mix, "--imatrix", imatrix, "--threads", "1"], tmp
            )
            if a.before:
                row["same_bytes_as_before"] = filecmp.cmp(ours, old, shallow=False)
            if a.scaling:
                two = Path(tmp) / f"dq2-{mix}.gguf"
                row["wall_ours_2t"], row["cpu_ours_2t"] = timed([dq, "quantize", common[0], two, *common[1:], "--threads", "2"], tmp)
                row["same_bytes_2t"] = filecmp.cmp(ours, two, shallow=False)
                two.unlink()
            row["load_after"] = load()
            for p in (ours, ref, old):
                p.unlink(missing_ok=True)
            if a.json:
                print(json.dumps(row), flush=True)
            rows.append(row)
    head = "| mix (file type) | CPU s llama.cpp |"
    sep = "|---|---|"
    if a.before:
        head += " CPU s ours before | before vs llama.cpp |"
        sep += "---|---|"
    head += " CPU s ours after | after vs llama.cpp |"
    sep += "---|---|"
    if a.before:
        head += " after / before |"
        sep += "---|"
    if a.before or a.scaling:
        head += " same bytes |"
        sep += "---|"
    if a.scaling:
        head += " wall s 1 / 2 threads | parallel efficiency (wall) | CPU s 2 threads | CPU 1 thread / CPU 2 threads |"
        sep += "---|---|---|---|"
    head += " load avg (start-end) |"
    sep += "---|"
    lines = [head, sep]
    for r in rows:
        line = f"| {r['mix']} | {r['cpu_llama']:.1f} |"
        if a.before:
            line += f" {r['cpu_before']:.1f} | {r['cpu_llama'] / r['cpu_before']:.2f}x |"
        line += f" {r['cpu_ours']:.1f} | {r['cpu_llama'] / r['cpu_ours']:.2f}x |"
        if a.before:
            line += f" {r['cpu_before'] / r['cpu_ours']:.2f}x |"
        if a.before or a.scaling:
            same = r.get("same_bytes_as_before", True) and r.get("same_bytes_2t", True)
            line += f" {'yes' if same else 'NO'} |"
        if a.scaling:
            eff = r["wall_ours"] / (2 * r["wall_ours_2t"])
            line += (
                f" {r['wall_ours']:.1f} / {r['wall_ours_2t']:.1f} | {eff:.2f} | {r['cpu_ours_2t']:.1f}"
                f" | {r['cpu_ours'] / r['cpu_ours_2t']:.2f} |"
            )
        line += f" {r['load_before']:.1f}-{r['load_after']:.1f} |"
        lines.append(line)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
