"""Self-supervised denoising (framework n2v): the masking of N2V, N2V2 and structN2V in 2D and 3D, the
source-only layout, the entries on the bundled real noisy images, export, and resume after a kill."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from mmv_zoo.entry import EntryError, load_entry
from mmv_zoo.frameworks.n2v import N2V, mask_batch
from mmv_zoo.settings.n2v import N2VSettings

from .test_cli import assert_clean_error, run_cli

SAMPLES = Path(__file__).resolve().parents[1] / "mmv_zoo" / "sample_data"
HYBISS = SAMPLES / "hybiss_2d"
NUCLEUS_3D = SAMPLES / "cells3d_nucleus_3d"
TINY = ["network.channels=4", "training.max_epochs=1", "training.patches_per_image=8", "training.batch_size=4",
        "training.num_workers=0"]


def _unique(shape: tuple[int, ...]) -> torch.Tensor:
    """A batch whose every value is different (so a value tells where it came from)."""
    return torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)


def _where(x: torch.Tensor, value: float) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(x == value)[0])


# --- masking ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [2, 3])
def test_n2v_masks_the_fraction_and_replaces_with_another_pixel_of_the_neighbourhood(dims):
    shape = (3, 2, *([64, 64] if dims == 2 else [16, 32, 32]))
    x = _unique(shape)
    s = N2VSettings(masked_fraction=0.01)
    m = mask_batch(x, s, torch.Generator().manual_seed(1))
    n = len(m.original)
    assert abs(n - 0.01 * x.numel()) < 0.25 * 0.01 * x.numel()  # about the fraction asked for
    changed = torch.nonzero(m.inputs != x)
    assert len(changed) == n  # only the masked pixels change
    np.testing.assert_array_equal(m.original.numpy(), x[m.index].numpy())
    for k in range(n):  # each replacement is another pixel of the same patch and channel, within 2
        b, c, *pos = (int(t[k]) for t in m.index)
        src = _where(x, float(m.inputs[m.index][k]))
        assert src[:2] == (b, c) and tuple(src[2:]) != tuple(pos)
        assert max(abs(a - p) for a, p in zip(src[2:], pos, strict=True)) <= 2
    per_channel = torch.stack(m.index[:2], 1).unique(dim=0)
    assert len(per_channel) == shape[0] * shape[1]  # every patch and channel has masked pixels of its own


@pytest.mark.parametrize("dims", [2, 3])
def test_n2v2_replaces_with_the_median_of_the_neighbourhood_without_the_pixel(dims):
    shape = (2, 1, *([32, 32] if dims == 2 else [8, 16, 16]))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    m = mask_batch(x, N2VSettings(masked_fraction=0.02, replacement="median"), torch.Generator().manual_seed(2))
    xs = x.numpy()
    for k in range(len(m.original)):
        b, c, *pos = (int(t[k]) for t in m.index)
        values = [xs[(b, c, *[p + o for p, o in zip(pos, off, strict=True)])]
                  for off in itertools.product(range(-2, 3), repeat=dims) if any(off)
                  and all(0 <= p + o < n for p, o, n in zip(pos, off, shape[2:], strict=True))]
        if len(values) == 5**dims - 1:  # away from the border (there the neighbourhood is mirrored)
            assert float(m.inputs[m.index][k]) == pytest.approx(float(np.median(values)), abs=1e-6)


@pytest.mark.parametrize(("dims", "axis"), [(2, "x"), (2, "y"), (3, "z")])
def test_structn2v_masks_the_declared_line(dims, axis):
    shape = (1, 1, *([64, 64] if dims == 2 else [16, 32, 32]))
    s = N2VSettings(masked_fraction=0.002, struct_mask={"axis": axis, "span": 5})
    x = torch.rand(shape, generator=torch.Generator().manual_seed(4)) + 10
    m = mask_batch(x, s, torch.Generator().manual_seed(3))
    a = ("z", "y", "x")[3 - dims:].index(axis)
    line = torch.zeros(shape, dtype=torch.bool)
    for k in range(len(m.original)):
        pos = [int(t[k]) for t in m.index[2:]]
        for d in range(-2, 3):
            p = list(pos)
            p[a] += d
            if 0 <= p[a] < shape[2 + a]:
                line[(0, 0, *p)] = True
    changed = m.inputs != x
    assert torch.equal(changed, line)  # exactly the lines through the masked pixels, along the axis


def test_structn2v_never_replaces_from_the_masked_line():
    """Along the line the noise is correlated with the masked pixel's: a replacement from there would
    hand the network the noise it must not predict. N2V draws from the rest of the neighbourhood, N2V2
    takes the median of the rest."""
    shape = (4, 1, 64, 64)
    struct = {"axis": "x", "span": 5}
    # N2V: rows of one value each (plus a little per column, so every pixel differs)
    x = torch.arange(64, dtype=torch.float32)[:, None] + 0.001 * torch.arange(64)[None, :]
    m = mask_batch(x.expand(shape).contiguous(), N2VSettings(masked_fraction=0.01, struct_mask=struct),
                   torch.Generator().manual_seed(5))
    rows, values = m.index[2].float(), m.inputs[m.index]
    assert ((values - rows).abs() > 0.5).all()  # never from the pixel's own row
    assert ((values - rows).abs().round() <= 2).all()  # from the rows one or two away
    # N2V2: even rows 1000, odd rows 0; without its own row a pixel's 5x5 holds ten of each (median
    # 500); with it the median would be its own row's value
    x = (torch.arange(64)[:, None] % 2 == 0).float().expand(64, 64) * 1000
    m = mask_batch(x.expand(shape).contiguous(), N2VSettings(masked_fraction=0.01, replacement="median",
                                                             struct_mask=struct), torch.Generator().manual_seed(5))
    inner = (m.index[2] >= 2) & (m.index[2] < 62) & (m.index[3] >= 2) & (m.index[3] < 62)  # no mirrored border
    values = m.inputs[m.index][inner]
    assert len(values) > 50 and (values == 500).all()


def test_the_loss_counts_the_masked_pixels_only():
    entry = load_entry("denoise_2d_n2v", ["network.channels=4"])
    model = N2V(entry.model_dump(mode="json"))
    x = torch.rand(2, 1, 64, 64)
    m = mask_batch(x, model.settings, torch.Generator().manual_seed(5))

    class Answer(torch.nn.Module):
        def __init__(self, out: torch.Tensor) -> None:
            super().__init__()
            self.out = out

        def forward(self, _: torch.Tensor) -> torch.Tensor:
            return self.out

    out = torch.rand_like(x) * 100  # wrong everywhere ...
    out[m.index] = m.original  # ... but at the masked pixels
    model.net = Answer(out)
    assert float(model.masked_loss(x, torch.Generator().manual_seed(5))) == 0.0
    out[tuple(t[:1] for t in m.index)] += 2.0  # one masked pixel off by 2
    assert float(model.masked_loss(x, torch.Generator().manual_seed(5))) == pytest.approx(4.0 / len(m.original))


# --- the entries' rules ------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "needles"), [
    (["data.layout={layout: paired_folders, source: noisy, target: clean}"],
     ["config.mmv_zoo.data.layout", "framework n2v trains on layout source_folder", "no target folder"]),
    (["data.layout.target=clean"], ["config.mmv_zoo.data.layout.target: unknown key"]),
    (["data.patch=[4,4]", "network.depth=1"], ["config.mmv_zoo.data.patch", "smaller than the n2v.neighbourhood 5"]),
    (["n2v.masked_fraction=0"], ["config.mmv_zoo.n2v.masked_fraction", "greater than 0"]),
    (["n2v.masked_fraction=1.5"], ["config.mmv_zoo.n2v.masked_fraction", "less than 1"]),
    (["n2v.neighbourhood=4"], ["config.mmv_zoo.n2v.neighbourhood", "odd"]),
    (["n2v.struct_mask={axis: z}"], ["config.mmv_zoo.n2v.struct_mask.axis", "['y', 'x']"]),
    (["task=segmentation", "loss={kind: dice}", "outputs.0.axes.1.channel_names=[a,b]",
      "data.normalization.target={kind: none}"], ["config.mmv_zoo.task", "n2v trains regression"]),
])
def test_n2v_mistakes_are_one_line_naming_the_field(overrides, needles, capsys):
    code, _, err = run_cli(["validate", "denoise_2d_n2v", *sum((["--set", o] for o in overrides), [])], capsys)
    assert code == 1
    code, _, err = run_cli(["show", "denoise_2d_n2v", *sum((["--set", o] for o in overrides), [])], capsys)
    assert_clean_error(code, err, *needles)


def test_other_frameworks_refuse_the_source_only_layout():
    with pytest.raises(EntryError, match="config.mmv_zoo.data.layout: source_folder trains n2v; framework fcn "
                                         "needs pairs"):
        load_entry("nuclei_semseg_2d", ["data.layout={layout: source_folder, source: images}"])


# --- training on the bundled real noisy images -----------------------------------------------------------

@pytest.mark.parametrize(("name", "data"), [("denoise_2d_n2v", HYBISS), ("denoise_2d_n2v2", HYBISS),
                                            ("denoise_2d_structn2v", HYBISS), ("denoise_3d_n2v", NUCLEUS_3D)])
def test_n2v_entries_train_on_a_folder_of_noisy_images(name, data, tmp_path, capsys):
    code, out, err = run_cli(["train", name, "--data", str(data), "--out", str(tmp_path), "--no-progress",
                              *sum((["--set", o] for o in TINY), [])], capsys)
    assert code == 0, err
    (run,) = (tmp_path / name).iterdir()
    info = json.loads((run / "run.json").read_text())
    stem = next((data / "noisy").iterdir()).name.split(".")[0]
    assert info["train_files"] == [f"{stem}_train_region"] and info["val_files"] == [f"{stem}_val_region"]
    assert info["status"] == "complete" and info["steps"] == 2
    assert info["monitor"] == "last"  # the entries predict with their latest weights (best.ckpt is the last epoch's)
    best = torch.load(run / info["best_checkpoint"], weights_only=False)
    assert best["global_step"] == info["steps"]
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert "val_metric" in metrics[0] and len(metrics) > 1


def test_planes_of_a_stack_are_2d_training_images(tmp_path):
    from mmv_zoo.data.module import data_module

    stack = tifffile.imread(NUCLEUS_3D / "noisy" / "nucleus.tif")[:6]
    (tmp_path / "noisy").mkdir()
    tifffile.imwrite(tmp_path / "noisy" / "stack.tif", stack)
    entry = load_entry("denoise_2d_n2v", [*TINY, "data.layout.planes=true", "data.patch=[32,32]"])
    dm = data_module(entry, tmp_path)
    dm.prepare()
    assert len(dm.train_files) + len(dm.val_files) == 6 and dm.val_files[0].startswith("stack_t000_z")
    x, y = dm.train_set[0]
    assert x.shape == (1, 32, 32) and y.shape == (0, 32, 32)
    with pytest.raises(EntryError):
        load_entry("denoise_2d_n2v", ["data.layout.planes=maybe"])


def test_channels_are_denoised_one_by_one_or_together(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "noisy").mkdir()
    for i in range(2):
        tifffile.imwrite(tmp_path / "noisy" / f"im{i}.ome.tif", rng.random((2, 64, 64)).astype(np.float32),
                         metadata={"axes": "CYX"})
    two = ["inputs.0.axes.1.channel_names=[a,b]", "outputs.0.axes.1.channel_names=[a,b]"]
    from mmv_zoo.nets.care_unet import PerChannel
    from mmv_zoo.training.train import train

    for independent in (True, False):
        entry = load_entry("denoise_2d_n2v", [*TINY, *two, f"n2v.independent_channels={independent}"])
        result = train(entry, tmp_path, tmp_path / f"runs{independent}", progress=False)
        from mmv_zoo.run import load_model

        net = load_model(result.folder).inference_model()
        assert isinstance(net, PerChannel) == independent
        assert net(torch.rand(1, 2, 32, 32)).shape == (1, 2, 32, 32)


# --- export and resume -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def n2v_run(tmp_path_factory) -> Path:
    from mmv_zoo.training.train import train

    out = tmp_path_factory.mktemp("n2v_runs")
    return train(load_entry("denoise_2d_n2v", TINY), HYBISS, out, progress=False).folder


def test_exported_n2v_package_predicts_as_the_run(n2v_run, tmp_path):
    from mmv_zoo.export.package import export_package
    from mmv_zoo.io.read import read_image
    from mmv_zoo.predict.batch import predict_files
    from mmv_zoo.predict.engine import Options

    package = tmp_path / "n2v.zip"
    done = export_package(n2v_run, package, formats=("torchscript", "pytorch_state_dict", "onnx"))
    assert done.test_results == {"torchscript": "passed", "pytorch_state_dict": "passed", "onnx": "passed"}
    image = HYBISS / "noisy" / "img_hybiss_2d.tif"
    (ours,) = predict_files(n2v_run, [image], tmp_path / "run", options=Options(border="mirror"))
    (theirs,) = predict_files(package, [image], tmp_path / "pkg")
    a, b = read_image(ours.output, 2).data, read_image(theirs.output, 2).data
    assert a.shape == b.shape == (1, 512, 512)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_evaluate_scores_a_denoiser_against_clean_references_after_an_affine_fit(n2v_run, tmp_path):
    """`<data>/noisy` + `<data>/clean` (the layout's `reference`): a denoiser's output is in its input's
    normalized units, so it is scored after the least-squares affine fit onto the reference."""
    from mmv_zoo import metrics
    from mmv_zoo.evaluate.scoring import AFFINE_NOTE, evaluate

    clean = tifffile.imread(HYBISS / "noisy" / "img_hybiss_2d.tif").astype(np.float32)[:128, :128]
    for folder, image in (("noisy", clean * 0.5 + 100), ("clean", clean)):  # other units, same content
        (tmp_path / "data" / folder).mkdir(parents=True)
        tifffile.imwrite(tmp_path / "data" / folder / "a.tif", image)
    result = evaluate(n2v_run, tmp_path / "data", tmp_path / "ev")
    assert result.task == "regression" and AFFINE_NOTE in result.notes
    row = result.images[0].scores
    pred = tifffile.imread(result.images[0].prediction).astype(np.float64)[None]
    expected = metrics.regression_scores(metrics.affine_fit(pred, clean[None].astype(np.float64)), clean[None])
    assert row["psnr"] == pytest.approx(expected["psnr"], abs=1e-6)
    assert row["psnr"] > metrics.regression_scores(pred, clean[None])["psnr"] + 10  # raw z-score units: far off
    fitted = metrics.affine_fit(clean[None] * 3.0 - 7.0, clean[None])  # the fit undoes gain and offset
    np.testing.assert_allclose(fitted, clean[None], rtol=1e-5, atol=1e-3)
    (tmp_path / "noref" / "noisy").mkdir(parents=True)
    with pytest.raises(Exception, match="clean"):
        evaluate(n2v_run, tmp_path / "noref", tmp_path / "ev2")


@pytest.mark.parametrize("name", ["denoise_2d_n2v", "denoise_2d_n2v2"])
def test_a_killed_n2v_run_resumes_to_the_weights_of_an_uninterrupted_one(name, tmp_path):
    from mmv_zoo.run import load_model
    from mmv_zoo.training.train import resume, train

    overrides = [*TINY, "training.patches_per_image=64", "training.checkpoint.last_every_n_steps=3"]  # 16 steps
    out = tmp_path / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "mmv_zoo", "train", name, "--data", str(HYBISS),
                             "--out", str(out), "--no-progress", *sum((["--set", o] for o in overrides), [])],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not list(out.glob("*/*/checkpoints/last.ckpt")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (folder,) = out.glob(f"{name}/*")
    killed_at = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 0 < killed_at < 16
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resume(folder, progress=False)
        straight = train(load_entry(name, overrides), HYBISS, tmp_path / "straight", progress=False)
    finally:
        torch.set_num_threads(threads)
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 16 and info["resumed"] == 1
    a = load_model(folder / "checkpoints" / "last.ckpt").state_dict()
    b = load_model(straight.last_checkpoint).state_dict()
    for k in a:  # the same batches and the same masks: the same weights
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    # the entries predict with the moving average of their weights: the checkpoint's weights are the
    # average, not the last step's, and the raw weights it keeps for resuming match too
    ckpt = torch.load(straight.last_checkpoint, weights_only=False)
    raw, averaged = ckpt["current_model_state"], ckpt["state_dict"]
    assert max(float((raw[k] - averaged[k]).abs().max()) for k in raw if raw[k].is_floating_point()) > 1e-4
    resumed_raw = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["current_model_state"]
    for k in raw:
        torch.testing.assert_close(resumed_raw[k], raw[k], rtol=1e-4, atol=1e-5)


def test_noise2noise_trains_on_two_noisy_acquisitions(tmp_path):
    from mmv_zoo.training.train import train

    from .conftest import SAMPLE

    rng = np.random.default_rng(0)
    for path in sorted((SAMPLE / "train" / "images").glob("*.tif"))[:3]:
        clean = tifffile.imread(path)[100:196, 100:196].astype(np.float32)
        for side in ("noisy_a", "noisy_b"):  # two independent Poisson-Gaussian draws of the same field
            noisy = rng.poisson(clean) + rng.normal(0, 10, clean.shape)
            (tmp_path / side).mkdir(exist_ok=True)
            tifffile.imwrite(tmp_path / side / path.name, noisy.astype(np.float32))
    entry = load_entry("denoise_2d_n2n", [*TINY, "data.patch=[32,32]"])
    result = train(entry, tmp_path, tmp_path / "runs", progress=False)
    info = json.loads((result.folder / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] > 0 and len(info["val_files"]) == 1
