"""`mmv-zoo predict` with BioImage.IO packages: ours, and one built by another tool (bioimageio.spec's
own API, no mmv_zoo), through the same readers and writers as runs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from mmv_zoo.errors import DataError, RunError
from mmv_zoo.io.read import read_image
from mmv_zoo.predict.batch import predict_files
from mmv_zoo.predict.engine import Options
from mmv_zoo.predict.package_predictor import is_package


class Smooth(torch.nn.Module):
    """A 3x3 mean filter followed by x2: what the foreign package computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def foreign_package(folder: Path, state_dict_only: bool = False, needs: str = "", channels: int = 1,
                    pre: list | None = None, post: list | None = None) -> Path:
    """A 2D package written with bioimageio.spec directly (torchscript or state dict), `channels`
    channels smoothed each, with the given pre- and postprocessing (the test tensors ignore them)."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    folder.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).random((1, channels, 64, 64)).astype(np.float32)
    np.save(folder / "in.npy", x)
    np.save(folder / "out.npy", Smooth()(torch.from_numpy(x)).numpy())
    (folder / "README.md").write_text("# smooth\nA mean filter.\n")
    if state_dict_only:
        (folder / "arch.py").write_text(f"import torch\n{needs}\n\nclass Smooth(torch.nn.Module):\n"
                                        "    def forward(self, x):\n"
                                        "        return 2 * torch.nn.functional.avg_pool2d(x, 3, 1, 1, "
                                        "count_include_pad=False)\n")
        torch.save({}, folder / "w.pt")
        weights = v0_5.WeightsDescr(pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=folder / "w.pt", pytorch_version=torch.__version__.split("+")[0],
            architecture=v0_5.ArchitectureFromFileDescr(source=folder / "arch.py", callable="Smooth")))
    else:
        torch.jit.script(Smooth()).save(str(folder / "w.pt"))
        weights = v0_5.WeightsDescr(torchscript=v0_5.TorchscriptWeightsDescr(
            source=folder / "w.pt", pytorch_version=torch.__version__.split("+")[0]))
    space = [v0_5.SpaceInputAxis(id=v0_5.AxisId(a), size=v0_5.ParameterizedSize(min=16, step=8)) for a in "yx"]

    def names(stem: str) -> list:
        return [v0_5.Identifier(stem if channels == 1 else f"{stem}{i}") for i in range(channels)]

    descr = v0_5.ModelDescr(
        name="Foreign smoothing model", description="made without mmv_zoo",
        authors=[v0_5.Author(name="Someone Else")], cite=[v0_5.CiteEntry(text="nobody", doi="10.1234/none")],
        license="MIT", documentation=v0_5.FileDescr(source=folder / "README.md"),
        inputs=[v0_5.InputTensorDescr(id=v0_5.TensorId("image"), axes=[
            v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=names("gray")), *space],
            test_tensor=v0_5.FileDescr(source=folder / "in.npy"), preprocessing=pre or [])],
        outputs=[v0_5.OutputTensorDescr(id=v0_5.TensorId("smooth"), axes=[
            v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=names("smooth")),
            *[v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId(a), halo=4, size=v0_5.SizeReference(
                tensor_id=v0_5.TensorId("image"), axis_id=v0_5.AxisId(a))) for a in "yx"]],
            test_tensor=v0_5.FileDescr(source=folder / "out.npy"), postprocessing=post or [])],
        weights=weights)
    return save_bioimageio_package(descr, output_path=folder / "foreign.zip")


@pytest.fixture(scope="module")
def foreign_zip(tmp_path_factory) -> Path:
    return foreign_package(tmp_path_factory.mktemp("foreign"))


@pytest.fixture(scope="module")
def our_zip(run_2d, tmp_path_factory) -> Path:
    from mmv_zoo.export.package import export_package

    return export_package(run_2d, tmp_path_factory.mktemp("ours") / "ours.zip").zip_path


def test_is_package(foreign_zip, run_2d, tmp_path):
    assert is_package(foreign_zip)
    assert not is_package(run_2d) and not is_package(run_2d / "rdf.yaml")  # a run is not a package
    assert not is_package(tmp_path)


def test_foreign_package_predicts(foreign_zip, tmp_path):
    img = (np.random.default_rng(1).random((70, 90)) * 1000).astype(np.uint16)  # not a valid size: padded
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "img.tif", img)
    (res,) = predict_files(foreign_zip, [tmp_path / "in"], tmp_path / "out")
    out = read_image(res.output, 2)
    assert out.data.shape == (1, 70, 90) and out.channel_names == ["smooth"]
    want = Smooth()(torch.from_numpy(img.astype(np.float32))[None, None])[0].numpy()
    np.testing.assert_allclose(out.data[:, 5:-5, 5:-5], want[:, 5:-5, 5:-5], rtol=1e-5)


def test_a_package_halo_can_be_given_and_is_checked(foreign_zip, tmp_path):
    from mmv_zoo.predict.sources import open_predictor

    predictor = open_predictor(foreign_zip, options=Options(halo=[3, 4]))
    assert predictor.halo == [3, 4]  # instead of the halo the package declares
    assert open_predictor(foreign_zip, options=Options(halo=[6])).halo == [6, 6]  # one value: every axis
    with pytest.raises(DataError, match=r"--halo \[3, 4, 5\]: give one value >= 0, or 2, one per space axis "
                                        r"\['y', 'x'\]"):
        open_predictor(foreign_zip, options=Options(halo=[3, 4, 5]))


def test_our_package_matches_our_run(our_zip, run_2d, data_2d, tmp_path):
    image = sorted((data_2d / "images").iterdir())[0]
    (pkg,) = predict_files(our_zip, [image], tmp_path / "pkg")
    (run,) = predict_files(run_2d, [image], tmp_path / "run", options=Options(probabilities=True, border="mirror"))
    a, b = read_image(pkg.output, 2).data, read_image(run.output, 2).data
    assert a.shape == b.shape == (2, 96, 96)
    # the same tiler and halo on both paths (a package mirrors the border by its halo, as bioimageio.core
    # does; a run predicts the image alone unless told); the package's preprocessing is scale_range
    np.testing.assert_allclose(a, b, atol=1e-4)
    (plain,) = predict_files(run_2d, [image], tmp_path / "plain", probabilities=True)
    c = read_image(plain.output, 2).data
    assert np.abs(c - b).max() > 1e-4 and np.abs(c - b)[:, 40:56, 40:56].max() < 1e-5  # borders only


def test_state_dict_needs_trust(tmp_path, data_2d):
    pkg = foreign_package(tmp_path / "sd", state_dict_only=True)
    image = sorted((data_2d / "images").iterdir())[0]
    with pytest.raises(RunError, match="--trust-code"):
        predict_files(pkg, [image], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (res,) = predict_files(pkg, [image], tmp_path / "out", trust_code=True)
    assert read_image(res.output, 2).data.shape == (1, 96, 96)


def test_missing_library_is_named(tmp_path, data_2d):
    """State-dict weights whose architecture imports a library that is not installed: the message
    names the library; nothing else runs, so nothing is written."""
    pkg = foreign_package(tmp_path / "lib", state_dict_only=True, needs="import not_a_real_lib_xyz.nets")
    image = sorted((data_2d / "images").iterdir())[0]
    with pytest.raises(RunError, match=r"needs the Python library not_a_real_lib_xyz, not installed"):
        predict_files(pkg, [image], tmp_path / "out", trust_code=True)
    assert not (tmp_path / "out").exists()


def test_tampered_package_is_refused(foreign_zip, tmp_path, data_2d):
    bad = tmp_path / "tampered.zip"
    with zipfile.ZipFile(foreign_zip) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("out.npy"):
                data = data[:-8] + b"\x00" * 8  # same size, different bytes: the sha256 no longer matches
            dst.writestr(item, data)
    with pytest.raises(RunError, match="tampered.zip"):
        predict_files(bad, [sorted((data_2d / "images").iterdir())[0]], tmp_path / "out")


def test_wrong_channel_count_is_refused(foreign_zip, tmp_path):
    rgb = np.zeros((3, 32, 32), np.uint8)
    rgb[1] = 7  # three different channels (identical ones would be a grey image saved as RGB)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="minisblack", metadata={"axes": "CYX"})
    with pytest.raises(DataError, match="takes 1"):
        predict_files(foreign_zip, [tmp_path / "rgb.tif"], tmp_path / "out")


def test_unzipped_package_folder_and_rdf(foreign_zip, tmp_path):
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(foreign_zip) as z:
        z.extractall(folder)
    assert is_package(folder) and is_package(folder / "rdf.yaml")
    tifffile.imwrite(tmp_path / "img.tif", np.ones((40, 40), np.uint16))
    for source in (folder, folder / "rdf.yaml"):
        (res,) = predict_files(source, [tmp_path / "img.tif"], tmp_path / source.name, overwrite=True)
        np.testing.assert_allclose(read_image(res.output, 2).data, 2.0, rtol=1e-6)


def test_verification_is_cached_per_package(foreign_zip, tmp_path, monkeypatch):
    import bioimageio.core

    from mmv_zoo.predict.package_predictor import PackagePredictor, package_digest

    monkeypatch.setenv("MMV_ZOO_CACHE", str(tmp_path / "cache"))
    first = PackagePredictor(foreign_zip)
    assert first.weight_format == "torchscript"
    assert (tmp_path / "cache" / "verified" / f"{package_digest(foreign_zip)}.json").is_file()

    def no_second_test(*args, **kwargs):
        raise AssertionError("test_model ran again for a verified package")

    monkeypatch.setattr(bioimageio.core, "test_model", no_second_test)
    assert PackagePredictor(foreign_zip).weight_format == "torchscript"


def test_cli_test_verb(foreign_zip, tmp_path, capsys):
    from .test_cli import run_cli

    code, out, _ = run_cli(["test", str(foreign_zip)], capsys)
    assert code == 0 and "torchscript" in out and "passed" in out
    sd = foreign_package(tmp_path / "sd", state_dict_only=True)
    code, out, _ = run_cli(["test", str(sd)], capsys)
    assert code == 1 and "needs --trust-code" in out
    code, out, _ = run_cli(["test", str(sd), "--trust-code"], capsys)
    assert code == 0 and "passed" in out


def test_cli_test_verb_bad_paths(tmp_path, capsys):
    from .test_cli import assert_clean_error, run_cli

    code, _, err = run_cli(["test", str(tmp_path / "nothing.zip")], capsys)
    assert_clean_error(code, err, "nothing.zip", "no such file")
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_cli(["test", str(tmp_path / "notes.txt")], capsys)
    assert_clean_error(code, err, "notes.txt", "BioImage.IO")
