"""Packages that bioimageio.core verified once predict without it: the same outputs as bioimageio.core's
pipeline (TorchScript and ONNX, every processing step covered), a fallback for anything not covered,
and a cold `mmv-zoo predict ENTRY IMAGE` that imports neither bioimageio.core nor Lightning nor MONAI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmv_zoo.cache import read_record, write_record
from mmv_zoo.errors import RunError
from mmv_zoo.predict.package_predictor import PackagePredictor, package_digest
from mmv_zoo.predict.verified_package import VerifiedPackage, open_package

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT / "mmv_zoo" / "sample_data" / "bbbc007" / "holdout"
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


def smoothing_package(folder: Path, pre: list, post: list, channels: int = 2) -> Path:
    """A two-channel TorchScript mean-filter package (bioimageio.spec alone) with the given processing;
    its test tensors ignore the processing: the verdicts are given by each test, which compares the
    processing itself."""
    from tests.test_predict_package import foreign_package

    return foreign_package(folder, channels=channels, pre=pre, post=post)


def _steps():
    from bioimageio.spec.model import v0_5

    yx, cyx = [v0_5.AxisId("y"), v0_5.AxisId("x")], [v0_5.AxisId("channel"), v0_5.AxisId("y"), v0_5.AxisId("x")]
    channel = v0_5.AxisId("channel")
    return {
        "scale_range per channel": ([v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
            axes=yx, min_percentile=2.0, max_percentile=99.0))], []),
        "scale_range joint, clip": ([v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
            axes=cyx, min_percentile=1.0, max_percentile=99.8)),
            v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=0.0, max=0.8))], []),
        "zero mean unit variance, sigmoid": ([v0_5.ZeroMeanUnitVarianceDescr(
            kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=yx))], [v0_5.SigmoidDescr()]),
        "fixed per channel, scale_linear, binarize": (
            [v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                axis=channel, mean=[100.0, 50.0], std=[20.0, 10.0]))],
            [v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearAlongAxisKwargs(axis=channel, gain=[2.0, 0.5],
                                                                           offset=[0.1, -0.2])),
             v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=0.3))]),  # along an axis fails in core
        "ensure_dtype, softmax": ([v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))],
                                  [v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=channel))]),
    }


@pytest.mark.parametrize("case", list(_steps()))
def test_processing_steps_as_bioimageio_core_applies_them(case, cache, tmp_path):
    pre, post = _steps()[case]
    package = smoothing_package(tmp_path, pre, post)
    # the verdicts are given (the test tensors ignore the processing): this compares the processing itself
    write_record("verified", package_digest(package), {"torchscript": "passed", "mmv_zoo:torchscript": "passed"})
    fast = VerifiedPackage.open(package, verify=False)
    assert fast is not None and fast.weight_format == "torchscript"
    core = PackagePredictor(package)
    x = np.random.default_rng(1).gamma(2.0, 60.0, (2, 45, 61)).astype(np.float32)  # not a multiple of the step
    a, b = fast(x), core(x)
    assert a[1] == b[1] and a[0].shape == b[0].shape == (2, 45, 61)
    assert np.allclose(a[0], b[0], atol=1e-5), float(np.abs(a[0] - b[0]).max())


def test_steps_not_covered_go_through_bioimageio_core(cache, tmp_path):
    from bioimageio.spec.model import v0_5

    pre = [v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=None))]  # dataset statistics
    package = smoothing_package(tmp_path, pre, [])
    write_record("verified", package_digest(package), {"torchscript": "passed"})
    assert VerifiedPackage.open(package, verify=False) is None
    assert isinstance(open_package(package), PackagePredictor)


def test_unverified_file_is_tested_once_then_predicts_without_bioimageio_core(cache, tmp_path):
    from tests.test_predict_package import foreign_package

    package = foreign_package(tmp_path / "foreign")
    digest = package_digest(package)
    assert read_record("verified", digest) == {}
    predictor = open_package(package)  # runs bioimageio.core's test, then uses the verified weights
    assert isinstance(predictor, VerifiedPackage)
    assert read_record("verified", digest) == {"torchscript": "passed", "mmv_zoo:torchscript": "passed"}
    x = np.random.default_rng(2).random((1, 50, 70)).astype(np.float32)
    assert np.allclose(predictor(x)[0], PackagePredictor(package)(x)[0], atol=1e-6)


def test_a_fast_path_that_misses_the_test_output_is_not_used(cache, tmp_path):
    from bioimageio.spec.model import v0_5

    package = smoothing_package(tmp_path, [], [v0_5.SigmoidDescr()])  # its test output lacks the sigmoid
    write_record("verified", package_digest(package), {"torchscript": "passed"})  # as if core had passed it
    assert VerifiedPackage.open(package, verify=False) is None
    verdict = read_record("verified", package_digest(package))["mmv_zoo:torchscript"]
    assert verdict.startswith("max |difference|"), verdict  # recorded: the next run goes to core at once
    assert isinstance(open_package(package), PackagePredictor)


def test_weights_that_fail_the_test_are_never_used(cache, tmp_path):
    from bioimageio.spec.model import v0_5

    package = smoothing_package(tmp_path, [], [v0_5.SigmoidDescr()])  # its test output lacks the sigmoid
    with pytest.raises(RunError, match="no weight format reproduces"):
        open_package(package)
    assert read_record("verified", package_digest(package))["torchscript"] != "passed"


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (pip install 'mmv_zoo[onnx]')")
def test_our_package_onnx_and_torchscript_equal_bioimageio_core(run_2d, cache, tmp_path):
    from mmv_zoo.export.package import export_package
    from mmv_zoo.io.read import read_image

    package = export_package(run_2d, tmp_path / "ours.zip", formats=("torchscript", "onnx")).zip_path
    image = read_image(next((HOLDOUT / "images").glob("*.tif")), 2).data[:, 20:235, 13:300]
    for fmt in ("onnx", "torchscript"):
        fast = open_package(package, weight_format=fmt)
        assert isinstance(fast, VerifiedPackage) and fast.weight_format == fmt
        a, b = fast(image)[0], PackagePredictor(package, weight_format=fmt)(image)[0]
        assert np.allclose(a, b, atol=1e-4), (fmt, float(np.abs(a - b).max()))
    assert open_package(package).weight_format == "onnx"  # the default where onnxruntime runs on this device


def _cold_predict(tmp_path: Path, out: Path, *extra: str) -> set[str]:
    """`mmv-zoo predict nuclei_semseg_2d IMAGE` in a new process; the modules it imported."""
    listing = tmp_path / f"modules{len(list(tmp_path.glob('modules*')))}.json"
    script = ("import json, sys\nfrom mmv_zoo.cli.app import main\ncode = 0\ntry:\n    main()\n"
              "except SystemExit as e:\n    code = e.code or 0\n"
              f"json.dump(sorted(sys.modules), open({str(listing)!r}, 'w'))\nsys.exit(code)\n")
    image = next((HOLDOUT / "images").glob("*.tif"))
    env = {**os.environ, "MMV_ZOO_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script, "predict", "nuclei_semseg_2d", str(image), "--out", str(out),
                           *extra], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(listing.read_text()))


def test_cold_prediction_with_a_zoo_entry_imports_only_what_it_needs(tmp_path):
    from mmv_zoo.io.read import read_image

    heavy = {"pytorch_lightning", "lightning_fabric", "monai", "bioimageio.core", "bioio", "ome_types"}
    first = _cold_predict(tmp_path, tmp_path / "first")  # this file was never verified here: bioimageio.core runs
    assert "bioimageio.core" in first
    second = _cold_predict(tmp_path, tmp_path / "second")
    assert not heavy & second, sorted(heavy & second)
    if HAS_ORT:
        assert "torch" not in second  # ONNX weights run through onnxruntime alone
    third = _cold_predict(tmp_path, tmp_path / "third", "--weights", "torchscript")
    assert "torch" in third and not heavy & third, sorted(heavy & third)
    name = next((HOLDOUT / "images").glob("*.tif")).stem + ".ome.tiff"
    labels = [read_image(tmp_path / run / name, 2).data for run in ("first", "second", "third")]
    truth = read_image(HOLDOUT / "labels" / name.replace(".ome.tiff", ".tif"), 2).data > 0
    assert np.array_equal(labels[0], labels[1])
    agree = float((labels[1] == labels[2]).mean())
    assert agree > 0.9999, agree  # ONNX and TorchScript labels differ at most at a few ties
    f1 = 2 * (labels[1].astype(bool) & truth).sum() / (labels[1].astype(bool).sum() + truth.sum())
    assert f1 >= 0.95, f1
