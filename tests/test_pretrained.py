"""Pretrained weights in entries: the bundled model predicts with no training and no network, and
publish -> pull -> predict round-trips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from mmv_zoo.entry import ZOO_DIR, EntryError, bundled_entries, load_entry
from mmv_zoo.errors import RunError
from mmv_zoo.io.read import read_image
from mmv_zoo.predict.batch import predict_files
from mmv_zoo.predict.engine import Options

from .conftest import SAMPLE

HOLDOUT = "20P1_POS0007_D_1UL"
GOLDEN = Path(__file__).parent / "data" / "nuclei_semseg_2d" / f"expected_{HOLDOUT}_labels.tif"
"""What the shipped model predicts for the held-back image (see that folder's SOURCE.md)."""


def test_bundled_model_predicts_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("MMV_ZOO_OFFLINE", "1")
    image = SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"
    (res,) = predict_files("nuclei_semseg_2d", [image], tmp_path)
    labels = read_image(res.output, 2).data[0]
    expected = tifffile.imread(GOLDEN)
    assert labels.shape == expected.shape == (400, 400)
    assert (labels == expected).mean() > 0.999  # CPUs may differ in the last float bit at a class border
    truth = tifffile.imread(SAMPLE / "holdout" / "labels" / f"{HOLDOUT}.tif") > 0
    f1 = 2 * (labels.astype(bool) & truth).sum() / (labels.astype(bool).sum() + truth.sum())
    assert f1 > 0.95


def _publish_script():
    """scripts/publish_pretrained.py: the recipe of the shipped models, with their held-back data."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "publish_pretrained.py"
    spec = importlib.util.spec_from_file_location("publish_pretrained", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _holdout(slug: str, tmp: Path) -> tuple[Path, np.ndarray, int]:
    """The image the shipped `slug` never saw, its reference (labels, image or clean image), dims."""
    holdout = SAMPLE / "holdout"
    if slug == "synthetic_2d_pix2pix":  # mask -> image
        return holdout / "labels" / f"{HOLDOUT}.tif", tifffile.imread(holdout / "images" / f"{HOLDOUT}.tif"), 2
    if slug.startswith("denoise_"):  # the script's seeded noisy copy of a clean held-back image
        script = _publish_script()
        folder = (script.n2v_3d_data if "3d" in slug else script.n2v_2d_data)(tmp / "data")[1]
        (noisy,) = sorted((folder / "noisy").glob("*.tif"))
        return noisy, tifffile.imread(folder / "clean" / noisy.name), 3 if "3d" in slug else 2
    return holdout / "images" / f"{HOLDOUT}.tif", tifffile.imread(holdout / "labels" / f"{HOLDOUT}.tif"), 2


# what each shipped model must reach on its held-back image, through `mmv-zoo predict ENTRY IMAGE`
# (the entries' cards record what it reached when published)
SHIPPED = {"nuclei_semseg_2d": ("f1", 0.95), "nuclei_instance_2d": ("ap50", 0.9),
           "unsupervised_seg_2d_cyclegan": ("f1", 0.9), "synthetic_2d_pix2pix": ("pearson", 0.9),
           "denoise_2d_n2v": ("pearson", 0.95), "denoise_3d_n2v": ("pearson", 0.9)}


def test_every_entry_with_bundled_weights_is_checked_here():
    with_weights = {name for name in bundled_entries() if (ZOO_DIR / name / "weights").is_dir()}
    assert with_weights == set(SHIPPED)
    assert {"2D", "3D"} <= {f"{load_entry(n).spatial_dims}D" for n in SHIPPED}


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare here (util-linux)")
@pytest.mark.parametrize("slug", sorted(SHIPPED))
def test_every_shipped_entry_predicts_with_the_network_switched_off(slug, tmp_path):
    """`mmv-zoo predict ENTRY IMAGE` in a new network namespace (no network at all), scored on the
    held-back image (denoisers: better than their noisy input, and close to the clean image)."""
    import subprocess
    import sys

    from mmv_zoo.io.read import image_stem
    from mmv_zoo.metrics import foreground_scores, instance_scores, pearson

    image, reference, dims = _holdout(slug, tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mmv_zoo", "predict", slug, str(image), "--out", str(out)]
    for jail in (["unshare", "-n"], ["unshare", "-rn"]):  # root, else a user namespace
        if subprocess.run([*jail, "true"], capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("cannot create a network namespace here")
    done = subprocess.run([*jail, *cmd], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MMV_ZOO_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    pred = read_image(out / f"{image_stem(image)}.ome.tiff", dims).data[0]
    assert pred.shape == reference.shape
    metric, floor = SHIPPED[slug]
    if metric == "f1":
        score = foreground_scores(pred > 0, reference > 0)["f1"]
    elif metric == "ap50":
        score = instance_scores(pred, reference)["ap50"]
    else:
        score = pearson(pred, reference)
        if slug.startswith("denoise_"):
            assert score > pearson(tifffile.imread(image), reference) + 0.1, "no better than the noisy input"
    assert score >= floor, (slug, metric, score)


def test_shipped_instance_package_gives_labels_in_bioimageio_core_and_bare_torchscript(tmp_path):
    """The consumers' view of the shipped nuclei_instance_2d package: bioimageio.core's whole-image
    prediction returns labels (uint16) that match `mmv-zoo predict nuclei_instance_2d` and the held-back
    ground truth; its TorchScript weights, loaded by a process that cannot import mmv_zoo and fed the
    raw image padded by the halo (the model normalizes it inside), return the same labels."""
    import json
    import subprocess
    import sys

    from bioimageio.core import predict

    from mmv_zoo.metrics import instance_scores
    from mmv_zoo.predict.sources import open_predictor

    package = ZOO_DIR / "nuclei_instance_2d" / "weights" / "nuclei_instance_2d.zip"
    image, truth, _ = _holdout("nuclei_instance_2d", tmp_path)
    x = tifffile.imread(image).astype(np.float32)
    out = predict(model=str(package), inputs=x[None, None])
    by_core = np.asarray(out.members["labels"].data.values)[0, 0]
    by_mmv, _ = open_predictor("nuclei_instance_2d")(x[None])
    assert by_core.dtype == np.uint16 and by_core.shape == truth.shape
    assert instance_scores(by_core, by_mmv[0])["ap50"] >= 0.99
    assert instance_scores(by_core, truth)["ap50"] >= 0.92

    np.save(tmp_path / "x.npy", x)
    code = f"""
import io, json, sys, zipfile
sys.modules["mmv_zoo"] = None  # import mmv_zoo fails from here on
import numpy as np, torch, yaml
z = zipfile.ZipFile({str(package)!r})
rdf = yaml.safe_load(z.read("rdf.yaml"))
assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]] == ["ensure_dtype"]  # it normalizes inside
halo = [a.get("halo", 0) for a in rdf["outputs"][0]["axes"] if a["type"] == "space"]
x = np.load({str(tmp_path / "x.npy")!r})
x = np.pad(x, [(h, h) for h in halo], mode="symmetric").astype(np.float32)
module = torch.jit.load(io.BytesIO(z.read(rdf["weights"]["torchscript"]["source"])))
with torch.no_grad():
    y = module(torch.from_numpy(x)[None, None]).numpy()[0, 0]
