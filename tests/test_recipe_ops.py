"""The array operations of a recipe's `files` step (crop, grey, timepoints, name_pattern, combine,
matching) against small archives served from 127.0.0.1, and their validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from mmv_zoo.errors import DataError
from mmv_zoo.recipes.pull import pull_data
from mmv_zoo.settings.recipe import FilesStep
from tests.archive_bytes import tif, zip_bytes
from tests.test_recipes import host, quiet, with_recipe


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def recipe(url: str, *steps: dict) -> dict:
    return {"description": "ops", "downloads": {"d": {"url": url}}, "steps": [{"source": "d", **s} for s in steps]}


def test_crop_channels_and_panels_and_grey(server, cache, tmp_path):
    """A strip of two RGBA panels: the first panel's RGB becomes the image, the second one grey."""
    rng = np.random.default_rng(0)
    strip = (rng.random((8, 20, 4)) * 255).astype(np.uint8)
    host(server, {"strips.zip": zip_bytes({"set/a.png": png(strip)})})
    entry = with_recipe(recipe(server.url("/strips.zip"),
                               {"kind": "files", "glob": "set/*.png", "to": "rgb", "crop": {"c": [0, 3], "x": [0, 10]}},
                               {"kind": "files", "glob": "set/*.png", "to": "images", "grey": True,
                                "crop": {"c": [0, 3], "x": [10, 20]}},
                               {"kind": "files", "glob": "set/*.png", "to": "labels", "channel": 3,
                                "crop": {"x": [0, 10]}}))
    pull_data(entry, tmp_path / "out", report=quiet)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "rgb" / "a.tif"), strip[:, :10, :3])
    grey = tifffile.imread(tmp_path / "out" / "images" / "a.tif")
    want = np.rint(strip[:, 10:, :3].astype(float) @ [0.2125, 0.7154, 0.0721]).astype(np.uint8)
    assert grey.dtype == np.uint8 and grey.shape == (8, 10)
    np.testing.assert_array_equal(grey, want)


def test_every_time_point_becomes_a_file(server, cache, tmp_path):
    movie = np.arange(3 * 2 * 4 * 5, dtype=np.uint16).reshape(3, 2, 4, 5)  # T, C, Y, X
    host(server, {"movie%20one.tif": tif(movie, imagej=True, metadata={"axes": "TCYX"})})
    entry = with_recipe(recipe(server.url("/movie%20one.tif"),
                               {"kind": "files", "to": "images", "channel": 0, "timepoints": True},
                               {"kind": "files", "to": "labels", "channel": 1, "timepoints": True}))
    done = pull_data(entry, tmp_path / "out", report=quiet)
    assert done.files == {"images": 3, "labels": 3}
    for t in range(3):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "labels" / f"movie one_t{t:03d}.tif"),
                                      movie[t, 1])


def test_object_masks_merge_into_labels_named_by_pattern(server, cache, tmp_path):
    """BBBC010-like: images named by the well inside a long name; one binary PNG per object; a mask
    group without an image is dropped by `matching`."""
    images = {f"imgs/plate_{w}_w2_ABC.tif": tif(np.full((6, 7), i, np.uint16)) for i, w in enumerate(["A01", "B02"])}
    masks = {}
    for w, n in (("A01", 2), ("B02", 1), ("C03", 1)):
        for k in range(n):
            m = np.zeros((6, 7), np.uint8)
            m[k * 2: k * 2 + 3, 1:5] = 255  # worms 0 and 1 of A01 overlap on row 2
            masks[f"masks/{w}_{k + 1:02d}_ground_truth.png"] = png(m)
    host(server, {"imgs.zip": zip_bytes(images), "masks.zip": zip_bytes(masks)})
    entry = with_recipe({"description": "ops", "downloads": {"i": {"url": server.url("/imgs.zip")},
                                                            "m": {"url": server.url("/masks.zip")}},
                         "steps": [{"kind": "files", "source": "i", "glob": "**/*_w2_*.tif", "to": "images",
                                    "name_pattern": "_([A-P][0-9]{2})_w2_"},
                                   {"kind": "files", "source": "m", "glob": "**/*.png", "to": "labels",
                                    "name_pattern": "^([A-P][0-9]{2})_", "combine": "labels", "matching": "images"}]})
    done = pull_data(entry, tmp_path / "out", report=quiet)
    assert done.files == {"images": 2, "labels": 2}
    labels = tifffile.imread(tmp_path / "out" / "labels" / "A01.tif")
    assert labels.dtype == np.uint16
    assert labels[0, 2] == 1 and labels[2, 2] == 2 and labels[4, 2] == 2 and labels[5, 2] == 0  # later wins
    assert set(np.unique(tifffile.imread(tmp_path / "out" / "labels" / "B02.tif"))) == {0, 1}
    assert not (tmp_path / "out" / "labels" / "C03.tif").exists()


def test_operation_errors_name_the_file_and_field(server, cache, tmp_path):
    host(server, {"g.zip": zip_bytes({"s/a.tif": tif(np.zeros((4, 6), np.uint8)),
                                      "s/a_x.tif": tif(np.zeros((4, 6), np.uint8))})})
    url = server.url("/g.zip")
    cases = [({"kind": "files", "glob": "s/a.tif", "to": "images", "crop": {"x": [2, 9]}},
              r"crop\.x asks for \[2, 9\)"),
             ({"kind": "files", "glob": "s/a.tif", "to": "images", "grey": True}, "grey needs RGB"),
             ({"kind": "files", "glob": "s/*.tif", "to": "images", "strip": "_x", "crop": {"y": [0, 2]}},
              "would both be written as a.tif"),
             ({"kind": "files", "glob": "s/*.tif", "to": "images", "name_pattern": "^(b)"}, "does not match"),
             ({"kind": "files", "glob": "s/*.tif", "to": "images", "matching": "labels"}, "not written by an earlier")]
    for step, needle in cases:
        with pytest.raises(DataError, match=needle):
            pull_data(with_recipe(recipe(url, step)), tmp_path / "out", report=quiet)
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fields, needle", [
    ({"crop": {"x": [5, 5]}}, "start 5 must be below stop 5"),
    ({"crop": {"t": [0, 1]}}, "crop.t"),
    ({"name_pattern": "A0[0-9]"}, "needs a group"),
    ({"name_pattern": "(A"}, "not a regular expression"),
    ({"grey": True, "channel": 0}, "grey or channel"),
    ({"combine": "labels", "timepoints": True}, "cannot take every time point"),
    ({"matching": "../x"}, "no '..'"),
])
def test_operation_settings_are_validated(fields, needle):
    with pytest.raises(ValueError, match=needle):
        FilesStep(kind="files", source="d", to="images", **fields)
