"""EmbedSeg instance segmentation: the loss learns in 2D and 3D, objects with a hole or of two parts and
objects across tile borders come out whole from `mmv-zoo predict`, the exclusion mask takes pixels
out of the gradient, the vectorized clustering equals a plain loop, and bad training data is refused
before training starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from mmv_zoo.data.instances import centre_map
from mmv_zoo.entry import EntryError, load_entry
from mmv_zoo.errors import DataError
from mmv_zoo.frameworks.embedseg.cluster import cluster, cluster_reference
from mmv_zoo.frameworks.embedseg.embedding import UNIT, coordinate_grid
from mmv_zoo.frameworks.embedseg.loss import spatial_embedding_loss
from mmv_zoo.registry import framework_class

TINY_UNET = "network={kind: unet, channels: [8, 16, 32], num_res_units: 1}"


def shapes_2d(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(image (1, h, w) float32, labels (1, h, w)): a ring (an object with a hole), one object of two
    separate disks, a long bar and a plain disk, each with its own brightness."""
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.int64)
    r = np.hypot(yy - 14, xx - 14)
    lab[(r < 10) & (r >= 5)] = 1
    lab[np.hypot(yy - 36, xx - 8) < 5] = 2
    lab[np.hypot(yy - 36, xx - 28) < 5] = 2
    lab[6:12, 30:62] = 3
    lab[np.hypot(yy - 34, xx - 50) < 7] = 4
    img = (lab > 0) * 1.0 + (lab == 2) * 0.5 + (lab == 1) * 0.25
    return img.astype(np.float32)[None], lab[None]


def balls_3d(shape=(8, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    zz, yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.int64)
    for k, (z, y, x) in enumerate([(3, 8, 8), (4, 20, 22), (4, 24, 8)], start=1):
        lab[(((zz - z) * 2.5) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) < 36] = k
    return (lab > 0).astype(np.float32)[None], lab[None]


def entry_2d(extra: list[str] | None = None):
    return load_entry("nuclei_instance_2d", [TINY_UNET, "data.patch=[48,64]", "data.normalization.source={kind: none}",
                                             "embedseg.min_size=8", *(extra or [])])


def entry_3d():
    return load_entry("instance_seg_3d_embedseg", [
        "network={kind: unet, channels: [8, 16, 32], strides: [[1, 2, 2], [2, 2, 2]], num_res_units: 1}",
        "data.patch=[8,32,32]", "data.normalization.source={kind: none}", "embedseg.min_size=8"])


def model_of(entry):
    torch.manual_seed(0)
    return framework_class("embedseg")(entry.model_dump(mode="json"))


def target(lab: np.ndarray, exclusion: np.ndarray | None = None, kind: str = "medoid") -> torch.Tensor:
    excl = np.zeros(lab.shape, np.int64) if exclusion is None else exclusion.astype(np.int64)
    cen = centre_map(lab, excl.astype(np.uint8), kind, [1.0] * (lab.ndim - 1), np.random.default_rng(0))
    return torch.from_numpy(np.concatenate([lab, cen, excl]))[None]


def fit(model, img: np.ndarray, lab: np.ndarray, steps: int, lr: float = 3e-3) -> list[float]:
    x, y = torch.from_numpy(img)[None], target(lab)
    opt = torch.optim.Adam(model.parameters(), lr)
    losses = []
    for _ in range(steps):
        loss, _ = model.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def same_objects(pred: np.ndarray, lab: np.ndarray, min_share: float = 0.95) -> dict[int, int]:
    """Each true object -> the one predicted label covering at least `min_share` of it (AssertionError
    otherwise), and no predicted label shared by two objects."""
    found = {}
    for k in np.unique(lab[lab > 0]):
        ids, counts = np.unique(pred[lab == k], return_counts=True)
        best = int(ids[np.argmax(counts)])
        assert best != 0 and counts.max() >= min_share * counts.sum(), (k, dict(zip(ids, counts, strict=True)))
        found[int(k)] = best
    assert len(set(found.values())) == len(found), found
    return found


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("dims", [2, 3])
def test_loss_decreases(dims):
    entry = entry_2d() if dims == 2 else entry_3d()
    img, lab = shapes_2d() if dims == 2 else balls_3d()
    losses = fit(model_of(entry), img, lab, 60)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)


