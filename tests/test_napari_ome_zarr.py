"""Our OME-Zarr outputs as napari opens them: through its OME-Zarr reader plugin (napari-ome-zarr),
in the real viewer. `make test` runs these under Xvfb; without a display they are skipped."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari extra is not installed (pip install 'mmv_zoo[napari]')")
pytest.importorskip("napari_ome_zarr", reason="napari-ome-zarr is not installed (pip install 'mmv_zoo[napari]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")
if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
    pytest.skip("no display: run under xvfb-run (make test does)", allow_module_level=True)

from mmv_zoo.io.writers import open_writer  # noqa: E402

SIZES = {"z": 2.0, "y": 0.5, "x": 0.25}


def _write(path, data, **kwargs):
    with open_writer(path, data.shape, data.dtype, pixel_sizes=SIZES, **kwargs) as out:
        for t in range(data.shape[0]):
            out.region(t)[...] = data[t]
    return path


def test_napari_opens_a_2048_prediction_as_a_two_level_image_with_its_scale(make_napari_viewer, tmp_path):
    data = np.random.default_rng(0).random((1, 1, 1, 2048, 2048), dtype=np.float32)
    path = _write(tmp_path / "pred.ome.zarr", data, channel_names=["signal"])
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-ome-zarr")
    (layer,) = viewer.layers
    assert layer._type_string == "image" and layer.multiscale and len(layer.data) == 2
    assert [tuple(level.shape) for level in layer.data] == [(1, 1, 2048, 2048), (1, 1, 1024, 1024)]
    assert tuple(layer.scale) == (1.0, 2.0, 0.5, 0.25)  # t, z, y, x: the channel is split off
    assert layer.name == "pred: signal"
    np.testing.assert_array_equal(np.asarray(layer.data[0][0, 0, :64, :64]), data[0, 0, 0, :64, :64])


def test_napari_opens_a_label_output_as_a_labels_layer(make_napari_viewer, tmp_path):
    labels = np.zeros((2, 1, 3, 40, 48), np.uint16)
    labels[:, :, 1:, 5:20, 8:30] = 3
    labels[1, :, :, 25:38, 30:46] = 9
    path = _write(tmp_path / "cells.ome.zarr", labels, channel_names=["labels"], labels=True)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-ome-zarr")
    (kind,) = [layer for layer in viewer.layers if layer._type_string == "labels"]
    assert tuple(kind.scale) == (1.0, 1.0, 2.0, 0.5, 0.25)  # t, c, z, y, x
    np.testing.assert_array_equal(np.asarray(kind.data), labels)
