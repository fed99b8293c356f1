"""Stand-ins of the public datasets zoo recipes download (see tests/data_archives.py for the contract):
the real member paths, file formats and naming, tiny contents. Where the real naming is not known
offline the builder says so."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from tests.archive_bytes import tif, zip_bytes


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(name.encode()))


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _stained(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """An H&E-like uint8 RGB image: two stains (hematoxylin, eosin) on a bright background."""
    stains = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    conc = rng.random((*shape, 2)) * np.array([1.2, 0.6])
    conc[: shape[0] // 4] = 0  # some background
    return (240 * np.exp(-conc @ stains)).clip(0, 255).astype(np.uint8)


def glas(base: str) -> dict[str, bytes]:
    """GlaS (Sirinukunwattana et al. 2017), warwick_qu_dataset_released_2016_07_08.zip: one folder with
    RGB `train_<k>.bmp`, `testA_<k>.bmp`, `testB_<k>.bmp` and gland label images `<name>_anno.bmp`
    (one id per gland)."""
    rng = _rng("glas")
    folder = "Warwick QU Dataset (Released 2016_07_08)"
    members = {}
    for prefix, n in (("train", 3), ("testA", 2), ("testB", 1)):
        for k in range(1, n + 1):
            members[f"{folder}/{prefix}_{k}.bmp"] = _encoded(_stained(rng, (40, 52)), "BMP")
            anno = np.zeros((40, 52), np.uint8)
            anno[12:30, 5:20], anno[15:35, 30:48] = 1, 2
            members[f"{folder}/{prefix}_{k}_anno.bmp"] = _encoded(anno, "BMP")
    return {"warwick_qu_dataset_released_2016_07_08.zip": zip_bytes(members)}


def deepliif(name: str) -> Callable[[str], dict[str, bytes]]:
    """BC-DeepLIIF (Ghahremani et al. 2022, Zenodo 4751737), BC-DeepLIIF_<Training|Validation>_Set.zip:
    PNG strips of six 512-pixel panels side by side (IHC, hematoxylin, DAPI, LAP2, marker,
    segmentation; 3072 x 512), named `<N>.png` with flipped or rotated copies `<N>_<k>.png`. Here 24
    pixels tall (the recipes cut along x only); the training stand-in is RGBA, the validation one RGB
    (which the real files are is not known offline; loaders of this data drop a 4th channel)."""

    def build(base: str) -> dict[str, bytes]:
        rng = _rng(name)
        members = {}
        stems = ["1", "1_1", "2"] if name == "Training" else ["7"]
        for stem in stems:
            blocks = [np.kron(rng.random((3, 64)), np.ones((8, 8))) for _ in range(6)]  # 8 x 8 blocks: small PNGs
            channels = [1.0, 0.8, 0.9, 1.0][: 4 if name == "Training" else 3]
            panels = [(np.stack([b * c for c in channels], axis=-1) * 255).astype(np.uint8) for b in blocks]
            members[f"BC-DeepLIIF_{name}_Set/{stem}.png"] = _encoded(np.concatenate(panels, axis=1), "PNG")
        return {f"BC-DeepLIIF_{name}_Set.zip": zip_bytes(members)}

    return build


def confocal_2_sted(base: str) -> dict[str, bytes]:
    """3D-RCAN's Confocal_2_STED.zip (Chen et al. 2021, Zenodo 4624364): per dataset
    `Training/raw/*.tif` and `Training/gt/*.tif` 3D stacks paired by file name (Microtubule's gt/ holds
    more files than raw/), and a `test` folder (inner layout not known offline)."""
    rng = _rng("sted")
    members = {}
    for ds in ("Microtubule", "Nuclear_Pore_complex"):
        for k in range(3):
            gt = (rng.random((6, 16, 16)) * 255).astype(np.uint16)
            members[f"Confocal_2_STED/{ds}/Training/raw/{k + 1:02d}.tif"] = tif(gt // 2 + 10)
            members[f"Confocal_2_STED/{ds}/Training/gt/{k + 1:02d}.tif"] = tif(gt)
        members[f"Confocal_2_STED/{ds}/test/raw/01.tif"] = tif(gt // 2)
    members["Confocal_2_STED/Microtubule/Training/gt/99.tif"] = tif(gt)  # a gt without its raw
    return {"Confocal_2_STED.zip": zip_bytes(members)}


WELLS = ("A01", "A02", "B01", "B02")


def bbbc010_images(base: str) -> dict[str, bytes]:
    """BBBC010_v2_images.zip: 16-bit TIFFs `<plate>_<date>_<well>_w<1|2>_<GUID>.tif`, two per well."""
    rng = _rng("bbbc010")
    members = {}
    for i, well in enumerate(WELLS):
        for w in (1, 2):
            name = f"1649_1109_0003_Amp5-1_B_20070424_{well}_w{w}_{i:08X}-C09E-47DE-B763-5BC479534681.tif"
            members[f"BBBC010_v2_images/{name}"] = tif((rng.random((40, 48)) * 4000).astype(np.uint16))
    return {"BBBC010_v2_images.zip": zip_bytes(members)}


def bbbc010_masks(base: str) -> dict[str, bytes]:
    """BBBC010_v1_foreground_eachworm.zip: one binary PNG per worm, `<well>_<nn>_ground_truth.png`."""
    members = {}
    for i, well in enumerate(WELLS):
        for worm in range(1 + i % 3):
            mask = np.zeros((40, 48), np.uint8)
            mask[5 + 10 * worm: 12 + 10 * worm, 4:40] = 255
            members[f"BBBC010_v1_foreground_eachworm/{well}_{worm + 1:02d}_ground_truth.png"] = _encoded(mask, "PNG")
    return {"BBBC010_v1_foreground_eachworm.zip": zip_bytes(members)}


HELA_TIMELAPSE = "20210904_TL2%20-%20R05-C03-F0.tif"
"""The time-lapse's name in its URL (the file name has spaces)."""


