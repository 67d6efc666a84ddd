#!/usr/bin/env bash
# Perplexity throughput on smollm2-768 quantized uniformly to each codebook i-quant
# (`--recipe basic-<type>`, its imatrix): real llama.cpp (node-llama-cpp, tests/oracle/perplexity.mjs,
# one thread) vs the dynquant engine on THREADS threads, and optionally an older dynquant binary
# (BEFORE=path) for a before/after column; each row measured in one run, back to back. Prints a
# markdown table for docs/benchmarks.md (issue 17).
#
# Usage: [BEFORE=old/dynquant] [BIN=new/dynquant] scripts/bench-iquants.sh [CHUNKS=3] [THREADS=1] [TYPE...]
# Needs: .oracle/env.sh, DYNQUANT_TEST_MODELS (smollm2-768.gguf and its imatrix), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${1:-3}
THREADS=${2:-1}
shift $(( $# < 2 ? $# : 2 ))
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(iq2_xxs iq2_xs iq2_s iq3_xxs iq3_s iq1_s iq1_m)
. .oracle/env.sh
MODELS=${DYNQUANT_TEST_MODELS:?set DYNQUANT_TEST_MODELS (dynquant-dev test-models)}
TEXT=../shared/data/text/wiki.test.raw
BIN=${BIN:-target/release/dynquant}
OUT=${BENCH_DIR:-$(mktemp -d)}
echo "| type | chunks x ctx | threads | llama.cpp tokens/s | before tokens/s | dynquant tokens/s | vs llama.cpp | PPL llama.cpp | PPL dynquant |"
echo "|---|---|---|---|---|---|---|---|---|"
for ty in "${TYPES[@]}"; do
    m=$OUT/smollm2-768-$ty.gguf
    [ -f "$m" ] || "$BIN" quantize "$MODELS/smollm2-768.gguf" "$m" --recipe "basic-$ty" \
        --imatrix "$MODELS/smollm2-768.imatrix.gguf" --imatrix-fallback --quiet >/dev/null
    ref=$(node tests/oracle/perplexity.mjs "$m" "$TEXT" --chunks "$CHUNKS" 2>/dev/null)
    before='{}'
    if [ -n "${BEFORE:-}" ]; then
        before=$("$BEFORE" perplexity "$m" --text "$TEXT" --chunks "$CHUNKS" --threads "$THREADS" --json 2>/dev/null)
    fi
    ours=$("$BIN" perplexity "$m" --text "$TEXT" --chunks "$CHUNKS" --threads "$THREADS" --json 2>/dev/null)
    python3 - "$ref" "$before" "$ours" "$ty" "$CHUNKS" "$THREADS" <<'PY'
import json, sys
ref, before, ours = (json.loads(a) for a in sys.argv[1:4])
ty, chunks, threads = sys.argv[4], int(sys.argv[5]), sys.argv[6]
ref_tps = ref["chunks"] * ref["ctx"] / ref["eval_seconds"]
our_tps = ours["tokens_per_second"]
b = f"{before['tokens_per_second']:.1f}" if before else "-"
print(f"| {ty} | {chunks} x 512 | {threads} | {ref_tps:.1f} | {b} | {our_tps:.1f} | {our_tps / ref_tps:.2f}x | {ref['ppl']:.4f} | {ours['ppl']:.4f} |")
PY
done
