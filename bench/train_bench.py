"""Training benchmark, in one run:

1. Loop overhead: steps/s of `mmv-zoo train` (mmv_zoo.training.train.train: the FCN under the Lightning
   Trainer with mmv_zoo's callbacks, CSV logging, last.ckpt every 50 steps) against a bare PyTorch
   loop on the same network, the same patch dataset, batch size, loader and optimizer. Both are timed
   on their second epoch, from the end of its first batch to the end of its last (data loading,
   forward, backward, optimizer step, logging and checkpoint callbacks; not validation).
   Target (DESIGN.md): Lightning >= 0.9x the bare loop.
2. Persistent cache: first against second epoch time of `mmv-zoo train` with `data.cache.enabled` on
   large zlib-compressed 3D TIFF stacks generated into a temporary folder. The first epoch reads,
   decompresses and normalizes every stack (and writes the memory-mappable cache); the second
   memory-maps the patches it needs. Target: second >= 5x faster. A second run (another process would
   see the same) starts from the warm cache.

    .venv/bin/python bench/train_bench.py [--repeat 3] [--stacks 6] [--shape 64,512,512]

Timed assertions never go into the tests; this prints the figures for the README.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import tifffile
import torch

SAMPLE = Path(__file__).resolve().parents[1] / "mmv_zoo" / "sample_data" / "bbbc007"


class EpochTimer(pl.Callback):
    """Per epoch: time of the train-batch ends (for steps/s) and wall time of the whole epoch."""

    def __init__(self) -> None:
        self.batch_ends: dict[int, list[float]] = {}
        self.epochs: dict[int, float] = {}
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batch_ends.setdefault(trainer.current_epoch, []).append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs[trainer.current_epoch] = time.perf_counter() - self._start

    def steps_per_second(self, epoch: int) -> float:
        ends = self.batch_ends[epoch]
        return (len(ends) - 1) / (ends[-1] - ends[0])


def make_2d_data(root: Path, n: int) -> Path:
    """n real 256x256 crops of the bundled BBBC007 images (image/label pairs)."""
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    paths = sorted((SAMPLE / "train" / "images").glob("*.tif"))
    for i in range(n):
        path = paths[i % len(paths)]
        img, lab = tifffile.imread(path), tifffile.imread(SAMPLE / "train" / "labels" / path.name)
        off = (i // len(paths)) * 32
        tifffile.imwrite(root / "images" / f"{i:02d}.tif", img[off:off + 256, off:off + 256])
        tifffile.imwrite(root / "labels" / f"{i:02d}.tif", lab[off:off + 256, off:off + 256])
    return root


def bare_loop(entry, train_set, epochs: int = 2) -> float:
    """The same steps without Lightning: steps/s of the last epoch, timed like EpochTimer."""
    from torch.utils.data import DataLoader, RandomSampler

    from mmv_zoo.frameworks.fcn import FCN

    t = entry.mmv.training
    pl.seed_everything(t.seed, workers=True, verbose=False)
    model = FCN(entry.model_dump(mode="json"))
    conf = model.configure_optimizers()
    opt = conf["optimizer"] if isinstance(conf, dict) else conf
    model.train()
    rate = 0.0
    for epoch in range(epochs):
        train_set.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=t.batch_size, num_workers=t.num_workers,
                            sampler=RandomSampler(train_set, generator=torch.Generator().manual_seed(epoch)))
        ends = []
        for x, y in loader:
            opt.zero_grad()
            loss = model.loss_fn(model(x), y)
            loss.backward()
            opt.step()
            ends.append(time.perf_counter())
        rate = (len(ends) - 1) / (ends[-1] - ends[0])
    return rate


def overhead(tmp: Path, repeat: int, images: int) -> None:
    from mmv_zoo.data.module import data_module
    from mmv_zoo.entry import load_entry
    from mmv_zoo.training.train import train

    data = make_2d_data(tmp / "2d", images)
    # fnet depth 3 x16 (the entry's network), batch 8 of 128x128 patches; 20 steps per epoch
    overrides = ["training.max_epochs=2", f"training.patches_per_image={160 // (images - 2)}",
                 "training.batch_size=8", "data.split={kind: random, val_fraction: 0.2}"]
    entry = load_entry("nuclei_semseg_2d", overrides)
    dm = data_module(entry, data)
    dm.prepare()
    bare, light = [], []
    for r in range(repeat):  # interleaved, so that load from other jobs hits both alike
        bare.append(bare_loop(entry, dm.train_set))
        timer = EpochTimer()
        train(load_entry("nuclei_semseg_2d", overrides), data, tmp / f"runs{r}", progress=False, callbacks=[timer])
        light.append(timer.steps_per_second(1))
    b, lt = float(np.median(bare)), float(np.median(light))
    ratios = [v / u for u, v in zip(bare, light, strict=True)]
    steps = len(dm.train_set) // 8
    print(f"1. loop overhead: nuclei_semseg_2d (fnet depth 3 x16), batch 8x1x128x128, {steps} steps/epoch, "
          f"second epoch timed, median of {repeat} interleaved pairs")
    print(f"   bare PyTorch loop       {b:6.2f} steps/s   (runs: {', '.join(f'{v:.2f}' for v in bare)})")
    print(f"   mmv-zoo train (Trainer) {lt:6.2f} steps/s   (runs: {', '.join(f'{v:.2f}' for v in light)})")
    print(f"   ratio mmv-zoo/bare      {float(np.median(ratios)):6.2f}   (per pair: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.9)")


def make_stacks(root: Path, n: int, shape: tuple[int, int, int]) -> int:
    """n noisy/clean pairs of zlib-compressed uint16 3D TIFF stacks; returns the bytes on disk."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(0)
    for sub in ("low", "high"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        coarse = rng.random((max(2, shape[0] // 8), shape[1] // 16, shape[2] // 16)).astype(np.float32)
        clean = zoom(coarse, [s / c for s, c in zip(shape, coarse.shape, strict=True)], order=1)
        clean = (clean * 1000 + 100).astype(np.uint16)
        noisy = (clean + rng.normal(0, 30, shape)).clip(0, 65535).astype(np.uint16)
        tifffile.imwrite(root / "low" / f"stack{i}.tif", noisy, compression="zlib")
        tifffile.imwrite(root / "high" / f"stack{i}.tif", clean, compression="zlib")
    return sum(p.stat().st_size for p in root.rglob("*.tif"))


def cache_epochs(tmp: Path, stacks: int, shape: tuple[int, int, int]) -> None:
    from mmv_zoo.entry import load_entry
    from mmv_zoo.training.train import train

    data = tmp / "3d"
    t0 = time.perf_counter()
    size = make_stacks(data, stacks, shape)
    made = time.perf_counter() - t0
    cache = tmp / "cache"
    overrides = ["network.channels=[4,8,16]", "network.strides=[[1,2,2],[2,2,2]]", "network.num_res_units=1",
                 "data.patch=[8,32,32]", "training.max_epochs=2",
                 "training.patches_per_image=2", "training.batch_size=2", "data.cache.enabled=true",
                 f"data.cache.folder={cache}"]
    timers = []
    for r in range(2):
        timer = EpochTimer()
        t0 = time.perf_counter()
        train(load_entry("denoise_3d_planaria", overrides), data, tmp / f"runs3d{r}", progress=False, callbacks=[timer])
        timers.append((timer, time.perf_counter() - t0))
    (t1, wall1), (t2, wall2) = timers
    cached = sum(p.stat().st_size for p in cache.rglob("*.npy"))
    print(f"2. persistent cache: {stacks} pairs of {shape[0]}x{shape[1]}x{shape[2]} uint16 zlib TIFF stacks "
          f"({size / 2**20:.0f} MiB on disk, {4 * stacks * np.prod(shape) / 2**20:.0f} MiB of voxels; written "
          f"in {made:.0f} s), denoise_3d_planaria (UNet 4-8-16), 2 patches/image, batch 2")
    print(f"   run 1: epoch 1 {t1.epochs[0]:7.2f} s (reads, normalizes, caches)   epoch 2 {t1.epochs[1]:6.2f} s   "
          f"-> {t1.epochs[0] / t1.epochs[1]:.1f}x faster (target >= 5x)")
    print(f"   run 2 (warm cache): epoch 1 {t2.epochs[0]:6.2f} s   epoch 2 {t2.epochs[1]:6.2f} s; "
          f"whole run {wall2:.1f} s vs {wall1:.1f} s cold")
    print(f"   cache: {cached / 2**20:.0f} MiB of .npy in {cache}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats of the overhead measurement")
    ap.add_argument("--images", type=int, default=10, help="2D training images for the overhead part")
    ap.add_argument("--stacks", type=int, default=6, help="3D stack pairs for the cache part")
    ap.add_argument("--shape", default="64,512,512", help="Z,Y,X of each stack")
    ap.add_argument("--skip", choices=["overhead", "cache"], default=None)
    args = ap.parse_args()
    from mmv_zoo.training.train import quiet_lightning

    quiet_lightning()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    tmp = Path(tempfile.mkdtemp(prefix="mmv_zoo_train_bench_"))
    os.environ.setdefault("MMV_ZOO_CACHE", str(tmp / "user_cache"))
    try:
        if args.skip != "overhead":
            overhead(tmp, args.repeat, args.images)
        if args.skip != "cache":
            cache_epochs(tmp, args.stacks, tuple(int(v) for v in args.shape.split(",")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (2 cores shared with other jobs: figures indicative)")


if __name__ == "__main__":
    main()
