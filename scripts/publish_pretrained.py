"""Train, publish and score the pretrained models the zoo ships, from the bundled real images.

    .venv/bin/python scripts/publish_pretrained.py synthetic_2d_pix2pix [--work DIR] [--run RUN]

For one entry: lay out its training data from `mmv_zoo/sample_data` (the N2V entries: the bundled
clean images with Poisson-Gaussian noise added, seeded, so that a held-back clean reference exists),
train the entry as bundled (plus the overrides listed below, stated in the card), publish the run
into the bundled zoo (`mmv-zoo publish`, the weight formats listed below), then score the *published
package* with `mmv-zoo evaluate` on images the model never saw and write those scores into the
entry's `config.mmv_zoo.pretrained.metrics` as `holdout_*`. Every step is an `mmv-zoo` command, printed
before it runs, so the script is also the recipe. `--run` skips training and publishes that run.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "mmv_zoo" / "zoo"
BBBC = REPO / "mmv_zoo" / "sample_data" / "bbbc007"
CELLS3D = REPO / "mmv_zoo" / "sample_data" / "cells3d_nucleus_3d" / "noisy" / "nucleus.tif"
MMV = [str(Path(sys.executable).with_name("mmv-zoo"))]

PEAK, READ = 30.0, 3.0  # photons at the brightest pixel, Gaussian read noise (as bench/denoise_bench.py)
N2V_SPLIT_Z = 40  # cells3d planes 0-39 train the 3D denoiser, 40-59 are held back


def poisson_gaussian(clean: np.ndarray, name: str) -> np.ndarray:
    """`clean` scaled to PEAK photons, Poisson, plus Gaussian read noise; seeded by the file name."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    c = (clean - clean.min()) / (clean.max() - clean.min()) * PEAK
    return (rng.poisson(c) + rng.normal(0, READ, c.shape)).astype(np.float32)


def _noisy_pair(clean: np.ndarray, name: str, train: Path | None, holdout: Path | None) -> None:
    noisy = poisson_gaussian(clean.astype(np.float64), name)
    if train is not None:
        tifffile.imwrite(train / "noisy" / f"{name}.tif", noisy)
    if holdout is not None:
        tifffile.imwrite(holdout / "noisy" / f"{name}.tif", noisy)
        tifffile.imwrite(holdout / "clean" / f"{name}.tif", clean)


def n2v_2d_data(work: Path) -> tuple[Path, Path]:
    train, holdout = work / "train", work / "holdout"
    for d in (train / "noisy", holdout / "noisy", holdout / "clean"):
        d.mkdir(parents=True, exist_ok=True)
    for f in sorted((BBBC / "train" / "images").glob("*.tif")):
        _noisy_pair(tifffile.imread(f), f.stem, train, None)
    for f in sorted((BBBC / "holdout" / "images").glob("*.tif")):
        _noisy_pair(tifffile.imread(f), f.stem, None, holdout)
    return train, holdout


def n2v_3d_data(work: Path) -> tuple[Path, Path]:
    train, holdout = work / "train", work / "holdout"
    for d in (train / "noisy", holdout / "noisy", holdout / "clean"):
        d.mkdir(parents=True, exist_ok=True)
    stack = tifffile.imread(CELLS3D)
    _noisy_pair(stack[:N2V_SPLIT_Z], "nucleus_z00-39", train, None)
    _noisy_pair(stack[N2V_SPLIT_Z:], "nucleus_z40-59", None, holdout)
    return train, holdout


ALL = ["torchscript", "onnx", "pytorch_state_dict"]


def bbbc_data(work: Path) -> tuple[Path, Path]:
    return BBBC / "train", BBBC / "holdout"


# entry -> (data, training overrides, what the card says of the data, weight formats, evaluate's --task,
#           the folder of the sample for the package's test tensors); the larger networks ship without
#           the state dict (their package would be 22 and 12 MB with it)
MODELS = {
    "synthetic_2d_pix2pix": (bbbc_data, [], "the 5 bundled BBBC007 train images and their masks (4 train + 1 "
                             "validation)", ["torchscript", "onnx"], None, "labels"),
    "unsupervised_seg_2d_cyclegan": (bbbc_data, [], "the 5 bundled BBBC007 train images and masks, used as "
                                     "unrelated folders (4 + 1 validation each)", ALL, "segmentation", "images"),
    "denoise_2d_n2v": (n2v_2d_data, ["training.max_epochs=8"], "the 5 bundled BBBC007 train images with "
                       f"Poisson noise (peak {PEAK:g} photons) and Gaussian read noise (sd {READ:g}), seeded; "
                       "4 train + 1 validation", ALL, None, "noisy"),
    "denoise_3d_n2v": (n2v_3d_data, ["training.max_epochs=16"], f"planes 0-{N2V_SPLIT_Z - 1} of the bundled "
                       f"cells3d nucleus crop (60x60x50) with Poisson noise (peak {PEAK:g}) and Gaussian read "
                       f"noise (sd {READ:g}), seeded; split by region for validation; planes {N2V_SPLIT_Z}-59 "
                       "held back", ["torchscript", "onnx"], None, "noisy"),
}


