"""Train -> predict on tiny real 2D and synthetic 3D data, through the library and the CLI."""

from __future__ import annotations

import json

import numpy as np
import torch

from mmv_zoo.io.read import read_image
from mmv_zoo.run import load_model, open_run
from mmv_zoo.transforms.normalize import normalize


def test_run_folder_is_complete(run_2d):
    run = open_run(run_2d)
    for name in ("rdf.yaml", "metrics.csv", "loss_curve.png", "run.json", "checkpoints/last.ckpt"):
        assert (run_2d / name).is_file(), name
    assert run.best_checkpoint.is_file()
    info = json.loads((run_2d / "run.json").read_text())
    assert info["entry"] == "nuclei_semseg_2d"
    assert len(info["train_files"]) + len(info["val_files"]) == 3
    assert info["steps"] > 0
    from mmv_zoo.entry import load_entry

    assert load_entry(run_2d / "rdf.yaml").slug == "nuclei_semseg_2d"  # retraining a run keeps its name
    header = (run_2d / "metrics.csv").read_text().splitlines()[0]
    assert "train_loss" in header and "val_loss" in header and "val_metric" in header


def test_training_updates_weights(data_2d, tmp_path):
    from mmv_zoo.entry import load_entry
    from mmv_zoo.registry import framework_class
    from mmv_zoo.training.train import train

    from .conftest import TINY_2D

    entry = load_entry("nuclei_semseg_2d", TINY_2D)
    torch.manual_seed(entry.mmv.training.seed)
    import pytorch_lightning as pl

    pl.seed_everything(entry.mmv.training.seed, verbose=False)
    fresh = framework_class("fcn")(entry.model_dump(mode="json"))
    folder = train(entry, data_2d, tmp_path, progress=False).folder
    trained = load_model(folder)
    changed = [not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values(),
                                                     strict=True) if a.is_floating_point()]
    assert any(changed)


def test_predict_2d_writes_labels_with_pixel_sizes(run_2d, data_2d, tmp_path):
    from mmv_zoo.io.write import write_ome_tiff
    from mmv_zoo.predict.batch import predict_files

    src = read_image(sorted((data_2d / "images").iterdir())[0], 2)
    image = tmp_path / "in" / "cells.ome.tiff"
    image.parent.mkdir()
    write_ome_tiff(image, src.data[:, :80, :72], {"y": 0.65, "x": 0.65}, ["dna"])  # not a multiple of 4
    results = predict_files(run_2d, [image.parent], tmp_path / "out")
    assert len(results) == 1 and not results[0].skipped
    out = read_image(results[0].output, 2)
    assert out.data.shape == (1, 80, 72)
    assert out.data.dtype == np.uint8 and set(np.unique(out.data)) <= {0, 1}
    assert out.pixel_sizes["y"] == 0.65 and out.pixel_sizes["x"] == 0.65
    # a second call skips the existing output; --overwrite replaces it
    assert predict_files(run_2d, [image], tmp_path / "out")[0].skipped
    assert not predict_files(run_2d, [image], tmp_path / "out", overwrite=True)[0].skipped


def test_prediction_equals_model_on_whole_image(run_2d, data_2d, tmp_path):
    """By default (`image` border) the model's forward pass on the image itself, in one tile or many;
    with `mirror` borders, its pass on the image mirrored by the halo, cropped back."""
    from mmv_zoo.predict.engine import Options, predict_array
    from mmv_zoo.predict.halo import entry_halo

    model = load_model(run_2d)
    x = read_image(sorted((data_2d / "images").iterdir())[0], 2).data[:, :64, :64]
    halo, _ = entry_halo(model.entry, model.inference_model())
    assert min(halo) > 0
    with torch.no_grad():
        norm = normalize(x, model.entry.mmv.data.normalization.source)
        plain = model.inference_model()(torch.from_numpy(norm)[None])[0].numpy()
        padded = np.pad(norm, [(0, 0)] + [(h, h) for h in halo], mode="symmetric")
        mirrored = model.inference_model()(torch.from_numpy(padded)[None])[0].numpy()
    mirrored = mirrored[:, halo[0]:halo[0] + 64, halo[1]:halo[1] + 64]
    np.testing.assert_allclose(predict_array(model, x, model.entry), plain, atol=1e-5)
    many = predict_array(model, x, model.entry, options=Options(budget=(2 * max(halo) + 16) ** 2))
    np.testing.assert_allclose(many, plain, atol=1e-5)
    np.testing.assert_allclose(predict_array(model, x, model.entry, options=Options(border="mirror")), mirrored,
                               atol=1e-5)
    assert np.abs(plain - mirrored).max() > 1e-4  # the borders differ: the option matters


