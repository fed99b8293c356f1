"""Self-supervised denoising side by side: mmv_zoo's n2v framework against CAREamics 0.3.5 in one run.

    .venv/bin/python bench/denoise_bench.py [--steps 1200] [--budget 300 [--budget-all]] [--seeds 3]
                                              [--venv DIR] [--quick]

What it does:
- Builds (once) a virtual environment with CAREamics 0.3.5 *and* this checkout of mmv_zoo, so both
  tools train with the same torch build in the same way (one process each, one after the other).
  The torch is the one of the environment that runs the bench (here 2.13.0+cpu): CAREamics pins
  torch<2.14 and torchvision<=0.26, which on PyPI resolve to a CUDA build of several GB, and a CUDA
  torch does not even import without its CUDA packages. PyPI's torchvision is a CUDA build too: its
  `_C` needs libtorch_cuda and its import fails beside a CPU torch. CAREamics uses torchvision only
  for its LVAE (`center_crop`) and to write torchvision's version into an exported package's
  environment, neither of which N2V training or prediction reach, but it imports it when it is
  imported. So CAREamics goes in with --no-deps plus its other requirements and no torchvision; its
  worker puts a stand-in of the three modules it imports into `sys.modules` (after Lightning and
  torchmetrics, which then see no torchvision) that has a `__version__` and nothing else. No code of
  CAREamics is copied: it is called through its public API.
- Images with a clean reference, all bundled with mmv_zoo: a BBBC007 nucleus image (2D) and the
  cells3d nucleus crop (3D), each with Poisson-Gaussian noise at two levels; the 2D image with
  horizontally correlated noise (stripes, for structN2V); and the real noisy HybISS image (no
  reference: throughput only).
- The same network (U-Net depth 2, 32 channels, batch norm), patch, batch size, masked share (0.2 %),
  neighbourhood (5), augmentation, constant learning rate (Adam 4e-4) and number of optimizer steps
  for both, 4 validation patches each; then, with `--budget`, the same wall-clock training time for
  both (N2V on one 2D and one 3D image; every image and method with `--budget-all`). Each tool
  validates and checkpoints when it does by default: mmv_zoo every `--steps / --epochs` steps,
  CAREamics after each pass over the image's patches (one or two batches here).
- Scores each output after its best affine fit onto the clean image (the tools output in their own
  units): PSNR (data range of the clean image) and SSIM; baselines: the best Gaussian blur over a
  range of sigmas and scikit-image's non-local means at its best strength (both chosen with the
  clean image). Training
  throughput: patches per second of the training loop (a callback times it, data loading included).

Prints one table per phase, the differences to CAREamics and the throughput ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "mmv_zoo" / "sample_data"
DEFAULT_VENV = Path(os.environ.get("MMV_ZOO_BENCH_VENV", Path.home() / ".cache" / "mmv_zoo" / "bench" / "careamics"))
CAREAMICS_REQUIREMENTS = [
    "bioimageio-core<=0.11.0,>=0.9.0", "lightning!=2.6.2,!=2.6.3,<=2.6.6,>=2.2", "matplotlib<=3.11.2",
    "microssim<=0.0.5", "numpy<=2.4.6", "pillow<=13.0.0", "psutil<=7.2.2", "pydantic<=2.14.1,>=2.11",
    "pyyaml<=6.0.3", "scikit-image<=0.26.0", "tifffile<=2026.3.3", "torchmetrics<1.9.0", "zarr>=3,<4",
]
LR = 4e-4
ROI = 5
MASKED_PERCENT = 0.2
VAL_PATCHES = 4
"""Validation patches of each tool (CAREamics takes them from the image it trains on)."""


# ---------------------------------------------------------------- the environment

def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    marker = venv / ".mmv_zoo_bench_ready"
    if marker.exists():
        return python
    from importlib.metadata import version

    torch = version("torch")
    if "+cpu" not in torch:
        raise SystemExit(f"run the bench with a CPU build of torch (this environment has {torch}): the "
                         "benchmark environment takes the same one and never pulls CUDA packages")
    print(f"building the benchmark environment in {venv} (once; about 1.8 GB, torch {torch}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"torch=={torch}"], check=True)
    subprocess.run([*pip, "--no-deps", "careamics==0.3.5"], check=True)
    subprocess.run([*pip, *CAREAMICS_REQUIREMENTS], check=True)
    subprocess.run([*pip, "-e", str(ROOT)], check=True)
    marker.write_text("ok\n")
    return python


# ---------------------------------------------------------------- images

def poisson_gaussian(clean: np.ndarray, peak: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Photon counts of `clean` scaled to `peak` photons, Poisson, plus Gaussian read noise."""
    c = (clean - clean.min()) / (clean.max() - clean.min()) * peak
    return (rng.poisson(c) + rng.normal(0, read, c.shape)).astype(np.float32)


