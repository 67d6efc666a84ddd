#!/usr/bin/env bash
# Peak memory of converting / quantizing a Hugging Face folder: a synthetic two-shard Llama
# checkpoint whose embedding is one 1 GiB BF16 tensor (262144 x 2048), written by
# crates/dynquant-hf/examples/synth_checkpoint.rs. Checks peak RSS against the quantize bound
# (largest tensor as f32 + its output + 256 MB) and prints the numbers for docs/benchmarks.md.
#
# Usage: scripts/hf-rss.sh [WORK_DIR]   (needs ~3.5 GB of free disk there; removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
trap 'rm -rf "$work/ckpt" "$work"/*.gguf' EXIT
cargo build --release -q -p dynquant -p dynquant-hf --example synth_checkpoint
bin=target/release/dynquant
target/release/examples/synth_checkpoint "$work/ckpt"
largest=$((262144 * 2048))
measure() { # label, then the command
    local label="$1"; shift
    /usr/bin/time -f "%M %e" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
    read -r kb secs <"$work/time"
    echo "$label: peak RSS $((kb / 1024)) MiB, $secs s"
    echo "$kb"
}
check() { # label, peak KB, output bytes per value of the largest tensor
    local bound=$(( (largest * 4 + largest * $3 / 100) / 1024 + 256 * 1024 ))
    if (( $2 > bound )); then echo "FAIL: $1 peak $2 KB above the bound $bound KB"; exit 1; fi
    echo "   within the bound ($((bound / 1024)) MiB = largest tensor as f32 + its output + 256 MB)"
}
kb=$(measure "convert --outtype bf16" $bin convert "$work/ckpt" "$work/out-bf16.gguf" --force | tee /dev/stderr | tail -1)
check convert "$kb" 200
kb=$(measure "convert --outtype q8_0" $bin convert "$work/ckpt" "$work/out-q8.gguf" --outtype q8_0 --force | tee /dev/stderr | tail -1)
check convert-q8_0 "$kb" 107
kb=$(measure "quantize HF_DIR --recipe basic-q4_k" $bin quantize "$work/ckpt" "$work/out-q4k.gguf" --recipe basic-q4_k --quiet --threads 2 --force | tee /dev/stderr | tail -1)
check quantize "$kb" 57
