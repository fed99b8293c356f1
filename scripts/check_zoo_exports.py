"""Every bundled zoo entry, trained for a few steps, exports a package that the independent checker passes.

    python scripts/check_zoo_exports.py [--checker PATH] [--entries a,b] [--keep DIR]

For each entry: tiny training data in the entry's layout (crops of the bundled BBBC007 images for
2D, synthetic smooth/noisy stacks for 3D), a tiny training run (few steps, small network), an
export with all three weight formats (torchscript, onnx, pytorch_state_dict), then the checker
(`../shared/tools/check_bioimageio_package.sh` by default; `MMV_ZOO_CHECKER` or `--checker`
overrides) with the input image for its tiled-prediction step. The checker runs released
bioimageio.core in its own environment, without mmv_zoo or MONAI. Exit status 1 if any entry fails.
"""

from __future__ import annotations

import argparse
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
TINY = {"fnet": ["network.depth=2", "network.mult_chan=4"], "unet": ["network.channels=[4,8,16]"]}
COMMON = ["training.max_epochs=1", "training.patches_per_image=2", "training.batch_size=2"]


def tiny_data(entry, root: Path) -> tuple[Path, np.ndarray]:
    """Training pairs in the entry's folder layout, and one raw input image (1, 1, [Z], Y, X) float32."""
    layout = entry.mmv.data.layout
    src, tgt = root / layout.source, root / layout.target
    src.mkdir(parents=True)
    tgt.mkdir(parents=True)
    if entry.spatial_dims == 2:
        for path in sorted((SAMPLE / "images").glob("*.tif"))[:3]:
            tifffile.imwrite(src / path.name, tifffile.imread(path)[100:196, 100:196])
            tifffile.imwrite(tgt / path.name, tifffile.imread(SAMPLE / "labels" / path.name)[100:196, 100:196])
    else:
        from scipy.ndimage import gaussian_filter

        rng = np.random.default_rng(0)
        for i in range(2):
            clean = gaussian_filter(rng.random((16, 48, 48)), 2.0)
            clean = (clean - clean.min()) / (clean.max() - clean.min()) * 1000 + 100
            noisy = clean + rng.normal(0, 60, clean.shape)
            tifffile.imwrite(src / f"stack{i}.tif", noisy.clip(0, 65535).astype(np.uint16))
            if entry.mmv.task == "segmentation":
                tifffile.imwrite(tgt / f"stack{i}.tif", (clean > np.median(clean)).astype(np.uint8))
            else:
                tifffile.imwrite(tgt / f"stack{i}.tif", clean.astype(np.uint16))
    first = sorted(src.iterdir())[0]
    return root, tifffile.imread(first).astype(np.float32)[None, None]


def overrides(entry) -> list[str]:
    patch = "[32,32]" if entry.spatial_dims == 2 else "[8,32,32]"
    return TINY.get(entry.mmv.network.kind, []) + COMMON + [f"data.patch={patch}"]


def check(name: str, checker: Path, work: Path) -> tuple[bool, str]:
    from mmv_zoo.entry import load_entry
    from mmv_zoo.export.package import export_package
    from mmv_zoo.train import train

    entry = load_entry(name, overrides(load_entry(name)))
    data, image = tiny_data(entry, work / "data")
    run = train(entry, data, work / "runs", progress=False).folder
    package = export_package(run, work / f"{name}.zip", formats=tuple(FORMATS.split(",")))
    np.save(work / "input.npy", image)
    proc = subprocess.run(["bash", str(checker), str(package.zip_path), str(work / "input.npy")],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    last = lines[-1] if lines else proc.stderr.strip()[-300:]
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    return proc.returncode == 0 and "package OK" in last, last


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