def striped(clean: np.ndarray, peak: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise plus Gaussian noise correlated along x over 3 pixels (horizontal stripes)."""
    from scipy.ndimage import convolve1d

    c = (clean - clean.min()) / (clean.max() - clean.min()) * peak
    corr = convolve1d(rng.normal(0, read, c.shape), np.ones(3) / np.sqrt(3), axis=-1, mode="wrap")
    return (rng.poisson(c) + corr).astype(np.float32)


def images(quick: bool) -> list[dict]:
    import tifffile

    rng = np.random.default_rng(0)
    clean2d = tifffile.imread(SAMPLES / "bbbc007" / "holdout" / "images" / "20P1_POS0007_D_1UL.tif").astype(np.float32)
    # x 50 -> 48: CAREamics predicts whole images only when every axis is a multiple of 4
    clean3d = tifffile.imread(SAMPLES / "cells3d_nucleus_3d" / "noisy" / "nucleus.tif").astype(np.float32)[..., :48]
    real = tifffile.imread(SAMPLES / "hybiss_2d" / "noisy" / "img_hybiss_2d.tif").astype(np.float32)
    out = [
        {"key": "p30", "name": "bbbc007 2D, peak 30, read 3", "clean": clean2d,
         "noisy": poisson_gaussian(clean2d, 30, 3, rng), "variants": ["n2v", "n2v2"]},
        {"key": "p10", "name": "bbbc007 2D, peak 10, read 3", "clean": clean2d,
         "noisy": poisson_gaussian(clean2d, 10, 3, rng), "variants": ["n2v", "n2v2"]},
        {"key": "stripes", "name": "bbbc007 2D, stripes", "clean": clean2d, "noisy": striped(clean2d, 30, 6, rng),
         "variants": ["n2v", "structn2v"]},
        {"key": "3d_p30", "name": "cells3d 3D, peak 30, read 3", "clean": clean3d,
         "noisy": poisson_gaussian(clean3d, 30, 3, rng), "variants": ["n2v", "n2v2"]},
        {"key": "3d_p10", "name": "cells3d 3D, peak 10, read 3", "clean": clean3d,
         "noisy": poisson_gaussian(clean3d, 10, 3, rng), "variants": ["n2v", "n2v2"]},
        {"key": "hybiss", "name": "HybISS 2D (real noise)", "clean": None, "noisy": real, "variants": ["n2v"]},
    ]
    return out[:1] + out[3:4] if quick else out


# ---------------------------------------------------------------- scoring

def affine_fit(out: np.ndarray, clean: np.ndarray) -> np.ndarray:
    a, b = np.polyfit(out.ravel().astype(np.float64), clean.ravel().astype(np.float64), 1)
    return (a * out + b).astype(np.float32)


def scores(out: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import structural_similarity

    fit = affine_fit(out, clean)
    rng = float(clean.max() - clean.min())
    mse = float(np.mean((fit.astype(np.float64) - clean) ** 2))
    return 10 * np.log10(rng**2 / mse), float(structural_similarity(fit, clean, data_range=rng))


def best_blur(noisy: np.ndarray, clean: np.ndarray) -> tuple[float, float, float]:
    from scipy.ndimage import gaussian_filter

    best = max(((scores(gaussian_filter(noisy, s), clean), s) for s in np.arange(0.5, 4.01, 0.25)),
               key=lambda r: r[0][0])
    return best[0][0], best[0][1], float(best[1])


def best_nlm(noisy: np.ndarray, clean: np.ndarray) -> tuple[float, float, float]:
    """scikit-image's non-local means on the z-scored image, noise sigma from the median absolute
    difference of neighbours, the filter strength h (a multiple of sigma) chosen with the clean image."""
    from skimage.restoration import denoise_nl_means

    x = (noisy - noisy.mean()) / noisy.std()
    d = np.diff(x, axis=-1)
    sigma = float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))
    best = max(((scores(denoise_nl_means(x, h=f * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                         fast_mode=True), clean), f) for f in (0.6, 0.8, 1.0, 1.2)),
               key=lambda r: r[0][0])
    return best[0][0], best[0][1], float(best[1])


# ---------------------------------------------------------------- workers (run in the benchmark environment)

def patch_and_batch(ndim: int) -> tuple[list[int], int]:
    return ([64, 64], 32) if ndim == 2 else ([16, 32, 32], 8)


def worker_mmv(args: argparse.Namespace) -> dict:
    import pytorch_lightning as pl
    import tifffile
    import torch

    from mmv_zoo.entry import load_entry
    from mmv_zoo.predict.engine import Options, predict_array
    from mmv_zoo.run import load_model
    from mmv_zoo.training.train import train

    noisy = np.load(args.image)
    patch, batch = patch_and_batch(noisy.ndim)
    entry_name = {2: "denoise_2d_n2v", 3: "denoise_3d_n2v"}[noisy.ndim]
    if args.variant == "n2v2" and noisy.ndim == 2:
        entry_name = "denoise_2d_n2v2"
    overrides = [f"data.patch={patch}", f"training.batch_size={batch}", f"training.optimizer.lr={LR}",
                 f"n2v.neighbourhood={ROI}", f"n2v.masked_fraction={MASKED_PERCENT / 100}", "training.num_workers=0",
                 f"training.max_epochs={args.epochs}", f"training.patches_per_image={args.steps_per_epoch * batch}",
                 "training.early_stopping=null", "training.checkpoint.last_every_n_steps=100000",
                 "training.scheduler={kind: none}", f"training.val_patches_per_image={VAL_PATCHES}",
                 f"training.seed={args.seed}"]
    if args.variant == "n2v2":
        overrides += ["n2v.replacement=median", "network.blurpool=true", "network.top_skip=false"]
    if args.variant == "structn2v":
        overrides += ["n2v.struct_mask={axis: x, span: 5}"]
    if args.budget:
        overrides += [f"training.max_time={args.budget / 60}", "training.max_epochs=100000"]
    else:
        overrides += [f"training.max_steps={args.epochs * args.steps_per_epoch}"]
    entry = load_entry(entry_name, overrides)
    timer = _timer(pl.Callback)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data" / "noisy").mkdir(parents=True)
        tifffile.imwrite(Path(tmp) / "data" / "noisy" / "image.tif", noisy)
        result = train(entry, Path(tmp) / "data", Path(tmp) / "runs", progress=False, callbacks=[timer])
        model = load_model(result.last_checkpoint)  # the final weights, as CAREamics predicts with
        with torch.inference_mode():  # predict_array normalizes the input as training did
            out = predict_array(model, noisy[None], model.entry, options=Options(border="mirror"))[0]
    np.save(args.out, out.astype(np.float32))
    return {"seconds": timer.seconds, "steps": timer.steps, "patches": timer.patches,
            "patches_per_s": timer.patches / timer.seconds}


def torchvision_stand_in() -> None:
    """The torchvision modules CAREamics 0.3.5 imports when it is imported (for its LVAE and its export,
    which the bench never reaches), with a version and nothing else: any other name is missing."""
    import types

    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    modules = {name: types.ModuleType(name) for name in names}
    modules["torchvision"].__version__ = "0+bench-stand-in"
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    sys.modules.update(modules)


def worker_careamics(args: argparse.Namespace) -> dict:
    import lightning.pytorch as lpl  # before the stand-in: Lightning and torchmetrics see no torchvision

    torchvision_stand_in()
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config

    noisy = np.load(args.image)
    patch, batch = patch_and_batch(noisy.ndim)
    axes = "YX" if noisy.ndim == 2 else "ZYX"
    steps = args.epochs * args.steps_per_epoch
    trainer: dict = {"max_time": {"seconds": int(args.budget)}} if args.budget else {"max_steps": steps}
    config = create_advanced_n2v_config(
        experiment_name="bench", data_type="array", axes=axes, patch_size=patch, batch_size=batch,
        num_epochs=100000,  # an epoch is one pass over the patches of the image: `max_steps` (or time) ends it
        augmentations=["x_flip", "y_flip", "rotate_90"], n_val_patches=VAL_PATCHES,
        use_n2v2=args.variant == "n2v2", roi_size=ROI, masked_pixel_percentage=MASKED_PERCENT,
        struct_n2v_axes="horizontal" if args.variant == "structn2v" else "none", struct_n2v_span=5,
        num_workers=0, trainer_params=trainer, model_params={"depth": 2, "num_channels_init": 32},
        optimizer="Adam", optimizer_params={"lr": LR}, lr_scheduler="StepLR",
        lr_scheduler_params={"step_size": 1, "gamma": 1.0}, seed=args.seed)  # a constant learning rate, as mmv_zoo's
    timer = _timer(lpl.Callback)
    with tempfile.TemporaryDirectory() as tmp:
        cam = CAREamist(config, work_dir=tmp, callbacks=[timer], enable_progress_bar=False)
        cam.train(train_data=noisy, val_data=noisy)  # its own split of a small stack fails; validate on the image
        pred, _ = cam.predict(noisy, data_type="array", axes=axes, tile_size=None)
    out = np.squeeze(np.asarray(pred[0] if isinstance(pred, list) else pred))
    np.save(args.out, out.astype(np.float32))
    return {"seconds": timer.seconds, "steps": timer.steps, "patches": timer.patches,
            "patches_per_s": timer.patches / timer.seconds}


def _timer(base: type) -> object:
    class Timer(base):  # type: ignore[misc, valid-type]
        """Wall clock of the training loop (first to last training batch), its steps and the patches they
        held (a tool's last batch of an epoch may be smaller)."""

        def __init__(self) -> None:
            self.start, self.seconds, self.steps, self.patches = None, 0.0, 0, 0

        def on_train_batch_start(self, trainer, module, batch, *args) -> None:
            if self.start is None:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, *args) -> None:
            self.steps += 1
            first = batch
            while not hasattr(first, "shape"):  # a tuple of tensors, or of CAREamics's named tuples
                first = first[0]
            self.patches += int(first.shape[0])
            self.seconds = time.perf_counter() - self.start

    return Timer()


# ---------------------------------------------------------------- the orchestrator

def run_worker(python: Path, tool: str, variant: str, noisy: np.ndarray, args: argparse.Namespace,
               budget: float | None, seed: int) -> tuple[np.ndarray, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        image, out = Path(tmp) / "noisy.npy", Path(tmp) / "out.npy"
        np.save(image, noisy)
        cmd = [str(python), str(Path(__file__).resolve()), "--worker", tool, "--variant", variant, "--image",
               str(image), "--out", str(out), "--epochs", str(args.epochs), "--steps-per-epoch",
               str(args.steps // args.epochs), "--seed", str(seed)]
        if budget:
            cmd += ["--budget", str(budget)]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore")
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{tool} {variant} failed:\n{done.stderr[-3000:]}")
        info = json.loads(done.stdout.strip().splitlines()[-1])
        return np.load(out), info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1200, help="optimizer steps per training (both tools)")
    ap.add_argument("--epochs", type=int, default=12, help="epochs the steps are spread over (validation after each)")
    ap.add_argument("--budget", type=float, default=0, help="also train every method for this many seconds")
    ap.add_argument("--no-steps", action="store_true", help="only the same-time phase (with --budget)")
    ap.add_argument("--budget-all", action="store_true",
                    help="the same-time phase on every image and method (default: the --quick subset)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--quick", action="store_true", help="one 2D and one 3D image, N2V only")
    ap.add_argument("--images", default="", help="only these images: p30, p10, stripes, 3d_p30, 3d_p10, hybiss")
    ap.add_argument("--variants", default="", help="only these methods where an image has them: n2v, n2v2, "
                                                   "structn2v")
    ap.add_argument("--seeds", type=int, default=1,
                    help="train each method this many times (seeds 1..N, the same for both tools; the noisy "
                         "images stay the same) and report mean ± sd")
    ap.add_argument("--worker", choices=["mmv", "careamics"])
    ap.add_argument("--variant", default="n2v")
    ap.add_argument("--image")
    ap.add_argument("--out")
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps((worker_mmv if args.worker == "mmv" else worker_careamics)(args)))
        return
    python = ensure_venv(args.venv)
    print(f"load average at start: {os.getloadavg()}; steps {args.steps} over {args.epochs} epochs", flush=True)
    phases = [] if args.no_steps else [("same steps", None, args.quick)]
    if args.budget:
        phases.append((f"same time ({args.budget:.0f} s)", args.budget, args.quick or not args.budget_all))
    for phase, budget, quick in phases:
        print(f"\n=== {phase} ===", flush=True)
        print(f"{'image':32} {'method':26} {'PSNR':>7} {'SSIM':>6} {'dPSNR vs CAREamics':>19} {'patches/s':>10} "
              f"{'steps':>6} {'patches':>8}")
        ratios, sd_lines = [], []
        wanted = [k for k in args.images.split(",") if k]
        for img in (i for i in images(quick) if not wanted or i["key"] in wanted):
            noisy, clean = img["noisy"], img["clean"]
            rows = []
            if clean is not None:
                rows.append(("noisy input", *scores(noisy, clean), None, None))
                p, s, sigma = best_blur(noisy, clean)
                rows.append((f"best Gaussian (s={sigma:g})", p, s, None, None))
                p, s, h = best_nlm(noisy, clean)
                rows.append((f"non-local means (h={h:g}s)", p, s, None, None))
            only = [v for v in args.variants.split(",") if v]
            for variant in (v for v in (["n2v"] if quick else img["variants"]) if not only or v in only):
                runs = {"mmv": [], "careamics": []}  # per seed: (PSNR, SSIM, info)
                for seed in range(1, args.seeds + 1):
                    for tool in runs:
                        out, info = run_worker(python, tool, variant, noisy, args, budget, seed)
                        p, s = scores(out, clean) if clean is not None else (float("nan"), float("nan"))
                        runs[tool].append((p, s, info))
                    ratios.append(runs["mmv"][-1][2]["patches_per_s"] / runs["careamics"][-1][2]["patches_per_s"])
                    if args.seeds > 1:
                        print(f"  {img['key']} {variant} seed {seed}: mmv_zoo {runs['mmv'][-1][0]:.2f} dB, CAREamics "
                              f"{runs['careamics'][-1][0]:.2f} dB (load {os.getloadavg()[0]:.1f})", flush=True)
                psnr = {tool: np.array([r[0] for r in rs]) for tool, rs in runs.items()}
                for tool, label in (("mmv", "mmv_zoo"), ("careamics", "CAREamics")):
                    d = float(np.mean(psnr["mmv"] - psnr["careamics"])) if tool == "mmv" and clean is not None else None
                    rows.append((f"{label} {variant}", float(np.mean(psnr[tool])),
                                 float(np.mean([r[1] for r in runs[tool]])), d, runs[tool][-1][2]))
                if args.seeds > 1:
                    sd = {tool: float(np.std(v, ddof=1)) for tool, v in psnr.items()}
                    diff = psnr["mmv"] - psnr["careamics"]
                    sd_lines.append(f"{img['name']} {variant}, {args.seeds} seeds: mmv_zoo {psnr['mmv'].mean():.2f} ± "
                                    f"{sd['mmv']:.2f} dB, CAREamics {psnr['careamics'].mean():.2f} ± "
                                    f"{sd['careamics']:.2f} dB, difference {diff.mean():+.2f} ± "
                                    f"{float(np.std(diff, ddof=1)):.2f} (per seed "
                                    f"{' '.join(f'{x:+.2f}' for x in diff)})")
            for method, p, s, d, info in rows:
                dd = f"{d:+.2f}" if d is not None else ""
                pps = f"{info['patches_per_s']:.1f}" if info else ""
                steps = f"{info['steps']}" if info else ""
                patches = f"{info['patches']}" if info else ""
                print(f"{img['name']:32} {method:26} {p:7.2f} {s:6.3f} {dd:>19} {pps:>10} {steps:>6} {patches:>8}",
                      flush=True)
        for line in sd_lines:
            print(line)
        print(f"throughput mmv_zoo / CAREamics (patches per second): "
              f"{' '.join(f'{r:.2f}' for r in ratios)}; median {float(np.median(ratios)):.2f}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
