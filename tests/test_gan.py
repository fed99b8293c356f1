"""pix2pix and CycleGAN: separate generator/discriminator updates (2D and 3D), training visibility,
`init_from`, the unpaired layout, the entries, and BioImage.IO export (CycleGAN: both directions)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from mmv_zoo.entry import EntryError, bundled_entries, load_entry
from mmv_zoo.errors import DataError, RunError
from mmv_zoo.registry import framework_class

from .conftest import SAMPLE, make_3d_pairs

GAN_ENTRIES = ["labelfree_3d_pix2pix", "synthetic_2d_pix2pix", "synthetic_3d_pix2pix", "unsupervised_seg_2d_cyclegan",
               "unsupervised_seg_3d_cyclegan", "staining_transfer_2d_pix2pix"]
TINY_NET = "network={kind: fnet, depth: 2, mult_chan: 4}"
TINY_TRAIN = ["training.max_epochs=1", "training.patches_per_image=2", "training.batch_size=2"]
TINY = {  # entry -> overrides for a run of a few seconds (fnet depth 2 generators, small discriminators)
    "synthetic_2d_pix2pix": [TINY_NET, "data.patch=[32,32]", "pix2pix.discriminator={channels: 4, depth: 2}",
                             *TINY_TRAIN],
    "labelfree_3d_pix2pix": [TINY_NET, "data.patch=[16,32,32]", "pix2pix.discriminator={channels: 4, depth: 2}",
                             *TINY_TRAIN],
    "unsupervised_seg_2d_cyclegan": [TINY_NET, "data.patch=[32,32]", "cyclegan.discriminator={channels: 4, depth: 2}",
                                     *TINY_TRAIN],
    "unsupervised_seg_3d_cyclegan": [TINY_NET, "data.patch=[16,32,32]",
                                     "cyclegan.discriminator={channels: 4, depth: 2}", *TINY_TRAIN],
}


def _error(ref: str, overrides: list[str]) -> str:
    with pytest.raises(EntryError) as info:
        load_entry(ref, overrides)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


def _floats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(v, after[k]) for k, v in before.items())


def _parts(model) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    return model.generators, model.discriminators


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def data_2d(tmp_path_factory) -> Path:
    """Three real 96x96 crops and their label masks (images/, labels/), as pairs or unpaired."""
    root = tmp_path_factory.mktemp("gan2d")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    for path in sorted((SAMPLE / "train" / "images").glob("*.tif"))[:3]:
        tifffile.imwrite(root / "images" / path.name, tifffile.imread(path)[100:196, 100:196])
        tifffile.imwrite(root / "labels" / path.name,
                         tifffile.imread(SAMPLE / "train" / "labels" / path.name)[100:196, 100:196])
    return root


@pytest.fixture(scope="module")
def data_3d(tmp_path_factory) -> Path:
    """Synthetic 3D stacks: brightfield/fluorescence pairs, and images/masks for the unpaired entry."""
    root = tmp_path_factory.mktemp("gan3d")
    make_3d_pairs(root, "brightfield", "fluorescence", shape=(16, 36, 36))
    make_3d_pairs(root, "images", "masks", n=3, shape=(16, 40, 36), seed=1)
    return root


def _train(entry_name: str, data: Path, out: Path, extra: list[str] | None = None):
    from mmv_zoo.training.train import train

    entry = load_entry(entry_name, TINY[entry_name] + (extra or []))
    return entry, train(entry, data, out, progress=False)


@pytest.fixture(scope="module")
def pix2pix_run(data_2d, tmp_path_factory):
    entry, result = _train("synthetic_2d_pix2pix", data_2d, tmp_path_factory.mktemp("runs_p2p"),
                           ["pix2pix.sample_every=1"])
    return entry, result.folder


@pytest.fixture(scope="module")
def cyclegan_run(data_2d, tmp_path_factory):
    entry, result = _train("unsupervised_seg_2d_cyclegan", data_2d, tmp_path_factory.mktemp("runs_cyc"))
    return entry, result.folder


# ---------------------------------------------------------------- the entries and their settings


def test_every_gan_entry_validates(capsys):
    from mmv_zoo.cli.app import main

    assert set(GAN_ENTRIES) <= set(bundled_entries())
    for name in GAN_ENTRIES:
        entry = load_entry(name)
        assert entry.mmv.framework in ("pix2pix", "cyclegan")
        assert getattr(entry.mmv, entry.mmv.framework) is not None
        readme = Path(entry.source).parent / "README.md"
        assert readme.is_file() and name in readme.read_text()
        assert re.fullmatch(r"[A-Za-z0-9_+\- ()]+", entry.name), entry.name  # BioImage.IO's name characters
    labelfree = load_entry("labelfree_3d_pix2pix")
    assert labelfree.mmv.network.kind == "fnet" and labelfree.mmv.data.normalization.source.kind == "center"
    assert load_entry("staining_transfer_2d_pix2pix").mmv.network.kind == "unet"
    assert load_entry("unsupervised_seg_3d_cyclegan").mmv.data.layout.layout == "unpaired_folders"
    zoo = sorted(str(p.parent) for p in Path(load_entry("nuclei_semseg_2d").source).parents[1].glob("*/rdf.yaml"))
    import sys

    old, sys.argv = sys.argv, ["mmv-zoo", "validate", *zoo]
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = old
    out = capsys.readouterr().out
    assert info.value.code == 0, out
    assert out.count("valid") == len(zoo) and "invalid" not in out


def test_fcn_entries_have_no_gan_block():
    entry = load_entry("nuclei_semseg_2d")
    assert entry.mmv.pix2pix is None and entry.mmv.cyclegan is None
    from mmv_zoo.entry import entry_to_yaml

    assert "pix2pix" not in entry_to_yaml(entry) and "cyclegan" not in entry_to_yaml(entry)
    assert load_entry("synthetic_2d_pix2pix", ["pix2pix=null"]).mmv.pix2pix.reconstruction_weight == 100  # defaults


@pytest.mark.parametrize(("entry", "override", "needles"), [
    ("synthetic_2d_pix2pix", "pix2pix.adversarial=wgan", ["config.mmv_zoo.pix2pix.adversarial", "hinge"]),
    ("synthetic_2d_pix2pix", "pix2pix.discriminator.depth=6",
     ["config.mmv_zoo.pix2pix.discriminator", "192", "[128, 128]"]),
    ("synthetic_2d_pix2pix", "pix2pix.reconstruction_weightt=1", ["reconstruction_weightt: unknown key", "init_from"]),
    ("synthetic_2d_pix2pix", "data.layout={layout: unpaired_folders}", ["config.mmv_zoo.data.layout", "cyclegan"]),
    ("synthetic_2d_pix2pix", "cyclegan={}", ["config.mmv_zoo.cyclegan", "framework is 'pix2pix'"]),
    ("nuclei_semseg_2d", "pix2pix={}", ["config.mmv_zoo.pix2pix", "framework is 'fcn'"]),
    ("nuclei_semseg_2d", "data.layout={layout: unpaired_folders}", ["config.mmv_zoo.data.layout", "fcn"]),
    ("unsupervised_seg_2d_cyclegan", "data.layout={layout: paired_folders}",
     ["config.mmv_zoo.data.layout", "unpaired_folders"]),
    ("unsupervised_seg_2d_cyclegan", "inputs.0.axes.1.channel_names=[a,b]",
     ["config.mmv_zoo.cyclegan.identity_weight", "inputs 2, outputs 1"]),
    ("unsupervised_seg_2d_cyclegan", "cyclegan.discriminator.anisotropic_z=true", ["anisotropic_z", "3 spatial"]),
    ("unsupervised_seg_3d_cyclegan", "data.patch=[8,128,128]",
     ["config.mmv_zoo.cyclegan.discriminator", "anisotropic_z"]),
])
def test_gan_settings_errors_name_the_field(entry, override, needles):
    msg = _error(entry, [override])
    for n in needles:
        assert n in msg, (n, msg)


def test_task_must_be_regression():
    msg = _error("synthetic_2d_pix2pix", ["task=segmentation", "loss.kind=dice", "outputs.0.axes.1.channel_names=[a,b]",
                                          "data.normalization.target={kind: none}"])
    assert "config.mmv_zoo.task" in msg and "regression" in msg


def test_anisotropic_discriminator_takes_thin_stacks():
    entry = load_entry("unsupervised_seg_3d_cyclegan", ["data.patch=[8,128,128]",
                                                        "cyclegan.discriminator.anisotropic_z=true"])
    assert entry.mmv.cyclegan.discriminator.output_size([8, 128, 128]) == [8, 14, 14]


@pytest.mark.parametrize(("dims", "patch", "aniso"), [(2, [32, 48], False), (3, [24, 32, 40], False),
                                                     (3, [5, 32, 32], True)])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_patchgan_output_size_is_predicted(dims, patch, aniso, depth):
    from mmv_zoo.nets.patchgan import PatchGAN
    from mmv_zoo.settings.gan import PatchGANSettings

    settings = PatchGANSettings(channels=2, depth=depth, anisotropic_z=aniso)
    net = PatchGAN(dims, 3, channels=2, depth=depth, anisotropic_z=aniso)
    with torch.no_grad():
        out = net(torch.zeros(2, 3, *patch))
    assert list(out.shape) == [2, 1, *settings.output_size(patch)]


# ---------------------------------------------------------------- the two updates


@pytest.mark.parametrize("name", ["synthetic_2d_pix2pix", "labelfree_3d_pix2pix", "unsupervised_seg_2d_cyclegan",
                                  "unsupervised_seg_3d_cyclegan"])
def test_discriminator_and_generator_steps_update_only_their_side(name):
    entry = load_entry(name, TINY[name])
    torch.manual_seed(0)
    model = framework_class(entry.mmv.framework)(entry.model_dump(mode="json"))
    (opt_g, opt_d), _ = model.configure_optimizers()
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(2, entry.in_channels, *entry.mmv.data.patch, generator=g),
             torch.randn(2, entry.out_channels, *entry.mmv.data.patch, generator=g))
    gens, discs = _parts(model)
    assert len(gens) == len(discs) == (2 if entry.mmv.framework == "cyclegan" else 1)

    fakes = model.generate(batch)
    g0, d0 = [_floats(m) for m in gens], [_floats(m) for m in discs]
    loss_d = model.discriminator_update(batch, fakes, opt_d)
    assert torch.isfinite(loss_d)
    assert all(_changed(before, m) for before, m in zip(d0, discs, strict=True))  # every discriminator moved
    assert not any(_changed(before, m) for before, m in zip(g0, gens, strict=True))  # no generator did

    g1, d1 = [_floats(m) for m in gens], [_floats(m) for m in discs]
    loss_g, parts = model.generator_update(batch, fakes, opt_g)
    assert torch.isfinite(loss_g) and "adversarial_g" in parts
    assert all(_changed(before, m) for before, m in zip(g1, gens, strict=True))
    assert not any(_changed(before, m) for before, m in zip(d1, discs, strict=True))
    assert all(p.requires_grad for m in discs for p in m.parameters())  # unfrozen again


def test_seeded_updates_are_reproducible():
    entry = load_entry("unsupervised_seg_2d_cyclegan", TINY["unsupervised_seg_2d_cyclegan"])
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        model = framework_class("cyclegan")(entry.model_dump(mode="json"))
        (opt_g, opt_d), _ = model.configure_optimizers()
        g = torch.Generator().manual_seed(4)
        batch = (torch.randn(2, 1, 32, 32, generator=g), torch.randn(2, 1, 32, 32, generator=g))
        fakes = model.generate(batch)
        model.discriminator_update(batch, fakes, opt_d)
        model.generator_update(batch, fakes, opt_g)
        states.append(model.state_dict())
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())


@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "hinge"])
def test_adversarial_losses_reward_the_right_side(kind):
    from mmv_zoo.frameworks.adversarial import AdversarialLoss

    loss = AdversarialLoss(kind)
    confident, fooled = torch.full((2, 1, 4, 4), 3.0), torch.full((2, 1, 4, 4), -3.0)
    assert loss.discriminator(confident, fooled) < loss.discriminator(fooled, confident)
    assert loss.generator(confident) < loss.generator(fooled)


def test_image_pool_returns_earlier_images():
    from mmv_zoo.frameworks.adversarial import ImagePool

    torch.manual_seed(0)
    pool = ImagePool(2)
    first = pool.query(torch.zeros(2, 1, 4, 4))
    assert torch.equal(first, torch.zeros(2, 1, 4, 4))
    seen = torch.cat([pool.query(torch.full((1, 1, 4, 4), float(i))) for i in range(1, 30)])
    assert (seen.flatten(1)[:, 0] == 0).any()  # some queries gave back an image from the pool
    assert len(pool.images) == 2 and ImagePool(0).query(torch.ones(1, 1, 2, 2)).sum() == 4


# ---------------------------------------------------------------- training through `train`


def _metrics_header(folder: Path) -> list[str]:
    with (folder / "metrics.csv").open() as f:
        return next(csv.reader(f))


def _fresh(entry):
    import pytorch_lightning as pl

    pl.seed_everything(entry.mmv.training.seed, verbose=False)  # train() seeds the same way before building
    return framework_class(entry.mmv.framework)(entry.model_dump(mode="json"))


def _assert_trained_both_sides(entry, folder: Path) -> None:
    from mmv_zoo.run import load_model

    fresh, trained = _fresh(entry), load_model(folder)
    for before, after in zip([*fresh.generators, *fresh.discriminators],
                             [*trained.generators, *trained.discriminators], strict=True):
        assert _changed(_floats(before), after), type(before).__name__


def test_pix2pix_run_logs_g_and_d_and_writes_samples(pix2pix_run):
    entry, folder = pix2pix_run
    header = _metrics_header(folder)
    for key in ("train_loss_g", "train_loss_d", "train_reconstruction", "train_adversarial_g", "val_loss",
                "val_metric"):
        assert key in header, header
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert any(r["train_loss_g"] and r["train_loss_d"] and r["train_loss_g"] != r["train_loss_d"] for r in rows)
    samples = sorted((folder / "samples").glob("epoch_*.png"))
    assert [p.name for p in samples] == ["epoch_0000.png"]
    from PIL import Image

    with Image.open(samples[0]) as img:
        assert img.width > img.height / 2 and img.width > 200  # three columns: input | output | target
    assert (folder / "loss_curve.png").is_file()
    assert not list((folder / "samples").glob(".*"))  # no partial files left
    _assert_trained_both_sides(entry, folder)


def test_cyclegan_run_logs_g_and_d_and_writes_samples(cyclegan_run):
    entry, folder = cyclegan_run
    header = _metrics_header(folder)
    for key in ("train_loss_g", "train_loss_d", "train_cycle", "train_identity", "val_loss", "val_metric"):
        assert key in header, header
    assert sorted(p.name for p in (folder / "samples").glob("*.png")) == ["epoch_0000.png"]  # the last epoch
    info = json.loads((folder / "run.json").read_text())
    assert len(info["train_files"]) == 4 and len(info["val_files"]) == 2  # 2 + 1 per folder
    _assert_trained_both_sides(entry, folder)


@pytest.mark.parametrize("name", ["labelfree_3d_pix2pix", "unsupervised_seg_3d_cyclegan"])
def test_3d_runs_train_generators_and_discriminators(name, data_3d, tmp_path):
    entry, result = _train(name, data_3d, tmp_path)
    assert {"train_loss_g", "train_loss_d"} <= set(_metrics_header(result.folder))
    assert list((result.folder / "samples").glob("epoch_*.png"))
    _assert_trained_both_sides(entry, result.folder)


# ---------------------------------------------------------------- init_from


@pytest.fixture(scope="module")
def fcn_run(data_2d, tmp_path_factory) -> Path:
    """An fcn run of the synthetic entry's tiny generator (mask -> image regression)."""
    from mmv_zoo.training.train import train

    entry = load_entry("synthetic_2d_pix2pix", [*TINY["synthetic_2d_pix2pix"][:2], *TINY_TRAIN, "framework=fcn",
                                                "pix2pix=null"])
    return train(entry, data_2d, tmp_path_factory.mktemp("runs_fcn"), progress=False).folder


