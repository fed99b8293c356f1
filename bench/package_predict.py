"""Prediction with a BioImage.IO package: mmv_zoo against bioimageio.core's own, same package, same image,
same weight format, in one run.

    .venv/bin/python bench/package_predict.py [--package ZIP] [--image TIF] [--tile 3] [--repeat 3] [--no-cli]

Defaults: the shipped nuclei_semseg_2d package and the 400x400 BBBC007 holdout image, then that image
tiled 3x3 (1200x1200) to exercise tiling (2D images; `--tile 1` skips it).

bioimageio.core runs `bioimageio.core.predict(model=..., inputs=...)`, the call its docs name for
straightforward inference: without a block size it predicts the whole image in one forward pass, which
is the reference output. That call enters the pipeline as a context manager, which loads the weights
anew and unloads them after every call, so for a like-for-like speed figure bioimageio.core's
pipeline is also timed with its weights loaded once (`create_prediction_pipeline(...)` then
`predict_sample_without_blocking`, and `predict_sample_with_blocking` at the block size parameter
mmv_zoo passes when it leaves the tiling to bioimageio.core: min(16, what fits)). Without blocking,
bioimageio.core pads the image by the halo before its preprocessing, so per-sample statistics
(scale_range percentiles) include the padding, while its blocked prediction, like mmv_zoo, takes them
from the image alone; the "image's own stats" row preprocesses first, then predicts the whole image:
the exact reference for tiled prediction, and the one the exit status is judged against.
mmv_zoo runs `PackagePredictor` on the same array, `predict_files` (TIFF in, OME-TIFF out) and,
unless --no-cli, `mmv-zoo predict` in a subprocess.

Prints wall times (median of --repeat runs after one warm-up, which also verifies the package once),
ratios mmv_zoo / bioimageio.core, and the difference of every output from `predict()`'s and from the
"image's own stats" reference: max |a-b|, relative max |a-b| / max |b|, the share of pixels off by
more than 1e-3, the largest difference in the interior and in the border band. Exits 1 when an
mmv_zoo output's relative difference from the "image's own stats" reference exceeds 1e-3.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmv_zoo" / "zoo" / "nuclei_semseg_2d" / "weights" / "nuclei_semseg_2d.zip"
IMAGE = ROOT / "mmv_zoo" / "sample_data" / "bbbc007" / "holdout" / "images" / "20P1_POS0007_D_1UL.tif"
TOLERANCE = 1e-3
MAX_N = 16


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of `repeat` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def to_package_order(x: np.ndarray, axes: Any) -> np.ndarray:
    """(C, [Z], Y, X) -> the package input's axis order, with a batch axis of 1 where it has one."""
    ours = {"channel": 0, **{a: i + 1 for i, a in enumerate("zyx"[3 - (x.ndim - 1):])}}
    order, batch = [], []
    for i, axis in enumerate(axes):
        if axis.type == "batch":
            batch.append(i)
        else:
            order.append(ours["channel" if axis.type == "channel" else str(axis.id)])
    arr = np.transpose(x.astype(np.float32), order)
    for i in batch:
        arr = np.expand_dims(arr, i)
    return arr


def from_output(sample: Any, descr: Any) -> np.ndarray:
    """bioimageio.core's output sample -> (K, [Z], Y, X), as mmv_zoo returns it."""
    out_descr = descr.outputs[0]
    tensor = sample.members[out_descr.id]
    keep = [str(a.id) for a in out_descr.axes if a.type in ("channel", "space")]
    batch = [str(a.id) for a in out_descr.axes if a.type == "batch"]
    data = tensor.transpose([*batch, *keep]).data.values
    data = data[0] if batch else data
    if not any(a.type == "channel" for a in out_descr.axes):
        data = data[None]
    return np.asarray(data, np.float32)


