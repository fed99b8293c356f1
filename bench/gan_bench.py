"""Mask -> image synthesis and unsupervised segmentation on the bundled BBBC007 DNA-stain images
(issue 5): an FCN and pix2pix (`synthetic_2d_pix2pix`) synthesize the held-back image from its mask,
a CycleGAN (`unsupervised_seg_2d_cyclegan`, shuffled unpaired images and masks) segments it.

    .venv/bin/python bench/gan_bench.py                     # all three, 9 minutes of training each
    .venv/bin/python bench/gan_bench.py --only cyclegan --minutes 5 --out /tmp/gan_bench

Each model is trained on CPU for `--minutes` of wall clock (Lightning's `max_time`, given to the
Trainer that `mmv_zoo.train.train` builds; the entries have no such setting), so how far training
gets depends on the machine's load. Training uses the 5 bundled train images (4 train + 1 validation,
the entries' random split); the scores are on the held-back image only:

- synthesis: Pearson r between the generated image (input: the held-back label mask) and the real
  image; baseline: the binary mask itself against the image;
- segmentation: foreground F1 of the CycleGAN's image -> mask direction (a2b) thresholded at 0
  (`Options(threshold=0)`, as `mmv-zoo predict --direction a2b --threshold 0`); baseline: Otsu.

Prints the paper's figures (MMV_Im2Im, GigaScience 2024) beside ours. Never asserts: exit status 0
whatever the scores (PASS/FAIL is printed per target).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mmv_zoo" / "sample_data" / "bbbc007"
HOLDOUT = "20P1_POS0007_D_1UL"

PAPER = {  # MMV_Im2Im (Sonneck et al., GigaScience 2024), 2D results
    "fcn": ("Pearson r", 0.925, "2D synthesis, supervised"),
    "pix2pix": ("Pearson r", 0.925, "2D synthesis, supervised"),
    "cyclegan": ("F1", 0.906, "2D unsupervised segmentation (synthesis 0.913)"),
}
TARGETS = {"fcn": 0.90, "pix2pix": 0.85, "cyclegan": 0.88}

# the model each benchmark trains: (entry, overrides other than the epoch count)
MODELS = {
    # the pix2pix entry's generator (AttentionUnet 32-256) trained alone, L1 regression
    "fcn": ("synthetic_2d_pix2pix", ["framework=fcn", "pix2pix=null", "training.optimizer.lr=1.0e-3",
                                     "training.optimizer.betas=[0.9, 0.999]"]),
    "pix2pix": ("synthetic_2d_pix2pix", ["pix2pix.sample_every=1000"]),
    "cyclegan": ("unsupervised_seg_2d_cyclegan", ["cyclegan.sample_every=1000"]),
}


def read(path: Path) -> np.ndarray:
    import tifffile

    return np.squeeze(tifffile.imread(path))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


def data_folder(model: str, tmp: Path) -> Path:
    """The training data in the layout the entry expects: paired `labels/` + `images/` (the bundled
    train folder as is), or for the CycleGAN `images/` and `labels/` with the masks' names shuffled
    so that nothing pairs them (unpaired_folders draws each side independently anyway)."""
    train = SAMPLE / "train"
    if model != "cyclegan":
        return train
    root = tmp / "unpaired"
    names = sorted(p.name for p in (train / "images").iterdir())
    shuffled = names[:]
    rng = random.Random(5)
    while any(a == b for a, b in zip(names, shuffled, strict=True)):
        rng.shuffle(shuffled)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (root / "images" / f"image_{i}.tif").symlink_to(train / "images" / name)
    for i, name in enumerate(shuffled):
        (root / "labels" / f"mask_{(i * 3) % len(names)}.tif").symlink_to(train / "labels" / name)
    return root


class wall_clock:
    """Give the Trainer that `mmv_zoo.train.train` builds Lightning's `max_time` (the entry has no such
    setting): training stops after the first batch past the budget, checkpoints written, run complete."""

    def __init__(self, minutes: float) -> None:
        self.minutes = minutes

    def __enter__(self) -> None:
        import pytorch_lightning as pl

        self.original = original = pl.Trainer
        budget = {"seconds": max(1, int(self.minutes * 60))}

        class Trainer(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs):
                kwargs.setdefault("max_time", budget)
                super().__init__(*args, **kwargs)

        pl.Trainer = Trainer

    def __exit__(self, *exc: object) -> None:
        import pytorch_lightning as pl

        pl.Trainer = self.original


def train_within(model: str, minutes: float, out: Path, data: Path,
                 extra: list[str] | None = None) -> tuple[Path, dict]:
    """Train for at most `minutes` of wall clock (epochs unbounded), stopped by Lightning's timer."""
    import json

    from mmv_zoo.entry import load_entry
    from mmv_zoo.train import train

    name, overrides = MODELS[model]
    entry = load_entry(name, [*overrides, *(extra or []), "training.max_epochs=10000"])
    t0 = time.perf_counter()
    with wall_clock(minutes):
        result = train(entry, data, out / "runs", progress=False)
    seconds = time.perf_counter() - t0
    run = json.loads((result.folder / "run.json").read_text())
    return result.folder, {"train_s": seconds, "epochs": run["epochs"], "steps": run["steps"]}


