"""BioImage.IO consumers that tile reproduce `mmv-zoo predict`: the exported halo covers the
network's receptive field and both sides mirror the image border the same way."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mmv_zoo.io.read import read_image
from tests.conftest import TINY_2D


@pytest.fixture(scope="module")
def wide_run(data_2d, tmp_path_factory):
    """A tiny 2D run whose training patch (48) does not cap the halo: field 22 -> halo 24."""
    from mmv_zoo.entry import load_entry
    from mmv_zoo.training.train import train

    entry = load_entry("nuclei_semseg_2d", TINY_2D + ["data.patch=[48,48]"])
    return train(entry, data_2d, tmp_path_factory.mktemp("wide"), progress=False).folder


def test_bioimageio_core_tiles_reproduce_mmv_zoo_predict(wide_run, data_2d, tmp_path):
    import yaml
    from bioimageio.core import Tensor, create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_description

    from mmv_zoo.export.package import export_package
    from mmv_zoo.predict.engine import Options, predict_array
    from mmv_zoo.predict.halo import entry_halo
    from mmv_zoo.run import load_model

    model = load_model(wide_run)
    halo, radius = entry_halo(model.entry, model.inference_model())
    assert halo == [24, 24] and max(radius) <= 24
    out = export_package(wide_run, tmp_path / "m.zip", formats=("torchscript", "onnx"))
    rdf = yaml.safe_load(__import__("zipfile").ZipFile(out.zip_path).read("rdf.yaml"))
    assert [a.get("halo") for a in rdf["outputs"][0]["axes"] if a["type"] == "space"] == [24, 24]

    x = read_image(sorted((data_2d / "images").iterdir())[1], 2).data.astype(np.float32)  # (1, 96, 96)
    x = x[:, :, :90]  # not a multiple of the network's step: the border tiles are padded
    ours = predict_array(model, x, model.entry, options=Options(border="mirror"))  # as consumers tile
    descr = load_description(out.zip_path)
    for fmt in ("torchscript", "onnx"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipeline = create_prediction_pipeline(descr, weight_format=fmt)
            sample = create_sample_for_model(descr, inputs={descr.inputs[0].id: Tensor.from_numpy(
                x[None], dims=("batch", "channel", "y", "x"))})
            for n in (0, 3):  # blocks of min size (many, 8-pixel cores) and larger ones
                ns = {(descr.inputs[0].id, a.id): n for a in descr.inputs[0].axes if a.type == "space"}
                got = pipeline.predict_sample_with_blocking(sample, ns=ns).members[descr.outputs[0].id]
                theirs = got.transpose(["batch", "channel", "y", "x"]).data.values[0]
                assert theirs.shape == ours.shape
                rel = np.abs(theirs - ours).max() / np.abs(ours).max()
                assert rel <= 1e-3, (fmt, n, rel)