def test_init_from_loads_the_fcn_generator(fcn_run):
    from mmv_zoo.run import load_model

    entry = load_entry("synthetic_2d_pix2pix", [*TINY["synthetic_2d_pix2pix"], f"pix2pix.init_from={fcn_run}"])
    model = framework_class("pix2pix")(entry.model_dump(mode="json"))
    fcn = load_model(fcn_run).net
    mine = model.generator.state_dict()
    assert mine.keys() == fcn.state_dict().keys()
    assert all(torch.equal(v, mine[k]) for k, v in fcn.state_dict().items())
    # the checkpoint's entry no longer names the run (a reloaded model keeps its own weights)
    assert model.hparams["entry"]["config"]["mmv_zoo"]["pix2pix"]["init_from"] is None
    assert model.hparams["initialized_from"] == str(fcn_run.resolve())
    fresh = framework_class("pix2pix")(load_entry("synthetic_2d_pix2pix", TINY["synthetic_2d_pix2pix"])
                                       .model_dump(mode="json"))
    assert not all(torch.equal(v, fresh.generator.state_dict()[k]) for k, v in mine.items())


def test_init_from_refuses_another_network_before_training(fcn_run, data_2d, tmp_path):
    from mmv_zoo.training.train import train

    overrides = [*TINY["synthetic_2d_pix2pix"], f"pix2pix.init_from={fcn_run}", "network.mult_chan=8"]
    entry = load_entry("synthetic_2d_pix2pix", overrides)
    with pytest.raises(EntryError) as info:
        train(entry, data_2d, tmp_path / "runs", progress=False)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert "config.mmv_zoo.pix2pix.init_from" in msg and "mult_chan 4 (run) vs 8 (entry)" in msg
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("run.json"))  # nothing written

    other = load_entry("synthetic_2d_pix2pix", [*TINY["synthetic_2d_pix2pix"], f"pix2pix.init_from={fcn_run}",
                                                "network={kind: unet, channels: [4, 8], strides: [4]}"])
    with pytest.raises(EntryError, match=r"init_from: .* network 'fnet' \(FNet\), this entry's generator is 'unet'"):
        framework_class("pix2pix")(other.model_dump(mode="json"))
    missing = load_entry("synthetic_2d_pix2pix", [*TINY["synthetic_2d_pix2pix"],
                                                  f"pix2pix.init_from={tmp_path / 'nope'}"])
    with pytest.raises(EntryError, match="init_from: .*no such run folder"):
        framework_class("pix2pix")(missing.model_dump(mode="json"))


