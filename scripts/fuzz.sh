#!/usr/bin/env bash
# Fuzz the GGUF header parser with cargo-fuzz (libFuzzer). Not part of CI: run it by hand for
# minutes at a time. Usage: scripts/fuzz.sh [SECONDS]   (default 300)
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
SECONDS_TO_RUN="${1:-300}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Seed corpus: small valid files written by dynquant itself (the demo model's shards).
CORPUS="$ROOT/fuzz/corpus/gguf_header"
mkdir -p "$CORPUS"
if [ -z "$(ls -A "$CORPUS")" ]; then
  cargo run --release -q -p dynquant -- demo --out-dir "$ROOT/fuzz/seed-tmp" >/dev/null
  for f in "$ROOT"/fuzz/seed-tmp/demo-split-*.gguf; do
    head -c 65536 "$f" > "$CORPUS/$(basename "$f")"
  done
  rm -rf "$ROOT/fuzz/seed-tmp"
fi
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run gguf_header "$CORPUS" -- \
  -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048 -max_len=262144
