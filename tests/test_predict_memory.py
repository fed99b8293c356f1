"""Tile sizes from memory: the network's activation bytes per voxel against the memory tiles may use."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from mmv_zoo.errors import DataError
from mmv_zoo.predict.memory import ACTIVATION_FACTOR, bytes_per_voxel, parse_bytes, tile_memory


def test_parse_bytes():
    assert parse_bytes("8GiB") == 8 * 2**30
    assert parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes("2e9") == 2 * 10**9
    with pytest.raises(ValueError, match="8GiB"):
        parse_bytes("lots")


def test_bytes_per_voxel_is_the_largest_layer_output_times_the_factor():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 12, 3, padding=1), nn.Conv2d(12, 2, 1))
    assert bytes_per_voxel(net, 1, [16, 16]) == pytest.approx(ACTIVATION_FACTOR * 12 * 4)  # 12 float32 channels
    down = nn.Sequential(nn.Conv2d(1, 8, 2, stride=2))  # a quarter of the voxels, 8 channels: 2 per input voxel
    assert bytes_per_voxel(down, 1, [16, 16]) == pytest.approx(ACTIVATION_FACTOR * 4 * 2)
    assert bytes_per_voxel(nn.Identity(), 3, [16, 16]) == pytest.approx(ACTIVATION_FACTOR * 3 * 4)  # the input


def test_tile_memory_from_the_environment(monkeypatch):
    monkeypatch.setenv("MMV_ZOO_TILE_MEMORY", "3GiB")
    assert tile_memory() == 3 * 2**30
    monkeypatch.setenv("MMV_ZOO_TILE_MEMORY", "plenty")
    with pytest.raises(DataError, match="MMV_ZOO_TILE_MEMORY"):
        tile_memory()
    monkeypatch.delenv("MMV_ZOO_TILE_MEMORY")
    assert 0 < tile_memory() <= 8 * 2**30


def test_prediction_tiles_follow_the_memory(run_2d, data_2d, monkeypatch):
    """Less memory, smaller tiles, the same result; each tile's activations within the memory given."""
    from mmv_zoo.io.read import read_image
    from mmv_zoo.predict import engine
    from mmv_zoo.predict.fast import cpu_inference
    from mmv_zoo.predict.memory import voxel_budget
    from mmv_zoo.run import load_model

    model = load_model(run_2d)
    entry = model.entry
    x = read_image(sorted((data_2d / "images").iterdir())[0], 2).data
    net = cpu_inference(model.inference_model().eval(), 2)[0]
    plans = []
    real = engine.plan_tiles
    monkeypatch.setattr(engine, "plan_tiles", lambda *a, **k: plans.append(real(*a, **k)) or plans[-1])
    monkeypatch.setenv("MMV_ZOO_TILE_MEMORY", "1GiB")
    per_voxel = 2**30 / voxel_budget(net, entry)
    results = []
    for memory in (2**30, int(per_voxel * 48 * 48)):  # the whole 96x96 image; tiles of at most 48x48
        monkeypatch.setenv("MMV_ZOO_TILE_MEMORY", str(memory))
        results.append(engine.predict_array(model, x, entry))
        assert np.prod(plans[-1].largest) * per_voxel <= memory * 1.0001
    assert len(plans[0]) == 1 and len(plans[1]) > 1
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
