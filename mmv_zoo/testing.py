"""Tiny synthetic training data in any entry's own layout and axes, and the `--set` overrides that
make any entry train in seconds: shared by `tests/test_zoo_entries.py` and
`scripts/check_zoo_exports.py`.

`tiny_data` reads only the entry: 2D or 3D from its axes, channel counts from its tensors (RGB as
two-stain brightfield images), class ids for segmentation targets, instance labels for instance
entries, 0/1 masks where a side is normalized with `kind: foreground`, exclusion masks when the
layout has them, CSV / presplit / unpaired / source-only layouts as declared. Imports numpy and tifffile only
(scipy when called).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

GAN = ("pix2pix", "cyclegan")
IMAGES = 3
"""Pairs per data folder: a random split holds one back for validation, two train."""
TRAINING = ["training.max_epochs=1", "training.patches_per_image=2", "training.batch_size=2",
            "training.accumulate_grad_batches=1", "training.num_workers=0", "training.accelerator=cpu",
            "training.devices=1",
            "training.max_time=null", "data.cache.enabled=false"]
"""Training overrides for tiny runs: one epoch of 2 train images x 2 patches in batches of 2 (two
batches), one CPU process, no cache."""
STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
"""Hematoxylin and eosin optical densities per RGB channel (Ruifrok & Johnston) for RGB images."""


def tiny_network(network: Any, spatial_dims: int) -> dict[str, Any]:
    """Network fields that shrink `network` (settings of any kind) to a few thousand parameters while
    keeping its kind, dimensionality and anisotropy; {} for `kind: python` (left as declared)."""
    kind = network.kind
    if kind == "fnet":
        return {"depth": 2, "mult_chan": 4}
    if kind in ("unet", "attention_unet"):
        strides = network.resolved_strides()[:2]
        return {"channels": [4, 8, 16][: len(strides) + 1], "strides": strides}
    if kind == "branched_erfnet":
        return {"channels": [4, 8, 16]}
    if kind == "care_unet":
        return {"channels": 4}
    if kind == "dyn_unet":
        return {"filters": [4 * 2**i for i in range(len(network.strides))]}
    if kind == "basic_unet":
        return {"features": [4, 4, 8, 16, 32, 4]}
    if kind == "swin_unetr":
        return {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}
    if kind == "unetr":
        return {"img_size": [16, 32, 32][-spatial_dims:], "feature_size": 4, "hidden_size": 32, "mlp_dim": 64,
                "num_heads": 2}
    return {}


def tiny_patch(network: Any, spatial_dims: int, gan: bool) -> list[int]:
    """The smallest patch the network takes at or above 32 (y, x) and 8 (z; 16 for the GAN
    discriminators, whose 3D score maps need it)."""
    want = [16 if gan else 8, 32, 32][-spatial_dims:]
    return [rule.fit(w) for rule, w in zip(network.size_rule(spatial_dims), want, strict=True)]


def tiny_overrides(entry: Any, steps: int | None = None) -> list[str]:
    """`--set` overrides that make `entry` train in seconds: a tiny network of the same kind, a small
    valid patch, small discriminators, one epoch of two batches (`TRAINING`). `steps`: also stop after
    that many training batches (`training.max_steps`, which counts each optimizer's step: a GAN
    batch steps two)."""
    mmv, dims = entry.mmv, entry.spatial_dims
    fw = mmv.framework
    changes = tiny_network(mmv.network, dims)
    network = type(mmv.network).model_validate({**mmv.network.model_dump(), **changes})
    out = [f"network.{k}={json.dumps(v)}" for k, v in changes.items()]
    if fw in GAN:
        out += [f"{fw}.discriminator.channels=4", f"{fw}.discriminator.depth=2"]
        if fw == "pix2pix":
            out.append("pix2pix.init_from=null")
    out += TRAINING + [f"data.patch={json.dumps(tiny_patch(network, dims, fw in GAN))}"]
    if steps is not None:
        out.append(f"training.max_steps={steps * (2 if fw in GAN else 1)}")
    return out


# ---------------------------------------------------------------- images


def _smooth(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth random field scaled to [0, 1]."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.random(shape), 2.0)
    return (field - field.min()) / (field.max() - field.min())


def _role(entry: Any, side: str) -> str:
    """What the images of one side hold: intensities, a 0/1 mask, class ids or instance labels."""
    mmv = entry.mmv
    if side == "target" and mmv.task == "segmentation":
        return "classes"
    if side == "target" and mmv.task == "instance":
        return "instances"
    return "mask" if getattr(mmv.data.normalization, side).kind == "foreground" else "intensity"


def _render(entry: Any, side: str, rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """One image of `side` ('source' or 'target') as written to disk and its tifffile keywords."""
    from scipy.ndimage import label

    clean = _smooth(rng, shape)
    role = _role(entry, side)
    if role == "classes":  # every class present: quantiles of the field
        k = entry.out_channels
        return np.digitize(clean, np.quantile(clean, np.arange(1, k) / k)).astype(np.uint8), {}
    if role == "instances":
        return label(clean > np.quantile(clean, 0.7))[0].astype(np.uint16), {}
    channels = entry.in_channels if side == "source" else entry.out_channels
    if role == "mask":
        mask = (clean > np.median(clean)).astype(np.uint8)
        return (mask, {}) if channels == 1 else _channels([mask] * channels)
    if side == "source":
        clean = np.clip(clean + rng.normal(0, 0.06, shape), 0, 1)
    if channels == 3 and len(shape) == 2:  # RGB brightfield: two stains (also fits macenko normalization)
        density = np.stack([clean, _smooth(rng, shape)], -1) @ STAINS
        return (240 * np.exp(-density)).astype(np.uint8), {"photometric": "rgb"}
    if channels == 1:
        return (clean * 1000 + 100).astype(np.uint16), {}
    return _channels([((clean + _smooth(rng, shape) * c) * 500 + 100).astype(np.uint16) for c in range(channels)])


def _channels(planes: list[np.ndarray]) -> tuple[np.ndarray, dict]:
    stack = np.stack(planes)
    return stack, {"ome": True, "metadata": {"axes": "CYX" if stack.ndim == 3 else "CZYX"}}


def _write(path: Path, image: tuple[np.ndarray, dict]) -> Path:
    data, kwargs = image
    if kwargs.get("ome"):
        path = path.with_name(path.name.removesuffix(".tif") + ".ome.tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, **kwargs)
    return path


def _exclusion(shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    mask = np.zeros(shape, np.uint8)
    mask[..., :8, :8] = 1  # a masked corner
    return mask, {}


def image_shape(entry: Any) -> tuple[int, ...]:
    """Spatial shape of the tiny images: 96 x 96 (2D), 16-24 x 48 x 48 (3D); at least the patch."""
    patch = entry.mmv.data.patch
    base = [96, 96] if entry.spatial_dims == 2 else [max(16, patch[0] * 3 // 2), 48, 48]
    return tuple(max(b, p) for b, p in zip(base, patch, strict=True))


def tiny_data(entry: Any, root: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Write tiny training data for `entry` in its own layout under `root`; return `root` and the
    first source image as (1, C, [Z], Y, X) float32 (a prediction input)."""
    data, shape = entry.mmv.data, image_shape(entry)
    layout = data.layout
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    presplit = data.split.kind == "presplit" and layout.layout != "csv"
    groups = [(root / "train", IMAGES - 1), (root / "val", 1)] if presplit else [(root, IMAGES)]
    first: Path | None = None
    for folder, n in groups:
        if layout.layout == "csv":
            written = _csv_layout(entry, folder, rng, shape, n)
        elif layout.layout == "source_folder":  # noisy images alone
            written = [_write(folder / layout.source / f"img{i}.tif", _render(entry, "source", rng, shape))
                       for i in range(n)]
        elif layout.layout == "unpaired_folders":  # unrelated folders: other names, one image fewer in B
            written = [_write(folder / layout.source / f"a{i}.tif", _render(entry, "source", rng, shape))
                       for i in range(n)]
            for i in range(max(n - 1, 1)):
                _write(folder / layout.target / f"b{i}.tif", _render(entry, "target", rng, shape))
        else:
            written = _paired_layout(entry, folder, rng, shape, n)
        first = first or written[0]
    assert first is not None
    return root, first_image(first)