# ---------------------------------------------------------------- the unpaired layout


def _constant_images(folder: Path, values: list[int], shapes: list[tuple[int, ...]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (v, shape) in enumerate(zip(values, shapes, strict=True)):
        tifffile.imwrite(folder / f"{folder.name}_{i}.tif", np.full(shape, v, np.uint16))


def _unpaired_entry(extra: list[str] | None = None):
    return load_entry("unsupervised_seg_2d_cyclegan", [
        *TINY["unsupervised_seg_2d_cyclegan"], "data.layout={layout: unpaired_folders, source: a, target: b}",
        "data.normalization={source: {kind: none}, target: {kind: none}}", "data.split.val_fraction=0.25",
        "training.patches_per_image=8", *(extra or [])])


def test_unpaired_layout_samples_two_folders_independently(tmp_path):
    from mmv_zoo.data.module import data_module
    from mmv_zoo.data.unpaired import UnpairedDataModule

    _constant_images(tmp_path / "a", [1, 2, 3, 4], [(40, 40), (48, 36), (40, 40), (64, 64)])
    _constant_images(tmp_path / "b", [10, 20, 30], [(36, 40), (40, 40), (33, 50)])
    dm = data_module(_unpaired_entry(), tmp_path)
    assert isinstance(dm, UnpairedDataModule)
    dm.prepare()
    assert len(dm.train_a) == 3 and len(dm.val_a) == 1 and len(dm.train_b) == 2 and len(dm.val_b) == 1
    ds = dm.train_set
    assert len(ds) == 3 * 8  # patches per image of the larger domain
    combos = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            a, b = ds[i]
            assert a.shape == b.shape == (1, 32, 32)
            assert a.unique().numel() == 1 and b.unique().numel() == 1  # one image per side
            combos.add((int(a.flatten()[0]), int(b.flatten()[0])))
    a_values = {int(dm.train_set.a[i].flatten()[0]) for i in range(3)}
    b_values = {int(dm.train_set.b[i].flatten()[0]) for i in range(2)}
    assert combos == {(x, y) for x in a_values for y in b_values}  # every A image meets every B image
    # deterministic per (seed, epoch, index), different across epochs
    ds.set_epoch(0)
    first = [ds.draw(i) for i in range(len(ds))]
    assert first == [ds.draw(i) for i in range(len(ds))]
    ds.set_epoch(1)
    assert first != [ds.draw(i) for i in range(len(ds))]
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])


