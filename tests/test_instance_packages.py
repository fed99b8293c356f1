"""Instance packages give labels in any consumer: the EmbedSeg clustering is compiled with the network
into the TorchScript weights, so bioimageio.core (and a bare `torch.jit.load` without mmv_zoo) return
the labels `mmv-zoo predict` writes, in 2D and 3D; an empty image gives empty labels; more instances
than uint16 holds are refused with a message; the embeddings stay available as a second package."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from mmv_zoo.metrics import average_precision

from .test_embedseg import balls_3d, entry_2d, entry_3d, fit, model_of, shapes_2d


def _checkpoint(folder: Path, model) -> Path:
    """The fitted framework saved as an mmv_zoo checkpoint (what `load_model` and export read)."""
    path = folder / "model.ckpt"
    torch.save({"hyper_parameters": {"entry": model.entry.model_dump(mode="json"), "slug": model.entry.slug},
                "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def fitted(request, tmp_path_factory):
    """(checkpoint, image, true labels, sample tif) of a tiny EmbedSeg fitted to one synthetic image."""
    dims = request.param
    folder = tmp_path_factory.mktemp(f"instances{dims}d")
    entry = entry_2d() if dims == 2 else entry_3d()
    img, lab = shapes_2d() if dims == 2 else balls_3d((12, 32, 32))  # 12 planes: the 3D package's least
    model = model_of(entry)
    fit(model, img, lab, 400 if dims == 2 else 300)
    sample = folder / "sample.tif"
    tifffile.imwrite(sample, img[0])
    return _checkpoint(folder, model.eval()), img, lab, sample


@pytest.fixture(scope="module")
def packages(fitted, tmp_path_factory):
    """(labels package, embeddings package) exported from the fitted checkpoint."""
    from mmv_zoo.export.package import export_package

    ckpt, _, _, sample = fitted
    folder = tmp_path_factory.mktemp("packages")
    labels = export_package(ckpt, folder / "labels.zip", sample=sample).zip_path
    raw = export_package(ckpt, folder / "embeddings.zip", sample=sample, embeddings=True,
                         formats=("torchscript", "onnx")).zip_path
    return labels, raw


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


def _core_predict(package: Path, image: np.ndarray, **kw) -> np.ndarray:
    """bioimageio.core's own prediction of the package on one (C, *S) image: (1, *S)."""
    from bioimageio.core import predict

    out = predict(model=str(package), inputs=image[None].astype(np.float32), **kw)
    return np.asarray(next(iter(out.members.values())).data.values)[0]


def test_labels_package_gives_what_mmv_zoo_predict_gives(fitted, packages):
    from mmv_zoo.predict.engine import RunPredictor
    from mmv_zoo.predict.package_predictor import PackagePredictor
    from mmv_zoo.predict.sources import open_predictor

    ckpt, img, lab, _ = fitted
    labels, _ = packages
    rdf = _rdf(labels)
    assert [o["id"] for o in rdf["outputs"]] == ["labels"] and rdf["outputs"][0]["data"]["type"] == "uint16"
    assert list(rdf["weights"]) == ["torchscript"]
    assert rdf["config"]["mmv_zoo"]["package_output"] == "labels"
    space = [a for a in rdf["inputs"][0]["axes"] if a["type"] == "space"]
    assert space and all(a["concatenable"] is False for a in space)  # the spec's "not block by block"

    run_labels, _ = RunPredictor(ckpt).predict(img)  # the run: tiled embeddings, clustered whole
    by_core = _core_predict(labels, img)  # whole image, as bioimageio.core predicts by default
    assert by_core.dtype == np.uint16 and by_core.shape == run_labels.shape
    # bioimageio.core pads the image symmetrically by the halo: the package's model on that, inside
    halo = [a["halo"] for a in rdf["outputs"][0]["axes"] if a["type"] == "space"]
    with zipfile.ZipFile(labels) as z:
        module = torch.jit.load(io.BytesIO(z.read("weights_torchscript.pt")))
    with torch.no_grad():
        padded = module(torch.from_numpy(np.pad(img[None], [(0, 0), (0, 0), *((h, h) for h in halo)],
                                                mode="symmetric").astype(np.float32))).numpy()[0]
    inner = tuple(slice(h, h + n) for h, n in zip(halo, img.shape[1:], strict=True))
    np.testing.assert_array_equal(by_core[0], padded[0][inner])
    # the run does not pad: the embeddings near the edge differ a little, which may split an object
    # whose clustering is borderline (this fixture's two-disk object near the edge); both find the objects
    assert average_precision(run_labels[0], lab[0], 0.5) >= 0.75
    assert average_precision(by_core[0], lab[0], 0.5) >= 0.75

    by_predict, names = open_predictor(labels)(img)  # mmv-zoo predict PACKAGE: whole, padded as core pads
    assert names == ["labels"] and by_predict.dtype == np.uint16
    assert average_precision(by_predict[0], by_core[0], 0.5) >= 0.99
    through_core, _ = PackagePredictor(labels)(img)  # the path for packages the fast one does not cover
    np.testing.assert_array_equal(through_core, by_core)


