#!/usr/bin/env bash
# Quantization quality and speed against real ggml, on real weights: every type dynquant quantizes,
# on 21 tensors of smollm2-768 (every tensor class in layers 0, 14, 29) with the real imatrix.
# Prints `type | ours/ggml error ratio | worst tensor | ours/ggml speed` and writes it into
# docs/benchmarks.md between the quant-compare markers. Single thread, same data for both.
# Usage: scripts/quant-compare.sh   (needs scripts/prepare-oracles.sh and the test models)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=/dev/null
. .oracle/env.sh
export DYNQUANT_TEST_MODELS="${DYNQUANT_TEST_MODELS:-$ROOT/.oracle/test-models}"
out=$(cargo test --release -q -p dynquant-core --test quantize_oracle error_is_at_most -- --nocapture --test-threads 1 2>&1)
rows=$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_]+ +\| [0-9.]+ \|' || true)
if [ -z "$rows" ]; then
  printf '%s\n' "$out" >&2
  echo "quant-compare: no result rows" >&2
  exit 1
fi
table=$(
  echo "| type | ours/ggml weighted error | worst tensor (ratio) | speed ours/ggml |"
  echo "|---|---|---|---|"
  printf '%s\n' "$rows" | awk -F' \\| ' '{gsub(/ +$/, "", $1); print "| " $1 " | " $2 " | " $3 " | " $4 " |"}'
)
printf '%s\n' "$table"
python3 - "$table" <<'PY'
import sys, re
table = sys.argv[1]
p = "docs/benchmarks.md"
s = open(p).read()
start, end = "<!-- quant-compare:start -->", "<!-- quant-compare:end -->"
block = f"{start}\n{table}\n{end}"
if start in s:
    s = re.sub(re.escape(start) + ".*?" + re.escape(end), block, s, flags=re.S)
else:
    s += "\n" + block + "\n"
open(p, "w").write(s)
PY
