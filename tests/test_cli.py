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


def test_list_and_show(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in ("nuclei_semseg_2d", "labelfree_3d_fnet", "denoise_3d_care"):
        assert name in out
    code, out, _ = run_cli(["show", "nuclei_semseg_2d", "--set", "training.max_epochs=7"], capsys)
    assert code == 0 and "max_epochs: 7" in out and "patches_per_image" in out  # defaults filled in


def test_validate_exit_codes(capsys, tmp_path):
    code, out, _ = run_cli(["validate", "nuclei_semseg_2d", "denoise_3d_care"], capsys)
    assert code == 0 and out.count("valid") == 2
    bad = tmp_path / "rdf.yaml"
    bad.write_text((Path(__file__).parents[1] / "zoo" / "nuclei_semseg_2d" / "rdf.yaml").read_text()
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
    code, _, err = run_cli(["predict", str(run_2d), str(data_3d / "low" / "stack0.tif"), "--out", str(out)], capsys)
    assert_clean_error(code, err, "stack0.tif", "is 3D")
    code, _, err = run_cli(["predict", str(tmp_path), str(data_3d / "low" / "stack0.tif"), "--out", str(out)], capsys)
    assert_clean_error(code, err, "not a complete run")
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
