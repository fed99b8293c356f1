"""Pretrained weights in entries: the bundled model predicts with no training and no network, and
publish -> pull -> predict round-trips."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
import yaml

from mmv_zoo.entry import ZOO_DIR, EntryError, load_entry
from mmv_zoo.errors import RunError
from mmv_zoo.io.read import read_image
from mmv_zoo.predict.engine import predict_files

from .conftest import SAMPLE

HOLDOUT = "20P1_POS0007_D_1UL"


def test_bundled_model_predicts_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("MMV_ZOO_OFFLINE", "1")
    image = SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"
    (res,) = predict_files("nuclei_semseg_2d", [image], tmp_path)
    labels = read_image(res.output, 2).data[0]
    expected = tifffile.imread(ZOO_DIR / "nuclei_semseg_2d" / "weights" / f"expected_{HOLDOUT}_labels.tif")
    assert labels.shape == expected.shape == (400, 400)
    assert (labels == expected).mean() > 0.999  # CPUs may differ in the last float bit at a class border
    truth = tifffile.imread(SAMPLE / "holdout" / "labels" / f"{HOLDOUT}.tif") > 0
    f1 = 2 * (labels.astype(bool) & truth).sum() / (labels.astype(bool).sum() + truth.sum())
    assert f1 > 0.95


def test_entry_without_weights_says_train_first(tmp_path):
    with pytest.raises(EntryError, match="no pretrained weights.*mmv-zoo train denoise_3d_care"):
        predict_files("denoise_3d_care", [SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"], tmp_path)


def test_wrong_sha256_is_refused(tmp_path):
    entry = tmp_path / "nuclei_copy"
    shutil.copytree(ZOO_DIR / "nuclei_semseg_2d", entry)
    data = yaml.safe_load((entry / "rdf.yaml").read_text())
    data["config"]["mmv_zoo"]["pretrained"]["sha256"] = "0" * 64
    (entry / "rdf.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RunError, match="does not match"):
        predict_files(entry, [SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_publish_pull_predict_roundtrip(run_2d, data_2d, tmp_path, capsys):
    from .test_cli import run_cli

    zoo = tmp_path / "my_zoo"
    code, out, _ = run_cli(["publish", str(run_2d), "--entry", "my_nuclei", "--zoo", str(zoo)], capsys)
    assert code == 0 and "created" in out
    entry = load_entry(zoo / "my_nuclei")
    pre = entry.mmv.pretrained
    assert pre is not None and pre.source == "weights/my_nuclei.zip" and "val_loss" in pre.metrics
    code, out, _ = run_cli(["pull", str(zoo / "my_nuclei")], capsys)
    assert code == 0 and "sha256 verified" in out and pre.sha256 in out
    image = sorted((data_2d / "images").iterdir())[0]
    (pkg,) = predict_files(zoo / "my_nuclei", [image], tmp_path / "pred")
    (run,) = predict_files(run_2d, [image], tmp_path / "run_pred")
    a, b = read_image(pkg.output, 2).data, read_image(run.output, 2).data
    assert a.dtype == np.uint8 and a.shape == b.shape
    assert (a == b).mean() > 0.9
    code, out, _ = run_cli(["publish", str(run_2d), "--entry", "my_nuclei", "--zoo", str(zoo)], capsys)
    assert code == 0 and "updated" in out


def test_list_shows_bundled_weights(capsys):
    from .test_cli import run_cli

    code, out, _ = run_cli(["list"], capsys)
    row = next(line for line in out.splitlines() if "nuclei_semseg_2d" in line)
    assert "bundled" in row
