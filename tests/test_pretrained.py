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


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A package server on 127.0.0.1 and an empty cache."""
    from mmv_zoo import download

    from .test_download import Server

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("MMV_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_entry_with_url_and_doi_weights(server, tmp_path, capsys, monkeypatch):
    """An entry whose package lives on a server (by URL, then by Zenodo DOI): pulled once, verified,
    cached; predict uses it; offline afterwards still works from the cache."""
    import hashlib
    import json

    from .test_cli import run_cli
    from .test_download import send, serve_bytes

    package = (ZOO_DIR / "nuclei_semseg_2d" / "weights" / "nuclei_semseg_2d.zip").read_bytes()
    server.routes["/files/nuclei.zip"] = serve_bytes(package)
    server.routes["/api/records/4242"] = lambda h: send(h, json.dumps({"files": [
        {"key": "nuclei.zip", "links": {"self": server.url("/files/nuclei.zip")}, "checksum": "md5:x"}]}).encode())
    entry = tmp_path / "remote_nuclei"
    shutil.copytree(ZOO_DIR / "nuclei_semseg_2d", entry, ignore=shutil.ignore_patterns("weights"))
    data = yaml.safe_load((entry / "rdf.yaml").read_text())
    data["config"]["mmv_zoo"]["pretrained"].update(source=server.url("/files/nuclei.zip"), sha256=None)
    (entry / "rdf.yaml").write_text(yaml.safe_dump(data))

    code, out, _ = run_cli(["pull", str(entry)], capsys)
    assert code == 0 and "trust on first use" in out and server.hits["/files/nuclei.zip"] == 1
    code, out, _ = run_cli(["pull", str(entry)], capsys)
    assert code == 0 and "from the cache" in out and server.hits["/files/nuclei.zip"] == 1
    code, out, _ = run_cli(["show", str(entry)], capsys)
    assert code == 0 and f"trust on first use): {hashlib.sha256(package).hexdigest()}" in out

    image = SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"
    with monkeypatch.context() as m:
        m.setenv("MMV_ZOO_OFFLINE", "1")
        (res,) = predict_files(entry, [image], tmp_path / "pred")
    expected = tifffile.imread(ZOO_DIR / "nuclei_semseg_2d" / "weights" / f"expected_{HOLDOUT}_labels.tif")
    assert (read_image(res.output, 2).data[0] == expected).mean() > 0.999
    assert server.hits["/files/nuclei.zip"] == 1

    cache_sha = hashlib.sha256(package).hexdigest()
    monkeypatch.setenv("MMV_ZOO_ZENODO_API", server.url("/api"))
    code, out, _ = run_cli(["pull", "10.5281/zenodo.4242", "--sha256", cache_sha], capsys)
    assert code == 0 and cache_sha in out and server.hits["/api/records/4242"] == 1
