#!/usr/bin/env bash
# Every weight type's model test against llama.cpp (smollm2-768 quantized uniformly, 512 tokens,
# next-token distributions and perplexity), including the types CI leaves to this script because
# each is a full quantization plus two evaluations. Needs scripts/prepare-oracles.sh and the
# test models (scripts/test.sh builds them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=/dev/null
. .oracle/env.sh
export DYNQUANT_TEST_MODELS="${DYNQUANT_TEST_MODELS:-$ROOT/.oracle/test-models}"
export DYNQUANT_ALL_TYPES=1
for t in crates/dynquant/tests/engine_*types*.rs crates/dynquant/tests/engine_iquants.rs; do
  [ -f "$t" ] || continue
  name=$(basename "$t" .rs)
  cargo test --release -p dynquant --test "$name" -- --nocapture --test-threads 1
done