def test_probabilities_option(run_2d, data_2d, tmp_path):
    from mmv_zoo.predict.batch import predict_files

    image = sorted((data_2d / "images").iterdir())[0]
    out = predict_files(run_2d, [image], tmp_path, probabilities=True)[0].output
    probs = read_image(out, 2)
    assert probs.data.shape[0] == 2 and probs.channel_names == ["background", "nucleus"]
    np.testing.assert_allclose(probs.data.sum(0), 1.0, atol=1e-4)


def test_train_predict_3d(run_3d, data_3d, tmp_path):
    from mmv_zoo.predict.batch import predict_files

    model = load_model(run_3d)
    assert model.entry.spatial_dims == 3
    res = predict_files(run_3d, [str(data_3d / "low" / "*.tif")], tmp_path)
    assert len(res) == 2
    out = read_image(res[0].output, 3)
    assert out.data.shape == (1, 12, 40, 40) and out.data.dtype == np.float32
    assert np.isfinite(out.data).all()


def test_train_fnet_3d_center_normalization(tmp_path):
    """The labelfree paper configuration trains on tiny 3D data."""
    from mmv_zoo.entry import load_entry
    from mmv_zoo.training.train import train

    from .conftest import make_3d_pairs

    data = make_3d_pairs(tmp_path / "data", "brightfield", "fluorescence", shape=(10, 36, 36))
    entry = load_entry("labelfree_3d_fnet", ["network.depth=2", "network.mult_chan=4", "data.patch=[8,16,16]",
                                             "training.max_epochs=1", "training.patches_per_image=2"])
    run = train(entry, data, tmp_path / "runs", progress=False)
    assert run.best_checkpoint.is_file()
    assert load_model(run.folder).entry.mmv.data.normalization.source.kind == "center"