@pytest.fixture(scope="module")
def trained_2d(tmp_path_factory):
    """A tiny UNet EmbedSeg fitted to the shapes image (ring, two-part object, bar, disk)."""
    entry = entry_2d()
    model = model_of(entry)
    fit(model, *shapes_2d(), 400)
    return model.eval()


def test_hole_and_two_parts_survive_training_to_prediction(trained_2d):
    from mmv_zoo.predict.engine import RunPredictor

    img, lab = shapes_2d()
    y, names = RunPredictor("unused", model=trained_2d).predict(img)
    assert names == ["labels"] and y.dtype == np.uint16 and y.shape == lab.shape
    found = same_objects(y[0], lab[0])
    assert len(found) == 4  # the ring's hole stays background, the two disks share one label
    hole = np.hypot(*np.mgrid[-14:34, -14:50]) < 3
    assert (y[0][hole] == 0).all()


def test_instance_across_tile_borders_gets_one_label(trained_2d):
    from mmv_zoo.predict.engine import Options, RunPredictor

    img, lab = shapes_2d()
    small = Options(budget=32 * 32, overlap=0.25)
    predictor = RunPredictor("unused", model=trained_2d, options=small)
    from mmv_zoo.predict.halo import entry_halo
    from mmv_zoo.predict.tiler import plan_tiles

    entry = trained_2d.entry
    halo, _ = entry_halo(entry, trained_2d.inference_model())
    plan = plan_tiles(img.shape[1:], entry.mmv.network.size_rule(2), halo, small.budget, small.overlap, "image")
    cores_x = plan.starts(1)
    assert len(cores_x) > 1 and any(30 < s < 62 for s in cores_x[1:])  # the bar (x 30..61) spans a core border
    y, _ = predictor.predict(img)
    found = same_objects(y[0], lab[0], 0.9)
    assert len(found) == 4