def test_embeddings_package_clusters_like_the_labels_package(fitted, packages):
    from mmv_zoo.predict.sources import open_predictor

    _, img, _, _ = fitted
    labels, raw = packages
    rdf = _rdf(raw)
    assert rdf["config"]["mmv_zoo"]["package_output"] == "embeddings" and set(rdf["weights"]) == {"torchscript",
                                                                                                 "onnx"}
    clustered, _ = open_predictor(raw)(img)  # mmv_zoo clusters the package's embeddings after it
    direct, _ = open_predictor(labels)(img)
    assert average_precision(clustered[0], direct[0], 0.5) >= 0.99


def test_bare_torchscript_without_mmv_zoo_returns_the_labels(packages, tmp_path):
    """A consumer's view: the weights alone, in a process where mmv_zoo cannot be imported."""
    labels, _ = packages
    code = f"""
import io, sys, zipfile
sys.modules["mmv_zoo"] = None  # import mmv_zoo fails from here on
import numpy as np, torch
z = zipfile.ZipFile({str(labels)!r})
module = torch.jit.load(io.BytesIO(z.read("weights_torchscript.pt")))
x = np.load(io.BytesIO(z.read("test_input.npy")))
want = np.load(io.BytesIO(z.read("test_output.npy")))
with torch.no_grad():
    got = module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
print(got.dtype, got.shape, int(got.max()), int(want.max()))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dtype, *_, got_max, want_max = proc.stdout.split()
    assert dtype == "int32" and int(want_max) > 0 and int(got_max) > 0


def test_bare_torchscript_reproduces_the_test_output(packages):
    """The package's test output is the module's labels on the preprocessed test input (what core runs)."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample
    from bioimageio.spec import load_description

    labels, _ = packages
    descr = load_description(labels)
    sample = get_test_input_sample(descr)
    create_prediction_pipeline(bioimageio_model=descr, weight_format="torchscript").apply_preprocessing(sample)
    pre = np.asarray(sample.members[descr.inputs[0].id].transpose([a.id for a in descr.inputs[0].axes]).data.values)
    with zipfile.ZipFile(labels) as z:
        module = torch.jit.load(io.BytesIO(z.read("weights_torchscript.pt")))
        want = np.load(io.BytesIO(z.read("test_output.npy")))
    with torch.no_grad():
        got = module(torch.from_numpy(np.ascontiguousarray(pre, np.float32))).numpy()
    np.testing.assert_array_equal(got.astype(np.uint16), want)