def synthesis_score(run: Path) -> float:
    from mmv_zoo.predict.engine import predict_array
    from mmv_zoo.run import load_model

    mask = read(SAMPLE / "holdout" / "labels" / f"{HOLDOUT}.tif")
    image = read(SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif")
    model = load_model(run)
    y = predict_array(model, mask[None].astype(np.float32), model.entry)
    return pearson(np.squeeze(y), image)


def segmentation_score(run: Path, out: Path) -> float:
    from mmv_zoo.metrics import foreground_scores
    from mmv_zoo.predict.engine import Options, predict_files

    results = predict_files(run, [SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"], out / "predictions",
                            overwrite=True, options=Options(direction="a2b", threshold=0.0))
    pred = read(results[0].output)
    truth = read(SAMPLE / "holdout" / "labels" / f"{HOLDOUT}.tif")
    return foreground_scores(pred, truth)["f1"]


def baselines() -> dict[str, float]:
    from mmv_zoo.metrics import foreground_scores, otsu_foreground

    mask = read(SAMPLE / "holdout" / "labels" / f"{HOLDOUT}.tif")
    image = read(SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif")
    return {"mask_pearson": pearson(mask > 0, image),
            "otsu_f1": foreground_scores(otsu_foreground(image), mask)["f1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=9.0, help="training budget per model, wall clock (default 9)")
    ap.add_argument("--only", choices=list(MODELS), action="append",
                    help="benchmark only this model (repeatable; default: all three)")
    ap.add_argument("--pix2pix-init", default=None, metavar="RUN|fcn",
                    help="start pix2pix's generator from a trained regression run of the same network\n"
                         "(pix2pix.init_from); 'fcn': the FCN run of this invocation (train it first)")
    ap.add_argument("--out", type=Path, default=None, help="keep runs and predictions here (default: a temp dir)")
    args = ap.parse_args()
    models = args.only or list(MODELS)

    import torch

    from mmv_zoo.train import quiet_lightning

    quiet_lightning()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {os.getloadavg()[0]:.2f}; budget {args.minutes:g} min per model", flush=True)
    base = baselines()
    tmpdir = tempfile.TemporaryDirectory(prefix="gan_bench_") if args.out is None else None
    out = Path(tmpdir.name) if tmpdir else args.out
    out.mkdir(parents=True, exist_ok=True)

    rows, runs = [], {}
    for model in models:
        mout = out / model
        extra = []
        if model == "pix2pix" and args.pix2pix_init:
            init = runs.get("fcn") if args.pix2pix_init == "fcn" else Path(args.pix2pix_init)
            if init is None:
                raise SystemExit("--pix2pix-init fcn: benchmark fcn before pix2pix (--only fcn --only pix2pix)")
            extra = [f"pix2pix.init_from={init}"]
            print(f"[pix2pix] generator initialized from {init}", flush=True)
        print(f"[{model}] training ...", flush=True)
        run, info = train_within(model, args.minutes, mout, data_folder(model, mout), extra)
        runs[model] = run
        score = segmentation_score(run, mout) if model == "cyclegan" else synthesis_score(run)
        print(f"[{model}] {info['epochs']} epochs ({info['steps']} optimizer steps), {info['train_s']:.0f} s, "
              f"score {score:.4f}, run {run}", flush=True)
        rows.append((model, score, info))

    print()
    print(f"held-back image {HOLDOUT} (400x400); load average now {os.getloadavg()[0]:.2f}")
    print(f"{'model':<10}{'metric':<11}{'ours':>8}{'baseline':>20}{'paper':>8}{'target':>8}  "
          f"{'result':<6}{'epochs':>7}{'steps':>7}{'train s':>9}")
    for model, score, info in rows:
        metric, paper, _ = PAPER[model]
        base_txt = (f"otsu {base['otsu_f1']:.4f}" if model == "cyclegan" else f"mask {base['mask_pearson']:.4f}")
        verdict = "PASS" if score >= TARGETS[model] else "FAIL"
        print(f"{model:<10}{metric:<11}{score:>8.4f}{base_txt:>20}{paper:>8.3f}{TARGETS[model]:>8.2f}  "
              f"{verdict:<6}{info['epochs']:>7}{info['steps']:>7}{info['train_s']:>9.0f}")
    print("paper (MMV_Im2Im, GigaScience 2024): 2D synthesis Pearson 0.925 supervised, 0.913 unsupervised; "
          "2D unsupervised segmentation F1 0.906")
    print("train s: wall clock of mmv_zoo.train.train (data checks, training, validation, checkpoints); "
          "steps: optimizer steps (GANs: 2 per batch)")
    if tmpdir:
        tmpdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