def run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, text=True, capture_output=True, env={**os.environ, "NO_COLOR": "1"})
    print(out.stdout[-3000:], out.stderr[-3000:], flush=True)
    if out.returncode:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}")
    return out.stdout


def train(entry: str, data: Path, overrides: list[str], runs: Path) -> Path:
    sets = [a for o in overrides for a in ("--set", o)]
    run([*MMV, "train", entry, "--data", str(data), "--out", str(runs), "--no-progress", *sets])
    found = sorted((runs / entry).iterdir(), key=lambda p: p.stat().st_mtime)
    return found[-1]


def holdout_scores(entry: str, holdout: Path, task: str | None, out: Path) -> dict[str, float]:
    """Mean scores of the published entry (its package) on the held-back images."""
    cmd = [*MMV, "evaluate", entry, "--data", str(holdout), "--out", str(out)]
    if task is not None:
        cmd += ["--task", task]
    run(cmd)
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    mean = next(r for r in rows if r.get("image") == "mean")
    return {k: float(v) for k, v in mean.items() if k != "image" and v not in ("", None)}


def write_metrics(entry: str, scores: dict[str, float], trained_on: str) -> None:
    """Add `holdout_<metric>` to the entry's pretrained metrics and the data/budget to `trained_on`
    (the `pretrained:` block rewritten, the rest of rdf.yaml untouched)."""
    import json

    import yaml

    rdf = ZOO / entry / "rdf.yaml"
    text = rdf.read_text()
    before = yaml.safe_load(text)
    pre = before["config"]["mmv_zoo"]["pretrained"]
    metrics = {**pre.get("metrics", {}), **{f"holdout_{k}": round(v, 4) for k, v in scores.items()}}
    block = ("    pretrained:\n"
             f"      source: {pre['source']}\n"
             f"      sha256: {pre['sha256']}\n"
             "      metrics: {" + ", ".join(f"{k}: {v}" for k, v in metrics.items()) + "}\n"
             f"      trained_on: {json.dumps(trained_on)}\n")
    text, n = re.subn(r"    pretrained:\n(?:      .*\n|        .*\n)+", block, text, count=1)
    after = yaml.safe_load(text)
    before["config"]["mmv_zoo"]["pretrained"].update(metrics=metrics, trained_on=trained_on)
    if n != 1 or after != before:
        raise SystemExit(f"{rdf}: could not rewrite its pretrained block")
    rdf.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("entry", choices=sorted(MODELS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmv_zoo_publish"))
    ap.add_argument("--run", type=Path, default=None, help="publish this run instead of training")
    args = ap.parse_args()
    make_data, overrides, data_text, formats, task, sample_dir = MODELS[args.entry]
    work = args.work / args.entry
    if work.exists() and args.run is None:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    train_dir, holdout = make_data(work / "data")
    run_dir = args.run or train(args.entry, train_dir, overrides, work / "runs")
    sample = sorted((train_dir / sample_dir).glob("*.tif"))[0]
    run([*MMV, "publish", str(run_dir), "--entry", args.entry, "--zoo", str(ZOO), "--sample", str(sample),
         "--formats", ",".join(formats)])
    scores = holdout_scores(args.entry, holdout, task, work / "evaluation")
    import json

    info = json.loads((run_dir / "run.json").read_text())
    epochs, steps, secs = info.get("epochs"), info.get("steps"), info.get("seconds")
    budget = ", ".join(p for p in (f"{epochs} epochs ({steps} steps)", f"{float(secs) / 60:.0f} min on 2 shared "
                                   "CPU cores" if secs else "", f"overrides: {' '.join(overrides)}" if overrides
                                   else "") if p)
    trained_on = f"{data_text}; {budget}; weights {', '.join(formats)}"
    write_metrics(args.entry, scores, trained_on)
    print(f"{args.entry}: held-back {scores}")


if __name__ == "__main__":
    main()
