#!/usr/bin/env bash
# The whole test suite: prepares the oracles (gguf-py, node-llama-cpp, the two real models),
# checks formatting and lints, then runs every test with the oracles available.
# This is the command README.md documents and .ci/run calls.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
scripts/prepare-oracles.sh
# shellcheck source=/dev/null
. .oracle/env.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release
