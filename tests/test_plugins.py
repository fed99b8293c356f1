"""Extension points, tested with a fake plugin package (an entry point on sys.path), not a real one."""

from __future__ import annotations

import textwrap

import pytest

from mmv_zoo.entry import EntryError, load_entry
from mmv_zoo.registry import framework_class, frameworks

from .conftest import TINY_2D


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """A distribution `fake-mmv-plugin` whose entry point registers the framework `fcn_twice`."""
    (tmp_path / "fake_mmv_plugin.py").write_text(textwrap.dedent('''
        from mmv_zoo.frameworks.fcn import FCN

        class TwiceFCN(FCN):
            """An FCN that counts its training steps (proves the plugin class is the one used)."""
            steps = 0

            def training_step(self, batch, batch_idx):
                TwiceFCN.steps += 1
                return super().training_step(batch, batch_idx)
    '''))
    dist = tmp_path / "fake_mmv_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-mmv-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mmv_zoo.frameworks]\nfcn_twice = fake_mmv_plugin:TwiceFCN\n")
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
