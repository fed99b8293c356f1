"""`--uncertainty tta|dropout|ensemble`: a per-pixel map beside each prediction (entropy for
segmentation, variance for regression) with the prediction's shape and metadata, in 2D and 3D, and
`mmv-zoo evaluate --uncertainty` saying how well it ranks the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmv_zoo.errors import DataError
from mmv_zoo.evaluate.scoring import evaluate
from mmv_zoo.io.read import read_image
from mmv_zoo.io.source import open_image
from mmv_zoo.metrics import uncertainty_scores
from mmv_zoo.predict.batch import predict_files

from .conftest import SAMPLE, TINY_3D
from .test_cli import run_cli

HOLDOUT = SAMPLE / "holdout"
IMAGE = HOLDOUT / "images" / "20P1_POS0007_D_1UL.tif"
DROPOUT_2D = ["network={kind: unet, spatial_dims: 2, channels: [4, 8], strides: [2], dropout: 0.3}",
              "data.patch=[32,32]", "training.max_epochs=1", "training.patches_per_image=2", "training.batch_size=2"]
DROPOUT_3D = TINY_3D + ["network.channels=[4,8,16]", "network.strides=[[1,2,2],[2,2,2]]",
                        "network.num_res_units=1", "network.dropout=0.3"]


def _train(slug: str, overrides: list[str], data: Path, out: Path) -> Path:
    from mmv_zoo.entry import load_entry
    from mmv_zoo.training.train import train

    return train(load_entry(slug, overrides), data, out, progress=False).folder


@pytest.fixture(scope="module")
def dropout_2d(data_2d, tmp_path_factory) -> Path:
    return _train("nuclei_semseg_2d", DROPOUT_2D, data_2d, tmp_path_factory.mktemp("drop2d"))


@pytest.fixture(scope="module")
def dropout_3d(data_3d, tmp_path_factory) -> Path:
    return _train("denoise_3d_planaria", DROPOUT_3D, data_3d, tmp_path_factory.mktemp("drop3d"))


def _pair(folder: Path, stem: str) -> tuple[Path, Path]:
    return folder / f"{stem}.ome.tiff", folder / f"{stem}_uncertainty.ome.tiff"


def _same_frame(pred: Path, unc: Path) -> tuple[np.ndarray, np.ndarray]:
    a, b = open_image(pred).scene(0), open_image(unc).scene(0)
    assert (a.T, a.Z, a.Y, a.X) == (b.T, b.Z, b.Y, b.X)
    assert a.pixel_sizes == b.pixel_sizes and a.time_increment == b.time_increment
    return open_image(pred).read_block(0), open_image(unc).read_block(0)


def test_tta_map_ranks_the_shipped_models_errors_on_the_held_back_image(tmp_path):
    result = evaluate("nuclei_semseg_2d", HOLDOUT, tmp_path / "eval", uncertainty="tta")
    scores = result.images[0].scores
    assert scores["uncertainty_top5_ratio"] >= 5  # the 5 % most uncertain pixels: >= 5x the error rate
    assert scores["uncertainty_auc"] > 0.9
    assert scores["f1_nucleus"] >= 0.95  # the prediction from the averaged flips is as good as ever
    pred, unc = _same_frame(*_pair(result.predictions, "20P1_POS0007_D_1UL"))
    assert open_image(_pair(result.predictions, "20P1_POS0007_D_1UL")[1]).scene(0).channel_names == ["entropy"]
    assert unc.min() >= 0 and unc.max() <= np.log(2) + 1e-6 and unc.max() > 0.1
    assert "uncertainty_top5_ratio" in (tmp_path / "eval" / "metrics.csv").read_text()


def test_ensemble_2d_labels_are_the_argmax_of_the_mean(run_2d, tmp_path):
    from mmv_zoo.predict.sources import open_predictor
    from mmv_zoo.settings.predict import Options

    predict_files(run_2d, [IMAGE], tmp_path / "out", uncertainty="ensemble", members=["nuclei_semseg_2d"])
    labels, entropy = _same_frame(*_pair(tmp_path / "out", IMAGE.stem))
    x = read_image(IMAGE, 2).data
    raw = Options(probabilities=True)
    probs = [open_predictor(s, options=raw)(x)[0] for s in (run_2d, "nuclei_semseg_2d")]
    mean = (probs[0] + probs[1]) / 2
    assert np.array_equal(labels[:, 0], mean.argmax(0)[None])
    p = np.clip(mean, 1e-12, 1)
    assert np.allclose(entropy[:, 0], -(p * np.log(p)).sum(0, keepdims=True), atol=1e-5)


def test_dropout_2d_samples_differ_and_need_dropout_layers(dropout_2d, run_2d, tmp_path):
    predict_files(dropout_2d, [IMAGE], tmp_path / "out", uncertainty="dropout", samples=4)
    labels, entropy = _same_frame(*_pair(tmp_path / "out", IMAGE.stem))
    assert labels.dtype == np.uint8 and entropy.shape == labels.shape and entropy.max() > 0  # draws differ
    with pytest.raises(DataError, match="no dropout layers"):
        predict_files(run_2d, [IMAGE], tmp_path / "none", uncertainty="dropout")
    with pytest.raises(DataError, match="one trained run"):
        predict_files("nuclei_semseg_2d", [IMAGE], tmp_path / "none", uncertainty="dropout")


def test_3d_regression_variance_with_every_method(run_3d, dropout_3d, data_3d, tmp_path):
    stack = sorted((data_3d / "low").iterdir())[0]
    for method, kwargs in (("tta", {}), ("dropout", {"samples": 3}), ("ensemble", {"members": [str(dropout_3d)]})):
        source = dropout_3d if method == "dropout" else run_3d
        out = tmp_path / method
        predict_files(source, [stack], out, uncertainty=method, **kwargs)
        pred, var = _same_frame(*_pair(out, stack.name.removesuffix(".tif")))
        assert pred.shape == var.shape and pred.shape[1] == 12  # (C, Z, Y, X): every plane
        assert var.min() >= 0 and var.max() > 0, method
        assert open_image(_pair(out, stack.name.removesuffix(".tif"))[1]).scene(0).channel_names == [
            "restored_variance"]
    result = evaluate(run_3d, data_3d, tmp_path / "eval", uncertainty="tta")
    assert "uncertainty_spearman" in result.columns and np.isfinite(result.summary["mean"]["uncertainty_spearman"])


def test_cli_uncertainty_errors(capsys, tmp_path):
    code, _, err = run_cli(["predict", "nuclei_semseg_2d", str(IMAGE), "--out", str(tmp_path),
                            "--uncertainty", "bayes"], capsys)
    assert code == 1 and "--uncertainty 'bayes'" in err
    code, _, err = run_cli(["predict", "nuclei_semseg_2d", str(IMAGE), "--out", str(tmp_path),
                            "--uncertainty", "ensemble"], capsys)
    assert code == 1 and "at least two models" in err
    code, _, err = run_cli(["predict", "nuclei_semseg_2d", str(IMAGE), "--out", str(tmp_path),
                            "--member", "nuclei_semseg_2d"], capsys)
    assert code == 1 and "--member: only with --uncertainty ensemble" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_uncertainty_scores_on_known_cases():
    rng = np.random.default_rng(0)
    wrong = rng.random(10_000) < 0.02
    perfect = uncertainty_scores(wrong.astype(float), wrong)
    assert perfect["uncertainty_auc"] == pytest.approx(1.0) and perfect["uncertainty_top5_ratio"] == pytest.approx(
        1 / 0.05, rel=0.15)
    blind = uncertainty_scores(rng.random(10_000), wrong)
    assert abs(blind["uncertainty_auc"] - 0.5) < 0.06 and blind["uncertainty_top5_ratio"] < 2
    err = np.abs(rng.normal(size=5000))
    assert uncertainty_scores(err, err)["uncertainty_spearman"] == pytest.approx(1.0)
    wrong_first = np.zeros(10_000, bool)
    wrong_first[:300] = True
    assert uncertainty_scores(np.zeros(10_000), wrong_first)["uncertainty_top5_ratio"] == pytest.approx(1.0)  # ties


def test_asking_for_uncertainty_later_writes_the_map(tmp_path):
    (first,) = predict_files("nuclei_semseg_2d", [IMAGE], tmp_path)
    assert not _pair(tmp_path, IMAGE.stem)[1].exists()
    (again,) = predict_files("nuclei_semseg_2d", [IMAGE], tmp_path, uncertainty="tta")
    assert not again.skipped and _pair(tmp_path, IMAGE.stem)[1].exists()
    (third,) = predict_files("nuclei_semseg_2d", [IMAGE], tmp_path, uncertainty="tta")
    assert third.skipped  # both outputs there: nothing to do
