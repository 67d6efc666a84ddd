#!/usr/bin/env python3
"""Projects a whole-model conversion (read, quantize, write, peak memory) from measured
per-thread throughput x a plan's tensor inventory (issue 19: FP8 DeepSeek-R1 on paper).

Inputs:
  * rates: JSON lines from the two throughput commands (one thread each):
      cargo run --release -p dynquant-quants --example quant-throughput -- \\
          MODEL.gguf IMATRIX.gguf --types iq1_s,iq1_m,iq2_xxs,q2_K,q3_K,q4_K,q6_K,q8_0 --json
      cargo run --release -p dynquant-hf --example read_throughput -- --json
    ({"type": T, "weights_per_s": R} per quantized type; {"read": "fp8_e4m3"|"bf16", ...}).
  * plans: `dynquant plan CONFIG --recipe R --json` per recipe (run by this script with
    --config/--recipes), or saved plan JSON files (--plan NAME=FILE).

Model, per machine of T threads (the pipeline: each slab is read and decoded, quantized in
parallel, then written; the phases do not overlap):
    wall = bytes read / disk read rate + bytes written / disk write rate
         + (decode CPU + quantize CPU) / (T x parallel efficiency)
  decode CPU   = sum over tensors of weights / read rate of the source dtype
  quantize CPU = sum over tensors of weights / rate of the target type (a tensor kept in its
                 own float type costs a decode only)
  Sharded (--machines N): the output is split into shards of --split-max-size in tensor order,
  worker I takes shards k with k mod N == I (`quantize --shard I/N`), each reads only its
  tensors; the wall time is the slowest worker's.
  Peak memory (the streaming bound): process base + the whole imatrix (4 bytes per input
  column per matrix, experts counted) + one slab (16 Mi values as f32, its source bytes and
  its output bytes) + the current tensor's importance rows.

Source dtypes: `--source fp8` treats every 2-D/3-D weight matrix except token_embd, output and
the router as FP8 e4m3 with 128x128 f32 scales (DeepSeek-R1's checkpoint), the rest BF16 (F32
stays F32); `--source plan` uses the plan's own source types (a GGUF input).

Usage:
    python3 scripts/r1-projection.py --rates rates.jsonl \\
        --config ../shared/data/configs/deepseek-r1/config.json \\
        --recipes ud-iq1_s,ud-iq1_m,ud-iq2_xxs,ud-q2_k_xl --threads 32 --machines 1,8
    python3 scripts/r1-projection.py --rates rates.jsonl --plan iq1_s=plan.json \\
        --source plan --threads 1 --machines 1 --efficiency 1 --disk-read-gbps 0 --disk-write-gbps 0
(a disk rate of 0 means "free": the input is in the page cache).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLAB_VALUES = 16 << 20
BASE_RSS = 100e6  # the process without a slab (issue 6's measurement: 160 MB peak with one)
KEEP_BF16_ROLES = {"token_embd", "output", "router", "norm", "router_bias"}
FLOAT_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "fp8_e4m3": 1}


def load_rates(paths):
    quant, read = {}, {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "type" in r:
                quant[r["type"].lower()] = r["weights_per_s"]
            elif "read" in r:
                read[r["read"]] = r["weights_per_s"]
    return quant, read


def source_of(t, mode):
    if mode == "plan" or t["source"] == "f32":
        return t["source"].lower()
    return "bf16" if t["role"] in KEEP_BF16_ROLES or len(t["shape"]) < 2 else "fp8_e4m3"


def read_rate(src, read):
    # F32/F16 decoding is a widening copy at least as fast as BF16's: the BF16 rate bounds it.
    return read.get(src) or read["bf16"]


def tensor_costs(t, quant, read, mode):
    n = 1
    for d in t["shape"]:
        n *= d
    src = source_of(t, mode)
    src_bytes = n * FLOAT_BYTES.get(src, 4)
    if src == "fp8_e4m3":
        rows = n // t["shape"][0]
        src_bytes += -(-rows // 128) * -(-t["shape"][0] // 128) * 4
    ty = t["type"].lower()
    decode = n / read_rate(src, read)
    if ty in FLOAT_BYTES:
        q = 0.0  # kept as a float type: the decode is the work
    elif ty in quant:
        q = n / quant[ty]
    else:
        sys.exit(f"no measured rate for type {ty} (add it to quant-throughput --types)")
    # Importance rows of this tensor: one per matrix (expert), as wide as a row.
    mats = t["shape"][2] if len(t["shape"]) > 2 else 1
    imatrix = 0 if t["role"] in KEEP_BF16_ROLES or ty in FLOAT_BYTES else 4 * t["shape"][0] * mats
    return {
        "weights": n,
        "read_bytes": src_bytes,
        "write_bytes": t["bytes"],
        "decode_cpu": decode,
        "quant_cpu": q,
        "imatrix_bytes": imatrix,
        "src_bytes_per_value": src_bytes / max(n, 1),
        "out_bytes_per_value": t["bytes"] / max(n, 1),
    }


def shards(costs, split_bytes):
    """Tensors in order into shards of at most split_bytes output (a tensor never splits)."""
    out, cur, size = [], [], 0
    for c in costs:
        if cur and size + c["write_bytes"] > split_bytes:
            out.append(cur)
            cur, size = [], 0
        cur.append(c)
        size += c["write_bytes"]
    if cur:
        out.append(cur)
    return out


def wall_of(costs, a):
    read = sum(c["read_bytes"] for c in costs)
    write = sum(c["write_bytes"] for c in costs)
    cpu = sum(c["decode_cpu"] + c["quant_cpu"] for c in costs)
    disk_r = read / (a.disk_read_gbps * 1e9) if a.disk_read_gbps > 0 else 0.0
    disk_w = write / (a.disk_write_gbps * 1e9) if a.disk_write_gbps > 0 else 0.0
    compute = cpu / (a.threads * a.efficiency)
    return {
        "read_s": disk_r + sum(c["decode_cpu"] for c in costs) / (a.threads * a.efficiency),
        "quant_s": sum(c["quant_cpu"] for c in costs) / (a.threads * a.efficiency),
        "write_s": disk_w,
        "wall_s": disk_r + disk_w + compute,
        "cpu_s": cpu,
        "read_bytes": read,
        "write_bytes": write,
    }


def peak_memory(costs):
    imatrix = sum(c["imatrix_bytes"] for c in costs)
    slab = max(
        min(SLAB_VALUES, c["weights"]) * (4 + c["src_bytes_per_value"] + c["out_bytes_per_value"])
        + c["imatrix_bytes"]
        for c in costs
    )
    return BASE_RSS + imatrix + slab, imatrix


def fmt_s(s):
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", action="append", required=True, help="JSON-lines file(s) of measured rates")
    ap.add_argument("--config", help="a config.json (or model) to plan with `dynquant plan`")
    ap.add_argument("--recipes", default="ud-iq1_s,ud-iq1_m,ud-iq2_xxs,ud-q2_k_xl")
    ap.add_argument("--plan", action="append", default=[], help="NAME=plan.json (saved `dynquant plan --json`)")
    ap.add_argument("--source", choices=["fp8", "plan"], default="fp8")
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--machines", default="1,8")
    ap.add_argument("--efficiency", type=float, default=0.9, help="parallel efficiency on --threads")
    ap.add_argument("--disk-read-gbps", type=float, default=2.0)
    ap.add_argument("--disk-write-gbps", type=float, default=1.0)
    ap.add_argument("--split-max-size-gb", type=float, default=5.0, help="output shard size when sharded")
    ap.add_argument("--memory-gb", type=float, default=64.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    quant, read = load_rates(a.rates)
    if "bf16" not in read:
        sys.exit("rates: no read rate (run the read_throughput example with --json)")
    plans = []
    for p in a.plan:
        name, path = p.split("=", 1)
        plans.append((name, json.loads(Path(path).read_text())))
    if a.config:
        dq = os.environ.get("DYNQUANT_BIN", str(ROOT / "target/release/dynquant"))
        for r in a.recipes.split(","):
            out = subprocess.run([dq, "plan", a.config, "--recipe", r, "--json"], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"dynquant plan failed for {r}: {out.stderr.strip()}")
            plans.append((r, json.loads(out.stdout)))
    rows = []
    for name, plan in plans:
        costs = [tensor_costs(t, quant, read, a.source) for t in plan["tensors"]]
        peak, imatrix = peak_memory(costs)
        for m in (int(x) for x in a.machines.split(",")):
            if m == 1:
                w = wall_of(costs, a)
                nshards = 1
            else:
                parts = shards(costs, a.split_max_size_gb * 1e9)
                nshards = len(parts)
                workers = [[c for k, s in enumerate(parts) if k % m == i for c in s] for i in range(m)]
                walls = [wall_of(wc, a) for wc in workers]
                w = max(walls, key=lambda x: x["wall_s"])
            rows.append(
                {
                    "recipe": name,
                    "machines": m,
                    "shards": nshards,
                    "size_gb": plan["total_bytes"] / 1e9,
                    "weights": sum(c["weights"] for c in costs),
                    **w,
                    "peak_bytes": peak,
                    "imatrix_bytes": imatrix,
                    "fits": peak < a.memory_gb * 1e9,
                }
            )
    if a.json:
        for r in rows:
            print(json.dumps(r))
    print(
        f"| recipe | machines ({a.threads} threads each) | output | read + FP8 decode | quantize | write "
        "| wall (slowest worker) | CPU s (that worker) | peak memory (per machine) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        machines = f"{r['machines']}" + (f" ({r['shards']} shards)" if r["machines"] > 1 else "")
        fits = "" if r["fits"] else f" (over {a.memory_gb:.0f} GB)"
        print(
            f"| {r['recipe']} | {machines} | {r['size_gb']:.1f} GB | {fmt_s(r['read_s'])} | {fmt_s(r['quant_s'])} "
            f"| {fmt_s(r['write_s'])} | {fmt_s(r['wall_s'])} | {r['cpu_s']:.0f} | {r['peak_bytes'] / 1e9:.2f} GB{fits} |"
        )


if __name__ == "__main__":
    main()
