#!/usr/bin/env bash
# Fuzz dynquant's parsers with cargo-fuzz (libFuzzer). Not part of CI: run by hand, one target at
# a time, for minutes each.
#   scripts/fuzz.sh [SECONDS] [TARGET...]    (default 300 seconds each, every target)
#   scripts/fuzz.sh --list                   (the targets)
# Each target starts from fuzz/corpus/<target>/ (git-ignored; libFuzzer adds to it), seeded from
# the committed fuzz/seeds/<target>/ (small real files, refreshed by fuzz/make_seeds.py). Runs
# under -rss_limit_mb=512; crashes land in fuzz/artifacts/<target>/. Prints a summary line per
# target (executions, seconds, exit status). cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets
# the stable toolchain accept them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
TARGETS=(gguf_header safetensors hf_config hf_tokenizer tokenizer_gguf chat_template imatrix_gguf
  imatrix_dat recipe sensitivity)
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
SECONDS_TO_RUN="${1:-300}"
shift || true
[ $# -gt 0 ] && TARGETS=("$@")
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

seed_gguf_header() {
  # Small valid files written by dynquant itself (the demo model's shards), headers only.
  local corpus="$1"
  cargo run --release -q -p dynquant -- demo --out-dir "$ROOT/fuzz/seed-tmp" >/dev/null
  for f in "$ROOT"/fuzz/seed-tmp/demo-split-*.gguf; do
    head -c 65536 "$f" >"$corpus/$(basename "$f")"
  done
  rm -rf "$ROOT/fuzz/seed-tmp"
}

cd fuzz
SUMMARY=()
for target in "${TARGETS[@]}"; do
  corpus="$ROOT/fuzz/corpus/$target"
  mkdir -p "$corpus" "$ROOT/fuzz/artifacts/$target"
  if [ -z "$(ls -A "$corpus")" ]; then
    if [ -d "$ROOT/fuzz/seeds/$target" ]; then
      cp "$ROOT/fuzz/seeds/$target"/* "$corpus/"
    elif [ "$target" = gguf_header ]; then
      seed_gguf_header "$corpus"
    fi
  fi
  log="$ROOT/fuzz/artifacts/$target/last-run.log"
  set +e
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=512 -max_len=262144 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$ROOT/fuzz/artifacts/$target/" >"$log" 2>&1
  status=$?
  set -e
  grep -E '^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' "$log" || true
  runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
  SUMMARY+=("$target: $runs executions in ${SECONDS_TO_RUN}s, exit $status")
done
printf '%s\n' "${SUMMARY[@]}"
