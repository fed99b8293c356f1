"""Shared fixtures: tiny real 2D data (crops of the bundled BBBC007 images) and tiny synthetic 3D data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

# Tests never touch the user's cache.
os.environ["MMV_ZOO_CACHE"] = tempfile.mkdtemp(prefix="mmv_zoo_test_cache_")

SAMPLE = Path(__file__).resolve().parents[1] / "mmv_zoo" / "sample_data" / "bbbc007"

# Entry overrides that make training take a couple of seconds on CPU.
TINY_2D = [
    "network.depth=2", "network.mult_chan=4", "data.patch=[32,32]", "training.max_epochs=1",
    "training.patches_per_image=2", "training.batch_size=2",
]
TINY_3D = [
    "data.patch=[8,32,32]", "training.max_epochs=1", "training.patches_per_image=2", "training.batch_size=2",
]


@pytest.fixture(scope="session")
def data_2d(tmp_path_factory) -> Path:
    """Three real image/label pairs (96x96 crops) in the nuclei entry's paired-folder layout."""
    root = tmp_path_factory.mktemp("data2d")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    for path in sorted((SAMPLE / "train" / "images").glob("*.tif"))[:3]:
        img = tifffile.imread(path)[100:196, 100:196]
        lab = tifffile.imread(SAMPLE / "train" / "labels" / path.name)[100:196, 100:196]
        tifffile.imwrite(root / "images" / path.name, img)
        tifffile.imwrite(root / "labels" / path.name, lab)
    return root


def make_3d_pairs(root: Path, source: str, target: str, n: int = 2, shape=(12, 40, 40), seed: int = 0) -> Path:
    """Synthetic 3D pairs: smooth blobs (target) and a noisy version (source), uint16."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    (root / source).mkdir(parents=True, exist_ok=True)
    (root / target).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        clean = gaussian_filter(rng.random(shape), 2.0)
        clean = (clean - clean.min()) / (clean.max() - clean.min()) * 1000 + 100
        noisy = clean + rng.normal(0, 60, shape)
        tifffile.imwrite(root / source / f"stack{i}.tif", noisy.clip(0, 65535).astype(np.uint16))
        tifffile.imwrite(root / target / f"stack{i}.tif", clean.astype(np.uint16))
    return root


@pytest.fixture(scope="session")
def data_3d(tmp_path_factory) -> Path:
    """Two synthetic noisy/clean 3D pairs in the denoise_3d_planaria layout (low/, high/)."""
    return make_3d_pairs(tmp_path_factory.mktemp("data3d"), "low", "high")


@pytest.fixture(scope="session")
def run_2d(data_2d, tmp_path_factory) -> Path:
    """A tiny trained nuclei_semseg_2d run (shared by the predict and export tests)."""
    from mmv_zoo.entry import load_entry
    from mmv_zoo.training.train import train

    entry = load_entry("nuclei_semseg_2d", TINY_2D)
    return train(entry, data_2d, tmp_path_factory.mktemp("runs2d"), progress=False).folder


@pytest.fixture(scope="session")
def run_3d(data_3d, tmp_path_factory) -> Path:
    from mmv_zoo.entry import load_entry
    from mmv_zoo.training.train import train

    tiny_unet = ["network.channels=[4,8,16]", "network.strides=[[1,2,2],[2,2,2]]", "network.num_res_units=1"]
    entry = load_entry("denoise_3d_planaria", TINY_3D + tiny_unet)
    return train(entry, data_3d, tmp_path_factory.mktemp("runs3d"), progress=False).folder


@pytest.fixture
def server(monkeypatch):
    """An HTTP server on 127.0.0.1 whose routes are functions (tests/test_download.py: Server)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    from .test_download import Server

    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty MMV_ZOO_CACHE, online, with quick retries."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MMV_ZOO_CACHE", str(folder))
    monkeypatch.delenv("MMV_ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("MMV_ZOO_ZENODO_API", raising=False)
    from mmv_zoo.remote import download

    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)
    return folder