def test_unpaired_presplit(tmp_path):
    from mmv_zoo.data.unpaired import UnpairedDataModule

    for split in ("train", "val"):
        _constant_images(tmp_path / split / "a", [1], [(40, 40)])
        _constant_images(tmp_path / split / "b", [5, 6], [(40, 40), (40, 40)])
    dm = UnpairedDataModule(_unpaired_entry(["data.split={kind: presplit}"]), tmp_path)
    dm.prepare()
    assert (len(dm.train_a), len(dm.val_a), len(dm.train_b), len(dm.val_b)) == (1, 1, 2, 2)


def test_unpaired_layout_refuses_empty_and_mismatched_folders(tmp_path):
    from mmv_zoo.data.unpaired import UnpairedDataModule

    entry = _unpaired_entry()
    _constant_images(tmp_path / "a", [1, 2], [(40, 40), (40, 40)])
    with pytest.raises(DataError, match=r"/b: no such folder \(config.mmv_zoo.data.layout.target\)"):
        UnpairedDataModule(entry, tmp_path).prepare()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"/b: no images \(config.mmv_zoo.data.layout.target"):
        UnpairedDataModule(entry, tmp_path).prepare()
    _constant_images(tmp_path / "b", [10], [(40, 40)])
    with pytest.raises(DataError, match=r"/b: 1 image; a random split needs at least 2 in each folder"):
        UnpairedDataModule(entry, tmp_path).prepare()
    tifffile.imwrite(tmp_path / "b" / "rgb.tif", np.zeros((40, 40, 3), np.uint8), photometric="rgb")
    with pytest.raises(DataError) as info:
        UnpairedDataModule(entry, tmp_path).prepare()
    msg = str(info.value)
    assert "rgb.tif: has 3 channel(s) but the entry's outputs[0] (mask: ['nucleus']) takes 1" in msg
    assert len(msg.splitlines()) == 1


