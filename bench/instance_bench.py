"""EmbedSeg instance segmentation on the bundled BBBC007 DNA-stain images (issue 8): trains
`nuclei_instance_2d` on CPU and scores the held-back image by AP at IoU 0.5, beside Otsu thresholding
+ connected components on the same image.

    .venv/bin/python bench/instance_bench.py                    # the entry's 203 epochs (1624 steps)
    .venv/bin/python bench/instance_bench.py --minutes 5 --out /tmp/instance_bench

Training uses the 5 bundled train images (4 train + 1 validation, the entry's random split) for the
entry's epochs, or `--minutes` of wall clock (`training.max_time`: how far it gets then depends on
the machine's load);
the held-back image `20P1_POS0007_D_1UL` (85 nuclei) is predicted with `mmv-zoo predict`'s engine
(tiled, clustering on the whole image's embeddings). AP50 = TP / (TP + FP + FN) with one-to-one
matching at IoU >= 0.5 (StarDist's definition; `mmv_zoo.metrics.average_precision` when present).
Prints the paper's figures (MMV_Im2Im, GigaScience 2024: 2D C. elegans 0.866, 3D hiPSC nuclei 0.827)
beside ours. Never asserts: exit status 0 whatever the scores (PASS/FAIL is printed for the target).
OpenMP threads wait passively (`OMP_WAIT_POLICY=PASSIVE` unless set), as in gan_bench.py: spinning
threads made small CPU steps several times slower on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (and its OpenMP) is loaded

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mmv_zoo" / "sample_data" / "bbbc007"
HOLDOUT = "20P1_POS0007_D_1UL"
TARGET = 0.92
PAPER = {"2D C. elegans (BranchedERFNet)": 0.866, "3D hiPSC nuclei (anisotropic UNet)": 0.827}


def read(path: Path) -> np.ndarray:
    import tifffile

    return np.squeeze(tifffile.imread(path))


def ap50(pred: np.ndarray, truth: np.ndarray) -> float:
    """TP / (TP + FP + FN) at IoU >= 0.5 (one-to-one matching); the library's function when present."""
    try:
        from mmv_zoo.metrics import average_precision
    except ImportError:
        average_precision = None
    if average_precision is not None:
        return float(average_precision(pred, truth, 0.5))
    t_ids = [k for k in np.unique(truth) if k]
    p_ids = [k for k in np.unique(pred) if k]
    tp = 0
    for k in t_ids:  # above IoU 0.5 a true object can match at most one prediction, and vice versa
        mask = truth == k
        cand, counts = np.unique(pred[mask], return_counts=True)
        for c, n in zip(cand, counts, strict=True):
            if c and n / (mask.sum() + (pred == c).sum() - n) >= 0.5:
                tp += 1
                break
    total = tp + (len(p_ids) - tp) + (len(t_ids) - tp)
    return tp / total if total else 1.0


def otsu_components(image: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    return label(image > threshold_otsu(image))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="training wall clock (default: the entry's)")
    parser.add_argument("--out", type=Path, default=None, help="run folder parent (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from mmv_zoo.entry import load_entry
    from mmv_zoo.predict.engine import RunPredictor
    from mmv_zoo.training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"training.max_time={args.minutes}"] if args.minutes else []
    entry = load_entry("nuclei_instance_2d", overrides)
    image = read(SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif")
    truth = read(SAMPLE / "holdout" / "labels" / f"{HOLDOUT}.tif")

    with tempfile.TemporaryDirectory(prefix="instance_bench_") as tmp:
        out = args.out or Path(tmp)
        budget = (f"{entry.mmv.training.max_time} min" if entry.mmv.training.max_time
                  else f"{entry.mmv.training.max_epochs} epochs")
        print(f"training nuclei_instance_2d for {budget} on CPU "
              f"({torch.get_num_threads()} threads, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}) ...",
              flush=True)
        result = train(entry, SAMPLE / "train", out, progress=False)
        import json

        info = json.loads((result.folder / "run.json").read_text())
        t0 = time.time()
        labels, _ = RunPredictor(result.folder).predict(image[None].astype(np.float32))
        predict_s = time.time() - t0
        ours = ap50(labels[0], truth)
        base = otsu_components(image)
        baseline = ap50(base, truth)

    n_true = len(np.unique(truth)) - 1
    print()
    print(f"held-back image {HOLDOUT}: {n_true} nuclei, {image.shape[0]}x{image.shape[1]}")
    print(f"training: {info['epochs']} epochs, {info['steps']} steps, {info['seconds']} s "
          f"(load average after: {os.getloadavg()[0]:.1f}); prediction {predict_s:.1f} s")
    print()
    print(f"{'method':44s} {'objects':>8s} {'AP50':>7s}")
    print(f"{'EmbedSeg (nuclei_instance_2d, this run)':44s} {int(labels.max()):8d} {ours:7.3f}   "
          f"target >= {TARGET}: {'PASS' if ours >= TARGET else 'FAIL'}")
    print(f"{'Otsu + connected components':44s} {int(base.max()):8d} {baseline:7.3f}")
    for name, value in PAPER.items():
        print(f"{'paper: ' + name:44s} {'':8s} {value:7.3f}   (other data)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
