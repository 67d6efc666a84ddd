#!/usr/bin/env bash
# Fuzz dynquant's parsers with cargo-fuzz (libFuzzer). Not part of CI: run by hand, one target at
# a time, for minutes each.
#   scripts/fuzz.sh [SECONDS] [TARGET...]    (default 300 seconds each, every target)
#   scripts/fuzz.sh --list                   (the targets)
#   FUZZ_RUNS=1000000 scripts/fuzz.sh 3600 chat_template   (stop at that many executions)
#   FUZZ_NICE=0 ...                          (priority; default 19, the lowest)
# Each target starts from fuzz/corpus/<target>/ (git-ignored; libFuzzer adds to it), seeded from
# the committed fuzz/seeds/<target>/ (small real files, refreshed by fuzz/make_seeds.py). Runs
# under -rss_limit_mb=512; crashes land in fuzz/artifacts/<target>/. Prints a summary line per
# target (executions, seconds, exit status). cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets
# the stable toolchain accept them.
#
# Build: release with debug assertions and overflow checks (cargo-fuzz's default), without
# AddressSanitizer (`--sanitizer none`, or FUZZ_SANITIZER=address to get it back). The parsers
# under test are safe Rust: an out-of-bounds index or an overflow panics (a crash libFuzzer
# reports) with or without ASan, and the only unsafe code they reach is the memory map, which
# the targets do not use (they parse bytes or small scratch files through the same code). ASan
# would add its ~2x slowdown to find memory errors in code that cannot make them. Memory
# blow-ups are caught by -rss_limit_mb=512 (libFuzzer's RSS thread), and an allocation too large
# to make aborts the process, also a crash.
#
# -max_len is per target, a little above its largest seed: libFuzzer grows inputs up to it, and
# 256 KiB inputs to a 1 KiB format only slow every execution down.
#
# Every run appends "<target> <executions> <seconds> <exit>" to fuzz/artifacts/runs.log, so
# cumulative counts over the same corpus can be added up (`scripts/fuzz.sh --totals`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
TARGETS=(gguf_header safetensors hf_config hf_tokenizer tokenizer_gguf chat_template imatrix_gguf
  imatrix_dat recipe sensitivity)
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
if [ "${1:-}" = "--totals" ]; then
  awk '{ n[$1] += $2; t[$1] += $3; r[$1]++ } END { for (k in n) printf "%s %d executions in %d runs, %d s\n", k, n[k], r[k], t[k] }' \
    "$ROOT/fuzz/artifacts/runs.log" | sort
  exit 0
fi
max_len_of() {
  case "$1" in
    gguf_header) echo 65536 ;;
    sensitivity) echo 32768 ;;
    hf_tokenizer | tokenizer_gguf) echo 16384 ;;
    *) echo 4096 ;;
  esac
}
# libFuzzer's per-input timeout: 10 s, except chat_template, whose renders run in the library's
# sandbox with a 5 s CPU and a 20 s wall-clock limit of their own (a template hitting them is a
# typed error, not a hang); a libFuzzer timeout there means the sandbox failed to stop one.
timeout_of() {
  case "$1" in
    chat_template) echo 30 ;;
    *) echo 10 ;;
  esac
}
SECONDS_TO_RUN="${1:-300}"
shift || true
[ $# -gt 0 ] && TARGETS=("$@")
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

seed_gguf_header() {
  # Small valid files written by dynquant itself (the demo model's shards), headers only.
  local corpus="$1"
  (cd "$ROOT" && cargo run --release -q -p dynquant -- demo --out-dir "$ROOT/fuzz/seed-tmp" >/dev/null)
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
  # Build first (not timed), then fuzz at the lowest priority: the machine may be shared.
  RUSTC_BOOTSTRAP=1 nice -n "${FUZZ_NICE:-19}" cargo fuzz build --sanitizer "${FUZZ_SANITIZER:-none}" "$target" >"$log" 2>&1
  start=$(date +%s)
  RUSTC_BOOTSTRAP=1 nice -n "${FUZZ_NICE:-19}" cargo fuzz run --sanitizer "${FUZZ_SANITIZER:-none}" "$target" "$corpus" -- \
    -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=512 -max_len="$(max_len_of "$target")" -timeout="$(timeout_of "$target")" \
    -print_final_stats=1 ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -artifact_prefix="$ROOT/fuzz/artifacts/$target/" >>"$log" 2>&1
  status=$?
  set -e
  # libFuzzer's own time ("Done N runs in S second(s)"); the wall time includes any rebuild.
  took=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE '[0-9]+ second' | grep -oE '[0-9]+' ||
    echo $(($(date +%s) - start)))
  grep -E '^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' "$log" || true
  runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
  echo "$target $runs $took $status" >>"$ROOT/fuzz/artifacts/runs.log"
  SUMMARY+=("$target: $runs executions in ${took}s, exit $status")
done
printf '%s\n' "${SUMMARY[@]}"