def test_pix2pix_refuses_unpaired_data_at_validation():
    msg = _error("synthetic_2d_pix2pix", ["data.layout={layout: unpaired_folders, source: labels, target: images}"])
    assert msg.endswith("framework pix2pix needs pairs: layout paired_folders or csv")


# ---------------------------------------------------------------- directions, prediction and export


def test_cyclegan_predicts_both_directions(cyclegan_run, data_2d):
    from mmv_zoo.io.read import read_image
    from mmv_zoo.predict.engine import predict_array
    from mmv_zoo.run import load_model

    _, folder = cyclegan_run
    image = read_image(sorted((data_2d / "images").iterdir())[0], 2).data[:, :60, :52]
    for direction, src, dst in (("a2b", "raw", "mask"), ("b2a", "mask", "raw")):
        model = load_model(folder, direction=direction)
        assert model.entry.inputs[0].id == src and model.entry.outputs[0].id == dst
        y = predict_array(model, image, model.entry)
        assert y.shape == (1, 60, 52) and np.isfinite(y).all()
    b2a = load_model(folder, direction="b2a").entry
    assert b2a.mmv.data.normalization.source.kind == "foreground"
    assert b2a.mmv.data.layout.source == "labels" and b2a.name.endswith("(b2a)")
    with pytest.raises(RunError, match="direction"):
        load_model(folder, direction="sideways")


