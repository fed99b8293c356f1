"""What OMP_WAIT_POLICY does to a small training run, on an idle machine and on a loaded one.

    .venv/bin/python bench/omp_policy.py [--repeat 2] [--epochs 6]

Runs `mmv-zoo train nuclei_semseg_2d` on the bundled BBBC007 images with small steps (fnet depth 2,
batch 4 of 64x64 patches: the regime of tests, tiny entries and CPU fine-tuning) as a whole process,
with OMP_WAIT_POLICY=ACTIVE (OpenMP threads spin while they wait: what torch does when the variable
is unset outside the CLI) and PASSIVE (they sleep: what the CLI now sets unless the user did), first
on the machine as it is, then with one busy process per core beside it (another job on shared
cores). Pairs are interleaved; prints the median wall time per case and the ACTIVE/PASSIVE ratios.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "mmv_zoo" / "sample_data" / "bbbc007" / "train"


def spin(stop: mp.Event) -> None:
    while not stop.is_set():
        sum(range(10000))


def one_run(policy: str, epochs: int) -> float:
    exe = Path(sys.executable).with_name("mmv-zoo")
    sets = ["network.depth=2", "data.patch=[64,64]", "training.batch_size=4", "training.patches_per_image=8",
            f"training.max_epochs={epochs}", "training.num_workers=0"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(exe), "train", "nuclei_semseg_2d", "--data", str(DATA), "--out", tmp, "--no-progress",
               *(a for s in sets for a in ("--set", s))]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_WAIT_POLICY=policy))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    print(f"cores {os.cpu_count()}; load average at start {os.getloadavg()}", flush=True)
    print(f"{'machine':8} {'ACTIVE s':>9} {'PASSIVE s':>10} {'ACTIVE/PASSIVE':>15}")
    for condition in ("as is", "loaded"):
        stop, spinners = mp.Event(), []
        if condition == "loaded":
            spinners = [mp.Process(target=spin, args=(stop,)) for _ in range(os.cpu_count() or 1)]
            for p in spinners:
                p.start()
        times: dict[str, list[float]] = {"ACTIVE": [], "PASSIVE": []}
        try:
            for _ in range(args.repeat):
                for policy in times:
                    times[policy].append(one_run(policy, args.epochs))
        finally:
            stop.set()
            for p in spinners:
                p.join()
        a, p = statistics.median(times["ACTIVE"]), statistics.median(times["PASSIVE"])
        runs = "; ".join(f"{k} " + ", ".join(f"{v:.1f}" for v in vs) for k, vs in times.items())
        print(f"{condition:8} {a:9.1f} {p:10.1f} {a / p:15.2f}   (runs: {runs})", flush=True)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
