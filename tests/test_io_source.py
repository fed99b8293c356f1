"""The lazy image source: sizes, names, pixel sizes and (C, Z, Y, X) blocks of OME-TIFF, OME-Zarr, RGB."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from mmv_zoo.errors import DataError
from mmv_zoo.io.read import read_image
from mmv_zoo.io.source import open_image
from mmv_zoo.io.write import write_ome_tiff
from mmv_zoo.io.writers import open_writer

SHAPE = (2, 3, 4, 32, 40)
NAMES = ["dna", "membrane", "actin"]
SIZES = {"z": 2.0, "y": 0.5, "x": 0.25}


@pytest.fixture(scope="module")
def known() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 60000, SHAPE).astype(np.uint16)


@pytest.fixture(scope="module", params=["ome.tiff", "ome.zarr"])
def image(request, tmp_path_factory, known):
    path = tmp_path_factory.mktemp("src") / f"five.{request.param}"
    if request.param == "ome.tiff":
        write_ome_tiff(path, known, SIZES, NAMES, time_increment=1.5)
    else:
        with open_writer(path, SHAPE, known.dtype, pixel_sizes=SIZES, channel_names=NAMES,
                         time_increment=1.5) as out:
            for t in range(SHAPE[0]):
                out.region(t)[:] = known[t]
    return path


def test_metadata(image):
    src = open_image(image)
    assert len(src.scenes) == 1
    info = src.scene(0)
    assert info.shape == SHAPE and (info.T, info.C, info.Z, info.Y, info.X) == SHAPE
    assert info.channel_names == NAMES
    assert info.pixel_sizes == SIZES
    assert info.time_increment == pytest.approx(1.5)
    assert info.dtype == np.uint16 and not info.rgb
    assert src.scene(src.scenes[0]) is info


def test_blocks_per_time_point(image, known):
    src = open_image(image)
    for t in range(SHAPE[0]):
        np.testing.assert_array_equal(src.read_block(t), known[t])


def test_channel_selection_and_ranges(image, known):
    src = open_image(image)
    np.testing.assert_array_equal(src.read_block(1, [2, 0]), known[1, [2, 0]])
    np.testing.assert_array_equal(src.read_block(0, ["actin", "dna"]), known[0, [2, 0]])
    np.testing.assert_array_equal(src.read_block(0, "membrane"), known[0, [1]])
    np.testing.assert_array_equal(src.read_block(1, ["1"]), known[1, [1]])  # digits from a command line
    np.testing.assert_array_equal(src.read_block(1, [1], slice(1, 3)), known[1, [1], 1:3])
    np.testing.assert_array_equal(src.read_block(0, None, (2, 4), y=(5, 17), x=slice(8, 40)),
                                  known[0, :, 2:4, 5:17, 8:40])


def test_wrong_selection_is_a_clear_error(image):
    src = open_image(image)
    with pytest.raises(DataError) as e:
        src.read_block(0, ["dna", "tubulin"])
    msg = str(e.value)
    assert str(image) in msg and "'tubulin'" in msg and "0 'dna', 1 'membrane', 2 'actin'" in msg
    with pytest.raises(DataError, match="no channel 3"):
        src.channel_indices([3])
    with pytest.raises(DataError, match="no time point 2"):
        src.read_block(2)
    with pytest.raises(DataError, match="z range 3:9"):
        src.read_block(0, z=(3, 9))
    with pytest.raises(DataError, match="no scene"):
        src.scene(1)


def test_read_image_still_reads_one_time_point(image, known):
    img = read_image(image, 3, t=1)
    np.testing.assert_array_equal(img.data, known[1])
    assert img.channel_names == NAMES and img.pixel_sizes == SIZES
    with pytest.raises(DataError, match="time-lapse"):
        read_image(image, 3)


def test_big_stacks_are_read_plane_by_plane(tmp_path, monkeypatch, known):
    """Above PLANE_CHUNK_BYTES a TIFF's partial-Z block is read per plane, with the same values."""
    import mmv_zoo.io.source as source

    path = write_ome_tiff(tmp_path / "s.ome.tiff", known, SIZES, NAMES)
    monkeypatch.setattr(source, "PLANE_CHUNK_BYTES", 1000)
    src = open_image(path)
    np.testing.assert_array_equal(src.read_block(1, [0, 2], (1, 3)), known[1, [0, 2], 1:3])
    assert src._planes is not None and src._planes.dask_data.chunks[2] == (1,) * SHAPE[2]


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_rgb_samples_are_channels(tmp_path, suffix):
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3)).astype(np.uint8)
    path = tmp_path / f"rgb.{suffix}"
    if suffix == "png":
        Image.fromarray(rgb).save(path)
    else:
        tifffile.imwrite(path, rgb, photometric="rgb")
    src = open_image(path)
    info = src.scene(0)
    assert info.rgb and (info.C, info.Z, info.Y, info.X) == (3, 1, 20, 30)
    np.testing.assert_array_equal(src.read_block(0), rgb.transpose(2, 0, 1)[:, None])
    np.testing.assert_array_equal(src.read_block(0, [2]), rgb[None, :, :, 2][:, None])
    assert read_image(path, 2).data.shape == (3, 20, 30)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_image(tmp_path / "missing.ome.tiff")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match="broken.tif: cannot read"):
        open_image(tmp_path / "broken.tif").scene(0)


def test_scenes_by_index_and_id(tmp_path):
    from bioio.writers import OmeTiffWriter

    a = np.arange(2 * 8 * 10, dtype=np.uint8).reshape(2, 1, 8, 10)  # C, Z, Y, X
    b = np.arange(1 * 3 * 6 * 5, dtype=np.uint8).reshape(1, 3, 6, 5)
    path = tmp_path / "two.ome.tiff"
    OmeTiffWriter.save([a, b], path, dim_order="CZYX", channel_names=[["p", "q"], ["r"]])
    src = open_image(path)
    assert len(src.scenes) == 2
    second = src.scene(1)
    assert (second.C, second.Z, second.Y, second.X) == (1, 3, 6, 5) and second.channel_names == ["r"]
    np.testing.assert_array_equal(src.read_block(0, "r", scene=src.scenes[1]), b)
    np.testing.assert_array_equal(src.read_block(0, "q", scene=0), a[[1]])
    assert src.scene("1") is second
    with pytest.raises(DataError, match=r"\(scene .*\): no channel 'p'"):
        src.read_block(0, "p", scene=1)


def test_ome_zarr_units_are_converted(tmp_path):
    """Pixel sizes come in micrometers and the time increment in seconds, whatever units the axes name."""
    import json

    path = tmp_path / "nm.ome.zarr"
    with open_writer(path, (3, 1, 2, 8, 8), np.uint8, pixel_sizes={"z": 1.0, "y": 1.0, "x": 1.0}) as out:
        out.region(0)[:] = 5
    attrs = json.loads((path / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    for axis in ms["axes"][2:]:
        axis["unit"] = "nanometer"
    ms["axes"][0]["unit"] = "millisecond"
    ms["datasets"][0]["coordinateTransformations"][0]["scale"] = [500.0, 1.0, 300.0, 100.0, 100.0]
    (path / ".zattrs").write_text(json.dumps(attrs))
    info = open_image(path).scene(0)
    assert info.pixel_sizes == pytest.approx({"z": 0.3, "y": 0.1, "x": 0.1})
    assert info.time_increment == pytest.approx(0.5)
