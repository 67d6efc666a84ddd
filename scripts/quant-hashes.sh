#!/usr/bin/env bash
# Fingerprint of what dynquant produces: sha256 of a fixed set of quantized files (every weight
# type dynquant quantizes, llama.cpp mixes with and without an imatrix, the dynamic presets on the
# MoE test models) and of the engine's saved logits on three of them.
#
#   scripts/quant-hashes.sh BIN OUT.txt [WORKDIR]
#
# Run it with the binary before and after a refactor and `diff` the two lists: a structural change
# must leave every line identical (docs/architecture.md). Needs the test models
# ($DYNQUANT_TEST_MODELS, from `dynquant-dev test-models`). Takes about 10 minutes on 2 cores; not in CI.
set -euo pipefail
BIN="$(realpath "$1")"
OUT="$2"
WORK="${3:-$(mktemp -d)}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
M="${DYNQUANT_TEST_MODELS:?set DYNQUANT_TEST_MODELS (dynquant-dev test-models)}"
TEXT="${DYNQUANT_SHARED:-$ROOT/../shared}/data/text/wiki.test.raw"
mkdir -p "$WORK"
: > "$OUT"

q() { # name model recipe [extra args...]
  local name="$1" model="$2" recipe="$3"; shift 3
  # Outputs are renamed into place only when complete, so a file already there (an earlier,
  # interrupted run with the same WORKDIR and binary) is reused.
  [ -f "$WORK/$name.gguf" ] ||
    "$BIN" quantize "$M/$model" "$WORK/$name.gguf" --recipe "$recipe" --threads 2 --quiet "$@"
  echo "$name $(sha256sum < "$WORK/$name.gguf" | cut -d' ' -f1)" >> "$OUT"
}

IM768=(--imatrix "$M/smollm2-768.imatrix.gguf" --imatrix-fallback)
for t in q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k iq4_nl iq4_xs tq1_0 tq2_0 mxfp4 \
         iq2_xxs iq2_xs iq2_s iq3_xxs iq3_s iq1_s iq1_m bf16 f16; do
  q "768-basic-$t" smollm2-768.gguf "basic-$t" "${IM768[@]}"
done
for t in q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl iq4_xs tq1_0 tq2_0 mxfp4 iq3_s; do
  q "768-basic-$t-noim" smollm2-768.gguf "basic-$t"
done
for mix in q4_k_m q4_k_s q5_k_m q3_k_m q3_k_s q3_k_l q2_k q2_k_s q6_k q8_0 iq4_xs iq3_m iq3_xs iq3_xxs \
           iq2_m iq2_s iq2_xs iq2_xxs iq1_m iq1_s; do
  q "768-mix-$mix" smollm2-768.gguf "$mix" "${IM768[@]}"
done
for mix in q4_k_m q3_k_m q2_k q5_k_s q6_k iq4_nl; do
  q "768-mix-$mix-noim" smollm2-768.gguf "$mix"
done
q "f16-mix-q4_k_m" smollm2-f16.gguf q4_k_m
for r in ud-iq1_s ud-q2_k_xl; do
  q "768moe-$r" smollm2-768-moe.gguf "$r" --imatrix "$M/smollm2-768-moe.imatrix.gguf"
  q "ds2mla-$r" synth-deepseek2-mla.gguf "$r" --imatrix-fallback
  q "ds2legacy-$r" synth-deepseek2-legacy.gguf "$r" --imatrix-fallback
done
q "qwen3moe-basic-iq2_xxs" synth-qwen3moe.gguf basic-iq2_xxs --imatrix-fallback
q "qwen3moe-mix-q3_k_m" synth-qwen3moe.gguf q3_k_m

# Engine: the saved KLD base (top-k log-probabilities per position) is a bit-exact fingerprint of
# the logits.
for f in 768-basic-iq2_xxs 768-basic-q3_k 768-mix-q4_k_m ds2mla-ud-iq1_s 768moe-ud-iq1_s; do
  [ -f "$WORK/$f.kldbase" ] || "$BIN" perplexity "$WORK/$f.gguf" -f "$TEXT" --chunks 2 --ctx 256 --threads 2 \
    --save-logits "$WORK/$f.kldbase" > "$WORK/$f.ppl.txt" 2>/dev/null
  echo "logits-$f $(sha256sum < "$WORK/$f.kldbase" | cut -d' ' -f1)" >> "$OUT"
done
echo "wrote $OUT ($(wc -l < "$OUT") lines)"
