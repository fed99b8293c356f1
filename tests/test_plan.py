"""`mmv-zoo plan`: entries derived from a fingerprint of the data and the device, each derived value
commented with its reason; 2D (BBBC007, segmentation and instance), 3D anisotropic stacks and RGB
histology; a smaller memory gives a smaller batch or patch, and the planned entry trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from mmv_zoo.catalog.plan import plan_entry
from mmv_zoo.entry import load_entry
from mmv_zoo.errors import DataError, EntryError, OutputError
from mmv_zoo.io.write import write_ome_tiff

from .conftest import SAMPLE
from .test_cli import run_cli


def _comments(folder: Path) -> dict[str, str]:
    """Key (last path element) -> the comment on its line in rdf.yaml."""
    out = {}
    for line in (folder / "rdf.yaml").read_text().splitlines():
        if "  # " in line and ":" in line.split("  # ")[0]:
            out[line.split(":")[0].strip()] = line.split("  # ", 1)[1]
    return out


def test_bbbc007_segmentation_and_instance_plans(tmp_path, capsys):
    seg = plan_entry(SAMPLE / "train", "segmentation", tmp_path / "zoo" / "seg")
    entry = load_entry(seg.folder)  # validates
    assert seg.template == "nuclei_semseg_2d" and entry.mmv.task == "segmentation"
    assert entry.mmv.network.depth == 3 and entry.mmv.data.patch == [128, 128]  # 400 px images on a CPU
    assert entry.mmv.data.labels == "foreground"  # the bundled labels are instance ids
    comments = _comments(seg.folder)
    for key in ("patch", "labels", "source", "max_epochs", "batch_size", "network", "sampling"):
        assert key in comments, key
    assert "400 x 400" in comments["patch"] and "instance labels" in comments["labels"]
    assert "153 values" in (seg.folder / "README.md").read_text()  # the fingerprint table
    code, out, _ = run_cli(["plan", str(SAMPLE / "train"), "--task", "instance", "--out",
                            str(tmp_path / "zoo" / "inst")], capsys)
    assert code == 0 and "network.channels" in out
    inst = load_entry(tmp_path / "zoo" / "inst")
    assert inst.mmv.framework == "embedseg"
    assert "median diameter 18" in (tmp_path / "zoo" / "inst" / "README.md").read_text()
    code, _, err = run_cli(["plan", str(SAMPLE / "train"), "--task", "instance", "--out",
                            str(tmp_path / "zoo" / "inst")], capsys)
    assert code == 1 and "already exists" in err


def test_anisotropic_3d_stacks_keep_z_until_the_levels_match(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(3):
        img = rng.normal(100, 20, (20, 128, 128)).astype(np.float32)
        lab = np.zeros((20, 128, 128), np.uint8)
        lab[5:15, 30:60, 30:60] = 1
        write_ome_tiff(tmp_path / "data" / "images" / f"s{i}.ome.tiff", img[None], {"z": 2.0, "y": 0.5, "x": 0.5})
        write_ome_tiff(tmp_path / "data" / "labels" / f"s{i}.ome.tiff", lab[None], {"z": 2.0, "y": 0.5, "x": 0.5})
    done = plan_entry(tmp_path / "data", "segmentation", tmp_path / "zoo" / "stacks")
    net = load_entry(done.folder).mmv.network
    assert done.template == "semantic_seg_3d_fibrillarin" and net.kind == "dyn_unet"
    z_strides = [s[0] if isinstance(s, list) else s for s in net.strides[1:]]
    assert z_strides[0] == 1 and 2 in z_strides  # z is 4x coarser: kept at first, halved once the plane caught up
    assert "4.0x" in _comments(done.folder)["strides"]
    assert "(rare)" in _comments(done.folder)["loss"]  # 2.7 % foreground
    assert load_entry(done.folder).mmv.data.sampling.foreground_fraction == 0.5
    assert "anisotropy" in (done.folder / "README.md").read_text()


def test_rgb_histology_gets_stain_normalization(tmp_path):
    rng = np.random.default_rng(1)
    for sub in ("images", "labels"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(2):
        tifffile.imwrite(tmp_path / "data" / "images" / f"h{i}.tif",
                         rng.integers(80, 250, (160, 160, 3), dtype=np.uint8), photometric="rgb")
        tifffile.imwrite(tmp_path / "data" / "labels" / f"h{i}.tif", (rng.random((160, 160)) > 0.7).astype(np.uint8))
    done = plan_entry(tmp_path / "data", "segmentation", tmp_path / "zoo" / "histo")
    entry = load_entry(done.folder)
    assert done.template == "semantic_seg_2d_glas" and entry.mmv.data.normalization.source.kind == "macenko"
    assert "RGB" in _comments(done.folder)["source"]


def test_less_memory_gives_a_smaller_step_and_the_entry_trains(tmp_path, monkeypatch, data_2d):
    big = load_entry(plan_entry(SAMPLE / "train", "segmentation", tmp_path / "big").folder)
    monkeypatch.setenv("MMV_ZOO_TILE_MEMORY", "24MiB")
    small_plan = plan_entry(SAMPLE / "train", "segmentation", tmp_path / "small")
    small = load_entry(small_plan.folder)
    voxels = [e.mmv.training.batch_size * int(np.prod(e.mmv.data.patch)) for e in (big, small)]
    assert voxels[1] < voxels[0], voxels
    assert "24MiB" not in small_plan.reasons["training.batch_size"] and "MMV_ZOO_TILE_MEMORY" in small_plan.reasons[
        "training.batch_size"]
    from mmv_zoo.training.train import train

    tiny = load_entry(small_plan.folder, ["training.max_epochs=1", "training.patches_per_image=2"])
    run = train(tiny, data_2d, tmp_path / "runs", progress=False)
    assert list((run.folder / "checkpoints").glob("*.ckpt"))


def test_search_compares_candidates_by_cross_validation_and_keeps_the_best(data_2d, tmp_path):
    seen = []
    done = plan_entry(data_2d, "segmentation", tmp_path / "zoo" / "searched", search=3, search_steps=3, folds=3,
                      on_candidate=lambda name, score: seen.append((name, score)))
    assert [n for n, _ in seen] == ["planned", "half patch", "fewer levels"]
    assert all(0 <= s <= 1 for _, s in seen)
    readme = (done.folder / "README.md").read_text()
    compared = readme.split("## Candidates compared")[1]
    rows = [line for line in compared.splitlines() if line.startswith("| ") and "candidate" not in line]
    assert len(rows) == 3 and "(kept)" in rows[0]  # best first
    best = rows[0].split("|")[1].strip()
    assert best == max(seen, key=lambda kv: kv[1])[0]
    plain = load_entry(plan_entry(data_2d, "segmentation", tmp_path / "zoo" / "plain").folder)
    searched = load_entry(done.folder)
    if best == "planned":
        assert searched.mmv.data.patch == plain.mmv.data.patch and searched.mmv.network == plain.mmv.network
    else:
        assert "--search" in (done.folder / "rdf.yaml").read_text()
        assert (searched.mmv.data.patch, searched.mmv.network) != (plain.mmv.data.patch, plain.mmv.network)


def test_bad_requests_name_what_is_wrong(tmp_path):
    with pytest.raises(EntryError, match="--task 'segment'"):
        plan_entry(SAMPLE / "train", "segment", tmp_path / "a")
    with pytest.raises(DataError, match="no such data folder"):
        plan_entry(tmp_path / "nothing", "segmentation", tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        plan_entry(tmp_path / "empty", "segmentation", tmp_path / "a")
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        plan_entry(SAMPLE / "train", "segmentation", tmp_path / "taken")
    with pytest.raises(DataError, match="denoising has no held-out reference"):
        plan_entry(SAMPLE.parent / "hybiss_2d", "denoise", tmp_path / "a", search=2)
    assert not (tmp_path / "a").exists()
    denoise = load_entry(plan_entry(SAMPLE.parent / "hybiss_2d", "denoise", tmp_path / "d").folder)
    assert denoise.mmv.framework == "n2v" and yaml.safe_load((tmp_path / "d" / "rdf.yaml").read_text())
