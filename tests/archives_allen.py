"""Stand-ins of the allen datasets zoo recipes download (see tests/data_archives.py for the contract).

The Allen Cell hiPSC single-cell image dataset (Viana et al., Nature 2023; quilt package
`aics/hipsc_single_cell_image_dataset` in the public `allencell` bucket): `metadata.csv` has one row
per cell with the columns the recipes read (`structure_name`, `FOVId`, `this_cell_index`, the
per-row channel indices `ChannelNumberBrightfield` / `ChannelNumberStruct` / `ChannelNumber405` /
`ChannelNumber638`, and the image paths `fov_path`, `fov_seg_path`, `struct_seg_path`, relative to
the package root). Each field of view has a multi-channel raw OME-TIFF (`fov_path`), a segmentation
with the nucleus instances in channel 0 and the cell instances in channel 1 (`fov_seg_path`) and a
structure segmentation (`struct_seg_path`, one channel).

The channel indices differ from row to row here (the real table has them per row because they are
not constant), so a recipe reading a fixed index instead of the row's column gets the wrong
channel. Each kind of channel has its own value range (`LEVEL`), so a test can tell which one was
written. The real files' exact channel order and path names were not checked offline.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable

import numpy as np

STRUCTURES = ("FBL", "HIST1H2BJ", "LMNB1", "NPM1", "ST6GAL1", "TOMM20")
"""Cell lines of the MMV_Im2Im experiments on this dataset (plus a line no recipe takes, below)."""
FOVS_PER_STRUCTURE = 4
SHAPE = (4, 12, 18)
"""Z, Y, X of every stand-in image."""
LEVEL = {"ChannelNumber638": 1000, "ChannelNumberStruct": 440, "ChannelNumber405": 3000,
         "ChannelNumberBrightfield": 4000}
"""Each raw channel's values lie in [LEVEL, LEVEL + 100): membrane dye, structure, DNA dye, brightfield
(the structure channel averages about 490: the FBL recipes keep FOVs whose mean lies in 450-500)."""
ORDERS = (("ChannelNumber638", "ChannelNumberStruct", "ChannelNumber405", "ChannelNumberBrightfield"),
          ("ChannelNumberBrightfield", "ChannelNumber638", "ChannelNumberStruct", "ChannelNumber405"))
"""Raw channel orders, alternating between fields of view."""
CELLS = 3
"""Cells in each field of view's cell segmentation; the table lists the first CELLS - 1 (the last
one stands for a cell the dataset leaves out, e.g. one cut by the image border)."""
COLUMNS = ("CellId", "FOVId", "structure_name", "this_cell_index", "fov_path", "fov_seg_path", "struct_seg_path",
           "crop_raw", "crop_seg", *LEVEL)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _cells() -> tuple[np.ndarray, np.ndarray]:
    """Cell instances 1..CELLS side by side along x, each with a smaller nucleus of the same id."""
    z, y, x = SHAPE
    cell = np.zeros(SHAPE, np.uint8)
    nucleus = np.zeros(SHAPE, np.uint8)
    width = x // CELLS
    for i in range(CELLS):
        cell[1:z - 1, 2:y - 2, i * width + 1:(i + 1) * width - 1] = i + 1
        nucleus[1:z - 1, 4:y - 4, i * width + 2:(i + 1) * width - 2] = i + 1
    return nucleus, cell


def fov_images(structure: str, k: int) -> dict[str, np.ndarray]:
    """The stand-in arrays of field of view `k` of `structure`: raw (CZYX), seg (nucleus, cell; CZYX)
    and struct_seg (ZYX, 0/255)."""
    rng = np.random.default_rng(sum(structure.encode()) * 100 + k)
    order = ORDERS[k % 2]
    raw = np.stack([LEVEL[name] + rng.integers(0, 100, SHAPE) for name in order]).astype(np.uint16)
    nucleus, cell = _cells()
    struct = ((rng.random(SHAPE) > 0.7) & (cell > 0)).astype(np.uint8) * 255
    return {"raw": raw, "seg": np.stack([nucleus, cell]), "struct_seg": struct}


def fov_id(structure: str, k: int) -> int:
    return 1000 * (STRUCTURES.index(structure) + 1) + k if structure in STRUCTURES else 9000 + k


def metadata(base: str) -> dict[str, bytes]:
    """`metadata.csv` and every image its rows name (paths relative to the package root)."""
    from tests.archive_bytes import tif

    files: dict[str, bytes] = {}
    rows = []
    for structure in (*STRUCTURES, "TJP1"):
        for k in range(FOVS_PER_STRUCTURE if structure in STRUCTURES else 1):
            fov = fov_id(structure, k)
            images = fov_images(structure, k)
            digest = _digest(f"{structure}/{k}")
            paths = {"fov_path": f"fov_path/{digest}_original.ome.tiff",
                     "fov_seg_path": f"fov_seg_path/{digest}_segmentation.ome.tiff",
                     "struct_seg_path": f"struct_seg_path/{digest}_struct_segmentation.ome.tiff"}
            files[paths["fov_path"]] = tif(images["raw"], metadata={"axes": "CZYX"}, ome=True)
            files[paths["fov_seg_path"]] = tif(images["seg"], metadata={"axes": "CZYX"}, ome=True)
            files[paths["struct_seg_path"]] = tif(images["struct_seg"], metadata={"axes": "ZYX"}, ome=True)
            channels = {name: str(ORDERS[k % 2].index(name)) for name in LEVEL}
            for cell in range(1, CELLS):  # one row per listed cell
                cell_id = f"{fov}{cell:02d}"
                rows.append({"CellId": cell_id, "FOVId": str(fov), "structure_name": structure,
                             "this_cell_index": f"{cell}.0", **paths,
                             "crop_raw": f"crop_raw/{_digest(cell_id)}_raw.ome.tif",
                             "crop_seg": f"crop_seg/{_digest(cell_id)}_segmentation.ome.tif", **channels})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return {"metadata.csv": buf.getvalue().encode(), **files}


BUILDERS: dict[str, Callable[[str], dict[str, bytes]]] = {"metadata.csv": metadata}
