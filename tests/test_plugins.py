"""Extension points, tested with a fake plugin package (an entry point on sys.path), not a real one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from mmv_zoo.entry import EntryError, load_entry
from mmv_zoo.registry import framework_class, frameworks

from .conftest import TINY_2D


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """A distribution `fake-mmv-plugin` whose entry point registers the framework `fcn_twice`."""
    (tmp_path / "fake_mmv_plugin.py").write_text(textwrap.dedent('''
        from dataclasses import replace

        from mmv_zoo.frameworks.fcn import FCN
        from mmv_zoo.settings.framework import FCN as FCN_SPEC

        class TwiceFCN(FCN):
            """An FCN that counts its training steps (proves the plugin class is the one used)."""
            steps = 0

            def training_step(self, batch, batch_idx):
                TwiceFCN.steps += 1
                return super().training_step(batch, batch_idx)

        SPEC = replace(FCN_SPEC, kind="fcn_twice", model="fake_mmv_plugin:TwiceFCN")
    '''))
    dist = tmp_path / "fake_mmv_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-mmv-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mmv_zoo.frameworks]\nfcn_twice = fake_mmv_plugin:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fcn_twice"


def test_unknown_framework_lists_the_known(fake_plugin):
    with pytest.raises(EntryError) as info:
        load_entry("nuclei_semseg_2d", ["framework=pix2pixx"])
    assert "config.mmv_zoo.framework" in str(info.value) and "fcn_twice" in str(info.value)


def test_plugin_framework_trains(fake_plugin, data_2d, tmp_path):
    from mmv_zoo.training.train import train

    assert "fcn_twice" in frameworks() and frameworks()["fcn"] == "mmv_zoo.frameworks.fcn:FCN"
    cls = framework_class("fcn_twice")
    entry = load_entry("nuclei_semseg_2d", [*TINY_2D, "framework=fcn_twice"])
    run = train(entry, data_2d, tmp_path / "runs", progress=False)
    assert cls.steps > 0
    from mmv_zoo.run import load_model

    assert type(load_model(run.folder)).__name__ == "TwiceFCN"


def test_without_the_plugin_the_framework_is_unknown():
    assert "fcn_twice" not in frameworks()
    with pytest.raises(EntryError, match="unknown framework 'fcn_twice'"):
        load_entry("nuclei_semseg_2d", ["framework=fcn_twice"])


# --- a plugin installed with pip, with its own settings block, through the command line --------------

PLUGIN = Path(__file__).parent / "plugin_demo"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """tests/plugin_demo installed by pip into a temporary folder: a real distribution whose entry point
    registers the framework `noisy_fcn` (with its own settings block `noisy_fcn:`)."""
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN, root / "src")  # pip builds in the source tree: keep the checkout clean
    site = root / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(site), str(root / "src")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list(site.glob("mmv_zoo_noisy-*.dist-info/entry_points.txt"))
    return site


def _mmv(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "mmv_zoo", *args], capture_output=True, text=True, env=env)


def _noisy_entry(folder: Path, block: dict) -> Path:
    from mmv_zoo.entry import ZOO_DIR

    data = yaml.safe_load((ZOO_DIR / "nuclei_semseg_2d" / "rdf.yaml").read_text())
    mmv = data["config"]["mmv_zoo"]
    mmv["framework"] = "noisy_fcn"
    mmv["noisy_fcn"] = block
    mmv.pop("pretrained", None)
    folder.mkdir(parents=True)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def test_a_pip_installed_plugin_brings_its_settings_block_trains_and_predicts(installed_plugin, data_2d, tmp_path):
    good = _noisy_entry(tmp_path / "noisy", {"noise": 0.3})
    done = _mmv(installed_plugin, "validate", str(good))
    assert done.returncode == 0 and "valid" in done.stdout, done.stdout + done.stderr
    shown = yaml.safe_load(_mmv(installed_plugin, "show", str(good)).stdout)
    assert shown["config"]["mmv_zoo"]["noisy_fcn"] == {"noise": 0.3, "noisy_validation": False}  # defaults filled

    bad = _noisy_entry(tmp_path / "typo", {"noisee": 0.3})
    done = _mmv(installed_plugin, "validate", str(bad))
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stdout
    assert "config.mmv_zoo.noisy_fcn.noisee: unknown key" in lines[0] and "noisy_validation" in lines[0]

    runs = tmp_path / "runs"
    done = _mmv(installed_plugin, "train", str(good), "--data", str(data_2d), "--out", str(runs), "--no-progress",
                *[f"--set={o}" for o in (*TINY_2D, "training.max_steps=2")])
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = (runs / "noisy").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 2
    assert yaml.safe_load((run / "rdf.yaml").read_text())["config"]["mmv_zoo"]["noisy_fcn"]["noise"] == 0.3

    image = sorted((data_2d / "images").iterdir())[0]
    done = _mmv(installed_plugin, "predict", str(run), str(image), "--out", str(tmp_path / "pred"))
    assert done.returncode == 0, done.stdout + done.stderr
    labels = tifffile.imread(tmp_path / "pred" / f"{image.stem}.ome.tiff")
    assert labels.shape[-2:] == (96, 96) and set(np.unique(labels)) <= {0, 1}


def test_without_the_installed_plugin_its_entry_is_refused(installed_plugin, tmp_path):
    entry = _noisy_entry(tmp_path / "noisy", {"noise": 0.3})
    done = subprocess.run([sys.executable, "-m", "mmv_zoo", "validate", str(entry)], capture_output=True, text=True)
    assert done.returncode == 1 and "unknown framework 'noisy_fcn'" in done.stdout