def block_parameter(descr: Any, shape: tuple[int, ...]) -> int:
    """The largest n <= MAX_N whose blocks (min + n * step) still fit the image along every axis."""
    from bioimageio.spec.model import v0_5

    ns = [MAX_N]
    space = [a for a in descr.inputs[0].axes if a.type == "space"]
    for axis, n in zip(space, shape, strict=True):
        if isinstance(axis.size, v0_5.ParameterizedSize):
            ns.append(max(0, (n - axis.size.min) // axis.size.step))
    return min(ns)


def compare(a: np.ndarray, b: np.ndarray, border: int) -> dict[str, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    inner = d[(slice(None), *(slice(border, -border) for _ in range(d.ndim - 1)))]
    edge = d.copy()
    edge[(slice(None), *(slice(border, -border) for _ in range(d.ndim - 1)))] = 0
    return {"max": float(d.max()), "rel": float(d.max() / max(np.abs(b).max(), 1e-12)),
            "mean": float(d.mean()), "over": float((d.max(0) > TOLERANCE).mean()),
            "inner": float(inner.max()) if inner.size else 0.0, "edge": float(edge.max())}


def run_case(label: str, image: Path, package: Path, repeat: int, cli: bool, work: Path) -> bool:
    import bioimageio.core
    from bioimageio.core import create_prediction_pipeline, load_description
    from bioimageio.core.digest_spec import create_sample_for_model

    from mmv_zoo.io.read import read_image, select_channels
    from mmv_zoo.predict.batch import predict_files
    from mmv_zoo.predict.package_predictor import PackagePredictor

    t0 = time.perf_counter()
    ours = PackagePredictor(package)  # loads, verifies against the package's test tensors (once), builds the pipeline
    first_load = time.perf_counter() - t0
    x = select_channels(read_image(image, ours.spatial_dims), ours.in_channels)
    arr = to_package_order(x, ours.input.axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        descr = load_description(package)  # bioimageio.core's own reading, in the package's own format
        pipeline = create_prediction_pipeline(descr, weight_format=ours.weight_format)  # for predict()
        latest = load_description(package, format_version="latest")  # a 0.4 package upgraded: core blocks 0.5 only
        loaded = create_prediction_pipeline(latest, weight_format=ours.weight_format)  # never unloaded
    n = block_parameter(ours.descr, x.shape[1:])

    def core_predict() -> np.ndarray:
        return from_output(bioimageio.core.predict(model=pipeline, inputs=arr), ours.descr)

    def core_loaded() -> np.ndarray:
        sample = create_sample_for_model(loaded.model_descr, inputs=arr)
        return from_output(loaded.predict_sample_without_blocking(sample), ours.descr)

    def core_image_stats() -> np.ndarray:
        sample = create_sample_for_model(loaded.model_descr, inputs=arr)
        loaded.apply_preprocessing(sample)  # statistics of the image itself, then padded by the halo
        return from_output(loaded.predict_sample_without_blocking(sample, skip_preprocessing=True), ours.descr)

    def core_blocked() -> np.ndarray:
        sample = create_sample_for_model(loaded.model_descr, inputs=arr)
        return from_output(loaded.predict_sample_with_blocking(sample, ns=n), ours.descr)

    def core_end_to_end() -> np.ndarray:
        pp = create_prediction_pipeline(load_description(package), weight_format=ours.weight_format)
        return from_output(bioimageio.core.predict(model=pp, inputs=arr), ours.descr)

    def mmv_array() -> np.ndarray:
        return ours(x)[0]

    def mmv_files() -> np.ndarray:
        import tifffile

        (res,) = predict_files(package, [image], work / "out_files", overwrite=True)
        return tifffile.imread(res.output).reshape(-1, *x.shape[1:])

    def mmv_cli() -> np.ndarray:
        import tifffile

        out = work / "out_cli"
        subprocess.run([sys.executable, "-m", "mmv_zoo", "predict", str(package), str(image), "--out", str(out),
                        "--overwrite"], check=True, capture_output=True)
        return tifffile.imread(next(out.glob("*.ome.tiff"))).reshape(-1, *x.shape[1:])

    runs = [("core predict(), whole image (documented)", core_predict, None),
            ("core pipeline loaded once, whole image", core_loaded, None),
            ("core loaded, whole image, image's own stats", core_image_stats, None),
            (f"core pipeline loaded once, blocks n={n}", core_blocked, None),
            ("mmv_zoo PackagePredictor (array in/out)", mmv_array, "loaded"),
            ("core load+pipeline+predict()", core_end_to_end, None),
            ("mmv_zoo predict_files (TIFF -> OME-TIFF)", mmv_files, "e2e")]
    if cli:
        runs.append(("mmv-zoo predict CLI (subprocess)", mmv_cli, "e2e"))
    rows = []  # (name, median seconds, ratio against, output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn, versus in runs:
            t, out = timed(fn, repeat)
            rows.append((name, t, versus, out))
    base = {"loaded": rows[1][1], "e2e": rows[5][1]}
    halo = max((int(getattr(a, "halo", 0) or 0) for a in ours.output.axes), default=0)
    border = max(2 * halo, 32)

    print(f"\n== {label}: {image.name} {'x'.join(map(str, x.shape[1:]))}, {x.shape[0]} channel(s)")
    upgraded = f", loaded pipeline {latest.format_version}" if latest.format_version != descr.format_version else ""
    print(f"package {package.name} (format {descr.format_version}{upgraded}), weights {ours.weight_format}, "
          f"output halo {halo}; first PackagePredictor (load + verify + pipeline) {first_load:.2f} s")
    print(f"{'':44s} {'median s':>9s} {'ratio':>8s}")
    for name, t, versus, _ in rows:
        ratio = "" if versus is None else f"{t / base[versus]:7.2f}x"
        print(f"{name:44s} {t:9.3f} {ratio:>8s}")
    print("ratios: PackagePredictor / core pipeline loaded once, whole image; predict_files and CLI / core "
          "load+pipeline+predict() (the CLI adds Python start-up and imports)")
    verdicts = [difference_table(rows, i, border) for i in (0, 2)]
    for i, ok in zip((0, 2), verdicts, strict=True):
        print(f"mmv_zoo within {TOLERANCE:g} (relative) of {rows[i][0]}: {'yes' if ok else 'NO'}")
    return verdicts[1]


def difference_table(rows: list[tuple[str, float, str | None, np.ndarray]], ref_index: int, border: int) -> bool:
    """Print every output's difference from rows[ref_index]'s; True when all of mmv_zoo's are within TOLERANCE."""
    ref_name, ref = rows[ref_index][0], rows[ref_index][3]
    print(f"difference from {ref_name} (border band {border} px):")
    print(f"{'':44s} {'max|a-b|':>10s} {'rel':>10s} {'mean':>10s} {'>1e-3 px':>9s} {'interior':>10s} "
          f"{'border':>10s}  within 1e-3")
    ok = True
    for name, _, _, out in rows:
        if name == ref_name:
            continue
        if out.shape != ref.shape:
            print(f"{name:44s} shape {out.shape} != {ref.shape}")
            ok = ok and not name.startswith("mmv")
            continue
        c = compare(out, ref, border)
        within = c["rel"] <= TOLERANCE
        if name.startswith("mmv"):
            ok = ok and within
        print(f"{name:44s} {c['max']:10.2e} {c['rel']:10.2e} {c['mean']:10.2e} {c['over']:8.2%} "
              f"{c['inner']:10.2e} {c['edge']:10.2e}  {'yes' if within else 'NO'}")
    return ok
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, default=PACKAGE)
    ap.add_argument("--image", type=Path, default=IMAGE)
    ap.add_argument("--tile", type=int, default=3, help="also predict the image tiled NxN (1: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess timing")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_package_") as tmp:
        work = Path(tmp)
        # the package verification record and any bioimageio download cache stay in this folder
        os.environ["MMV_ZOO_CACHE"] = str(work / "mmv_zoo_cache")
        os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(work / "bioimageio_cache"))
        os.environ.setdefault("TQDM_DISABLE", "1")  # bioimageio.core's per-block progress bars
        import torch

        print(f"torch {torch.__version__}, {'cuda' if torch.cuda.is_available() else 'cpu'}, "
              f"{torch.get_num_threads()} threads, "
              f"bioimageio.core {__import__('bioimageio.core').core.__version__}")
        ok = run_case("image", args.image, args.package, args.repeat, not args.no_cli, work / "a")
        if args.tile > 1:
            import tifffile

            from mmv_zoo.io.read import read_image

            data = read_image(args.image, 2).data
            tiled = work / f"tiled{args.tile}x{args.tile}.tif"
            tifffile.imwrite(tiled, np.tile(data, (1, args.tile, args.tile)), photometric="minisblack",
                             metadata={"axes": "CYX"})
            ok = run_case(f"image tiled {args.tile}x{args.tile}", tiled, args.package, args.repeat,
                          not args.no_cli, work / "b") and ok
    print(f"\nmmv_zoo outputs within {TOLERANCE:g} (relative) of bioimageio.core's whole-image prediction "
          f"with the image's own statistics, in every case: {'yes' if ok else 'NO'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