def hela_timelapse(base: str) -> dict[str, bytes]:
    """Zenodo 6139958: one ImageJ hyperstack, T x C x Y x X uint16 (real: 240 x 5 x 540 x 540; channels
    low- and high-contrast DPC, brightfield, EGFP-alpha-tubulin, mCherry-H2B)."""
    stack = (_rng("hela1").random((3, 5, 32, 32)) * 4000).astype(np.uint16)
    return {HELA_TIMELAPSE: tif(stack, imagej=True, metadata={"axes": "TCYX"})}


def hela_snapshots(base: str) -> dict[str, bytes]:
    """Zenodo 6140064 training_dataset.zip: `train/` and `test/`, six TIFFs per snapshot: `_bf`, `_cyto`,
    `_dpc`, `_fluo` (2 channels: cytoplasm, H2B), `_nuclei`, `_sqrdpc` (names before the suffix not known
    offline; the paper's notebook removes spaces from them)."""
    rng = _rng("hela2")
    members = {}
    for folder, names in (("train", ["R02-C02-F0 0001", "R02-C02-F1 0001"]), ("test", ["R03-C04-F0 0002"])):
        for name in names:
            for part in ("bf", "cyto", "dpc", "nuclei", "sqrdpc"):
                members[f"{folder}/{name}_{part}.tif"] = tif((rng.random((32, 32)) * 4000).astype(np.uint16))
            fluo = (rng.random((2, 32, 32)) * 4000).astype(np.uint16)
            members[f"{folder}/{name}_fluo.tif"] = tif(fluo, imagej=True, metadata={"axes": "CYX"})
    return {"training_dataset.zip": zip_bytes(members)}


BUILDERS: dict[str, Callable[[str], dict[str, bytes]]] = {
    "warwick_qu_dataset_released_2016_07_08.zip": glas,
    "BC-DeepLIIF_Training_Set.zip": deepliif("Training"),
    "BC-DeepLIIF_Validation_Set.zip": deepliif("Validation"),
    "Confocal_2_STED.zip": confocal_2_sted,
    "BBBC010_v2_images.zip": bbbc010_images,
    "BBBC010_v1_foreground_eachworm.zip": bbbc010_masks,
    HELA_TIMELAPSE: hela_timelapse,
    "training_dataset.zip": hela_snapshots,
}
"""Download file name (the last part of its URL, or `file` of a DOI download) -> builder."""
