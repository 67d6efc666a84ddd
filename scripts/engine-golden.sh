#!/usr/bin/env bash
# The engine's acceptance numbers against llama.cpp's golden files (slow: minutes to tens of
# minutes on 2 cores), recorded in docs/benchmarks.md:
#  1. perplexity of SmolLM2 F16 on wiki.test.raw, ctx 512, 40 chunks (llama-perplexity: 22.5015 ± 0.68093),
#     saving a KLD base; then the KLD of the original Q4_1 file against it (llama.cpp: 0.002844, 96.549%);
#  2. the imatrix of SmolLM2 F16 on groups_merged.txt, ctx 512, --chunks 100, against llama.cpp's
#     (../shared/golden/smollm2-135m.imatrix.gguf).
# Usage: scripts/engine-golden.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. .oracle/env.sh
MODELS=${DYNQUANT_TEST_MODELS:?set DYNQUANT_TEST_MODELS (dynquant-dev test-models)}
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
cargo build --release -q -p dynquant -p dynquant-engine --examples
BIN=target/release/dynquant
"$BIN" perplexity "$MODELS/smollm2-f16.gguf" --text ../shared/data/text/wiki.test.raw --chunks 40 \
    --save-logits "$OUT/f16.kldbase" --json | tee "$OUT/ppl.json"
"$BIN" kld "$DYNQUANT_ORACLE/models/SmolLM2-135M-Instruct.Q4_1.gguf" --base "$OUT/f16.kldbase" | tee "$OUT/kld.txt"
"$BIN" imatrix "$MODELS/smollm2-f16.gguf" --text ../shared/data/text/groups_merged.txt --chunks 100 \
    -o "$OUT/smollm2.imatrix.gguf" --force
target/release/examples/imatrix_compare "$OUT/smollm2.imatrix.gguf" ../shared/golden/smollm2-135m.imatrix.gguf
