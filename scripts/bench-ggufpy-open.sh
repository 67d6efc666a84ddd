#!/usr/bin/env bash
# Time gguf-py's GGUFReader(path) open (best of N runs, default 3) with the .oracle venv python.
# Usage: scripts/bench-ggufpy-open.sh [GGUF_FILE] [RUNS]
#   default file: .oracle/models/SmolLM2-135M-Instruct.Q4_1.gguf
# Prints the best time in seconds on the last line. Run scripts/prepare-oracles.sh first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PY="$ROOT/.oracle/venv/bin/python"
FILE="${1:-$ROOT/.oracle/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
RUNS="${2:-3}"

[[ -x "$PY" ]] || { echo "error: $PY missing; run scripts/prepare-oracles.sh" >&2; exit 1; }
[[ -f "$FILE" ]] || { echo "error: $FILE not found; run scripts/prepare-oracles.sh" >&2; exit 1; }

"$PY" - "$FILE" "$RUNS" <<'EOF'
import sys, time
import gguf

path, runs = sys.argv[1], int(sys.argv[2])
times = []
for i in range(runs):
    t0 = time.perf_counter()
    r = gguf.GGUFReader(path)
    dt = time.perf_counter() - t0
    times.append(dt)
    print(f"run {i + 1}: {dt:.3f} s ({len(r.fields)} fields, {len(r.tensors)} tensors)", file=sys.stderr)
    del r
from importlib.metadata import version
print(f"gguf-py {version('gguf')} GGUFReader open, best of {runs}: {min(times):.3f} s  ({path})", file=sys.stderr)
print(f"{min(times):.3f}")
EOF
