#!/usr/bin/env bash
# Tokenizer speed, dynquant-tokenizer vs llama.cpp (node-llama-cpp 3.21.1, tests/oracle/tokenize.mjs),
# on the whole of shared/data/text/wiki.test.raw for both oracle models. Prints a markdown table
# (best of RUNS runs each, default 5; llama.cpp's time is that of model.tokenize() alone).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
RUNS="${1:-5}"
# shellcheck source=/dev/null
. .oracle/env.sh
TEXT="$ROOT/../shared/data/text/wiki.test.raw"
cargo build --release -q -p dynquant-tokenizer --example tokenize_bench
echo "| model | tokens | dynquant best (median) | llama.cpp best (median) | speed-up | dynquant tokenizer build |"
echo "|---|---|---|---|---|---|"
for m in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
    ours=$(target/release/examples/tokenize_bench "$DYNQUANT_ORACLE/models/$m" "$TEXT" "$RUNS")
    theirs=()
    for _ in $(seq "$RUNS"); do
        theirs+=("$(node tests/oracle/tokenize.mjs "$DYNQUANT_ORACLE/models/$m" "$TEXT" --bin /dev/null 2>/dev/null)")
    done
    python3 - "$m" "$ours" "${theirs[@]}" <<'PY'
import json, sys
m, ours = sys.argv[1], json.loads(sys.argv[2])
t = sorted(json.loads(x)["ms"] for x in sys.argv[3:])
best, med = t[0], t[len(t) // 2]
print(f"| {m} | {ours['tokens']} | {ours['best_ms']:.0f} ms ({ours['median_ms']:.0f}) | {best:.0f} ms ({med:.0f}) "
      f"| {best / ours['best_ms']:.1f}x | {ours['build_ms']:.0f} ms |")
PY
done
