"""Output writers: OME-Zarr (tile by tile) and OME-TIFF round-trip through bioio; nothing half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mmv_zoo.errors import OutputError
from mmv_zoo.io.writers import (
    ZARR_ABOVE_BYTES,
    OmeTiffOutput,
    OmeZarrOutput,
    choose_format,
    format_of,
    open_writer,
    output_name,
)

SHAPE = (2, 3, 4, 32, 40)
NAMES = ["dna", "membrane", "actin"]
SIZES = {"z": 2.0, "y": 0.5, "x": 0.25}


@pytest.fixture(scope="module")
def known() -> np.ndarray:
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


def _tiles(shape, step=(3, 7, 9)):
    """Slices of (Z, Y, X) tiles that do not line up with any chunk grid."""
    nz, ny, nx = shape
    for z in range(0, nz, step[0]):
        for y in range(0, ny, step[1]):
            for x in range(0, nx, step[2]):
                yield slice(z, z + step[0]), slice(y, y + step[1]), slice(x, x + step[2])


@pytest.mark.parametrize("fmt", ["ome-zarr", "ome-tiff"])
def test_round_trip_through_bioio(tmp_path, known, fmt):
    from bioio import BioImage

    path = tmp_path / output_name("out", fmt)
    with open_writer(path, SHAPE, known.dtype, pixel_sizes=SIZES, channel_names=NAMES, time_increment=2.5) as out:
        assert out.format == fmt and not path.exists()
        for t in range(SHAPE[0]):
            region = out.region(t)
            for zs, ys, xs in _tiles(SHAPE[2:]):
                region[:, zs, ys, xs] = known[t][:, zs, ys, xs]
    img = BioImage(path)
    assert tuple(img.dims.shape) == SHAPE and img.dims.order == "TCZYX"
    assert [str(c) for c in img.channel_names] == NAMES
    assert tuple(img.physical_pixel_sizes) == (2.0, 0.5, 0.25)
    np.testing.assert_array_equal(img.get_image_data("TCZYX"), known)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial left


def test_zarr_is_ngff_04_chunked(tmp_path, known):
    path = tmp_path / "out.ome.zarr"
    with open_writer(path, SHAPE, known.dtype, pixel_sizes={"y": 0.5, "x": 0.5}) as out:
        assert isinstance(out, OmeZarrOutput) and out.chunks == (1, 1, 4, 32, 40)
        out.write(1, (slice(None), slice(0, 2)), known[1, :, :2])
    attrs = json.loads((path / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["t", "c", "z", "y", "x"]
    assert ms["axes"][3] == {"name": "y", "type": "space", "unit": "micrometer"}
    assert "unit" not in ms["axes"][2] and "unit" not in ms["axes"][0]  # z size and time increment unknown
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["channel0", "channel1", "channel2"]
    assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    from mmv_zoo.io.source import open_image

    src = open_image(path)
    assert src.scene(0).time_increment is None and src.scene(0).pixel_sizes == {"z": 1.0, "y": 0.5, "x": 0.5}
    np.testing.assert_array_equal(src.read_block(1, z=(0, 2)), known[1, :, :2])
    np.testing.assert_array_equal(src.read_block(0), 0)  # never written: fill value


@pytest.mark.parametrize("fmt", ["ome-zarr", "ome-tiff"])
def test_abort_and_errors_leave_nothing(tmp_path, known, fmt):
    path = tmp_path / output_name("out", fmt)
    out = open_writer(path, SHAPE, known.dtype)
    out.region(0)[:] = known[0]
    out.abort()
    out.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="aborted"):
        out.region(0)
    with pytest.raises(RuntimeError, match="network failed"), open_writer(path, SHAPE, known.dtype) as out:
        out.region(1)[0, :2] = known[1, 0, :2]
        if fmt == "ome-zarr":
            assert out.partial.name == f".{path.name}.partial-{os.getpid()}" and out.partial.is_dir()
        raise RuntimeError("network failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["ome-zarr", "ome-tiff"])
def test_existing_output_is_kept_unless_overwrite(tmp_path, known, fmt):
    from bioio import BioImage

    path = tmp_path / output_name("out", fmt)
    with open_writer(path, SHAPE, known.dtype) as out:
        out.region(0)[:] = 1
    with pytest.raises(OutputError, match="already exists"):
        open_writer(path, SHAPE, known.dtype)
    out = open_writer(path, SHAPE, known.dtype, overwrite=True)
    out.region(0)[:] = 7
    assert BioImage(path).get_image_data("TCZYX")[0].max() == 1  # untouched until commit
    assert out.commit() == path
    assert (BioImage(path).get_image_data("TCZYX")[0] == 7).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_second_writer_racing_for_the_name_does_not_overwrite(tmp_path):
    path = tmp_path / "out.ome.zarr"
    first = open_writer(path, (1, 1, 1, 8, 8), np.uint8)
    with open_writer(path, (1, 1, 1, 8, 8), np.uint8) as second:
        second.region(0)[:] = 2
    with pytest.raises(OutputError, match="already exists"):
        first.commit()
    assert not first.partial.exists() and path.is_dir()


def test_choose_format_and_names():
    assert choose_format((1, 1, 1, 512, 512), np.float32) == "ome-tiff"
    big = (1, 1, 1, 1, ZARR_ABOVE_BYTES // 4 + 1)
    assert choose_format(big, np.float32) == "ome-zarr" and choose_format(big, np.uint8) == "ome-tiff"
    assert choose_format(big, np.float32, "ome-tiff") == "ome-tiff"
    assert choose_format((1, 1, 1, 2, 2), np.uint8, "ome-zarr") == "ome-zarr"
    with pytest.raises(OutputError, match="auto, ome-tiff, ome-zarr"):
        choose_format((1, 1, 1, 2, 2), np.uint8, "png")
    assert output_name("cells", "ome-tiff") == "cells.ome.tiff"
    assert output_name("cells", "ome-zarr") == "cells.ome.zarr"
    assert format_of(Path(output_name("a", "ome-zarr"))) == "ome-zarr"
    with pytest.raises(OutputError, match="unknown output format"):
        open_writer("result.png", (1, 1, 1, 2, 2), np.uint8)


def test_ome_tiff_writer_keeps_time_increment(tmp_path, known):
    from mmv_zoo.io.source import open_image

    path = tmp_path / "movie.ome.tiff"
    with OmeTiffOutput(path, SHAPE, np.float32, pixel_sizes=SIZES, time_increment=0.25) as out:
        out.region(1)[:] = known[1]
    src = open_image(path)
    assert src.scene(0).time_increment == 0.25
    np.testing.assert_array_equal(src.read_block(1), known[1])


def test_zarr_memory_stays_below_the_array_size(tmp_path):
    """A (1, 1, 64, 1024, 1024) float32 output (256 MiB) written tile by tile stays far below its size."""
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    shape = (1, 1, 64, 1024, 1024)
    nbytes = int(np.prod(shape)) * 4
    tile = np.random.default_rng(0).random((1, 32, 256, 256), dtype=np.float32)
    base = peak = proc.memory_info().rss
    with open_writer(tmp_path / "big.ome.zarr", shape, np.float32, pixel_sizes=SIZES) as out:
        region = out.region(0)
        for z in range(0, 64, 32):
            for y in range(0, 1024, 256):
                for x in range(0, 1024, 256):
                    region[:, z:z + 32, y:y + 256, x:x + 256] = tile + z
                    peak = max(peak, proc.memory_info().rss)
    assert peak - base < 0.5 * nbytes, f"RSS grew by {(peak - base) / 2**20:.0f} MiB"
    from mmv_zoo.io.source import open_image

    src = open_image(tmp_path / "big.ome.zarr")
    block = src.read_block(0, z=(40, 41), y=(256, 512), x=(0, 256))
    np.testing.assert_array_equal(block[0, 0], tile[0, 8] + 32)


def test_a_2048_output_has_two_levels_that_bioio_and_our_reader_read(tmp_path):
    """Written in unaligned tiles; level 1 is the 2x2 mean, and the pixel sizes are the input's."""
    from bioio import BioImage

    from mmv_zoo.io.read import read_image

    rng = np.random.default_rng(1)
    known = rng.random((1, 1, 1, 2048, 2048), dtype=np.float32)
    path = tmp_path / "big.ome.zarr"
    with open_writer(path, known.shape, np.float32, pixel_sizes={"y": 0.5, "x": 0.25}) as out:
        region = out.region(0)
        for y in range(0, 2048, 700):
            for x in range(0, 2048, 900):
                region[:, :, y:y + 700, x:x + 900] = known[0, :, :, y:y + 700, x:x + 900]
    img = BioImage(path)
    assert img.scenes == (img.scenes[0],) and img.resolution_levels == (0, 1)
    assert (img.physical_pixel_sizes.Y, img.physical_pixel_sizes.X) == (0.5, 0.25)
    np.testing.assert_array_equal(img.get_image_data("TCZYX"), known)
    img.set_resolution_level(1)
    assert (img.dims.Y, img.dims.X) == (1024, 1024)
    mean = known[0, 0, 0].reshape(1024, 2, 1024, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(img.get_image_data("YX"), mean, rtol=1e-6)
    ours = read_image(path, 2)  # our own output read back as an input: level 0, its pixel sizes
    assert ours.data.shape == (1, 2048, 2048) and ours.pixel_sizes == {"z": 1.0, "y": 0.5, "x": 0.25}
    np.testing.assert_array_equal(ours.data, known[0, :, 0])
    channel = json.loads((path / ".zattrs").read_text())["omero"]["channels"][0]
    assert channel["window"]["start"] == pytest.approx(known.min()) and channel["window"]["end"] == pytest.approx(
        known.max())  # displayed over the data's range, not 0-255


def test_pyramid_levels_halve_y_and_x_by_blocks():
    from mmv_zoo.io.pyramid import downsample, level_shapes

    assert level_shapes((1, 1, 1, 1024, 1024)) == [(1, 1, 1, 1024, 1024)]
    assert level_shapes((2, 3, 5, 5000, 300)) == [(2, 3, 5, 5000, 300), (2, 3, 5, 2500, 150),
                                                  (2, 3, 5, 1250, 75), (2, 3, 5, 625, 38)]
    odd = np.arange(15, dtype=np.uint8).reshape(1, 3, 5)
    np.testing.assert_array_equal(downsample(odd, labels=True), [[[0, 2, 4], [10, 12, 14]]])
    # the odd last row and column are replicated: their means are their own values
    np.testing.assert_array_equal(downsample(odd, labels=False), [[[3, 5, 7], [11, 13, 14]]])


def test_a_label_output_is_an_ngff_label_image_read_by_ome_zarr_py(tmp_path):
    from bioio import BioImage
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Multiscales, Reader

    labels = np.zeros((1, 1, 1, 40, 48), np.uint16)
    labels[..., 5:20, 8:30] = 1
    labels[..., 25:38, 30:46] = 7
    path = tmp_path / "cells.ome.zarr"
    with open_writer(path, labels.shape, labels.dtype, pixel_sizes={"y": 0.3, "x": 0.3}, channel_names=["labels"],
                     labels=True) as out:
        for _, ys, xs in _tiles((1, 40, 48), (1, 11, 13)):
            out.region(0)[:, :, ys, xs] = labels[0, :, :, ys, xs]
    nodes = list(Reader(parse_url(str(path)))())
    kinds = [{type(s) for s in n.specs} for n in nodes]
    assert Multiscales in kinds[0] and Labels in kinds[1]
    (label,) = [n for n, k in zip(nodes, kinds, strict=True) if Label in k]
    assert label.zarr.root_attrs["image-label"]["source"] == {"image": "../../"}
    assert label.zarr.path.rstrip("/").endswith("labels/cells") and "omero" not in label.zarr.root_attrs
    np.testing.assert_array_equal(np.asarray(label.data[0]), labels)
    np.testing.assert_array_equal(BioImage(path).get_image_data("TCZYX"), labels)  # the root: the same labels
    with pytest.raises(ValueError, match="one channel of integers"):
        open_writer(tmp_path / "p.ome.zarr", (1, 1, 1, 4, 4), np.float32, labels=True)
