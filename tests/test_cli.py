"""The CLI as a user meets it: verbs work, bad input gives one clear line, exit 1, nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mmv_zoo.cli.app import main

from .conftest import TINY_2D


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `mmv-zoo ARGS` in-process (fast); returns exit code, stdout, stderr."""
    old = sys.argv
    sys.argv = ["mmv-zoo", *args]
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def test_help_is_a_subprocess_without_heavy_imports():
    code = ("import sys, runpy; sys.argv=['mmv-zoo','--help']\n"
            "try:\n runpy.run_module('mmv_zoo', run_name='__main__')\nexcept SystemExit: pass\n"
            "heavy=[m for m in ('torch','pytorch_lightning','monai','bioimageio.core','bioio') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "train" in res.stdout and "export" in res.stdout and "predict" in res.stdout
    assert "HEAVY []" in res.stdout


@pytest.mark.parametrize("args", [["data", "pull"], ["predict"], ["export"]])
def test_a_verb_missing_its_argument_prints_its_usage(args, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert f"Usage: mmv-zoo {' '.join(args)} [OPTIONS]" in out + err
    assert "Missing argument" in out + err and "MissingParameter" not in out + err


def test_list_and_show(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in ("nuclei_semseg_2d", "labelfree_3d_fnet", "denoise_3d_planaria"):
        assert name in out
    code, out, _ = run_cli(["show", "nuclei_semseg_2d", "--set", "training.max_epochs=7"], capsys)
    assert code == 0 and "max_epochs: 7" in out and "patches_per_image" in out  # defaults filled in


def test_validate_exit_codes(capsys, tmp_path):
    code, out, _ = run_cli(["validate", "nuclei_semseg_2d", "denoise_3d_planaria"], capsys)
    assert code == 0 and out.count("valid") == 2
    bad = tmp_path / "rdf.yaml"
    bad.write_text((Path(__file__).parents[1] / "mmv_zoo" / "zoo" / "nuclei_semseg_2d" / "rdf.yaml").read_text()
                   .replace("kind: fnet", "kind: fnett"))
    code, out, _ = run_cli(["validate", str(bad)], capsys)
    assert code == 1 and str(bad) in out and "fnett" in out


def test_schema_is_json(capsys):
    import json

    code, out, _ = run_cli(["schema"], capsys)
    assert code == 0 and "config" in json.loads(out)["properties"]


def test_bad_override_is_one_line(capsys):
    code, _, err = run_cli(["show", "nuclei_semseg_2d", "--set", "network.kind=unett"], capsys)
    assert_clean_error(code, err, "config.mmv_zoo.network", "unett")


def test_train_missing_data_folder(capsys, tmp_path):
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "runs")], capsys)
    assert_clean_error(code, err, str(tmp_path / "nope"), "does not exist")
    assert _tree(tmp_path / "runs") == set()


def test_train_image_without_partner(capsys, data_2d, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_2d, data)
    tifffile.imwrite(data / "images" / "extra_cell.tif", np.zeros((64, 64), np.uint8))
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data), "--out", str(tmp_path / "runs"),
                            *sum((["--set", o] for o in TINY_2D), [])], capsys)
    assert_clean_error(code, err, "extra_cell.tif", "unmatched")
    assert _tree(tmp_path / "runs") == set()


def test_train_corrupt_tiff(capsys, data_2d, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_2d, data)
    victim = sorted((data / "labels").iterdir())[1]
    victim.write_bytes(b"II*\x00" + os.urandom(300))
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data), "--out", str(tmp_path / "runs"),
                            "--no-progress"], capsys)
    assert_clean_error(code, err, str(victim), "cannot read")
    assert _tree(tmp_path / "runs") == set()


def test_train_3d_images_for_2d_entry(capsys, data_3d, tmp_path):
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data_3d), "--out", str(tmp_path / "runs"),
                            "--set", "data.layout.source=low", "--set", "data.layout.target=high"], capsys)
    assert_clean_error(code, err, "stack0.tif", "stack1.tif", "is 3D", "entry is 2D")
    assert _tree(tmp_path / "runs") == set()


