"""Checkpoints as MMV_Im2Im 0.8.1's own trainer writes them (tests/data/im2im, made by
`scripts/im2im_compat.py --write-test-data`: the paper's denoising, label-free and modality-transfer
configurations with their networks shrunk, a few CPU steps): each loads into its entry's network and
predicts what MMV_Im2Im's own inference predicted; a checkpoint holding any other pickled object is
refused with one line, and never unpickled. Needs no MMV_Im2Im installation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmv_zoo.io.read import read_image
from mmv_zoo.predict.batch import predict_files
from mmv_zoo.settings.predict import Options

from .test_cli import assert_clean_error, run_cli

DATA = Path(__file__).parent / "data" / "im2im"
INPUT = DATA / "input.tif"  # a 40x32x32 crop of the cells3d nucleus stack (uint16)
KINDS = ("denoising", "labelfree", "modality_transfer")


def _checkpoint(kind: str) -> Path:
    return DATA / kind / f"{kind}.ckpt"


def _load_trusted_callbacks(path: Path) -> dict:
    """A test checkpoint, read the way mmv_zoo reads it (weights only, MONAI's MetaTensor allowed)."""
    import torch

    from mmv_zoo.remote.im2im_checkpoint import _safe_classes

    with torch.serialization.safe_globals(_safe_classes()):
        return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_predicts_what_mmv_im2im_predicted(kind, tmp_path):
    """The whole volume, tiles seeing nothing past the image (`border=image`: one pass of the network,
    as MMV_Im2Im's inference without a sliding window runs it). Both sides are float32 outputs of the
    same weights on the input each tool normalized with the same settings; what differs is the order
    of float32 sums (convolution kernels: about 1e-6 of the output's largest value) and, for modality
    transfer, MONAI's percentile of a tensor under 1e6 voxels: torch.quantile in float32 puts the
    99.99th percentile of input.tif at 61431.59 where float64 (numpy, mmv_zoo, BioImage.IO's
    scale_range) gives 61433.76, so MMV_Im2Im's normalized input is off by up to 8e-5 and its output by
    7.4e-4 of 10 (7e-5 of the largest value; the same every run). The tolerance, 1e-4 of the largest
    expected value, covers both; a wrong key, norm layer or normalization is off by orders of
    magnitude more."""
    expected = np.load(DATA / kind / "expected.npy").astype(np.float32)
    (res,) = predict_files(DATA / kind, [INPUT], tmp_path, options=Options(border="image"))
    got = np.squeeze(read_image(res.output, 3).data)
    assert got.shape == expected.shape == (40, 32, 32)
    scale = float(np.abs(expected).max())
    assert scale > 0 and float(expected.std()) > 1e-3 * scale  # not a constant output: the test would be void
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.99999


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoints_are_small_and_as_mmv_im2im_wrote_them(kind):
    ckpt = _checkpoint(kind)
    assert ckpt.stat().st_size < 1_000_000
    data = _load_trusted_callbacks(ckpt)
    assert data["pytorch-lightning_version"] and any(k.startswith("net.") for k in data["state_dict"])
    if kind == "labelfree":  # the paper's label-free callbacks: full checkpoint, MetaTensor scores
        from monai.data import MetaTensor

        scores = [v for state in data["callbacks"].values() for v in state.values() if isinstance(v, MetaTensor)]
        assert scores and scores[0].applied_operations  # keyed by monai's TraceKeys enum
        assert data["optimizer_states"]
    else:  # the paper's ModelCheckpoint(save_weights_only=True): no callback state at all
        assert "callbacks" not in data


def test_a_stored_checkpoint_exports_to_a_package_bioimageio_core_passes(tmp_path):
    """`mmv-zoo export ENTRY --sample IMAGE` of the denoising checkpoint: the export runs bioimageio.core's
    test_model on the package before writing it, and writes nothing if that fails."""
    from mmv_zoo.export.package import export_package

    result = export_package(DATA / "denoising", tmp_path / "denoising.zip", sample=INPUT, formats=("torchscript",))
    assert result.test_status == "passed" and result.test_results == {"torchscript": "passed"}
    assert result.zip_path.is_file()


class Harmless:
    """A plain Python object in a checkpoint's callback state. Rebuilding it would call
    __setstate__, which leaves a mark: it must never happen."""

    marker: Path | None = None

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("unpickled")
        self.__dict__.update(state)


def test_other_pickled_objects_are_refused_naming_entry_and_file(tmp_path, capsys):
    import torch

    data = _load_trusted_callbacks(_checkpoint("labelfree"))
    marker = tmp_path / "rebuilt"
    data["callbacks"]["MyCallback"] = {"state": Harmless(marker)}
    torch.save(data, tmp_path / "custom.ckpt")
    entry = tmp_path / "my_entry"
    entry.mkdir()
    rdf = yaml.safe_load((DATA / "labelfree" / "rdf.yaml").read_text())
    rdf["config"]["mmv_zoo"]["pretrained"] = {"source": "../custom.ckpt", "format": "mmv_im2im_checkpoint"}
    (entry / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    shutil.copy(DATA / "labelfree" / "README.md", entry / "README.md")

    code, _, err = run_cli(["predict", str(entry), str(INPUT), "--out", str(tmp_path / "out")], capsys)
    assert_clean_error(code, err, str(entry / "rdf.yaml"), "custom.ckpt", "weights_only=True",
                       "pickled Python objects", "Harmless")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
