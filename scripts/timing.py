"""Timing helpers shared by the benchmark scripts of this folder."""

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