def test_unwritable_output_folder(capsys, data_2d, run_2d, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data_2d), "--out", str(blocker / "runs")],
                           capsys)
    assert_clean_error(code, err, str(blocker / "runs"), "cannot write")
    image = sorted((data_2d / "images").iterdir())[0]
    code, _, err = run_cli(["predict", str(run_2d), str(image), "--out", str(blocker / "pred")], capsys)
    assert_clean_error(code, err, str(blocker / "pred"), "cannot write")


def test_predict_bad_inputs(capsys, run_2d, data_3d, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", str(run_2d), str(tmp_path / "missing.tif"), "--out", str(out)], capsys)
    assert_clean_error(code, err, "missing.tif", "no such file")
    code, _, err = run_cli(["predict", str(tmp_path), str(data_3d / "low" / "stack0.tif"), "--out", str(out)], capsys)
    assert_clean_error(code, err, "not a complete run")
    image = str(data_3d / "low" / "stack0.tif")  # an image given where the model goes
    code, _, err = run_cli(["predict", image, image, "--out", str(out)], capsys)
    assert_clean_error(code, err, "stack0.tif", "not a text YAML file")
    assert not [p for p in _tree(out) if not p.startswith(".")] and not any(".partial" in p for p in _tree(out))


def test_cli_train_predict_roundtrip(capsys, data_2d, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative --out, as a user types it
    args = ["train", "nuclei_semseg_2d", "--data", str(data_2d), "--out", "runs", "--no-progress"]
    code, out, _ = run_cli(args + sum((["--set", o] for o in TINY_2D), []), capsys)
    assert code == 0 and "run folder" in out and "best checkpoint" in out
    run = next((tmp_path / "runs" / "nuclei_semseg_2d").iterdir())
    code, out, _ = run_cli(["predict", str(run), str(data_2d / "images"), "--out", str(tmp_path / "pred")], capsys)
    assert code == 0 and "3 predicted" in out
    assert len(list((tmp_path / "pred").glob("*.ome.tiff"))) == 3


def test_real_subprocess_error_has_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("mmv-zoo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mmv_zoo"]
    res = subprocess.run([*cmd, "validate", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr + res.stdout
    assert "no such file" in res.stdout


def test_predict_refuses_inputs_that_clash(capsys, run_2d, data_2d, tmp_path):
    import shutil

    image = sorted((data_2d / "images").iterdir())[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(image, tmp_path / "a" / "cells.tif")
    shutil.copy(image, tmp_path / "b" / "cells.tif")
    code, _, err = run_cli(["predict", str(run_2d), str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                            str(tmp_path / "out")], capsys)
    assert_clean_error(code, err, "same output", "cells.tif")
    assert not (tmp_path / "out").exists()


def _copy_data(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_float_labels(capsys, data_2d, tmp_path):
    """Float masks (0 / 0.9) are foreground in foreground mode and refused as class ids."""
    from mmv_zoo.data.dataset import load_pair
    from mmv_zoo.data.pairs import Pair
    from mmv_zoo.entry import load_entry
    from mmv_zoo.errors import DataError

    data = _copy_data(data_2d, tmp_path / "data")
    for p in (data / "labels").iterdir():
        tifffile.imwrite(p, (tifffile.imread(p) > 0).astype(np.float32) * 0.9)
    name = sorted((data / "images").iterdir())[0].name
    pair = Pair(data / "images" / name, data / "labels" / name)
    loaded = load_pair(pair, load_entry("nuclei_semseg_2d"))
    assert loaded.target.max() == 1 and loaded.target.sum() > 0
    with pytest.raises(DataError, match="non-integer"):
        load_pair(pair, load_entry("nuclei_semseg_2d", ["data.labels=classes"]))


def test_labels_without_foreground_are_refused(capsys, data_2d, tmp_path):
    data = _copy_data(data_2d, tmp_path / "data")
    for p in (data / "labels").iterdir():
        tifffile.imwrite(p, np.zeros_like(tifffile.imread(p)))
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data), "--out", str(tmp_path / "runs")],
                           capsys)
    assert_clean_error(code, err, "no label image has any foreground")
    assert not (tmp_path / "runs").exists()


def test_settings_the_machine_cannot_honour(capsys, data_2d, tmp_path):
    out = tmp_path / "runs"
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data_2d), "--out", str(out),
                            "--set", "training.accelerator=gpu", *sum((["--set", o] for o in TINY_2D), [])], capsys)
    if code == 0:  # a machine with a GPU: the run is fine
        return
    assert_clean_error(code, err, "config.mmv_zoo.training")
    assert not out.exists()
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data_2d), "--out", str(out),
                            "--set", "training.devices=4096"], capsys)
    assert_clean_error(code, err, "training.devices", "use 1")
    assert not out.exists()


