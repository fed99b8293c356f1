"""How long `mmv-zoo --help` takes, against a bare Python start and an import of the full stack.

    .venv/bin/python bench/cli_startup.py [--repeat 5]

Prints median wall times and the ratios; the target (DESIGN.md) is `--help` under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    bare = timed([py, "-c", "pass"], args.repeat)
    helpt = timed([py, "-m", "mmv_zoo", "--help"], args.repeat)
    full = timed([py, "-c", "import torch, pytorch_lightning, monai, bioimageio.core, bioio"], max(1, args.repeat // 2))
    print(f"python -c pass                      {bare:6.2f} s")
    print(f"mmv-zoo --help                      {helpt:6.2f} s   ({helpt / bare:.1f}x bare python)")
    print(f"import torch+lightning+monai+bioimageio+bioio {full:6.2f} s   (--help is {full / helpt:.0f}x faster)")
    print(f"target --help < 1 s: {'met' if helpt < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