def test_failed_training_leaves_no_complete_run(data_2d, tmp_path, monkeypatch):
    """A run that dies mid-training keeps its folder but is never mistaken for a complete run."""
    import pytest

    from mmv_zoo.entry import load_entry
    from mmv_zoo.errors import RunError
    from mmv_zoo.frameworks.fcn import FCN
    from mmv_zoo.predict.batch import predict_files
    from mmv_zoo.training.train import train

    from .conftest import TINY_2D

    def boom(self, batch, batch_idx):
        raise RuntimeError("simulated crash (out of memory)")

    monkeypatch.setattr(FCN, "training_step", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(load_entry("nuclei_semseg_2d", TINY_2D), data_2d, tmp_path / "runs", progress=False)
    (folder,) = list((tmp_path / "runs" / "nuclei_semseg_2d").iterdir())
    assert json.loads((folder / "run.json").read_text())["status"] == "running"
    with pytest.raises(RunError, match="not a complete run"):
        open_run(folder)
    with pytest.raises(RunError, match="not a complete run"):
        predict_files(folder, [sorted((data_2d / "images").iterdir())[0]], tmp_path / "pred")


def test_tiling_does_not_change_the_prediction(run_2d, data_2d):
    """Tiles cropped by a halo covering the receptive field give the one-tile result; blended overlap too."""
    from mmv_zoo.predict import engine
    from mmv_zoo.predict import halo as receptive_field

    model = load_model(run_2d)
    entry = model.entry
    x = read_image(sorted((data_2d / "images").iterdir())[0], 2).data[:, :96, :90]
    capped, radius = receptive_field.entry_halo(entry, model.inference_model())
    assert capped == [16, 16] and radius[0] > 16  # the tiny test patch (32) caps the halo at 16
    capped_tiles = engine.predict_array(model, x, entry, budget=(2 * 16 + 16) ** 2)
    # the full halo (the field rounded up to half a step), as an entry trained on larger patches gets
    halo = [receptive_field.halo_from_radius(r, 8, 10**6) for r in radius]
    whole = engine.predict_array(model, x, entry, options=engine.Options(halo=halo))
    budget = (2 * max(halo) + 16) ** 2  # tiles with a 16-pixel core: many tiles
    tiled = engine.predict_array(model, x, entry, options=engine.Options(budget=budget, batch_size=3, halo=halo))
    plan = engine.plan_tiles((96, 90), entry.mmv.network.size_rule(2), halo, budget)
    assert len(plan) >= 16
    assert tiled.shape == whole.shape == (2, 96, 90)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    blended = engine.predict_array(model, x, entry, options=engine.Options(budget=budget, overlap=0.5,
                                                                           blend="gaussian", halo=halo))
    np.testing.assert_allclose(blended, whole, atol=1e-5)
    np.testing.assert_allclose(blended.sum(0), 1.0, atol=1e-5)  # probabilities stay probabilities
    # test-time flips: each flipped tile computes its kept part flipped (crop.py), the same average
    flipped_whole = engine.predict_array(model, x, entry, options=engine.Options(tta=True, halo=halo))
    flipped_tiles = engine.predict_array(model, x, entry, options=engine.Options(tta=True, budget=budget, halo=halo))
    assert np.abs(flipped_whole - whole).max() > 1e-4
    np.testing.assert_allclose(flipped_tiles, flipped_whole, atol=1e-5)
    # a capped halo cuts the far (weak) edge of the field: close
    assert np.abs(capped_tiles - whole).max() < 1e-2


def test_predict_never_replaces_an_input(run_2d, data_2d, tmp_path):
    import pytest

    from mmv_zoo.errors import DataError
    from mmv_zoo.io.write import write_ome_tiff
    from mmv_zoo.predict.batch import predict_files

    src = read_image(sorted((data_2d / "images").iterdir())[0], 2)
    image = write_ome_tiff(tmp_path / "cells.ome.tiff", src.data, None, ["dna"])
    before = image.read_bytes()
    with pytest.raises(DataError, match="would replace this input"):
        predict_files(run_2d, [image], tmp_path, overwrite=True)
    assert image.read_bytes() == before


def test_predict_time_lapse_and_tiny_images(run_2d, data_2d, tmp_path):
    from mmv_zoo.io.write import write_ome_tiff
    from mmv_zoo.predict.batch import predict_files

    src = read_image(sorted((data_2d / "images").iterdir())[0], 2).data
    movie = np.stack([src[:, :40, :48], src[:, 8:48, :48], src[:, 16:56, :48]])[:, :, None]  # T, C, Z, Y, X
    write_ome_tiff(tmp_path / "in" / "movie.ome.tiff", movie, None, ["dna"])
    write_ome_tiff(tmp_path / "in" / "tiny.ome.tiff", src[:, :3, :3], None, ["dna"])
    results = predict_files(run_2d, [tmp_path / "in"], tmp_path / "out")
    from bioio import BioImage

    out = {p.input.name: BioImage(p.output) for p in results}
    assert out["movie.ome.tiff"].dims.T == 3 and out["movie.ome.tiff"].dims.Y == 40
    assert (out["tiny.ome.tiff"].dims.Y, out["tiny.ome.tiff"].dims.X) == (3, 3)