def test_validation_that_would_never_run_is_refused(capsys):
    code, _, err = run_cli(["show", "nuclei_semseg_2d", "--set", "training.check_val_every_n_epoch=5",
                            "--set", "training.max_epochs=2"], capsys)
    assert_clean_error(code, err, "check_val_every_n_epoch", "never run")
    code, out, _ = run_cli(["show", "nuclei_semseg_2d", "--set", "training.precision=32"], capsys)
    assert code == 0 and "precision: '32'" in out


def test_not_a_checkpoint(capsys, data_2d, tmp_path):
    fake = tmp_path / "model.ckpt"
    fake.write_text("hello")
    code, _, err = run_cli(["predict", str(fake), str(data_2d / "images"), "--out", str(tmp_path / "out")], capsys)
    assert_clean_error(code, err, "model.ckpt", "not a PyTorch checkpoint")
    assert "weights_only" not in err
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(fake), "--out", str(tmp_path / "r")], capsys)
    assert_clean_error(code, err, "is a file")


def test_run_folder_named_after_entry_file(capsys, data_2d, tmp_path):
    from mmv_zoo.entry import load_entry

    src = Path(__file__).parents[1] / "mmv_zoo" / "zoo" / "nuclei_semseg_2d" / "rdf.yaml"
    mine = tmp_path / "nuclei_v2.yaml"
    mine.write_text(src.read_text())
    assert load_entry(mine).slug == "nuclei_v2"


def test_export_refuses_to_replace_and_bad_paths(capsys, run_2d, tmp_path):
    existing = tmp_path / "model.zip"
    existing.write_bytes(b"precious")
    code, _, err = run_cli(["export", str(run_2d), "--out", str(existing)], capsys)
    assert_clean_error(code, err, "model.zip", "--overwrite")
    assert existing.read_bytes() == b"precious"
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli(["export", str(run_2d), "--out", str(blocker / "m.zip")], capsys)
    assert_clean_error(code, err, "is a file")
    code, _, err = run_cli(["export", str(run_2d), "--out", str(tmp_path / "m.zip"), "--formats", "tflite"], capsys)
    assert_clean_error(code, err, "tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "model.zip"]


def test_training_without_a_terminal_prints_one_line_per_epoch(data_2d, tmp_path):
    """Output piped to a file (a log, a cluster job): no progress bar, a flushed line per epoch."""
    exe = Path(sys.executable).with_name("mmv-zoo")
    sets = [a for s in [*TINY_2D, "training.max_epochs=3"] for a in ("--set", s)]
    with open(tmp_path / "log.txt", "w") as log:
        res = subprocess.run([str(exe), "train", "nuclei_semseg_2d", "--data", str(data_2d), "--out",
                              str(tmp_path / "runs"), *sets], stdout=log, stderr=subprocess.PIPE, text=True)
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "log.txt").read_text().splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/3", "2/3", "3/3"], lines
    for line in epochs:
        assert "train_loss" in line and "val_loss" in line and "val_metric" in line and line.endswith(" s")
    assert "\r" not in (tmp_path / "log.txt").read_text() and "trained nuclei_semseg_2d" in lines[len(epochs)]


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_lets_openmp_threads_sleep_unless_told_otherwise(given, seen):
    code = ("import atexit, os, sys; sys.argv = ['mmv-zoo', 'list']\n"
            "atexit.register(lambda: print('POLICY', os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules))\n"
            "from mmv_zoo.cli.app import main; main()")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert f"POLICY {seen} False" in res.stdout  # set before anything loaded torch's OpenMP runtime
