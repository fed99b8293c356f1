"""BioImage.IO export: tiny 2D and 3D runs become packages that bioimageio.core validates, tests and
runs with the same results as the checkpoint."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
import yaml

from mmv_zoo.errors import RunError
from mmv_zoo.export import ExportError
from mmv_zoo.export.package import export_package
from mmv_zoo.run import load_model
from mmv_zoo.transforms.normalize import normalize

MMV_IM2IM_DOI = "10.1093/gigascience/giad120"


def _write_3d_pairs(root: Path, source: str, target: str, shape=(24, 64, 64), n: int = 2) -> Path:
    """Synthetic 3D pairs: uint16 noise-and-blobs stacks (source) and their gaussian blur (target)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    for sub in (source, target):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = gaussian_filter(rng.random(shape), 1.0) * 2000 + rng.normal(0, 50, shape) + 300
        tifffile.imwrite(root / source / f"s{i}.tif", src.clip(0, 65535).astype(np.uint16))
        tifffile.imwrite(root / target / f"s{i}.tif", gaussian_filter(src, 2.0).clip(0, 65535).astype(np.uint16))
    return root


@pytest.fixture(scope="module")
def run_3d_fnet(tmp_path_factory) -> Path:
    """A tiny labelfree_3d_fnet run (center normalization) on 24x64x64 synthetic stacks."""
    from mmv_zoo.entry import load_entry
    from mmv_zoo.training.train import train

    data = _write_3d_pairs(tmp_path_factory.mktemp("data3d_fnet"), "brightfield", "fluorescence")
    entry = load_entry("labelfree_3d_fnet", [
        "data.patch=[16,32,32]", "network.mult_chan=4", "network.depth=2", "training.max_epochs=1",
        "training.patches_per_image=1", "training.batch_size=1"])
    return train(entry, data, tmp_path_factory.mktemp("runs3d_fnet"), progress=False).folder


def _check_package(zip_path: Path, run_folder: Path, formats: tuple[str, ...]) -> object:
    """The zip is a valid 0.5 model; each format passes test_model and predicts what the checkpoint does."""
    from bioimageio.core import create_prediction_pipeline, test_model
    from bioimageio.core.digest_spec import get_test_input_sample
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_5

    assert zip_path.is_file() and zipfile.is_zipfile(zip_path)
    descr = load_description(zip_path)
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.format()
    assert str(descr.format_version).startswith("0.5.")
    assert sorted(f for f in formats) == sorted(f for f, w in descr.weights if w is not None)

    model = load_model(run_folder)
    entry = model.entry
    in_axes = [a.id for a in descr.inputs[0].axes]
    out_axes = [a.id for a in descr.outputs[0].axes]
    raw = get_test_input_sample(descr).members[descr.inputs[0].id].transpose(in_axes).data.values
    x = normalize(raw[0], entry.mmv.data.normalization.source)[None]  # mmv_zoo's own normalization
    with torch.no_grad():
        expected = model.inference_model()(torch.from_numpy(x)).numpy()

    for fmt in formats:
        summary = test_model(zip_path, weight_format=fmt)
        assert summary.status == "passed", (fmt, summary.format())
        with create_prediction_pipeline(bioimageio_model=descr, weight_format=fmt) as pp:
            out = pp.predict_sample_without_blocking(get_test_input_sample(descr), skip_input_padding=True,
                                                     skip_output_cropping=True)
        got = out.members[descr.outputs[0].id].transpose(out_axes).data.values
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=fmt)
        if entry.mmv.task == "segmentation":  # the class labels output: argmax of the probabilities
            labels = out.members["labels"].transpose(out_axes).data.values
            assert labels.dtype == np.uint8 and labels.shape == (1, 1, *expected.shape[2:])
            assert (labels[:, 0] == expected.argmax(1)).mean() > 0.999, fmt
    return descr


def test_export_2d_fnet_all_formats(run_2d, tmp_path):
    out = tmp_path / "pkg" / "nuclei.zip"
    formats = ("torchscript", "pytorch_state_dict", "onnx")
    result = export_package(run_2d, out, formats=formats)
    assert result.zip_path == out and result.test_status == "passed"
    assert result.test_results == {f: "passed" for f in formats}
    assert [p.name for p in out.parent.iterdir()] == ["nuclei.zip"]  # no temporary files left
    descr = _check_package(out, run_2d, formats)

    assert MMV_IM2IM_DOI in [str(c.doi) for c in descr.cite]
    axes = {a.id: a for a in descr.inputs[0].axes}
    assert axes["y"].size.step == 4 and axes["y"].size.min >= 4  # fnet depth 2 -> multiples of 4
    assert [p.id for p in descr.inputs[0].preprocessing][:2] == ["ensure_dtype", "scale_range"]
    assert all(a.halo > 0 for a in descr.outputs[0].axes if a.type == "space")
    mmv = descr.config.model_extra["mmv_zoo"]
    assert mmv["network"]["kind"] == "fnet" and mmv["task"] == "segmentation"
    with zipfile.ZipFile(out) as z:
        readme = z.read("README.md").decode()
        arch = z.read("architecture.py").decode()
        assert {"cover.png", "test_input.npy", "test_output.npy"} <= set(z.namelist())
    assert "# Validation" in readme and "passed" in readme
    assert "mmv_zoo" not in [line.split()[1] for line in arch.splitlines() if line.startswith(("import", "from"))]
    assert "class ExportedModel" in arch and "class FNet" in arch
    # written as bioimageio.spec 0.5.7 (bioimageio.core 0.9.6) reads it too (export/compat.py): plain
    # paths for covers and documentation, no `strict`, format 0.5.4; `make check-zoo` runs 0.9.6 on it
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert rdf["format_version"] == "0.5.4" and rdf["covers"] == ["cover.png"] and rdf["documentation"] == "README.md"
    assert "strict" not in rdf["weights"]["pytorch_state_dict"]
    assert [o["id"] for o in rdf["outputs"]] == ["probabilities", "labels"]
    assert all(a["concatenable"] is True for a in rdf["inputs"][0]["axes"] if a["type"] == "space")  # tileable


