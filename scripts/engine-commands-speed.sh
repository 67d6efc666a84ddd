#!/usr/bin/env bash
# Issue 17's "perplexity, kld and imatrix at least 2x llama.cpp" on one thread: tokens/s of
# `dynquant perplexity`, `dynquant kld` (against a base saved by `perplexity --save-logits` from
# the same file) and `dynquant imatrix`, whole-command wall time (loading and writing included),
# against llama.cpp's perplexity evaluation time alone (node-llama-cpp 3.21.1, `perplexity.mjs`,
# model loading excluded). llama.cpp's `--kl-divergence` and `llama-imatrix` run the same
# forward pass as its perplexity plus their own work, so its perplexity speed bounds theirs from
# above and each ratio here is a lower bound. Prints markdown, one row per file.
#
# Usage: scripts/engine-commands-speed.sh CHUNKS MODEL.gguf...
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${1:?usage: engine-commands-speed.sh CHUNKS MODEL.gguf...}
shift
. .oracle/env.sh
TEXT=../shared/data/text/wiki.test.raw
CALIB=../shared/data/text/groups_merged.txt  # imatrix calibrates on it, as everywhere
BIN=${DYNQUANT_BIN:-target/release/dynquant}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
wall() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); python3 -c "print($t1 - $t0)"; }
echo "| file | chunks x ctx | llama.cpp perplexity (eval) | dynquant perplexity | kld | imatrix | ratios (perplexity / kld / imatrix) |"
echo "|---|---|---|---|---|---|---|"
for m in "$@"; do
    ref=$(node tests/oracle/perplexity.mjs "$m" "$TEXT" --chunks "$CHUNKS" --threads 1 2>/dev/null)
    "$BIN" perplexity "$m" --text "$TEXT" --chunks "$CHUNKS" --threads 1 --save-logits "$WORK/base" >/dev/null 2>&1
    ppl=$(wall "$BIN" perplexity "$m" --text "$TEXT" --chunks "$CHUNKS" --threads 1)
    kld=$(wall "$BIN" kld "$m" --base "$WORK/base" --threads 1)
    imx=$(wall "$BIN" imatrix "$m" --text "$CALIB" --chunks "$CHUNKS" --threads 1 -o "$WORK/im.gguf" --force)
    python3 - "$(basename "$m")" "$CHUNKS" "$ref" "$ppl" "$kld" "$imx" <<'PY'
import json, sys
name, chunks, ref = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
n = chunks * 512
l = ref["chunks"] * ref["ctx"] / ref["eval_seconds"]
ours = [n / float(s) for s in sys.argv[4:7]]
print(f"| {name} | {chunks} x 512 | {l:.1f} | " + " | ".join(f"{o:.1f}" for o in ours)
      + " | " + " / ".join(f"{o / l:.2f}x" for o in ours) + " |")
PY
done