def test_direction_is_refused_for_one_way_runs(pix2pix_run):
    from mmv_zoo.run import load_model

    with pytest.raises(RunError, match="a direction \\(b2a\\) is for CycleGAN runs; .* pix2pix"):
        load_model(pix2pix_run[1], direction="b2a")


def test_pix2pix_run_exports_a_tested_package(pix2pix_run, tmp_path):
    from bioimageio.core import test_model

    from mmv_zoo.export.package import export_package

    result = export_package(pix2pix_run[1], tmp_path / "p2p.zip")
    assert result.test_status == "passed" and set(result.test_results) == {"torchscript", "pytorch_state_dict"}
    summary = test_model(tmp_path / "p2p.zip", weight_format="torchscript")
    assert summary.status == "passed", summary.format()


def test_cyclegan_run_exports_both_directions(cyclegan_run, tmp_path):
    from bioimageio.core import create_prediction_pipeline, test_model
    from bioimageio.core.digest_spec import get_test_input_sample
    from bioimageio.spec import load_description

    from mmv_zoo.export.package import export_package
    from mmv_zoo.run import load_model
    from mmv_zoo.transforms.normalize import normalize

    _, folder = cyclegan_run
    for direction, src, dst in (("a2b", "raw", "mask"), ("b2a", "mask", "raw")):
        out = tmp_path / f"{direction}.zip"
        result = export_package(folder, out, formats=("torchscript",), direction=direction)
        assert result.test_status == "passed"
        assert test_model(out, weight_format="torchscript").status == "passed"
        descr = load_description(out)
        assert (descr.inputs[0].id, descr.outputs[0].id) == (src, dst)
        assert str(descr.name).endswith(f"({direction})")
        # the package reproduces the run's own normalization and generator on its test input
        model = load_model(folder, direction=direction)
        axes = [a.id for a in descr.inputs[0].axes]
        raw = get_test_input_sample(descr).members[descr.inputs[0].id].transpose(axes).data.values
        x = normalize(raw[0], model.entry.mmv.data.normalization.source)[None]
        with torch.no_grad():
            expected = model.inference_model()(torch.from_numpy(x)).numpy()
        with create_prediction_pipeline(bioimageio_model=descr, weight_format="torchscript") as pp:
            got = pp.predict_sample_without_blocking(get_test_input_sample(descr), skip_input_padding=True,
                                                     skip_output_cropping=True)
        got = got.members[descr.outputs[0].id].transpose([a.id for a in descr.outputs[0].axes]).data.values
        if direction == "b2a":  # a mask in, a generated image out
            np.testing.assert_allclose(got, expected, atol=1e-4)
            assert [p.id for p in descr.inputs[0].preprocessing][:2] == ["ensure_dtype", "binarize"]
            assert "binarize" not in [p.id for p in descr.outputs[0].postprocessing]
        else:  # image -> mask: the package outputs the 0/1 mask, the generated values cut at 0 (range -1,1)
            assert [p.id for p in descr.outputs[0].postprocessing] == ["binarize", "ensure_dtype"]
            assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
            decided = np.abs(expected) > 1e-4  # a value within float noise of the cut-off may go either way
            np.testing.assert_array_equal(got[decided], (expected > 0)[decided])


