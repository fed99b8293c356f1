"""What starting the command line costs: `mmv-zoo --help`, and predicting one image cold.

    .venv/bin/python bench/cli_startup.py [--repeat 5] [--before REV]

Each case is a whole new process; the figure is its CPU time (user + system) from the kernel, the
median of `--repeat` interleaved runs, beside `python -c "import torch"` measured in the same rounds:

- `mmv-zoo --help` (target, DESIGN.md: under 1 s wall);
- `mmv-zoo predict nuclei_semseg_2d IMAGE` with the bundled model on the held-back BBBC007 image
  (400x400), the package already verified in this machine's cache (one untimed run first): by
  default its ONNX weights through onnxruntime, and with `--weights torchscript` through torch;
- with `--before REV`, the same prediction by the code at git revision REV (a temporary worktree run
  by this environment's Python), e.g. the commit before the fast path.

Prints the medians and the ratios to `import torch`; the target of issue 18 is at most 1.5x.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "mmv_zoo" / "sample_data" / "bbbc007" / "holdout" / "images" / "20P1_POS0007_D_1UL.tif"


def cpu_of(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of `cmd` as a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before", help="a git revision whose prediction to time beside (e.g. a04100e)")
    args = ap.parse_args()
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="cli_startup_"))
    env = {**os.environ, "MMV_ZOO_CACHE": str(tmp / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    predict = ["-m", "mmv_zoo", "predict", "nuclei_semseg_2d", str(IMAGE), "--overwrite", "--out"]
    cases: dict[str, tuple[list[str], Path | None, dict[str, str]]] = {
        'python -c "import torch"': ([py, "-c", "import torch"], None, env),
        "mmv-zoo --help": ([py, "-m", "mmv_zoo", "--help"], None, env),
        "predict (default: ONNX)": ([py, *predict, str(tmp / "onnx")], None, env),
        "predict --weights torchscript": ([py, *predict, str(tmp / "ts"), "--weights", "torchscript"], None, env),
    }
    if args.before:
        tree = tmp / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before], check=True,
                       capture_output=True)
        old_env = {**env, "PYTHONPATH": str(tree), "MMV_ZOO_CACHE": str(tmp / "cache_before")}
        cases[f"predict at {args.before}"] = ([py, *predict, str(tmp / "before_out")], tree, old_env)
    try:
        for name, (cmd, cwd, e) in cases.items():  # warm: verification, receptive fields, file caches
            if name.startswith("predict"):
                cpu_of(cmd, e, cwd)
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        wall: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeat):
            for name, (cmd, cwd, e) in cases.items():
                c, w = cpu_of(cmd, e, cwd)
                cpu[name].append(c)
                wall[name].append(w)
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "before")],
                           capture_output=True)
    base = statistics.median(cpu['python -c "import torch"'])
    print(f"load average {os.getloadavg()[0]:.2f}; {args.repeat} interleaved runs each; CPU = user + system")
    print(f"{'case':34s} {'CPU s':>7s} {'wall s':>7s}  CPU / import torch")
    for name in cases:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"{name:34s} {c:7.2f} {w:7.2f}  {c / base:5.2f}x")
    help_wall = statistics.median(wall["mmv-zoo --help"])
    fast = statistics.median(cpu["predict (default: ONNX)"]) / base
    print(f"target --help < 1 s wall: {'met' if help_wall < 1 else 'NOT met'}; "
          f"target predict <= 1.5x import torch: {'met' if fast <= 1.5 else 'NOT met'} ({fast:.2f}x)")


if __name__ == "__main__":
    main()