def test_exclusion_pixel_changes_no_gradient():
    rng = np.random.default_rng(0)
    _, lab = shapes_2d()
    excl = np.zeros_like(lab)
    excl[0, 30:40, 40:56] = 1  # over part of the disk and background
    excl[0, 8, 35] = 1  # one pixel of the bar
    out = torch.from_numpy(rng.normal(0, 0.3, (1, 5, *lab.shape[1:])).astype(np.float32))
    out[:, 2:4] += 1.0

    def grads(o: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.tensor(o, requires_grad=True)
        y = target(labels, excl)
        loss, _ = spatial_embedding_loss(t, y[:, :1], y[:, 1:2], y[:, 2:3], [1 / UNIT] * 2, 2)
        loss.backward()
        return float(loss), t.grad.numpy()

    loss, g = grads(out.numpy(), lab)
    masked = np.broadcast_to(excl[None].astype(bool), g.shape)
    assert np.abs(g[~masked]).sum() > 0
    assert (g[masked] == 0).all()
    # other outputs and other labels under the mask change nothing
    other = out.numpy().copy()
    other[masked] = rng.normal(0, 5, int(masked.sum()))
    relabelled = lab.copy()
    relabelled[excl.astype(bool)] = 7
    loss2, g2 = grads(other, relabelled)
    assert loss2 == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(g2, g, atol=1e-7)


# ---------------------------------------------------------------- clustering


def oracle(lab: np.ndarray, kind: str = "medoid") -> np.ndarray:
    """Ideal embeddings (5, *S) for 2D labels: offsets to each object's centre, sigma 0.8 (a bandwidth of
    about 15 pixels), seediness 1 on objects."""
    d = lab.ndim - 1
    spacing = [1 / UNIT] * d
    grid = coordinate_grid(lab.shape[1:], spacing, dtype=torch.float64).numpy()
    cen = centre_map(lab, np.zeros(lab.shape, np.uint8), kind, [1.0] * d, np.random.default_rng(0))[0]
    out = np.zeros((2 * d + 1, *lab.shape[1:]))
    for k in np.unique(lab[lab > 0]):
        at = np.argwhere(cen == k)[0]
        for a in range(d):
            out[a][lab[0] == k] = grid[a][tuple(at)] - grid[a][lab[0] == k]
    out[d:2 * d] = 0.8
    out[2 * d] = (lab[0] > 0) * 0.95
    return out


def test_oracle_embeddings_cluster_into_the_labels_with_holes_and_parts():
    _, lab = shapes_2d()
    ids = cluster(torch.from_numpy(oracle(lab)), [1 / UNIT] * 2, 2, min_size=8).numpy()
    found = same_objects(ids, lab[0], 1.0)
    assert len(found) == 4 and (ids[lab[0] == 0] == 0).all()


def test_vectorized_clustering_equals_the_loop():
    rng = np.random.default_rng(1)
    _, lab = shapes_2d(24, 32)
    lab = lab[:, :24, :32]
    out = oracle(lab) + np.concatenate([rng.normal(0, 3 / UNIT, (2, 24, 32)), rng.normal(0, 0.05, (2, 24, 32)),
                                        rng.normal(0, 0.1, (1, 24, 32))])
    out[4] = out[4].clip(0, 1)
    spacing = [1 / UNIT, 1 / UNIT]
    for seed_threshold, min_size in ((0.9, 4), (0.6, 2), (0.5, 10)):
        fast = cluster(torch.from_numpy(out), spacing, 2, seed_threshold, 0.5, min_size).numpy()
        slow = cluster_reference(out, spacing, 2, seed_threshold, 0.5, min_size)
        assert fast.max() >= 1
        np.testing.assert_array_equal(fast, slow)


# ---------------------------------------------------------------- entries and bad input


def test_entries_and_rules():
    for name in ("nuclei_instance_2d", "instance_seg_2d_embedseg", "instance_seg_3d_embedseg"):
        entry = load_entry(name)
        assert entry.mmv.task == "instance" and entry.mmv.framework == "embedseg"
    e3 = load_entry("instance_seg_3d_embedseg")
    from mmv_zoo.frameworks.embedseg.embedding import entry_spacing

    sz, sy, sx = entry_spacing(e3)
    assert sz / sx == pytest.approx(0.29 / 0.108) and sy == sx
    with pytest.raises(EntryError, match="config.mmv_zoo.task: instance segmentation is trained by framework embedseg"):
        load_entry("nuclei_instance_2d", ["framework=fcn", "embedseg=null"])
    with pytest.raises(EntryError, match=r"outputs\[0\].axes: embedseg .* 4 channels, e.g. channel_names: "
                                         r"\[offset_y, offset_x, sigma, seed\]; the entry has 5"):
        load_entry("nuclei_instance_2d", ["embedseg.n_sigma=1"])
    with pytest.raises(EntryError, match="config.mmv_zoo.embedseg.n_sigma: 2 sigma channels for 3 space axes"):
        load_entry("instance_seg_3d_embedseg", ["embedseg.n_sigma=2"])
    with pytest.raises(EntryError, match="config.mmv_zoo.data.labels: instance labels are read as they are"):
        load_entry("nuclei_instance_2d", ["data.labels=foreground"])
    with pytest.raises(EntryError, match="config.mmv_zoo.loss.kind: task instance takes the embedseg loss"):
        load_entry("nuclei_instance_2d", ["loss={kind: dice}"])


def _write_pairs(root: Path, n: int = 2) -> Path:
    img, lab = shapes_2d()
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tifffile.imwrite(root / "images" / f"im{i}.tif", (img[0] * 200).astype(np.uint8))
        tifffile.imwrite(root / "labels" / f"im{i}.tif", lab[0].astype(np.uint16))
    return root


def _refused(entry, data: Path, out: Path) -> str:
    from mmv_zoo.training.train import train

    with pytest.raises(DataError) as info:
        train(entry, data, out, progress=False)
    assert not out.exists() or not any(out.rglob("*.ckpt"))
    return str(info.value)


def test_binary_mask_is_refused_before_training(tmp_path):
    data = _write_pairs(tmp_path / "data")
    binary = tmp_path / "data" / "labels" / "im1.tif"
    tifffile.imwrite(binary, (shapes_2d()[1][0] > 0).astype(np.uint8))
    msg = _refused(entry_2d(), data, tmp_path / "runs")
    assert str(binary) in msg and "binary mask, not instance labels" in msg and "separate objects" in msg
    assert "im0.tif" not in msg


def test_binary_mask_refused_by_the_cli(tmp_path, capsys):
    from .test_cli import assert_clean_error, run_cli

    data = _write_pairs(tmp_path / "data")
    binary = data / "labels" / "im0.tif"
    tifffile.imwrite(binary, (shapes_2d()[1][0] > 0).astype(np.uint8) * 255)
    code, _, err = run_cli(["train", "nuclei_instance_2d", "--data", str(data), "--out", str(tmp_path / "runs"),
                            "--set", TINY_UNET, "--set", "data.patch=[48,64]"], capsys)
    assert_clean_error(code, err, str(binary), "binary mask, not instance labels")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_exclusion_mask_of_wrong_shape_is_refused(tmp_path):
    data = _write_pairs(tmp_path / "data")
    (data / "masks").mkdir()
    bad = data / "masks" / "im0.tif"
    tifffile.imwrite(bad, np.zeros((40, 64), np.uint8))
    entry = entry_2d(["data.layout.exclusion=masks"])
    msg = _refused(entry, data, tmp_path / "runs")
    assert str(bad) in msg and "exclusion mask of shape (40, 64)" in msg and "(48, 64)" in msg


def test_exclusion_folder_trains_and_masks_patches(tmp_path):
    from mmv_zoo.data.instances import InstanceDataModule

    data = _write_pairs(tmp_path / "data", 3)
    (data / "masks").mkdir()
    mask = np.zeros((48, 64), np.uint8)
    mask[:, :24] = 1
    for i in range(3):
        tifffile.imwrite(data / "masks" / f"im{i}.tif", mask)
    dm = InstanceDataModule(entry_2d(["data.layout.exclusion=masks", "data.augment={flip: false, rotate90: false}"]),
                            data)
    dm.prepare()
    x, y = dm.train_set[0]
    assert y.shape == (3, 48, 64) and (y[2, :, :24] == 1).all() and (y[2, :, 24:] == 0).all()
    centres = y[1][y[1] > 0]
    assert 1 not in centres.tolist()  # the ring lies under the mask: no centre


def test_train_and_predict_write_uint16_labels(tmp_path):
    from mmv_zoo.predict.batch import predict_files
    from mmv_zoo.predict.engine import Options
    from mmv_zoo.training.train import train

    data = _write_pairs(tmp_path / "data", 3)
    entry = entry_2d(["training.max_epochs=1", "training.patches_per_image=2", "training.batch_size=2"])
    run = train(entry, data, tmp_path / "runs", progress=False).folder
    metrics = (run / "metrics.csv").read_text()
    assert "train_instance" in metrics and "val_metric" in metrics
    results = predict_files(run, [data / "images" / "im0.tif"], tmp_path / "pred")
    out = tifffile.imread(results[0].output)
    assert out.dtype == np.uint16 and out.shape[-2:] == (48, 64)
    raw = predict_files(run, [data / "images" / "im0.tif"], tmp_path / "raw", options=Options(probabilities=True))
    emb = tifffile.imread(raw[0].output)
    assert emb.dtype == np.float32 and 5 in emb.shape  # offsets, sigmas, seed

    # its embeddings package (export --embeddings), predicted with `mmv-zoo predict`, gives the run's
    # embeddings and clusters them into labels with the settings in the package's config.mmv_zoo
    # (--probabilities: the embeddings); the labels package is tests/test_instance_packages.py's
    from mmv_zoo.export.package import export_package
    from mmv_zoo.metrics import average_precision
    from mmv_zoo.predict.engine import postprocess

    package = export_package(run, tmp_path / "instances.zip", formats=("torchscript",), embeddings=True).zip_path
    image = [data / "images" / "im0.tif"]

    def written(source, folder: str, **kw) -> np.ndarray:
        opts = Options(border="mirror", threshold=0.3, **kw)  # packages mirror the border; low seed threshold
        return tifffile.imread(predict_files(source, image, tmp_path / folder, options=opts)[0].output)

    by_run, by_pkg = written(run, "r"), written(package, "p")
    raw_run, raw_pkg = written(run, "rr", probabilities=True), written(package, "pr", probabilities=True)
    assert by_pkg.dtype == by_run.dtype and by_pkg.shape == by_run.shape and by_run.max() > 0
    assert raw_pkg.dtype == np.float32 and np.abs(raw_pkg - raw_run).max() < 1e-4  # torchscript vs folded net
    emb = raw_pkg.reshape(5, *raw_pkg.shape[-2:])
    np.testing.assert_array_equal(np.squeeze(by_pkg), np.squeeze(postprocess(emb, entry, options=Options(
        threshold=0.3))[0]))  # the package's labels are its embeddings clustered as a run's
    # greedy clustering of an untrained model's embeddings is sensitive to 1e-6 differences: the same
    # objects, not the same pixels
    assert average_precision(np.squeeze(by_pkg), np.squeeze(by_run), 0.5) > 0.8


@pytest.mark.parametrize(("dims", "anisotropic", "shape"), [(2, False, (24, 40)), (3, True, (5, 16, 24)),
                                                             (3, False, (8, 16, 8))])
def test_branched_erfnet_shapes_and_branches(dims, anisotropic, shape):
    from mmv_zoo.nets.erfnet import BranchedERFNet
    from mmv_zoo.settings.networks import BranchedERFNetSettings

    rules = BranchedERFNetSettings(kind="branched_erfnet", anisotropic_z=anisotropic).size_rule(dims)
    assert [r.step for r in rules] == ([1] if anisotropic else []) + [8] * (dims - anisotropic)
    net = BranchedERFNet(dims, 2, 2 * dims + 1, channels=[4, 8, 16], anisotropic_z=anisotropic).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 2, *shape))
    assert y.shape == (2, 2 * dims + 1, *shape)
    assert len(net.decoders) == 2 and net.decoders[1].output_conv.out_channels == 1


def test_entry_and_package_outputs_cluster_like_a_run(trained_2d):
    """A zoo entry with an EmbedSeg package gets the run's labels: its raw embeddings clustered with the
    entry's settings by the same code (engine.postprocess, used by EntryPredictor)."""
    from mmv_zoo.predict.engine import Options, RunPredictor, postprocess

    img, lab = shapes_2d()
    labels, _ = RunPredictor("unused", model=trained_2d).predict(img)
    raw, names = RunPredictor("unused", model=trained_2d, options=Options(probabilities=True)).predict(img)
    assert raw.dtype == np.float32 and len(names) == raw.shape[0] == 5
    clustered, out_names = postprocess(raw, trained_2d.entry)
    assert out_names == ["labels"] and clustered.dtype == labels.dtype
    np.testing.assert_array_equal(clustered, labels)
    assert len(same_objects(clustered[0], lab[0])) == 4
    strict, _ = postprocess(raw, trained_2d.entry, options=Options(threshold=0.999))
    assert strict.max() < labels.max()  # --threshold is the seed threshold here too
