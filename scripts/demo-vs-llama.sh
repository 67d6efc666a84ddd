#!/usr/bin/env bash
# Runs `dynquant demo` and then measures its four deepseek2 files (F16, ud-iq1_s, basic-iq1_s,
# basic-iq2_xxs) in real llama.cpp (node-llama-cpp, 1 thread) on the same text and chunks:
# perplexity, and top-1 agreement of each quant with the F16 model, to set beside the demo's
# own table. Usage: scripts/demo-vs-llama.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/dynquant-demo-vs-llama}
scripts/prepare-oracles.sh >/dev/null
. .oracle/env.sh
cargo build --release -q -p dynquant
./target/release/dynquant demo --out-dir "$out" | sed -n '/^9\./,$p'
echo
echo "llama.cpp (node-llama-cpp 3.21.1, 1 thread), same text, ctx 512:"
for m in synth-deepseek2 synth-deepseek2-ud-iq1_s synth-deepseek2-basic-iq1_s synth-deepseek2-basic-iq2_xxs; do
    node tests/oracle/perplexity.mjs "$out/$m.gguf" "$out/demo-text.txt" --ctx 512 \
        --top1 "$out/$m.top1.json" 2>/dev/null >"$out/$m.ppl.json"
done
"$DYNQUANT_PYTHON" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
base = json.load(open(f"{out}/synth-deepseek2.top1.json"))
for m in ["", "-ud-iq1_s", "-basic-iq1_s", "-basic-iq2_xxs"]:
    ppl = json.load(open(f"{out}/synth-deepseek2{m}.ppl.json"))["ppl"]
    top = json.load(open(f"{out}/synth-deepseek2{m}.top1.json"))
    same = sum(a == b for a, b in zip(base, top)) / len(base)
    print(f"   {(m[1:] or 'F16'):<14} PPL {ppl:>12.3f}   top-1 vs F16 {100 * same:6.2f}%")
PY
