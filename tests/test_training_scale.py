"""Training at scale: resume after a kill, DDP on two CPU processes, Lightning features from the entry,
exclusion (cost) masks, the persistent dataset cache, partial loading and failure safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from pydantic import TypeAdapter

from mmv_zoo.entry import load_entry
from mmv_zoo.errors import DataError, EntryError, OutputError, RunError

from .conftest import SAMPLE, TINY_2D

TINY = ["network.depth=2", "network.mult_chan=4", "data.patch=[32,32]", "training.batch_size=2"]


def _sets(overrides: list[str]) -> list[str]:
    return sum((["--set", o] for o in overrides), [])


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "mmv_zoo", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def data6(tmp_path_factory) -> Path:
    """Six real 2D image/label pairs (96x96 crops)."""
    root = tmp_path_factory.mktemp("data6")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    paths = sorted((SAMPLE / "train" / "images").glob("*.tif"))
    for i in range(6):
        path, off = paths[i % len(paths)], 100 + 20 * (i // len(paths))
        tifffile.imwrite(root / "images" / f"im{i}.tif", tifffile.imread(path)[off:off + 96, off:off + 96])
        lab = tifffile.imread(SAMPLE / "train" / "labels" / path.name)[off:off + 96, off:off + 96]
        tifffile.imwrite(root / "labels" / f"im{i}.tif", lab)
    return root


# --- resume -------------------------------------------------------------------------------------------

def test_killed_run_resumes_with_the_expected_steps(data6, tmp_path):
    """SIGKILL mid-epoch after the first last.ckpt; --resume finishes in the same folder with the step
    count (and weights) of an uninterrupted run."""
    from mmv_zoo.run import load_model
    from mmv_zoo.training.train import resume, train

    # 5 training images x 16 patches / batch 2 = 40 steps in the one epoch; last.ckpt every 3 steps
    overrides = TINY + ["training.max_epochs=1", "training.patches_per_image=16",
                        "training.checkpoint.last_every_n_steps=3"]
    out = tmp_path / "runs"
    proc = _cli(["train", "nuclei_semseg_2d", "--data", str(data6), "--out", str(out), "--no-progress",
                 *_sets(overrides)])
    deadline = time.time() + 120
    while not list(out.glob("*/*/checkpoints/last.ckpt")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (folder,) = out.glob("nuclei_semseg_2d/*")
    killed_at = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 0 < killed_at < 40  # mid-epoch
    assert json.loads((folder / "run.json").read_text())["status"] == "running"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed subprocess (OMP_NUM_THREADS=1): the same float reductions
    try:
        result = resume(folder, progress=False)
        straight = train(load_entry("nuclei_semseg_2d", overrides), data6, tmp_path / "straight", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.folder == folder
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 40 and info["resumed"] == 1
    assert list(out.glob("nuclei_semseg_2d/*")) == [folder]  # no second run folder

    assert json.loads((straight.folder / "run.json").read_text())["steps"] == 40
    a = load_model(folder / "checkpoints" / "last.ckpt").state_dict()
    b = load_model(straight.last_checkpoint).state_dict()
    for k in a:  # same batches in the same order, same optimizer state: the same weights
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(RunError, match="complete"):
        resume(folder, progress=False)


def test_sigterm_saves_last_checkpoint_and_resume_finishes(data6, tmp_path, capsys):
    """SIGTERM (a cluster's time limit) stops at the next batch boundary, writes last.ckpt there and
    marks the run interrupted; resuming completes it."""
    import pytorch_lightning as pl

    from mmv_zoo.training.train import resume, train

    class TermAtStep5(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    overrides = TINY + ["training.max_epochs=1", "training.patches_per_image=8",
                        "training.checkpoint.last_every_n_steps=1000"]
    with pytest.raises(RunError, match="interrupted at epoch 0, step 5.*--resume"):
        train(load_entry("nuclei_semseg_2d", overrides), data6, tmp_path, progress=False, callbacks=[TermAtStep5()])
    (folder,) = tmp_path.glob("nuclei_semseg_2d/*")
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"
    from .test_cli import assert_clean_error, run_cli

    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--resume", str(folder)], capsys)
    assert_clean_error(code, err, "--resume", "run folder only")
    lr = load_entry("nuclei_semseg_2d").mmv.training.optimizer.lr
    code, out, err = run_cli(["train", "--resume", str(folder), "--no-progress",
                              "--set", f"training.optimizer.lr={lr / 4}"], capsys)
    assert code == 0, err
    assert f"run folder       {folder}" in out
    group = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["optimizer_states"][0]
    assert group["param_groups"][0]["initial_lr"] == pytest.approx(lr / 4)  # the new learning rate applies
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 20
    with pytest.raises(RunError, match="complete; nothing to resume"):
        resume(folder, progress=False)


def test_a_stop_requested_from_another_thread_leaves_a_resumable_run(data6, tmp_path):
    """A Cancel button (the napari Train widget) asks the run to stop from the GUI thread: it stops
    after the current batch, writes last.ckpt there, and resuming completes it."""
    import threading

    import pytorch_lightning as pl

    from mmv_zoo.training.callbacks import StopRequest, TrainingStopped
    from mmv_zoo.training.train import resume, train

    stop, reached = StopRequest(), threading.Event()

    class SignalAtStep3(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                reached.set()
                threading.Thread(target=stop.request).start()
                while not stop.requested:
                    time.sleep(0.01)

    overrides = TINY + ["training.max_epochs=1", "training.patches_per_image=8"]
    with pytest.raises(TrainingStopped, match="stopped after step 3; continue it with: mmv-zoo train --resume"):
        train(load_entry("nuclei_semseg_2d", overrides), data6, tmp_path, progress=False,
              callbacks=[SignalAtStep3(), stop])
    (folder,) = tmp_path.glob("nuclei_semseg_2d/*")
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"
    resume(folder, progress=False)
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 20


def test_resume_needs_a_checkpoint(tmp_path):
    from mmv_zoo.training.train import resume

    run = tmp_path / "runs" / "x" / "1"
    run.mkdir(parents=True)
    (run / "rdf.yaml").write_text("x")
    (run / "run.json").write_text(json.dumps({"status": "running", "data": str(tmp_path)}))
    with pytest.raises(RunError, match="last.ckpt"):
        resume(run, progress=False)


# --- distributed --------------------------------------------------------------------------------------

def test_two_process_ddp_on_cpu(data6, tmp_path):
    out = tmp_path / "runs"
    proc = _cli(["train", "nuclei_semseg_2d", "--data", str(data6), "--out", str(out), "--no-progress",
                 *_sets(TINY + ["training.max_epochs=1", "training.patches_per_image=4", "training.devices=2",
                                "training.accelerator=cpu"])])
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    assert "GLOBAL_RANK: 1" in stdout + stderr  # a second process joined
    assert stdout.count("trained nuclei_semseg_2d") == 1
    (folder,) = out.glob("nuclei_semseg_2d/*")
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "complete" and info["devices"] == 2
    assert info["steps"] == 5  # 5 images x 4 patches, split over 2 processes, batch 2
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_devices_beyond_the_machine_are_refused(data6, tmp_path, capsys):
    from .test_cli import assert_clean_error, run_cli

    out = tmp_path / "runs"
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data6), "--out", str(out),
                            "--set", "training.devices=4096", "--set", "training.accelerator=cpu"], capsys)
    assert_clean_error(code, err, "config.mmv_zoo.training.devices: 4096", "use 1 to")
    assert not out.exists()


# --- Lightning features from the entry ---------------------------------------------------------------

def test_early_stopping_and_swa_take_effect(data6, tmp_path):
    from mmv_zoo.training.train import train

    # min_delta larger than any change: no validation counts as an improvement, so patience 1 stops
    # after the second validation; SWA from epoch index 1 averages the weights of the later epochs
    entry = load_entry("nuclei_semseg_2d", TINY + [
        "training.max_epochs=6", "training.patches_per_image=2", "training.early_stopping={patience: 1, "
        "min_delta: 1000}", "training.swa={swa_lrs: 0.01, swa_epoch_start: 1, annealing_epochs: 1}"])
    run = train(entry, data6, tmp_path, progress=False)
    info = json.loads((run.folder / "run.json").read_text())
    assert info["epochs"] == 2 and info["stopped_early"]
    ckpt = torch.load(run.last_checkpoint, weights_only=False)
    (swa,) = [v for k, v in ckpt["callbacks"].items() if "StochasticWeightAveraging" in k]
    assert swa["n_averaged"] >= 1
    plain = train(load_entry("nuclei_semseg_2d", TINY + ["training.max_epochs=2", "training.patches_per_image=2"]),
                  data6, tmp_path / "plain", progress=False)
    ckpt = torch.load(plain.last_checkpoint, weights_only=False)
    assert not [k for k in ckpt["callbacks"] if "StochasticWeightAveraging" in k]
    assert json.loads((plain.folder / "run.json").read_text())["stopped_early"] is False


def test_the_moving_average_warms_up_then_keeps_its_decay():
    from mmv_zoo.training.callbacks import WarmEMA

    ema = WarmEMA(0.99)
    average, current = torch.zeros(3), torch.ones(3)
    # after n updates the average keeps min(0.99, (1 + n) / (10 + n)) of itself
    torch.testing.assert_close(ema(average, current, torch.tensor(0)), torch.full((3,), 0.9))
    torch.testing.assert_close(ema(average, current, torch.tensor(10)), torch.full((3,), 1 - 11 / 20))
    torch.testing.assert_close(ema(average, current, torch.tensor(10_000)), torch.full((3,), 0.01))
    counter = ema(torch.tensor(5), torch.tensor(9), torch.tensor(3))  # batch norm's num_batches_tracked
    assert counter.dtype == torch.int64 and int(counter) == 9


def test_trainer_settings_are_validated():
    bad = {
        "training.strategy=horovod": "training.strategy",
        "training.loggers=[tensorboard]": "must include csv",
        "training.swa={swa_lrs: 0.01, swa_epoch_start: 99}": "averaging would never start",
        "training.devices=0": "at least 1 device",
        "training.accumulate_grad_batches=0": "accumulate_grad_batches",
        "training.ema={decay: 1.0}": "training.ema.decay",
        "training.swa={swa_lrs: 0.01} | training.ema={decay: 0.9}": "choose one weight average",
    }
    for overrides, words in bad.items():
        with pytest.raises(EntryError, match=words):
            load_entry("nuclei_semseg_2d", overrides.split(" | "))
    t = load_entry("nuclei_semseg_2d", ["training.gradient_clip_val=0.5", "training.num_nodes=2",
                                        "training.strategy=ddp"]).mmv.training
    assert t.gradient_clip_val == 0.5 and t.num_nodes == 2


def test_optional_logger_missing_is_a_clear_error(data6, tmp_path):
    from importlib.util import find_spec

    from mmv_zoo.training.train import train

    if find_spec("tensorboard") or find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed")
    entry = load_entry("nuclei_semseg_2d", TINY + ["training.loggers=[csv, tensorboard]"])
    with pytest.raises(EntryError, match=r"training.loggers: tensorboard needs .*mmv_zoo\[tensorboard\]"):
        train(entry, data6, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_gan_frameworks_refuse_options_they_cannot_use(tmp_path):
    with pytest.raises(EntryError, match="training.gradient_clip_val: not available for framework pix2pix"):
        load_entry("synthetic_2d_pix2pix", ["training.gradient_clip_val=1.0"])
    with pytest.raises(EntryError, match="training.ema: not available for framework cyclegan"):
        load_entry("synthetic_2d_cyclegan", ["training.ema={decay: 0.99}"])


# --- failure safety -----------------------------------------------------------------------------------

def test_nan_loss_stops_with_epoch_and_step(data6, tmp_path, monkeypatch):
    from mmv_zoo.frameworks.fcn import FCN
    from mmv_zoo.training.train import train

    original = FCN.compute_loss

    def nan_at_third_step(self, out, y, keep):
        loss = original(self, out, y, keep)
        return loss * float("nan") if self.trainer.global_step == 2 else loss

    monkeypatch.setattr(FCN, "compute_loss", nan_at_third_step)
    with pytest.raises(RunError, match=r"training loss is nan at epoch 0, step 2 \(batch 2"):
        train(load_entry("nuclei_semseg_2d", TINY + ["training.max_epochs=1"]), data6, tmp_path, progress=False)


def test_out_of_memory_suggests_the_batch_size_finder(data6, tmp_path, monkeypatch):
    from mmv_zoo.frameworks.fcn import FCN
    from mmv_zoo.training.train import train

    def oom(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(FCN, "training_step", oom)
    with pytest.raises(RunError, match="mmv-zoo tune batch-size nuclei_semseg_2d"):
        train(load_entry("nuclei_semseg_2d", TINY + ["training.max_epochs=1"]), data6, tmp_path, progress=False)


def _with_corrupt_file(data6: Path, root: Path) -> Path:
    shutil.copytree(data6, root)
    (root / "images" / "im3.tif").write_bytes(b"II*\x00 this is not a TIFF any more" * 3)
    (root / "labels" / "im5.tif").write_bytes(b"")
    return root


@pytest.mark.parametrize("cache", [False, True])
def test_corrupt_files_are_listed_before_training(data6, tmp_path, cache):
    from mmv_zoo.data.module import data_module

    data = _with_corrupt_file(data6, tmp_path / "data")
    sets = [f"data.cache.enabled={cache}", f"data.cache.folder={tmp_path / 'cache'}"]
    with pytest.raises(DataError, match="2 bad file") as err:
        data_module(load_entry("nuclei_semseg_2d", TINY + sets), data).prepare()
    assert "im3.tif" in str(err.value) and "im5.tif" in str(err.value) and "on_bad_file" in str(err.value)
    dm = data_module(load_entry("nuclei_semseg_2d", TINY + sets + ["data.on_bad_file=skip"]), data)
    dm.prepare()
    assert len(dm.train_files) + len(dm.val_files) == 4 and len(dm.skipped_files) == 2
    assert "im3" not in dm.train_files + dm.val_files
    x, y = dm.train_set[0]
    assert x.shape == (1, 32, 32)


def test_corrupt_file_cli_names_it_and_writes_nothing(data6, tmp_path, capsys):
    from .test_cli import assert_clean_error, run_cli

    data = _with_corrupt_file(data6, tmp_path / "data")
    out = tmp_path / "runs"
    code, _, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data), "--out", str(out), *_sets(TINY)],
                           capsys)
    assert_clean_error(code, err, "2 bad file(s)", "im3.tif", "im5.tif")
    assert not out.exists()
    code, stdout, err = run_cli(["train", "nuclei_semseg_2d", "--data", str(data), "--out", str(out), "--no-progress",
                                 *_sets(TINY + ["data.on_bad_file=skip", "training.max_epochs=1",
                                                "training.patches_per_image=2"])], capsys)
    assert code == 0, err
    assert stdout.count("skipped") == 2 and "im3.tif" in stdout and "im5.tif" in stdout
    (folder,) = out.glob("nuclei_semseg_2d/*")
    assert len(json.loads((folder / "run.json").read_text())["skipped_files"]) == 2


def test_too_little_disk_space_fails_before_training(data6, tmp_path, monkeypatch):
    import shutil as sh

    from mmv_zoo.training.train import train

    real = sh.disk_usage
    monkeypatch.setattr(sh, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(OutputError, match="too little free disk space"):
        train(load_entry("nuclei_semseg_2d", TINY_2D), data6, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


# --- exclusion (cost) masks ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mse", "l1", "cross_entropy", "dice", "dice_ce"])
def test_exclusion_mask_changes_the_loss_only_where_it_is_nonzero(kind):
    from mmv_zoo.frameworks.losses import build_loss
    from mmv_zoo.settings.training import LossSettings

    loss_fn = build_loss(TypeAdapter(LossSettings).validate_python({"kind": kind}))
    g = torch.Generator().manual_seed(0)
    seg = kind not in ("mse", "l1")
    pred = torch.randn(2, 2 if seg else 1, 8, 8, generator=g, requires_grad=True)
    target = (torch.randint(0, 2, (2, 1, 8, 8), generator=g) if seg
              else torch.randn(2, 1, 8, 8, generator=g))
    keep = torch.ones(2, 1, 8, 8)
    keep[:, :, :4] = 0  # the top half excluded
    loss = loss_fn(pred, target, keep)
    loss.backward()
    grad = pred.grad.abs().sum(1)
    assert grad[:, :4].max() == 0 and grad[:, 4:].max() > 0  # no gradient from excluded pixels
    other = target.clone()
    other[:, :, :4] = (1 - other[:, :, :4]) if seg else other[:, :, :4] + 5
    assert torch.allclose(loss_fn(pred, other, keep), loss)  # targets under the mask do not matter
    other[:, :, 6] = (1 - other[:, :, 6]) if seg else other[:, :, 6] + 5
    assert not torch.allclose(loss_fn(pred, other, keep), loss)  # elsewhere they do
    # an all-ones mask is the plain loss
    torch.testing.assert_close(loss_fn(pred, target, torch.ones_like(keep)), loss_fn(pred, target))


def test_exclusion_masks_from_the_layout(data6, tmp_path):
    from mmv_zoo.data.module import data_module

    data = tmp_path / "data"
    shutil.copytree(data6, data)
    (data / "ignore").mkdir()
    for i in range(6):
        mask = np.zeros((96, 96), np.uint8)
        mask[:48] = 1
        tifffile.imwrite(data / "ignore" / f"im{i}.tif", mask)
    entry = load_entry("nuclei_semseg_2d", TINY + ["data.layout.exclusion=ignore", "data.augment.flip=false",
                                                   "data.augment.rotate90=false", "data.patch=[96,96]"])
    dm = data_module(entry, data)
    dm.prepare()
    x, y, keep = dm.train_set[0]
    assert keep.shape == y.shape and keep[0, :48].max() == 0 and keep[0, 48:].min() == 1
    tifffile.imwrite(data / "ignore" / "im2.tif", np.zeros((90, 96), np.uint8))
    with pytest.raises(DataError, match=r"ignore/im2.tif: exclusion mask shape \(90, 96\) differs"):
        data_module(entry, data).prepare()


# --- persistent cache, partial loading, foreground sampling ------------------------------------------

def test_normalization_change_invalidates_the_cache(data6, tmp_path):
    from mmv_zoo.data.pairs import Pair
    from mmv_zoo.data.persistent_cache import PairCache, pair_key

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        shutil.copy(data6 / sub / "im0.tif", tmp_path / sub / "im0.tif")
    pair = Pair(tmp_path / "images" / "im0.tif", tmp_path / "labels" / "im0.tif")
    a = load_entry("nuclei_semseg_2d", ["data.normalization.source={kind: percentile, lower: 1, upper: 99.8}"])
    b = load_entry("nuclei_semseg_2d", ["data.normalization.source={kind: percentile, lower: 1, upper: 90}"])
    cache = PairCache(tmp_path / "cache", a)
    first = cache(pair)
    assert (cache.misses, cache.hits) == (1, 0)
    again = PairCache(tmp_path / "cache", a)(pair)  # a new process would see the same
    assert isinstance(again.source, np.memmap)
    np.testing.assert_array_equal(np.asarray(again.source), np.asarray(first.source))
    assert pair_key(pair, a) == pair_key(pair, load_entry("nuclei_semseg_2d", ["training.max_epochs=3"]))
    assert pair_key(pair, b) != pair_key(pair, a)
    cache_b = PairCache(tmp_path / "cache", b)
    other = cache_b(pair)
    assert (cache_b.misses, cache_b.hits) == (1, 0)
    assert not np.allclose(np.asarray(other.source), np.asarray(first.source))
    key = pair_key(pair, a)
    os.utime(pair.source, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed
    assert pair_key(pair, a) != key
    cache(pair)
    assert (cache.misses, cache.hits) == (2, 0)


def test_cached_training_matches_in_memory_patches(data6, tmp_path):
    from mmv_zoo.data.module import data_module

    memory = data_module(load_entry("nuclei_semseg_2d", TINY), data6)
    cached = data_module(load_entry("nuclei_semseg_2d", TINY + ["data.cache.enabled=true",
                                                                f"data.cache.folder={tmp_path}"]), data6)
    memory.prepare()
    cached.prepare()
    for i in (0, 5):
        for a, b in zip(memory.train_set[i], cached.train_set[i], strict=True):
            torch.testing.assert_close(a, b)
    assert cached.train_set._loaded and isinstance(cached.train_set.get(0).source, np.memmap)


def test_partial_loading_holds_a_subset(data6, tmp_path):
    from mmv_zoo.data.module import data_module

    entry = load_entry("nuclei_semseg_2d", TINY + ["training.patches_per_image=3",
                                                   "data.partial={files_per_epoch: 2, refresh_every: 2}"])
    dm = data_module(entry, data6)
    dm.prepare()
    ds = dm.train_set
    assert not ds._loaded  # nothing read before an epoch needs it
    subsets = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ds[i]
        assert len(ds) == 6 and sorted(ds._loaded) == ds.active and len(ds.active) == 2
        subsets.append(tuple(ds.active))
    assert subsets[0] == subsets[1] and subsets[2] == subsets[3]  # refreshed every 2 epochs
    assert len(set(subsets)) > 1


def test_foreground_weighted_sampling(data6):
    from mmv_zoo.data.module import data_module

    def patches(fraction: float) -> np.ndarray:
        entry = load_entry("nuclei_semseg_2d", TINY + ["data.patch=[16,16]", "training.patches_per_image=40",
                                                       f"data.sampling.foreground_fraction={fraction}"])
        dm = data_module(entry, data6)
        dm.prepare()
        return np.stack([dm.train_set[i][1].numpy() > 0 for i in range(len(dm.train_set))])

    weighted, uniform = patches(1.0), patches(0.0)
    assert weighted.reshape(len(weighted), -1).any(1).all()  # every patch holds foreground
    assert weighted.mean() > uniform.mean() + 0.05


def test_training_with_masks_cache_and_partial_loading(data6, tmp_path):
    """Exclusion masks, the persistent cache and partial loading together through the Trainer."""
    from mmv_zoo.training.train import train

    data = tmp_path / "data"
    shutil.copytree(data6, data)
    (data / "ignore").mkdir()
    for i in range(0, 6, 2):  # masks for some images only
        mask = np.zeros((96, 96), np.uint8)
        mask[:, :40] = 255
        tifffile.imwrite(data / "ignore" / f"im{i}.tif", mask)
    overrides = TINY + ["data.layout.exclusion=ignore", "data.cache.enabled=true",
                        f"data.cache.folder={tmp_path / 'cache'}", "data.partial={files_per_epoch: 2}",
                        "training.max_epochs=2", "training.patches_per_image=2"]
    run = train(load_entry("nuclei_semseg_2d", overrides), data, tmp_path / "runs", progress=False)
    info = json.loads((run.folder / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 4  # 2 epochs x 2 images x 2 patches / batch 2
    assert len(list((tmp_path / "cache").glob("*/*/meta.json"))) >= 3  # the images the epochs used, cached


def test_tune_lr_and_batch_size_write_a_resolved_entry(data6, tmp_path):
    from mmv_zoo.training.tune import tune

    entry = load_entry("nuclei_semseg_2d", TINY)
    lr = tune("lr", entry, data6, tmp_path / "lr" / "rdf.yaml", num_training=20)
    tuned = load_entry(tmp_path / "lr" / "rdf.yaml")
    assert lr.field == "training.optimizer.lr" and tuned.mmv.training.optimizer.lr == lr.value > 0
    assert tuned.mmv.network == entry.mmv.network  # everything else as it was
    bs = tune("batch-size", load_entry("nuclei_semseg_2d", TINY), data6, tmp_path / "bs" / "rdf.yaml",
              max_batch_size=8)
    assert bs.before == 2 and bs.value == 8  # doubled until the limit (no out-of-memory on this data)
    assert load_entry(tmp_path / "bs" / "rdf.yaml").mmv.training.batch_size == 8
    with pytest.raises(EntryError, match="choose lr or batch-size"):
        tune("epochs", entry, data6)
