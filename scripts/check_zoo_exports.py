"""Every bundled zoo entry, trained for a few steps, exports a package that the independent checker passes.

    python scripts/check_zoo_exports.py [--checker PATH] [--entries a,b] [--keep DIR]

For each entry: tiny training data in the entry's layout (crops of the bundled BBBC007 images for
2D, synthetic smooth/noisy stacks for 3D), a tiny training run (few steps, small network, small
discriminator for the GAN frameworks), an export with all three weight formats (torchscript, onnx,
pytorch_state_dict; a CycleGAN run: one package per direction), then the checker
(`../shared/tools/check_bioimageio_package.sh` by default; `MMV_ZOO_CHECKER` or `--checker`
overrides) with the input image for its tiled-prediction step. The checker runs released
bioimageio.core in its own environment, without mmv_zoo or MONAI. Exit status 1 if any entry fails.
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
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "mmv_zoo" / "sample_data" / "bbbc007" / "train"
DEFAULT_CHECKER = ROOT.parent / "shared" / "tools" / "check_bioimageio_package.sh"
FORMATS = "torchscript,onnx,pytorch_state_dict"
TINY = {"fnet": ["network.depth=2", "network.mult_chan=4"], "unet": ["network.channels=[4,8,16]"],
        "attention_unet": ["network.channels=[4,8,16]"], "branched_erfnet": ["network.channels=[4,8,16]"],
        "dyn_unet": ["network.filters=[4,8,16,32]"]}
COMMON = ["training.max_epochs=1", "training.patches_per_image=2", "training.batch_size=2"]
GAN = ("pix2pix", "cyclegan")


def tiny_data(entry, root: Path) -> tuple[Path, np.ndarray]:
    """Training pairs in the entry's folder layout, and one raw input image (1, 1, [Z], Y, X) float32."""
    layout = entry.mmv.data.layout
    src, tgt = root / layout.source, root / layout.target
    src.mkdir(parents=True)
    tgt.mkdir(parents=True)
    if entry.spatial_dims == 2:
        for path in sorted((SAMPLE / "images").glob("*.tif"))[:3]:
            image = tifffile.imread(path)[100:196, 100:196]
            if entry.in_channels == 3:  # an RGB input (staining transfer): the crop as grey RGB
                tifffile.imwrite(src / path.name, np.stack([image] * 3, -1), photometric="rgb")
            else:
                tifffile.imwrite(src / path.name, image)
            tifffile.imwrite(tgt / path.name, tifffile.imread(SAMPLE / "labels" / path.name)[100:196, 100:196])
    else:
        from scipy.ndimage import gaussian_filter

        rng = np.random.default_rng(0)
        for i in range(2):
            depth = 24 if entry.mmv.framework in GAN else 16  # GAN patches are 16 deep: a larger halo
            clean = gaussian_filter(rng.random((depth, 48, 48)), 2.0)
            clean = (clean - clean.min()) / (clean.max() - clean.min()) * 1000 + 100
            noisy = clean + rng.normal(0, 60, clean.shape)
            tifffile.imwrite(src / f"stack{i}.tif", noisy.clip(0, 65535).astype(np.uint16))
            if entry.mmv.task == "segmentation":
                tifffile.imwrite(tgt / f"stack{i}.tif", (clean > np.median(clean)).astype(np.uint8))
            elif entry.mmv.task == "instance":  # the blobs as instance labels
                from scipy.ndimage import label

                tifffile.imwrite(tgt / f"stack{i}.tif", label(clean > np.percentile(clean, 70))[0].astype(np.uint16))
            else:
                tifffile.imwrite(tgt / f"stack{i}.tif", clean.astype(np.uint16))
    if getattr(layout, "exclusion", None):  # exclusion masks (instance entries): one image with a masked corner
        (root / layout.exclusion).mkdir()
        first = sorted(src.iterdir())[0]
        mask = np.zeros(tifffile.imread(first).shape[-entry.spatial_dims:], np.uint8)
        mask[..., :8, :8] = 1
        tifffile.imwrite(root / layout.exclusion / first.name, mask)
    return root, first_image(src)


def first_image(folder: Path) -> np.ndarray:
    """The folder's first image as (1, C, [Z], Y, X) float32 (the checker's tiled-prediction input)."""
    image = tifffile.imread(sorted(folder.iterdir())[0]).astype(np.float32)
    return np.moveaxis(image, -1, 0)[None] if image.ndim == 3 and image.shape[-1] == 3 else image[None, None]


def overrides(entry) -> list[str]:
    gan = entry.mmv.framework in GAN
    patch = "[32,32]" if entry.spatial_dims == 2 else "[16,32,32]" if gan else "[8,32,32]"
    net = list(TINY.get(entry.mmv.network.kind, []))
    strides = getattr(entry.mmv.network, "strides", None)
    if net and strides is not None and entry.mmv.network.kind not in ("fnet", "dyn_unet"):  # levels of tiny channels
        net.append(f"network.strides={json.dumps(strides[:2])}")
    if gan:
        net.append(f"{entry.mmv.framework}.discriminator={{channels: 4, depth: 2}}")
    return net + COMMON + [f"data.patch={patch}"]


def check(name: str, checker: Path, work: Path) -> tuple[bool, str]:
    from mmv_zoo.entry import load_entry
    from mmv_zoo.export.package import export_package
    from mmv_zoo.train import train

    entry = load_entry(name, overrides(load_entry(name)))
    data, image = tiny_data(entry, work / "data")
    run = train(entry, data, work / "runs", progress=False).folder
    targets = [(None, image)]
    if entry.mmv.framework == "cyclegan":  # one package per direction; b2a takes the target domain's images
        targets = [("a2b", image), ("b2a", first_image(data / entry.mmv.data.layout.target))]
    ok, last = True, ""
    for direction, inp in targets:
        suffix = f"_{direction}" if direction else ""
        package = export_package(run, work / f"{name}{suffix}.zip", formats=tuple(FORMATS.split(",")),
                                 direction=direction)
        np.save(work / f"input{suffix}.npy", inp)
        proc = subprocess.run(["bash", str(checker), str(package.zip_path), str(work / f"input{suffix}.npy")],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        last = (f"{direction}: " if direction else "") + (lines[-1] if lines else proc.stderr.strip()[-300:])
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
        ok = ok and proc.returncode == 0 and "package OK" in last
        if not ok:
            break
    return ok, last


def main() -> int:
    from mmv_zoo.entry import bundled_entries

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checker", type=Path, default=Path(os.environ.get("MMV_ZOO_CHECKER", DEFAULT_CHECKER)))
    parser.add_argument("--entries", default="", help="comma-separated entry names (default: all bundled)")
    parser.add_argument("--keep", type=Path, help="keep runs and packages in this folder")
    args = parser.parse_args()
    if not args.checker.is_file():
        print(f"error: {args.checker}: checker not found (set MMV_ZOO_CHECKER or --checker)", file=sys.stderr)
        return 1
    names = [n for n in args.entries.split(",") if n] or bundled_entries()
    failed = []
    for name in names:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"mmv_zoo_check_{name}_") as tmp:
            work = args.keep / name if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            ok, last = check(name, args.checker, work)
        print(f"{name:28s} {'OK    ' if ok else 'FAILED'} {time.perf_counter() - t0:6.1f} s   {last}", flush=True)
        if not ok:
            failed.append(name)
    print(f"{len(names) - len(failed)}/{len(names)} zoo entries export packages the checker passes"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
