"""Plain one-plane TIFFs are read by tifffile alone: the same sizes, metadata and pixels as bioio
reports for them; every other TIFF still goes through bioio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from mmv_zoo.errors import DataError
from mmv_zoo.io.source import ImageSource, _open, open_image
from mmv_zoo.io.tiff import PlainTiffSource
from mmv_zoo.io.write import write_ome_tiff

SAMPLES = Path(__file__).resolve().parents[1] / "mmv_zoo" / "sample_data"


def _written(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    files = {
        "rgb": (folder / "rgb.tif", lambda p: tifffile.imwrite(p, rgb, photometric="rgb")),
        "rgba": (folder / "rgba.tif", lambda p: tifffile.imwrite(
            p, rng.integers(0, 255, (30, 40, 4), dtype=np.uint8), photometric="rgb", extrasamples=["unassalpha"])),
        "centimeter": (folder / "cm.tif", lambda p: tifffile.imwrite(
            p, rng.random((20, 25)).astype(np.float32), resolution=(1 / 0.0003, 1 / 0.0004),
            resolutionunit="CENTIMETER")),
        "uint16": (folder / "u16.tiff", lambda p: tifffile.imwrite(p, rng.integers(0, 60000, (21, 22), np.uint16))),
        "pillow_rgb": (folder / "pil.tif", lambda p: Image.fromarray(rgb).save(p)),
        "pillow_dpi": (folder / "dpi.tif", lambda p: Image.fromarray(rgb[..., 0]).save(p, dpi=(300, 300))),
        "stack": (folder / "stack.tif", lambda p: tifffile.imwrite(p, rng.integers(0, 9, (3, 21, 22), np.uint16))),
        "imagej": (folder / "ij.tif", lambda p: tifffile.imwrite(p, rng.integers(0, 9, (21, 22), np.uint8),
                                                                  imagej=True, resolution=(2.0, 2.0),
                                                                  metadata={"unit": "um"})),
        "ome": (folder / "x.ome.tiff", lambda p: write_ome_tiff(p, rng.random((1, 21, 22)).astype(np.float32),
                                                                 {"y": 0.5, "x": 0.5}, ["dna"])),
    }
    for path, write in files.values():
        write(path)
    return {k: p for k, (p, _) in files.items()}


def _same_as_bioio(path: Path) -> ImageSource:
    light, reference = open_image(path), ImageSource(path, _open(path))
    assert light.scenes == reference.scenes
    assert light.scene(0) == reference.scene(0), path.name
    assert np.array_equal(light.read_block(0), reference.read_block(0))
    part = dict(channels=[0], y=(3, 9), x=(2, 5))
    assert np.array_equal(light.read_block(0, **part), reference.read_block(0, **part))
    return light


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("**/*.tif")), ids=lambda p: p.parent.name + "/" + p.name)
def test_bundled_tiffs_read_as_bioio_reads_them(path):
    _same_as_bioio(path)


def test_written_tiffs_read_as_bioio_reads_them(tmp_path):
    files = _written(tmp_path)
    plain = {"rgb", "rgba", "centimeter", "uint16", "pillow_rgb", "pillow_dpi"}
    for kind, path in files.items():
        source = _same_as_bioio(path)
        assert isinstance(source, PlainTiffSource) == (kind in plain), kind  # stacks, ImageJ and OME: bioio
    cm = open_image(files["centimeter"]).scene(0).pixel_sizes
    assert cm["y"] == pytest.approx(4.0) and cm["x"] == pytest.approx(3.0) and cm["z"] is None
    assert open_image(files["rgb"]).scene(0).rgb


def test_unreadable_plain_tiff_names_the_file(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((300, 300), np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.tif.*cannot read image"):
        open_image(path).read_block(0)
