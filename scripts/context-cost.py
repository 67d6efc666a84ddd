#!/usr/bin/env python3
"""In-context cost of tensor groups in an allocated quant, against the planner's additive prediction.

The allocated file A is `dynquant quantize --target-size BUDGET --sensitivity SENS`. For each group
(a set of tensor names), a copy of A with only that group at Q8_0 is made, and its mean KLD against
the unquantized model is measured. The table gives KLD(A) - KLD(copy), the KLD that removing the
group's error saves with every other tensor at A's types, beside the sum of the plan's `predicted_kld`
for the group's tensors, which is the group's cost if costs added up. The text is the calibration
text (groups_merged.txt): this probes the cost model, it is not a quality claim. The saved column has
no standard error of its own: `dynquant kld` gives each file's mean ± SE over the same positions.

Usage (after scripts/prepare-oracles.sh and the test models):
  . .oracle/env.sh && python3 scripts/context-cost.py --model M.gguf --imatrix M.imatrix.gguf \
      --sens M.sens --budget 136852928 --work /tmp/ctx \
      --group token_embd=token_embd.weight \
      --group "blk.0 experts=blk.0.ffn_gate_exps.weight,blk.0.ffn_up_exps.weight,blk.0.ffn_down_exps.weight"
Resumable: files already in WORKDIR are reused.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALIB = ROOT / "../shared/data/text/groups_merged.txt"
BIN = Path(os.environ.get("DYNQUANT_BIN_DIR", ROOT / "target/release"))
DQ = BIN / "dynquant"


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--imatrix", required=True)
    ap.add_argument("--sens", required=True)
    ap.add_argument("--budget", required=True, help="--target-size of the allocated file A")
    ap.add_argument("--work", required=True)
    ap.add_argument("--chunks", default="8")
    ap.add_argument("--group", action="append", default=[], help="NAME=TENSOR[,TENSOR...]")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    im = ["--imatrix", a.imatrix]
    plan_file = work / "A.plan.json"
    if not plan_file.exists():
        plan_file.write_text(run([DQ, "plan", a.model, "--target-size", a.budget, "--sensitivity", a.sens, *im, "--json"]))
    plan = json.loads(plan_file.read_text())
    allocated = [t for t in plan["tensors"] if t["rule"] == "alloc"]
    known = {t["name"] for t in allocated}
    base = work / "calib.kldbase"
    if not base.exists():
        run([DQ, "perplexity", a.model, "-f", CALIB, "--chunks", a.chunks, "--save-logits", base])

    def kld_of(tag, at_q8):
        # A's types as an ordinary recipe (one rule per tensor by exact name), the group at Q8_0.
        lines = [f'name = "ctx-{tag}"', 'default = "q8_0"', ""]
        for t in allocated:
            ty = "q8_0" if t["name"] in at_q8 else t["type"]
            lines += ["[[rules]]", f"name = '^{re.escape(t['name'])}$'", f'type = "{ty}"', f'why = "{tag}"', ""]
        recipe = work / f"{tag}.toml"
        recipe.write_text("\n".join(lines))
        out = work / f"{tag}.gguf"
        if not out.exists():
            run([DQ, "quantize", a.model, out, "--recipe", recipe, *im, "--imatrix-fallback", "--quiet"])
        cache = work / f"{tag}.kld.json"
        if not cache.exists():
            cache.write_text(run([DQ, "kld", out, "--base", base, "--json"]))
        return json.loads(cache.read_text())

    a_kld = kld_of("A", set())
    predicted = {t["name"]: t.get("predicted_kld") or 0.0 for t in allocated}
    print(f"A: KLD {a_kld['kld_mean']:.4f} ± {a_kld['kld_err']:.4f} ({a_kld['positions']} positions of {CALIB.name})\n")
    print("| group set to Q8_0 | KLD | saved | predicted cost in A | saved / predicted |")
    print("|---|---|---|---|---|")
    for g in a.group:
        name, _, tensors = g.partition("=")
        names = {n for n in tensors.split(",") if n}
        unknown = names - known
        if not names or unknown:
            sys.exit(f"--group {g}: no tensors, or not allocated in A: {sorted(unknown)}")
        k = kld_of(re.sub(r"\W+", "_", name), names)
        saved = a_kld["kld_mean"] - k["kld_mean"]
        cost = sum(predicted[n] for n in names)
        print(f"| {name} | {k['kld_mean']:.4f} ± {k['kld_err']:.4f} | {saved:.4f} | {cost:.4f} | {saved / cost:.2f} |")


if __name__ == "__main__":
    main()
