#!/usr/bin/env bash
# Quantization quality and speed against real ggml, on real weights: every type dynquant quantizes,
# on 21 tensors of smollm2-768 (every tensor class in layers 0, 14, 29) with the real imatrix.
# Prints `type | ours/ggml error ratio | worst tensor | ours/ggml speed` and writes it into
# docs/benchmarks.md between the quant-compare markers. Single thread, same data for both.
# Usage: scripts/quant-compare.sh [--no-imatrix]   (needs scripts/prepare-oracles.sh and the
# test models). --no-imatrix: both sides quantize without an importance vector (ggml takes its
# reference paths), the error is the plain squared error, types that need an imatrix are
# skipped; the table goes between the quant-compare-noimatrix markers. DYNQUANT_QUANT_REPS
# (default 5): timed runs per tensor and side, the fastest kept.
set -euo pipefail
marker=quant-compare
err_label="weighted error"
if [ "${1:-}" = "--no-imatrix" ]; then
  export DYNQUANT_QUANT_NO_IMATRIX=1
  marker=quant-compare-noimatrix
  err_label="squared error"
else
  unset DYNQUANT_QUANT_NO_IMATRIX
fi
unset DYNQUANT_QUANT_TYPES
# Each tensor is timed this many times per side and the fastest run kept (shared machine).
export DYNQUANT_QUANT_REPS="${DYNQUANT_QUANT_REPS:-5}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=/dev/null
. .oracle/env.sh
export DYNQUANT_TEST_MODELS="${DYNQUANT_TEST_MODELS:-$ROOT/.oracle/test-models}"
out=$(cargo test --release -q -p dynquant-quants --test quantize_oracle error_is_at_most -- --nocapture --test-threads 1 2>&1)
rows=$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_]+ +\| [0-9.]+ \|' || true)
if [ -z "$rows" ]; then
  printf '%s\n' "$out" >&2
  echo "quant-compare: no result rows" >&2
  exit 1
fi
table=$(
  echo "| type | ours/ggml $err_label | worst tensor (ratio) | speed ours/ggml |"
  echo "|---|---|---|---|"
  printf '%s\n' "$rows" | awk -F' \\| ' '{gsub(/ +$/, "", $1); print "| " $1 " | " $2 " | " $3 " | " $4 " |"}'
)
printf '%s\n' "$table"
python3 - "$table" "$marker" <<'PY'
import sys, re
table, marker = sys.argv[1], sys.argv[2]
p = "docs/benchmarks.md"
s = open(p).read()
start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
block = f"{start}\n{table}\n{end}"
if start in s:
    s = re.sub(re.escape(start) + ".*?" + re.escape(end), block, s, flags=re.S)
else:
    s += "\n" + block + "\n"
open(p, "w").write(s)
PY
