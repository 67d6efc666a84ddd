#!/usr/bin/env bash
# Issue 17's speed table: perplexity tokens/s of the dynquant engine vs real llama.cpp
# (node-llama-cpp 3.21.1, CPU) on 1 and on 2 threads, all four runs of a row back to back on the
# same file and text, so each row is one measurement under one machine load. Prints markdown.
#
# Usage: scripts/engine-speed-table.sh CHUNKS MODEL.gguf...
#   (e.g. uniform quants of smollm2-768: dynquant quantize ... --recipe basic-<type>)
# Needs: scripts/prepare-oracles.sh done (.oracle/env.sh), a release build (or DYNQUANT_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${1:?usage: engine-speed-table.sh CHUNKS MODEL.gguf...}
shift
. .oracle/env.sh
TEXT=../shared/data/text/wiki.test.raw
BIN=${DYNQUANT_BIN:-target/release/dynquant}
echo "| file | chunks x ctx | llama.cpp 1 thread | dynquant 1 thread | ratio | llama.cpp 2 threads | dynquant 2 threads | ratio | efficiency 1→2: llama.cpp / dynquant | PPL llama.cpp / dynquant |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for m in "$@"; do
    runs=()
    for t in 1 2; do
        runs+=("$(node tests/oracle/perplexity.mjs "$m" "$TEXT" --chunks "$CHUNKS" --threads "$t" 2>/dev/null)")
        runs+=("$("$BIN" perplexity "$m" --text "$TEXT" --chunks "$CHUNKS" --threads "$t" --json 2>/dev/null)")
    done
    python3 - "$(basename "$m")" "$CHUNKS" "${runs[@]}" <<'PY'
import json, sys
name, chunks = sys.argv[1], int(sys.argv[2])
r1, o1, r2, o2 = (json.loads(a) for a in sys.argv[3:7])
ref = lambda r: r["chunks"] * r["ctx"] / r["eval_seconds"]
l1, l2, d1, d2 = ref(r1), ref(r2), o1["tokens_per_second"], o2["tokens_per_second"]
print(f"| {name} | {chunks} x 512 | {l1:.1f} | {d1:.1f} | {d1 / l1:.2f}x | {l2:.1f} | {d2:.1f} | {d2 / l2:.2f}x "
      f"| {l2 / l1 / 2:.2f} / {d2 / d1 / 2:.2f} | {r1['ppl']:.4f} / {o1['ppl']:.4f} |")
PY
done
