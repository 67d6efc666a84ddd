#!/usr/bin/env bash
# Dynamic vs uniform quants at about 2 and 3 bits per weight, with the generation checks
# (issue 18). For each model: uniform basic-iq2_xxs and basic-iq3_xxs files, allocated
# ("dynamic") files of exactly the same byte sizes (`--target-size`, with the model's
# sensitivity scan), and `dynquant compare` of the four against the F16 base on wiki.test.raw.
# Usage: scripts/compare-dynamic-vs-uniform.sh WORKDIR MODEL:SENS [MODEL:SENS ...]
#   MODEL is a test model name under $DYNQUANT_TEST_MODELS (its imatrix beside it), SENS its
#   `dynquant measure` file. Files already in WORKDIR are reused. Not part of CI (tens of minutes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
WORK="$1"; shift
DQ="${DYNQUANT_BIN:-$ROOT/target/release/dynquant}"
M="${DYNQUANT_TEST_MODELS:?source .oracle/env.sh and set DYNQUANT_TEST_MODELS}"
WIKI="$ROOT/../shared/data/text/wiki.test.raw"
for pair in "$@"; do
  model="${pair%%:*}"; sens="${pair#*:}"
  out="$WORK/$model"; mkdir -p "$out/report"
  files=()
  for r in basic-iq2_xxs basic-iq3_xxs; do
    u="$out/uniform-${r#basic-}.gguf"; a="$out/dynamic-${r#basic-}.gguf"
    [ -f "$u" ] || "$DQ" quantize "$M/$model.gguf" "$u" --recipe "$r" \
      --imatrix "$M/$model.imatrix.gguf" --imatrix-fallback --quiet
    [ -f "$a" ] || "$DQ" quantize "$M/$model.gguf" "$a" --target-size "$(stat -c %s "$u")" \
      --sensitivity "$sens" --imatrix "$M/$model.imatrix.gguf" --imatrix-fallback --quiet
    files+=("$u" "$a")
  done
  /usr/bin/time -f "compare $model: %e s wall, %U s user" "$DQ" compare "$M/$model.gguf" "${files[@]}" \
    --text "$WIKI" --out "$out/report/report.html" --card "$out/report/card.md"
done
