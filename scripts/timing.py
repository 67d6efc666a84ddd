"""Timing helpers shared by the benchmark scripts of this folder."""

import os
import subprocess
import sys
from pathlib import Path


def timed(cmd, out_dir):
    """Runs cmd under GNU time; returns (wall seconds, user+sys CPU seconds)."""
    tfile = Path(out_dir) / "time.txt"
    r = subprocess.run(
        ["/usr/bin/time", "-f", "%e %U %S", "-o", str(tfile), *map(str, cmd)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}")
    wall, user, sys_ = map(float, tfile.read_text().split()[-3:])
    return wall, user + sys_


def smollm2_768_and_tools(root):
    """The test model smollm2-768 and its imatrix ($DYNQUANT_TEST_MODELS), and the dynquant and
    dynquant-dev binaries ($DYNQUANT_BIN, $DYNQUANT_DEV_BIN; built when missing)."""
    models = Path(os.environ.get("DYNQUANT_TEST_MODELS", root / ".oracle/test-models"))
    src, imatrix = models / "smollm2-768.gguf", models / "smollm2-768.imatrix.gguf"
    dq = Path(os.environ.get("DYNQUANT_BIN", root / "target/release/dynquant"))
    dq_dev = Path(os.environ.get("DYNQUANT_DEV_BIN", root / "target/release/dynquant-dev"))
    if not dq.exists() or not dq_dev.exists():
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "dynquant", "-p", "dynquant-dev"], cwd=root, check=True
        )
    return src, imatrix, dq, dq_dev