y = y[halo[0]:y.shape[0] - halo[0], halo[1]:y.shape[1] - halo[1]]
np.save({str(tmp_path / "y.npy")!r}, y)
print(json.dumps([str(y.dtype), int(y.max())]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    dtype, _ = json.loads(done.stdout.splitlines()[-1])
    bare = np.load(tmp_path / "y.npy")
    assert dtype == "int32" and bare.shape == by_core.shape
    assert instance_scores(bare, by_core)["ap50"] >= 0.99


def test_segmentation_package_class_labels_equal_mmv_zoo_predict(tmp_path):
    """The shipped nuclei_semseg_2d network exported with its class labels output (the default): what
    bioimageio.core's whole-image prediction gives there is `mmv-zoo predict nuclei_semseg_2d`'s labels
    (up to core's normalization statistics, see below)."""
    from bioimageio.core import predict

    from mmv_zoo.export.package import export_package

    image = SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"
    sample = sorted((SAMPLE / "train" / "images").glob("*.tif"))[0]
    package = export_package("nuclei_semseg_2d", tmp_path / "seg.zip", sample=sample, formats=("torchscript",))
    x = tifffile.imread(image).astype(np.float32)
    labels = np.asarray(predict(model=str(package.zip_path), inputs=x[None, None]).members["labels"].data.values)
    expected = tifffile.imread(GOLDEN)  # mmv-zoo predict nuclei_semseg_2d on this image
    assert labels.dtype == np.uint8 and labels.shape == (1, 1, *expected.shape)
    # bioimageio.core pads the raw image by the halo (48) before its percentile normalization, so its
    # statistics differ slightly from mmv_zoo's, taken on the image: 0.3 % of the pixels (F1 0.989)
    fg, ref = labels[0, 0] == 1, expected == 1
    assert (labels[0, 0] == expected).mean() > 0.995 and 2 * (fg & ref).sum() / (fg.sum() + ref.sum()) > 0.985
    # without that padding (core's pipeline on the image itself), the labels are mmv_zoo's away from
    # the edges, where the halo's context is missing
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_description

    descr = load_description(package.zip_path)
    with create_prediction_pipeline(descr, weight_format="torchscript") as pp:
        out = pp.predict_sample_without_blocking(create_sample_for_model(descr, inputs={"raw": x[None, None]}),
                                                 skip_input_padding=True, skip_output_cropping=True)
    plain = np.asarray(out.members["labels"].data.values)[0, 0]
    assert (plain[48:-48, 48:-48] == expected[48:-48, 48:-48]).mean() > 0.9999


def test_entry_without_weights_says_train_first(tmp_path):
    with pytest.raises(EntryError, match="no pretrained weights.*mmv-zoo train labelfree_3d_fnet"):
        predict_files("labelfree_3d_fnet", [SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"], tmp_path)


def test_wrong_sha256_is_refused(tmp_path):
    entry = tmp_path / "nuclei_copy"
    shutil.copytree(ZOO_DIR / "nuclei_semseg_2d", entry)
    data = yaml.safe_load((entry / "rdf.yaml").read_text())
    data["config"]["mmv_zoo"]["pretrained"]["sha256"] = "0" * 64
    (entry / "rdf.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RunError, match="does not match"):
        predict_files(entry, [SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_publish_pull_predict_roundtrip(run_2d, data_2d, tmp_path, capsys):
    from .test_cli import run_cli

    zoo = tmp_path / "my_zoo"
    code, out, _ = run_cli(["publish", str(run_2d), "--entry", "my_nuclei", "--zoo", str(zoo)], capsys)
    assert code == 0 and "created" in out
    entry = load_entry(zoo / "my_nuclei")
    pre = entry.mmv.pretrained
    assert pre is not None and pre.source == "weights/my_nuclei.zip" and "val_loss" in pre.metrics
    assert entry.covers == ["cover.png"] and (zoo / "my_nuclei" / "cover.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli(["pull", str(zoo / "my_nuclei")], capsys)
    assert code == 0 and "sha256 verified" in out and pre.sha256 in out
    image = sorted((data_2d / "images").iterdir())[0]
    (pkg,) = predict_files(zoo / "my_nuclei", [image], tmp_path / "pred")
    (run,) = predict_files(run_2d, [image], tmp_path / "run_pred", options=Options(border="mirror"))
    a, b = read_image(pkg.output, 2).data, read_image(run.output, 2).data
    assert a.dtype == np.uint8 and a.shape == b.shape
    assert (a == b).mean() > 0.999  # the same tiler and halo on both paths (packages mirror the border)
    code, out, _ = run_cli(["publish", str(run_2d), "--entry", "my_nuclei", "--zoo", str(zoo)], capsys)
    assert code == 0 and "updated" in out


def test_publish_into_a_hand_written_entry_keeps_its_formatting(run_2d, tmp_path, capsys):
    """Only the `pretrained:` block changes; flow-style lines and comments elsewhere stay as written."""
    from .test_cli import run_cli

    zoo = tmp_path / "zoo"
    shutil.copytree(ZOO_DIR / "nuclei_semseg_2d", zoo / "nuclei_semseg_2d", ignore=shutil.ignore_patterns("*.zip"))
    rdf = zoo / "nuclei_semseg_2d" / "rdf.yaml"
    before = rdf.read_text().replace("    network: {kind: fnet", "    # a comment\n    network: {kind: fnet")
    before = before.replace("covers: [cover.png]\n", "")  # an entry without a cover gets one, in place
    rdf.write_text(before)
    code, out, _ = run_cli(["publish", str(run_2d), "--entry", "nuclei_semseg_2d", "--zoo", str(zoo)], capsys)
    assert code == 0 and "updated" in out
    after = rdf.read_text()
    head = before.split("    pretrained:")[0]
    assert "\ncovers: [cover.png]\ninputs:" in after
    after = after.replace("covers: [cover.png]\n", "")
    assert after.startswith(head) and "# a comment" in after  # everything before the block is untouched
    pre = load_entry(rdf).mmv.pretrained
    assert pre.sha256 != yaml.safe_load(before)["config"]["mmv_zoo"]["pretrained"]["sha256"]
    assert "holdout_foreground_f1" not in after  # the old run's metrics went with the old weights


def test_list_shows_bundled_weights(capsys):
    from .test_cli import run_cli

    code, out, _ = run_cli(["list"], capsys)
    row = next(line for line in out.splitlines() if "nuclei_semseg_2d" in line)
    assert "bundled" in row


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A package server on 127.0.0.1 and an empty cache."""
    from mmv_zoo.remote import download

    from .test_download import Server

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("MMV_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_entry_with_url_and_doi_weights(server, tmp_path, capsys, monkeypatch):
    """An entry whose package lives on a server (by URL, then by Zenodo DOI): pulled once, verified,
    cached; predict uses it; offline afterwards still works from the cache."""
    import hashlib
    import json

    from .test_cli import run_cli
    from .test_download import send, serve_bytes

    package = (ZOO_DIR / "nuclei_semseg_2d" / "weights" / "nuclei_semseg_2d.zip").read_bytes()
    server.routes["/files/nuclei.zip"] = serve_bytes(package)
    server.routes["/api/records/4242"] = lambda h: send(h, json.dumps({"files": [
        {"key": "nuclei.zip", "links": {"self": server.url("/files/nuclei.zip")}, "checksum": "md5:x"}]}).encode())
    entry = tmp_path / "remote_nuclei"
    shutil.copytree(ZOO_DIR / "nuclei_semseg_2d", entry, ignore=shutil.ignore_patterns("weights"))
    data = yaml.safe_load((entry / "rdf.yaml").read_text())
    data["config"]["mmv_zoo"]["pretrained"].update(source=server.url("/files/nuclei.zip"), sha256=None)
    (entry / "rdf.yaml").write_text(yaml.safe_dump(data))

    code, out, _ = run_cli(["pull", str(entry)], capsys)
    assert code == 0 and "trust on first use" in out and server.hits["/files/nuclei.zip"] == 1
    code, out, _ = run_cli(["pull", str(entry)], capsys)
    assert code == 0 and "from the cache" in out and server.hits["/files/nuclei.zip"] == 1
    code, out, _ = run_cli(["show", str(entry)], capsys)
    assert code == 0 and f"trust on first use): {hashlib.sha256(package).hexdigest()}" in out

    image = SAMPLE / "holdout" / "images" / f"{HOLDOUT}.tif"
    with monkeypatch.context() as m:
        m.setenv("MMV_ZOO_OFFLINE", "1")
        (res,) = predict_files(entry, [image], tmp_path / "pred")
    expected = tifffile.imread(GOLDEN)
    assert (read_image(res.output, 2).data[0] == expected).mean() > 0.999
    assert server.hits["/files/nuclei.zip"] == 1

    cache_sha = hashlib.sha256(package).hexdigest()
    monkeypatch.setenv("MMV_ZOO_ZENODO_API", server.url("/api"))
    code, out, _ = run_cli(["pull", "10.5281/zenodo.4242", "--sha256", cache_sha], capsys)
    assert code == 0 and cache_sha in out and server.hits["/api/records/4242"] == 1


# --------------------------------------------------------- MMV_Im2Im checkpoints inside the paper's archive

IM2IM_DOI = "10.5281/zenodo.10034416"  # the MMV_Im2Im paper's deposit (models.zip, sample_data.zip)


def _pytorch_fnet_key(key: str) -> str:
    """mmv_zoo's fnet key -> the original pytorch_fnet / MMV_Im2Im key (written independently of the
    importer: plain substitutions)."""
    import re

    for ours, theirs in (("block.0.", "conv1."), ("block.1.", "bn1."), ("block.3.", "conv2."), ("block.4.", "bn2.")):
        key = re.sub(rf"(sub_2conv_(?:more|less))\.{re.escape(ours)}", rf"\1.{theirs}", key)
    for ours, theirs in (("conv_down.0.", "conv_down."), ("conv_down.1.", "bn0."),
                         ("convt.0.", "convt."), ("convt.1.", "bn1.")):
        key = key.replace(ours, theirs)
    return key


def _randomize_norms(net):
    """Batch-norm statistics that are not the identity, so a misplaced norm layer shows in the output."""
    import torch

    gen = torch.Generator().manual_seed(1)
    for mod in net.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen) * 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
    return net.eval()


def _lightning_checkpoint(state: dict) -> bytes:
    """A checkpoint as MMV_Im2Im's Lightning trainer saves it: the network under `net.`."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"epoch": 7, "global_step": 70, "pytorch-lightning_version": "2.0.9",
                "state_dict": {f"net.{k}": v for k, v in state.items()},
                "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": []}, buf)
    return buf.getvalue()


class _Trap:
    """Pickled into a checkpoint: unpickling it would create a folder (it must never happen)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.makedirs, (self.marker,))


@pytest.fixture
def im2im_record(server, tmp_path, monkeypatch):
    """A fake Zenodo record of the MMV_Im2Im paper on 127.0.0.1: models.zip with checkpoints in the
    predecessor's layout (a 2D fnet with pytorch_fnet key names, a 3D MONAI UNet), sample_data.zip."""
    import io
    import json
    import zipfile

    import torch
    from monai.networks.nets import UNet

    from mmv_zoo.nets.fnet import FNet

    from .test_download import send, serve_bytes

    torch.manual_seed(0)
    fnet = _randomize_norms(FNet(spatial_dims=2, in_channels=1, out_channels=1, depth=2, mult_chan=4))
    unet = _randomize_norms(UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=[4, 8],
                                 strides=[[1, 2, 2]], num_res_units=1, norm="batch"))
    fnet_state = {_pytorch_fnet_key(k): v for k, v in fnet.state_dict().items()}
    assert "net_recurse.sub_2conv_more.conv1.weight" in fnet_state and "net_recurse.bn0.running_var" in fnet_state
    marker = tmp_path / "unpickled"
    buf = io.BytesIO()
    torch.save({"state_dict": {"net.conv.weight": torch.zeros(1)}, "hyper_parameters": {"cfg": _Trap(str(marker))}},
               buf)
    models = io.BytesIO()
    with zipfile.ZipFile(models, "w") as zf:
        zf.writestr("models/labelfree/2d/fnet.ckpt", _lightning_checkpoint(fnet_state))
        zf.writestr("models/denoising/planaria.ckpt", _lightning_checkpoint(unet.state_dict()))
        zf.writestr("models/denoising/tribolium.ckpt", _lightning_checkpoint(unet.state_dict()))
        zf.writestr("models/denoising/pickled.ckpt", buf.getvalue())
        zf.writestr("models/README.txt", "all models of the paper")
    data = models.getvalue()
    server.routes["/files/models.zip"] = serve_bytes(data)
    server.routes["/files/sample_data.zip"] = serve_bytes(b"PK\x05\x06" + b"\0" * 18)
    record = {"files": [{"key": k, "links": {"self": server.url(f"/files/{k}")}, "checksum": "md5:0"}
                        for k in ("models.zip", "sample_data.zip")]}
    server.routes["/api/records/10034416"] = lambda h: send(h, json.dumps(record).encode())
    monkeypatch.setenv("MMV_ZOO_ZENODO_API", server.url("/api"))
    monkeypatch.delenv("MMV_ZOO_OFFLINE", raising=False)
    return {"server": server, "zip": data, "fnet": fnet, "unet": unet, "marker": marker}


def _im2im_entry(tmp_path, kind: str, member: str, **network) -> Path:
    """A zoo entry whose weights are `member` of the paper's models.zip: `kind` 'fnet' (a 2D labelfree
    fnet) or 'unet' (the bundled denoise_3d_planaria, shrunk)."""
    if kind == "unet":
        data = yaml.safe_load((ZOO_DIR / "denoise_3d_planaria" / "rdf.yaml").read_text())
        mmv = data["config"]["mmv_zoo"]
        mmv["network"] = {"kind": "unet", "spatial_dims": 3, "channels": [4, 8], "strides": [[1, 2, 2]],
                          "num_res_units": 1, **network}
        mmv["data"]["patch"] = [8, 32, 32]
    else:
        data = yaml.safe_load((ZOO_DIR / "nuclei_semseg_2d" / "rdf.yaml").read_text())
        data["outputs"][0]["axes"][1]["channel_names"] = ["fluorescence"]
        mmv = data["config"]["mmv_zoo"]
        mmv.update(task="regression", loss={"kind": "mse"})
        mmv["network"] = {"kind": "fnet", "spatial_dims": 2, "depth": 2, "mult_chan": 4, **network}
        mmv["data"].pop("labels")
        mmv["data"]["patch"] = [32, 32]
    mmv["data"]["normalization"] = {"source": {"kind": "none"}, "target": {"kind": "none"}}
    mmv["pretrained"] = {"source": IM2IM_DOI, "file": "models.zip", "member": member,
                         "format": "mmv_im2im_checkpoint"}
    folder = tmp_path / f"{kind}_{member.rsplit('/', 1)[-1].split('.')[0]}_{len(network)}"
    folder.mkdir()
    (folder / "rdf.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def _leftovers(cache) -> list[str]:
    """Temporary files or folders anywhere in the cache (a half-written download or extraction)."""
    return [p.name for p in cache.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_bundled_denoise_entry_references_the_paper_record():
    pre = load_entry("denoise_3d_planaria").mmv.pretrained
    assert pre is not None and pre.source == IM2IM_DOI and pre.file == "models.zip"
    assert pre.member == "models/denoising/planaria.ckpt" and pre.format == "mmv_im2im_checkpoint"
    assert pre.sha256 is None  # recorded on first pull


def test_pull_extracts_member_once_and_records_sha256(im2im_record, tmp_path, capsys, monkeypatch):
    import hashlib

    from .test_cli import run_cli

    server, cache = im2im_record["server"], tmp_path / "cache"
    entry = _im2im_entry(tmp_path, "unet", "models/denoising/planaria.ckpt")
    archive_sha = hashlib.sha256(im2im_record["zip"]).hexdigest()
    code, out, _ = run_cli(["show", str(entry)], capsys)
    assert code == 0 and "not known yet: the first pull records it" in out

    code, out, err = run_cli(["pull", str(entry)], capsys)
    assert code == 0, err
    assert "archive sha256 recorded on first use (trust on first use" in out and archive_sha in out
    assert "member models/denoising/planaria.ckpt" in out
    assert server.hits["/files/models.zip"] == 1 and server.hits["/files/sample_data.zip"] == 0
    member = cache / "downloads" / archive_sha / "models.zip.members" / "models" / "denoising" / "planaria.ckpt"
    with __import__("zipfile").ZipFile(cache / "downloads" / archive_sha / "models.zip") as zf:
        assert member.read_bytes() == zf.read("models/denoising/planaria.ckpt")
    members = sorted(p.relative_to(member.parents[2]).as_posix() for p in member.parents[2].rglob("*"))
    assert members == ["models", "models/denoising", "models/denoising/planaria.ckpt"]  # only that member

    requests = server.total
    code, out, _ = run_cli(["pull", str(entry)], capsys)
    assert code == 0 and "from the cache" in out and archive_sha in out
    assert server.total == requests  # no request at all, not even to the Zenodo API
    code, out, _ = run_cli(["show", str(entry)], capsys)
    assert code == 0 and f"recorded on first pull (trust on first use): {archive_sha}" in out
    assert "archive (holding models/denoising/planaria.ckpt)" in out
    assert _leftovers(cache) == []

    code, out, _ = run_cli(["pull", IM2IM_DOI, "--file", "models.zip", "--member", "models/README.txt"], capsys)
    assert code == 0 and "member models/README.txt" in out and server.total == requests


class _SourceModel:
    """The network that was saved, in the form the prediction engine takes a model."""

    def __init__(self, net) -> None:
        self.net = net

    def inference_model(self):
        return self.net


@pytest.mark.parametrize("kind, member", [("fnet", "models/labelfree/2d/fnet.ckpt"),
                                          ("unet", "models/denoising/planaria.ckpt")])
def test_predict_with_im2im_checkpoint_matches_source_network(im2im_record, tmp_path, monkeypatch, kind, member):
    """The entry's network with the checkpoint's weights gives what the network that was saved gives:
    through the same tiling everywhere, and applied directly to the whole image away from the borders
    (where the tiler's mirror padding cannot reach)."""
    import torch

    from mmv_zoo.predict.engine import predict_array

    entry = _im2im_entry(tmp_path, kind, member)
    source = im2im_record[kind]
    shape, margin = ((128, 128), (32, 32)) if kind == "fnet" else ((24, 64, 64), (8, 16, 16))
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, x)

    (res,) = predict_files(entry, [image], tmp_path / "pred")
    got = read_image(res.output, len(shape)).data
    tiled = predict_array(_SourceModel(source), x[None], load_entry(entry))
    with torch.no_grad():
        direct = source(torch.from_numpy(x)[None, None])[0].numpy()
    assert got.shape == tiled.shape == direct.shape
    np.testing.assert_allclose(got, tiled, rtol=1e-5, atol=1e-6)
    inner = (slice(None), *(slice(m, n - m) for m, n in zip(margin, shape, strict=True)))
    np.testing.assert_allclose(got[inner], direct[inner], rtol=1e-4, atol=1e-5)

    requests = im2im_record["server"].total
    with monkeypatch.context() as m:  # the cached record and member serve offline
        m.setenv("MMV_ZOO_OFFLINE", "1")
        (again,) = predict_files(entry, [image], tmp_path / "pred_offline")
    np.testing.assert_array_equal(read_image(again.output, len(shape)).data, got)
    assert im2im_record["server"].total == requests


def test_missing_member_is_one_line_listing_members(im2im_record, tmp_path, capsys):
    from .test_cli import assert_clean_error, run_cli

    entry = _im2im_entry(tmp_path, "unet", "models/denoising/planarian.ckpt")
    code, _, err = run_cli(["pull", str(entry)], capsys)
    assert_clean_error(code, err, "config.mmv_zoo.pretrained.member", "no file 'models/denoising/planarian.ckpt'",
                       "models/denoising/planaria.ckpt")
    cache = tmp_path / "cache"
    assert _leftovers(cache) == []
    assert not [p for p in cache.rglob("*") if "planarian" in p.name]


@pytest.mark.parametrize("kind, network", [("unet", {"num_res_units": 2}), ("unet", {"channels": [4, 16]}),
                                           ("fnet", {"depth": 3})])
def test_mismatched_network_is_one_line_naming_keys(im2im_record, tmp_path, capsys, kind, network):
    from .test_cli import assert_clean_error, run_cli

    member = "models/denoising/planaria.ckpt" if kind == "unet" else "models/labelfree/2d/fnet.ckpt"
    entry = _im2im_entry(tmp_path, kind, member, **network)
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.zeros((8, 32, 32) if kind == "unet" else (64, 64), np.float32))
    code, _, err = run_cli(["predict", str(entry), str(image), "--out", str(tmp_path / "out")], capsys)
    assert_clean_error(code, err, str(entry / "rdf.yaml"), "does not fit the entry's network", "config.mmv_zoo.network")
    assert "missing key" in err or "shape mismatch" in err
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path / "cache") == []


def test_pickled_objects_are_refused_never_unpickled(im2im_record, tmp_path, capsys):
    from .test_cli import assert_clean_error, run_cli

    entry = _im2im_entry(tmp_path, "unet", "models/denoising/pickled.ckpt")
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.zeros((8, 32, 32), np.float32))
    code, _, err = run_cli(["predict", str(entry), str(image), "--out", str(tmp_path / "out")], capsys)
    assert_clean_error(code, err, "weights_only=True", "pickled Python objects", "os.makedirs",
                       "config.mmv_zoo.pretrained")  # the line names the entry and the file
    assert not im2im_record["marker"].exists()


def test_an_im2im_checkpoint_converts_to_a_package_that_predicts_as_the_entry(im2im_record, tmp_path, capsys):
    """`mmv-zoo export ENTRY --sample IMAGE` for an entry whose weights are an MMV_Im2Im checkpoint:
    a tested package whose prediction equals the entry's; without --sample one line says what to give."""
    from mmv_zoo.export.package import export_package
    from mmv_zoo.settings.predict import Options

    from .test_cli import assert_clean_error, run_cli

    entry = _im2im_entry(tmp_path, "fnet", "models/labelfree/2d/fnet.ckpt")
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.random.default_rng(1).normal(size=(96, 120)).astype(np.float32))
    code, _, err = run_cli(["export", str(entry), "--out", str(tmp_path / "no.zip")], capsys)
    assert_clean_error(code, err, "MMV_Im2Im checkpoint", "--sample")
    result = export_package(entry, tmp_path / "fnet.zip", sample=image,
                            formats=("torchscript", "pytorch_state_dict"))
    assert result.test_results == {"torchscript": "passed", "pytorch_state_dict": "passed"}
    (pkg,) = predict_files(tmp_path / "fnet.zip", [image], tmp_path / "pkg")
    (own,) = predict_files(entry, [image], tmp_path / "own", options=Options(border="mirror"))  # as packages do
    np.testing.assert_allclose(read_image(pkg.output, 2).data, read_image(own.output, 2).data, rtol=1e-4, atol=1e-4)


def test_checkpoints_with_monai_metatensors_in_callback_state_load(tmp_path):
    """MMV_Im2Im's label-free configurations keep early-stopping and checkpoint callback state whose
    values are MONAI MetaTensors: such a file loads (weights only), anything else pickled does not."""
    import torch
    from monai.data import MetaTensor

    from mmv_zoo.errors import RunError
    from mmv_zoo.remote.im2im_checkpoint import read_network_state

    weights = {"net.conv.weight": torch.arange(6.0).reshape(2, 3)}
    torch.save({"state_dict": weights, "callbacks": {
        "EarlyStopping{'monitor': 'val_loss'}": {"best_score": MetaTensor(torch.tensor(0.25)), "wait_count": 3},
        "ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": MetaTensor(torch.tensor(0.25))}}},
        tmp_path / "best.ckpt")
    state = read_network_state(tmp_path / "best.ckpt", "entry: config.mmv_zoo.pretrained (best.ckpt)")
    assert list(state) == ["conv.weight"] and torch.equal(state["conv.weight"], weights["net.conv.weight"])
    trap = {"state_dict": weights, "hyper_parameters": {"cfg": _Trap(str(tmp_path / "ran"))}}
    torch.save(trap, tmp_path / "bad.ckpt")
    with pytest.raises(RunError, match=r"^entry \(bad.ckpt\): torch.load\(weights_only=True\) refuses"):
        read_network_state(tmp_path / "bad.ckpt", "entry (bad.ckpt)")
    assert not (tmp_path / "ran").exists()


