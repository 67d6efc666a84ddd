#!/usr/bin/env bash
# Peak memory of `dynquant quantize` on a model larger than the memory bound (issue 6):
# writes a synthetic F32 llama model whose two FFN matrices are 1 GiB each (about 2 GiB in
# all), quantizes it with mmap and with --no-mmap under GNU time, and compares each peak RSS
# with the bound: largest tensor as f32 + its quantized size + 256 MiB.
# Usage: scripts/measure-rss.sh [RECIPE] [FFN_MIB]   (defaults: basic-q8_0 1024)
# Prints one line per run and exits 1 if a run exceeds the bound.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RECIPE="${1:-basic-q8_0}"
FFN_MIB="${2:-1024}"
DQ="${DYNQUANT_BIN:-$ROOT/target/release/dynquant}"
DQ_DEV="${DYNQUANT_DEV_BIN:-$ROOT/target/release/dynquant-dev}"
[ -x "$DQ" ] && [ -x "$DQ_DEV" ] || (cd "$ROOT" && cargo build --release -q -p dynquant -p dynquant-dev)
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "GNU time (/usr/bin/time) is required: apt-get install time" >&2; exit 1; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dynquant-rss.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$DQ_DEV" big-model --out "$WORK/big.gguf" --ffn-mib "$FFN_MIB" >/dev/null
model_bytes=$(stat -c %s "$WORK/big.gguf")
# The bound from the plan: the largest tensor's f32 bytes and planned output bytes.
read -r f32_bytes out_bytes < <("$DQ" plan "$WORK/big.gguf" --recipe "$RECIPE" --json --tensors |
  python3 -c '
import json, math, sys
p = json.load(sys.stdin)
t = max(p["tensors"], key=lambda t: math.prod(t["shape"]))
print(math.prod(t["shape"]) * 4, t["bytes"])')
bound=$((f32_bytes + out_bytes + 256 * 1024 * 1024))
status=0
for mode in mmap no-mmap; do
  extra=()
  [ "$mode" = no-mmap ] && extra=(--no-mmap)
  "$TIME" -f "%M %e" -o "$WORK/time.txt" "$DQ" quantize "$WORK/big.gguf" "$WORK/out.gguf" \
    --recipe "$RECIPE" --force --quiet "${extra[@]}"
  read -r rss_kb secs < "$WORK/time.txt"
  rss=$((rss_kb * 1024))
  verdict=ok
  [ "$rss" -le "$bound" ] || { verdict=EXCEEDED; status=1; }
  printf 'recipe=%s access=%s model_bytes=%d peak_rss_bytes=%d bound_bytes=%d ratio=%.3f seconds=%s %s\n' \
    "$RECIPE" "$mode" "$model_bytes" "$rss" "$bound" "$(python3 -c "print($rss / $bound)")" "$secs" "$verdict"
  rm -f "$WORK/out.gguf"
done
exit $status