def test_a_mask_generator_is_evaluated_as_a_segmentation(cyclegan_run, data_2d, tmp_path):
    """CycleGAN image -> mask: its run's output is cut at 0 (the middle of the ±1 masks, as the package's
    binarize) and scored with foreground F1/IoU against any non-zero label, like the segmentation entries."""
    from mmv_zoo import metrics
    from mmv_zoo.evaluate.scoring import evaluate
    from mmv_zoo.predict.engine import predict_array
    from mmv_zoo.run import load_model
    from mmv_zoo.transforms.normalize import mask_cutoff

    entry, folder = cyclegan_run
    assert mask_cutoff(entry.mmv.task, entry.mmv.data.normalization.target) == 0.0
    result = evaluate(folder, data_2d, tmp_path / "ev")
    assert result.task == "segmentation" and result.columns == ["f1_foreground", "iou_foreground"]
    model = load_model(folder)
    for row in result.images:
        pred = tifffile.imread(row.prediction)
        image = tifffile.imread(row.source).astype(np.float32)
        raw = predict_array(model, image[None], model.entry)[0]
        np.testing.assert_array_equal(pred, (raw > 0).astype(np.uint8))
        truth = tifffile.imread(row.target) > 0
        cm = metrics.confusion_matrix(pred.astype(np.int64), truth.astype(np.int64), 2)
        assert row.scores["f1_foreground"] == pytest.approx(float(metrics.scores_from_confusion(cm)["f1"][1]))


def test_cli_export_direction(pix2pix_run, cyclegan_run, tmp_path, capsys):
    from .test_cli import assert_clean_error, run_cli

    code, _, err = run_cli(["export", str(pix2pix_run[1]), "--out", str(tmp_path / "x.zip"), "--direction", "b2a"],
                           capsys)
    assert_clean_error(code, err, "a direction (b2a) is for CycleGAN runs", "pix2pix")
    code, _, err = run_cli(["export", str(cyclegan_run[1]), "--out", str(tmp_path / "y.zip"), "--direction", "ab"],
                           capsys)
    assert_clean_error(code, err, "direction 'ab'; valid: a2b, b2a")
    assert not list(tmp_path.iterdir())