def test_labels_reach_the_edge_of_an_image_given_without_padding(fitted, packages):
    """bioimageio.core 0.9.6 predicts a whole image without padding it by the halo: the model then
    clusters it to its edge. Padded by the halo (symmetric as bioimageio.core 0.11 and mmv-zoo predict
    pad, reflect, edge or zeros), only the image inside is clustered and the padding is labelled 0.
    Unpadded, the labels match the run's (`mmv-zoo predict` on a run stops tiles at the image border);
    padded symmetrically, bioimageio.core 0.11's."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_description

    from mmv_zoo.predict.engine import RunPredictor

    ckpt, img, _, _ = fitted
    labels, _ = packages
    run_labels = RunPredictor(ckpt).predict(img)[0][0]
    descr = load_description(labels)
    halo = [a.halo for a in descr.outputs[0].axes if a.type == "space"]
    band = np.ones(run_labels.shape, bool)
    band[tuple(slice(h, n - h) for h, n in zip(halo, run_labels.shape, strict=True))] = False
    assert run_labels[band].any()  # objects lie in the outer band the halo would cover
    sample = create_sample_for_model(descr, inputs={descr.inputs[0].id: img[None].astype(np.float32)})
    create_prediction_pipeline(bioimageio_model=descr, weight_format="torchscript").apply_preprocessing(sample)
    pre = np.asarray(sample.members[descr.inputs[0].id].transpose([a.id for a in descr.inputs[0].axes]).data.values)
    with zipfile.ZipFile(labels) as z:
        module = torch.jit.load(io.BytesIO(z.read("weights_torchscript.pt")))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()[0, 0]

    as_is = run(pre)
    assert as_is[band].any() and average_precision(as_is, run_labels, 0.5) >= 0.99
    for mode in ("symmetric", "reflect", "edge", "constant"):
        padded = run(np.pad(pre, [(0, 0), (0, 0), *((h, h) for h in halo)], mode=mode))
        inner = tuple(slice(h, h + n) for h, n in zip(halo, run_labels.shape, strict=True))
        outside = np.ones(padded.shape, bool)
        outside[inner] = False
        assert not padded[outside].any() and padded[inner].any(), mode  # the padding recognised and cut
        if mode == "symmetric":  # as bioimageio.core 0.11 pads: its labels
            np.testing.assert_array_equal(padded[inner], _core_predict(labels, img)[0])


def test_an_image_without_objects_gives_empty_labels(fitted, packages):
    _, img, _, _ = fitted
    labels, _ = packages
    empty = _core_predict(labels, np.zeros_like(img))
    assert empty.dtype == np.uint16 and empty.shape == img.shape and not empty.any()


def test_more_instances_than_the_labels_hold_are_refused(fitted):
    """The compiled module refuses an image with more instances than `max_labels` (uint16: 65535), with
    a message that says so; shown on the 4 objects of the fitted image with a bound of 2."""
    from mmv_zoo.frameworks.embedseg.cluster import label_module
    from mmv_zoo.frameworks.embedseg.embedding import entry_spacing
    from mmv_zoo.run import load_model

    ckpt, img, _, _ = fitted
    model = load_model(ckpt)
    x = torch.from_numpy(img[None])
    halo = [0] * (img.ndim - 1)
    module = label_module(model.inference_model(), model.entry.mmv.embedseg, entry_spacing(model.entry), halo, x)
    n = int(module(x).max())
    assert n >= 3
    bounded = label_module(model.inference_model(), model.entry.mmv.embedseg, entry_spacing(model.entry), halo, x,
                           max_labels=n - 1)
    with pytest.raises(torch.jit.Error, match=f"more than {n - 1} instances.*uint32"):
        bounded(x)


def test_tiling_a_labels_package_restarts_labels_per_tile(fitted, packages):
    """What a consumer that tiles gets (documented in the README): every block clustered on its own,
    so a block's labels restart at 1 -- which is why mmv_zoo predicts these packages whole."""
    _, img, _, _ = fitted
    labels, _ = packages
    if img.ndim == 4:
        pytest.skip("2D shows it; the 3D image is smaller than two blocks")
    big = np.tile(img, (1, 2, 2))  # 8 objects
    whole = _core_predict(labels, big)
    tiled = _core_predict(labels, big, blocksize_parameter=0)  # the smallest blocks the package allows
    assert len(np.unique(whole)) - 1 >= 8
    assert len(np.unique(tiled)) < len(np.unique(whole))  # labels of different blocks collide


