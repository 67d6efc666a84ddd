#!/usr/bin/env bash
# The whole test suite: prepares the oracles (gguf-py, node-llama-cpp, the two real models),
# checks formatting and lints, builds the test models, then runs every test with all of it
# available.
# This is the command README.md documents and .ci/run calls.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
scripts/prepare-oracles.sh
# shellcheck source=/dev/null
. .oracle/env.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
# The project's own test models (cached and checksummed; rebuilt only when inputs change).
cargo run --release -q -p dynquant-dev -- test-models --out .oracle/test-models
export DYNQUANT_TEST_MODELS="$ROOT/.oracle/test-models"
cargo test --workspace --release
# The op tests again against the other AVX libggml-cpu builds this CPU can run (seconds each): the
# engine reproduces the variant ggml would load on other CPUs, named by DYNQUANT_CPU_FLAVOR.
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
for variant in "haswell avx2 avx2" "icelake avx512-nobf16 avx512f"; do
    set -- $variant
    if [[ " $flags " == *" $3 "* ]]; then
        GGML_CPU_VARIANT=$1 DYNQUANT_CPU_FLAVOR=$2 cargo test --release -q -p dynquant-engine --test ggml_ops
    fi
done
