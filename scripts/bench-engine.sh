#!/usr/bin/env bash
# Perplexity throughput of the dynquant engine vs real llama.cpp (node-llama-cpp 3.21.1, CPU) on the
# same number of threads, for SmolLM2-135M F16 and a Q4_K_M made from it; prints a markdown table
# for docs/benchmarks.md.
#
# Usage: scripts/bench-engine.sh [CHUNKS=2] [THREADS=1] [MODEL.gguf...]
#   (MODEL arguments replace the default pair, e.g. $DYNQUANT_TEST_MODELS/smollm2-768-moe.gguf)
# Needs: scripts/prepare-oracles.sh done (.oracle/env.sh), DYNQUANT_TEST_MODELS (smollm2-f16.gguf),
# a release build (cargo build --release -p dynquant).
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${1:-2}
THREADS=${2:-1}
. .oracle/env.sh
MODELS=${DYNQUANT_TEST_MODELS:?set DYNQUANT_TEST_MODELS (dynquant-dev test-models)}
TEXT=../shared/data/text/wiki.test.raw
BIN=${DYNQUANT_BIN:-target/release/dynquant}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
shift $(( $# < 2 ? $# : 2 ))
if [ $# -gt 0 ]; then
    LIST=("$@")
else
    F16=$MODELS/smollm2-f16.gguf
    Q4KM=$TMP/smollm2-q4_k_m.gguf
    "$BIN" quantize "$F16" "$Q4KM" --recipe q4_k_m --quiet >/dev/null
    LIST=("$F16" "$Q4KM")
fi
echo "| model | chunks x ctx | threads | llama.cpp tokens/s | dynquant tokens/s | ratio | PPL llama.cpp | PPL dynquant |"
echo "|---|---|---|---|---|---|---|---|"
for m in "${LIST[@]}"; do
    # llama.cpp through node-llama-cpp, on the same number of threads
    ref=$(node tests/oracle/perplexity.mjs "$m" "$TEXT" --chunks "$CHUNKS" --threads "$THREADS" 2>/dev/null)
    ours=$("$BIN" perplexity "$m" --text "$TEXT" --chunks "$CHUNKS" --threads "$THREADS" --json 2>/dev/null)
    python3 - "$ref" "$ours" "$(basename "$m")" "$CHUNKS" "$THREADS" <<'PY'
import json, sys
ref, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])
name, chunks, threads = sys.argv[3], int(sys.argv[4]), sys.argv[5]
toks = ref["chunks"] * ref["ctx"]
ref_tps = toks / ref["eval_seconds"]
our_tps = ours["tokens_per_second"]
print(f"| {name} | {chunks} x 512 | {threads} | {ref_tps:.1f} | {our_tps:.1f} | {our_tps / ref_tps:.2f}x | {ref['ppl']:.4f} | {ours['ppl']:.4f} |")
PY
done