def _declared_not_concatenable(package: Path, out: Path) -> Path:
    """`package` with its input's space axes declared not concatenable (as a labels package is)."""
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                for a in rdf["inputs"][0]["axes"]:
                    if a["type"] == "space":
                        a["concatenable"] = False
                data = yaml.safe_dump(rdf, sort_keys=False).encode()
            dst.writestr(info, data)
    return out


def test_a_package_declared_not_concatenable_is_predicted_whole(fitted, packages, tmp_path, monkeypatch):
    """mmv-zoo predict honours the declaration for any package: an image larger than its tile budget
    goes through the model in one piece, as bioimageio.core's whole-image prediction does, and --halo
    (a tiling choice) is refused naming the axes. The embeddings package, tileable as exported, shows it."""
    from mmv_zoo.errors import RunError
    from mmv_zoo.predict import package_predictor, tiler
    from mmv_zoo.predict.package_predictor import PackagePredictor

    _, img, _, _ = fitted
    _, raw = packages
    assert all(a["concatenable"] is True for a in _rdf(raw)["inputs"][0]["axes"] if a["type"] == "space")
    whole_only = _declared_not_concatenable(raw, tmp_path / "whole_only.zip")
    big = np.tile(img, (1,) + (2,) * (img.ndim - 1)).astype(np.float32)
    monkeypatch.setitem(tiler.DEFAULT_BUDGET, img.ndim - 1, 16 ** (img.ndim - 1))  # many tiles if tiled
    calls = []
    real = package_predictor.predict_tiled
    monkeypatch.setattr(package_predictor, "predict_tiled", lambda *a, **k: calls.append(1) or real(*a, **k))

    tiled, _ = PackagePredictor(raw, raw=True).outputs(big)
    assert calls  # the same package, tileable: mmv_zoo's tiler
    calls.clear()
    whole, _ = PackagePredictor(whole_only, raw=True).outputs(big)
    assert not calls and whole.shape == tiled.shape
    np.testing.assert_allclose(whole, _core_predict(raw, big), atol=1e-4)  # core's whole-image prediction
    with pytest.raises(RunError, match=r"--halo.*\['.*x'\] not concatenable"):
        PackagePredictor(whole_only, halo=[4])


def test_options_a_labels_package_cannot_honour_are_refused(packages, tmp_path, fitted):
    from mmv_zoo.errors import RunError
    from mmv_zoo.export import ExportError
    from mmv_zoo.export.package import export_package
    from mmv_zoo.predict.sources import open_predictor
    from mmv_zoo.settings.predict import Options

    labels, _ = packages
    for opts, flag in ((Options(probabilities=True), "--probabilities"), (Options(threshold=0.5), "--threshold"),
                       (Options(halo=[4]), "--halo")):
        with pytest.raises(RunError, match=flag):
            open_predictor(labels, options=opts)
    ckpt, _, _, sample = fitted
    with pytest.raises(ExportError, match="formats.*torchscript weights only.*--embeddings"):
        export_package(ckpt, tmp_path / "x.zip", sample=sample, formats=("torchscript", "onnx"))
    assert not (tmp_path / "x.zip").exists()


def test_a_sample_without_objects_is_refused_with_what_to_do(fitted, tmp_path):
    """BioImage.IO refuses an all-zero test output: exporting the labels package with an empty sample
    says so and names the way out (another sample, or the embeddings); nothing is written."""
    from mmv_zoo.export import ExportError
    from mmv_zoo.export.package import export_package

    ckpt, img, _, _ = fitted
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.full_like(img[0], 0.01))  # faint, flat: background for the fitted model
    with pytest.raises(ExportError, match="empty.tif: the model finds no instance.*--embeddings"):
        export_package(ckpt, tmp_path / "x.zip", sample=empty)
    assert not (tmp_path / "x.zip").exists()