def test_extract_member_is_atomic_and_safe(tmp_path):
    import zipfile

    from mmv_zoo.errors import DownloadError
    from mmv_zoo.remote.archives import MissingMember, extract_member

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("models/x.ckpt", b"A" * 4096)
        zf.writestr("models/y.ckpt", b"B" * 10)
    target = tmp_path / "out" / "models" / "x.ckpt"
    assert extract_member(archive, "models/x.ckpt", target).read_bytes() == b"A" * 4096
    with pytest.raises(MissingMember, match=r"no file 'models/z.ckpt' in the archive \(2 files; e.g. models/[xy]"):
        extract_member(archive, "models/z.ckpt", tmp_path / "out2" / "z.ckpt")
    with pytest.raises(DownloadError, match="escapes"):
        extract_member(archive, "../x.ckpt", tmp_path / "out3" / "x.ckpt")
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"A" * 64) + 100] ^= 0xFF  # damage the member's data: its CRC no longer matches
    (tmp_path / "bad.zip").write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match="CRC"):
        extract_member(tmp_path / "bad.zip", "models/x.ckpt", tmp_path / "out4" / "models" / "x.ckpt")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists() and not (tmp_path / "out4").exists()


@pytest.mark.parametrize("field, value, needle", [
    ("member", "../models/x.ckpt", "config.mmv_zoo.pretrained.member"),
    ("member", "/models/x.ckpt", "relative path"),
    ("format", "onnx", "'bioimageio' or 'mmv_im2im_checkpoint'"),
])
def test_pretrained_member_and_format_are_validated(field, value, needle):
    with pytest.raises(EntryError) as info:
        load_entry("denoise_3d_planaria", [f"pretrained.{field}={value}"])
    msg = str(info.value)
    assert needle in msg and len(msg.splitlines()) == 1