def _paired_layout(entry: Any, folder: Path, rng: np.random.Generator, shape: tuple[int, ...],
                   n: int) -> list[Path]:
    layout = entry.mmv.data.layout
    written = []
    for i in range(n):
        name = f"{folder.name}{i}" if folder.name in ("train", "val") else f"img{i}"
        src = _write(folder / layout.source / f"{name}{layout.source_suffix}.tif", _render(entry, "source", rng, shape))
        _write(folder / layout.target / f"{name}{layout.target_suffix}.tif", _render(entry, "target", rng, shape))
        if layout.exclusion and i == 0:
            _write(folder / layout.exclusion / src.name, _exclusion(shape))
        written.append(src)
    return written


def _csv_layout(entry: Any, root: Path, rng: np.random.Generator, shape: tuple[int, ...], n: int) -> list[Path]:
    """Pairs under `source/` and `target/` next to the CSV, listed in it (split and exclusion columns
    filled when the layout has them)."""
    layout = entry.mmv.data.layout
    table = root / layout.file
    rows, written = [], []
    for i in range(n):
        src = _write(table.parent / "source" / f"img{i}.tif", _render(entry, "source", rng, shape))
        tgt = _write(table.parent / "target" / f"img{i}.tif", _render(entry, "target", rng, shape))
        row = {layout.source_column: f"source/{src.name}", layout.target_column: f"target/{tgt.name}"}
        if layout.split_column:
            row[layout.split_column] = "val" if i == n - 1 else "train"
        if layout.exclusion_column:
            mask = _write(table.parent / "exclusion" / src.name, _exclusion(shape)) if i == 0 else None
            row[layout.exclusion_column] = f"exclusion/{mask.name}" if mask else ""
        rows.append(row)
        written.append(src)
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return written


def first_image(path: Path) -> np.ndarray:
    """An image file (or a folder's first file) as (1, C, [Z], Y, X) float32 (RGB samples last and
    OME channels first become C)."""
    if path.is_dir():
        path = sorted(p for p in path.iterdir() if p.is_file())[0]
    with tifffile.TiffFile(path) as tif:
        image, axes = tif.asarray().astype(np.float32), tif.series[0].axes
    if axes.endswith("S"):  # RGB samples
        return np.moveaxis(image, -1, 0)[None]
    return image[None] if axes.startswith("C") else image[None, None]
