"""`mmv-zoo predict` with a BioImage.IO model package in format 0.4, built with bioimageio.spec's own
0.4 API (no mmv_zoo), which mmv_zoo reads upgraded to 0.5 through bioimageio.spec. Offline: the
bioimageio cache lives in tmp and any attempt to open a non-local socket is recorded and refused."""

from __future__ import annotations

import socket
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from .conftest import SAMPLE

IMAGE = SAMPLE / "holdout" / "images" / "20P1_POS0007_D_1UL.tif"
KERNEL = np.array([[0.5, -1.0, 0.25], [1.0, 2.0, -0.5], [0.0, 0.75, -1.5]], np.float32)
BIAS = -0.2
PERCENTILES = (1.0, 99.5)
EPS = 1e-6  # scale_range's default eps


class ConvSigmoid(torch.nn.Module):
    """One fixed 3x3 convolution (edge-replicating, as bioimageio.core pads a sample's border) and a sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate")
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(KERNEL)[None, None])
            self.conv.bias.fill_(BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


def expected(raw: np.ndarray) -> np.ndarray:
    """The package's computation in plain numpy: per-sample scale_range, then the convolution and sigmoid."""
    x = raw.astype(np.float64)
    lo, hi = np.percentile(x, PERCENTILES)
    x = (x - lo) / (hi - lo + EPS)
    p = np.pad(x, 1, mode="edge")
    h, w = x.shape
    conv = sum(KERNEL[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3)) + BIAS
    return (1 / (1 + np.exp(-conv)))[None].astype(np.float32)


def package_v04(folder: Path) -> Path:
    """A genuine format-0.4 model package: axes bcyx, min/step shape, halo, scale_range, torchscript."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_4

    folder.mkdir(parents=True, exist_ok=True)
    raw = (np.random.default_rng(0).random((1, 1, 64, 64)) * 1000).astype(np.float32)
    np.save(folder / "in.npy", raw)
    np.save(folder / "out.npy", expected(raw[0, 0])[None])
    torch.jit.script(ConvSigmoid().eval()).save(str(folder / "w.pt"))
    (folder / "README.md").write_text("# conv sigmoid\nOne 3x3 convolution and a sigmoid.\n")
    descr = v0_4.ModelDescr(
        format_version="0.4.10", name="Conv sigmoid (format 0.4)", description="made with bioimageio.spec v0_4",
        authors=[v0_4.Author(name="Someone Else")], cite=[v0_4.CiteEntry(text="nobody", doi="10.1234/none")],
        license="MIT", documentation=folder / "README.md", timestamp=datetime.now(UTC),
        inputs=[v0_4.InputTensorDescr(
            name="raw", axes="bcyx", data_type="float32",
            shape=v0_4.ParameterizedInputShape(min=[1, 1, 16, 16], step=[0, 0, 8, 8]),
            preprocessing=[v0_4.ScaleRangeDescr(kwargs=v0_4.ScaleRangeKwargs(
                mode="per_sample", axes="yx", min_percentile=PERCENTILES[0], max_percentile=PERCENTILES[1]))])],
        outputs=[v0_4.OutputTensorDescr(
            name="prob", axes="bcyx", data_type="float32", halo=[0, 0, 4, 4],
            shape=v0_4.ImplicitOutputShape(reference_tensor="raw", scale=[1, 1, 1, 1], offset=[0, 0, 0, 0]))],
        test_inputs=[folder / "in.npy"], test_outputs=[folder / "out.npy"],
        weights=v0_4.WeightsDescr(torchscript=v0_4.TorchscriptWeightsDescr(
            source=folder / "w.pt", pytorch_version=torch.__version__.split("+")[0])))
    return save_bioimageio_package(descr, output_path=folder / "conv_v04.zip")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """bioimageio's cache in tmp; connections to anything but this machine are recorded and refused."""
    import bioimageio.core._settings as core_settings
    from bioimageio.spec._internal import _settings as spec_settings

    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError(f"test_package_v04 is offline: refused {address}")
        return real_connect(self, address)

    cache = tmp_path_factory.mktemp("bioimageio_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOIMAGEIO_CACHE_PATH", str(cache))
        mp.setattr(spec_settings.settings, "cache_path", cache)
        mp.setattr(core_settings.settings, "cache_path", cache)
        mp.setattr(socket.socket, "connect", connect)
        yield attempts


@pytest.fixture(scope="module")
def zip_v04(offline, tmp_path_factory) -> Path:
    return package_v04(tmp_path_factory.mktemp("v04"))


def test_package_is_format_04(zip_v04, offline):
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_4, v0_5

    from mmv_zoo.predict.package_predictor import load_package

    with zipfile.ZipFile(zip_v04) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert rdf["format_version"] == "0.4.10" and rdf["inputs"][0]["axes"] == "bcyx"
    assert isinstance(load_description(zip_v04, format_version="discover"), v0_4.ModelDescr)
    descr = load_package(zip_v04)  # what mmv_zoo predicts with: upgraded to 0.5, halo and preprocessing kept
    assert isinstance(descr, v0_5.ModelDescr)
    assert [a.halo for a in descr.outputs[0].axes if a.type == "space"] == [4, 4]
    assert "scale_range" in [p.id for p in descr.inputs[0].preprocessing]
    assert not offline


def test_v04_package_predicts_through_cli(zip_v04, offline, tmp_path, capsys):
    from .test_cli import run_cli

    raw = tifffile.imread(IMAGE)
    assert raw.shape == (400, 400)  # larger than one block (at most 16 + 16 * 8 = 144): tiled with the halo
    code, out, err = run_cli(["predict", str(zip_v04), str(IMAGE), "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "1 predicted" in out
    got = tifffile.imread(tmp_path / "out" / "20P1_POS0007_D_1UL.ome.tiff").squeeze()
    assert got.shape == (400, 400) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected(raw)[0], atol=1e-4, rtol=0)
    assert not offline


def test_tampered_v04_package_is_refused(zip_v04, offline, tmp_path, capsys):
    from .test_cli import assert_clean_error, run_cli

    bad = tmp_path / "tampered_v04.zip"
    with zipfile.ZipFile(zip_v04) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "w.pt":
                data = data[:-8] + bytes(b ^ 0xFF for b in data[-8:])  # same size, other bytes: sha256 differs
            dst.writestr(item, data)
    code, _, err = run_cli(["predict", str(bad), str(IMAGE), "--out", str(tmp_path / "out")], capsys)
    assert_clean_error(code, err, "tampered_v04.zip", "SHA256 mismatch", "w.pt")
    assert "0.5.12" not in err  # only the failing check, not the noise of the upgrade after it
    assert not (tmp_path / "out").exists()
    assert not offline