def test_segmentation_package_has_class_labels_beside_the_probabilities(run_2d, data_2d, tmp_path):
    """A segmentation package's second output is the class labels: the argmax of its probabilities, in
    bioimageio.core's own prediction (the shipped model's labels are compared with `mmv-zoo predict`'s
    in test_pretrained); `class_labels=False` gives the one-output package QuPath runs."""
    from bioimageio.core import predict

    from mmv_zoo.export.consumers import package_unmet

    package = export_package(run_2d, tmp_path / "seg.zip", formats=("torchscript", "onnx")).zip_path
    image = sorted((data_2d / "images").glob("*.tif"))[0]
    x = tifffile.imread(image).astype(np.float32)
    out = predict(model=str(package), inputs=x[None, None]).members
    labels, probabilities = (np.asarray(out[k].data.values)[0] for k in ("labels", "probabilities"))
    assert labels.dtype == np.uint8 and labels.shape == (1, *x.shape)
    np.testing.assert_array_equal(labels[0], probabilities.argmax(0))
    assert package_unmet(package)  # two outputs: not for QuPath
    single = export_package(run_2d, tmp_path / "one.zip", formats=("torchscript",), class_labels=False).zip_path
    assert package_unmet(single) == []


def test_export_3d_fnet_center_normalization(run_3d_fnet, tmp_path):
    out = tmp_path / "labelfree.zip"
    result = export_package(run_3d_fnet, out)
    assert result.formats == ("torchscript", "pytorch_state_dict")
    descr = _check_package(out, run_3d_fnet, result.formats)  # 24 slices <= z_chunk: exact equivalent
    assert [a.id for a in descr.inputs[0].axes] == ["batch", "channel", "z", "y", "x"]
    assert [p.id for p in descr.inputs[0].preprocessing][:2] == ["ensure_dtype", "zero_mean_unit_variance"]
    notes = descr.config.model_extra["mmv_zoo"]["export_notes"]
    assert any("center" in n for n in notes) and result.notes == notes
    with zipfile.ZipFile(out) as z:
        assert "center" in z.read("README.md").decode()


def test_export_3d_monai_unet_standalone_architecture(run_3d, tmp_path):
    """MONAI's UNet is written as plain torch (torch.fx): no environment file, no monai import."""
    out = tmp_path / "denoise.zip"
    formats = ("torchscript", "pytorch_state_dict", "onnx")
    result = export_package(run_3d, out, formats=formats)
    descr = _check_package(out, run_3d, result.formats)
    assert descr.weights.pytorch_state_dict.dependencies is None
    assert descr.weights.pytorch_state_dict.architecture.kwargs == {}
    with zipfile.ZipFile(out) as z:
        arch = z.read("architecture.py").decode()
        readme = z.read("README.md").decode()
        assert "environment.yaml" not in z.namelist()
    imports = {line.split()[1].split(".")[0] for line in arch.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"__future__", "torch"}
    assert "nn.Conv3d(" in arch and "torch.fx" in readme
    assert not any("plain torch" in n for n in result.notes)


def test_export_from_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    out = tmp_path / "out" / "model.zip"
    with pytest.raises(ExportError, match="not a complete run"):
        export_package(folder, out)
    assert issubclass(ExportError, RunError)
    assert not out.exists() and not out.parent.exists()


def test_export_needs_a_sample_when_validation_images_are_gone(run_2d, tmp_path):
    import shutil

    run = shutil.copytree(run_2d, tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "data": str(tmp_path / "moved_away")}))
    out = tmp_path / "model.zip"
    with pytest.raises(ExportError, match="sample"):
        export_package(run, out)
    assert not out.exists()


def test_failed_package_test_writes_nothing(run_2d, tmp_path, monkeypatch):
    import bioimageio.core

    def failing_test_model(descr, weight_format=None, **kwargs):
        error = SimpleNamespace(loc=("weights", weight_format), msg="outputs differ")
        return SimpleNamespace(status="failed", details=[SimpleNamespace(name="reproduce outputs", errors=[error])])

    monkeypatch.setattr(bioimageio.core, "test_model", failing_test_model)
    out = tmp_path / "model.zip"
    with pytest.raises(ExportError, match="outputs differ"):
        export_package(run_2d, out, formats=("torchscript",))
    assert list(tmp_path.iterdir()) == []


def test_which_packages_qupath_and_deepimagej_can_run(run_2d, tmp_path):
    """Ours with one output (b/c/y/x axes, torchscript) meet what TorchScript-only viewers ask; a
    package without torchscript, or with two outputs (a segmentation package's default: probabilities
    and class labels), does not, and says why."""
    from mmv_zoo.export.consumers import package_unmet, unmet

    out = export_package(run_2d, tmp_path / "nuclei.zip", formats=("torchscript",), class_labels=False).zip_path
    assert package_unmet(out) == []
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    two = {**rdf, "outputs": rdf["outputs"] * 2, "weights": {"onnx": {"source": "w.onnx"}}}
    problems = unmet(two)
    assert "1 input(s) and 2 output(s); they run one of each" in problems
    assert "no torchscript weights (they run TorchScript only)" in problems
    odd = {**rdf, "inputs": [{**rdf["inputs"][0], "axes": [{"type": "channel"}, {"type": "space", "id": "x"}]}]}
    assert any(p.startswith("input axes ['channel', 'space']") for p in unmet(odd))
