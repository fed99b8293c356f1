"""Reading, pairing, splitting, normalizing and augmenting training data."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from mmv_zoo.data.dataset import PatchDataset, augment, load_pair
from mmv_zoo.data.pairs import Pair, find_pairs, split_pairs
from mmv_zoo.entry import load_entry
from mmv_zoo.errors import DataError
from mmv_zoo.io.read import Image, read_image, select_channels
from mmv_zoo.settings.data import AugmentSettings, CenterNorm, PercentileNorm, StandardNorm
from mmv_zoo.transforms.normalize import normalize


def test_paired_folders_match_by_name(data_2d):
    entry = load_entry("nuclei_semseg_2d")
    pairs, _ = find_pairs(data_2d, entry.mmv.data.layout)
    assert len(pairs) == 3
    assert all(p.source.name == p.target.name for p in pairs)


def test_unmatched_files_are_listed(data_2d, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(data_2d, root)
    extra = root / "images" / "orphan.tif"
    tifffile.imwrite(extra, np.zeros((8, 8), np.uint8))
    (root / "labels" / sorted((root / "labels").iterdir())[0].name).rename(root / "labels" / "lonely.tif")
    with pytest.raises(DataError) as info:
        find_pairs(root, load_entry("nuclei_semseg_2d").mmv.data.layout)
    msg = str(info.value)
    assert "orphan.tif" in msg and "lonely.tif" in msg


def test_suffix_matching_in_one_folder(tmp_path):
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", np.zeros((8, 8), np.uint8))
        tifffile.imwrite(tmp_path / f"{name}_labels.tif", np.zeros((8, 8), np.uint8))
    entry = load_entry("nuclei_semseg_2d", ["data.layout={layout: paired_folders, source: '.', target: '.',"
                                            " target_suffix: _labels}"])
    pairs, _ = find_pairs(tmp_path, entry.mmv.data.layout)
    assert [(p.source.name, p.target.name) for p in pairs] == [("a.tif", "a_labels.tif"), ("b.tif", "b_labels.tif")]


def test_csv_layout_with_split_column(data_2d):
    names = sorted(p.name for p in (data_2d / "images").iterdir())
    csv = data_2d / "pairs.csv"
    csv.write_text("source,target,split\n" + "".join(
        f"images/{n},labels/{n},{'val' if i == 0 else 'train'}\n" for i, n in enumerate(names)))
    entry = load_entry("nuclei_semseg_2d", ["data.layout={layout: csv, file: pairs.csv, split_column: split}",
                                            "data.split={kind: presplit}"])
    train, val = split_pairs(data_2d, entry.mmv.data)
    assert [p.source.name for p in val] == names[:1]
    assert [p.source.name for p in train] == names[1:]
    csv.unlink()


def test_csv_missing_file_is_reported(tmp_path):
    (tmp_path / "pairs.csv").write_text("source,target\nnope.tif,nada.tif\n")
    entry = load_entry("nuclei_semseg_2d", ["data.layout={layout: csv, file: pairs.csv}"])
    with pytest.raises(DataError, match="nope.tif"):
        find_pairs(tmp_path, entry.mmv.data.layout)


def test_random_split_is_seeded(data_2d):
    data = load_entry("nuclei_semseg_2d", ["data.split.val_fraction=0.34"]).mmv.data
    a, b = split_pairs(data_2d, data), split_pairs(data_2d, data)
    assert a == b
    assert len(a[1]) == 1 and len(a[0]) == 2
    train, val = a
    assert not {p.name for p in train} & {p.name for p in val}
    assert {p.name for p in train} | {p.name for p in val} == {p.stem for p in (data_2d / "images").iterdir()}


def test_percentile_normalization_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 20, (2, 16, 16)).astype(np.float32)
    y = normalize(x, PercentileNorm(kind="percentile", lower=1, upper=99))
    lo, hi = np.percentile(x[1], 1), np.percentile(x[1], 99)
    np.testing.assert_allclose(y[1], (x[1] - lo) / (hi - lo + 1e-6), rtol=1e-5)
    y2 = normalize(x, PercentileNorm(kind="percentile", lower=1, upper=99, range="-1,1"))
    np.testing.assert_allclose(y2, y * 2 - 1, rtol=1e-5, atol=1e-6)


def test_standard_and_center_normalization():
    rng = np.random.default_rng(1)
    x = rng.normal(5, 3, (1, 40, 8, 8))
    s = normalize(x, StandardNorm(kind="standard"))
    assert abs(s.mean()) < 1e-5 and abs(s.std() - 1) < 1e-3
    x[:, :10] += 1000  # outlying top slices must not drive the statistics
    c = normalize(x, CenterNorm(kind="center", z_chunk=10))
    mid = c[:, 15:25]
    assert abs(mid.mean()) < 1e-4 and abs(mid.std() - 1) < 1e-3
    assert c[:, :10].mean() > 100


def test_augment_transforms_source_and_target_alike():
    x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    y = x[:1].copy()
    for seed in range(8):
        ax, ay = augment(x, y, np.random.default_rng(seed), AugmentSettings())
        np.testing.assert_array_equal(ax[:1], ay)


def test_patch_dataset_shapes_2d_and_3d(data_2d, data_3d):
    e2 = load_entry("nuclei_semseg_2d", ["data.patch=[32,32]"])
    pairs = [load_pair(Pair(p, data_2d / "labels" / p.name), e2) for p in sorted((data_2d / "images").iterdir())]
    ds = PatchDataset(pairs, [32, 32], 3, e2.mmv.data.augment)
    x, y = ds[0]
    assert len(ds) == 9 and x.shape == (1, 32, 32) and y.shape == (1, 32, 32)
    assert set(np.unique(y.numpy())) <= {0, 1}  # foreground mode turns instance labels into 0/1
    e3 = load_entry("denoise_3d_planaria", ["data.patch=[8,32,32]"])
    p3 = load_pair(Pair(data_3d / "low" / "stack0.tif", data_3d / "high" / "stack0.tif"), e3)
    x3, y3 = PatchDataset([p3], [8, 32, 32], 2, e3.mmv.data.augment)[1]
    assert x3.shape == (1, 8, 32, 32) and y3.dtype.is_floating_point


def test_small_images_are_padded_to_patch(tmp_path):
    from mmv_zoo.data.dataset import LoadedPair

    pair = LoadedPair("s", np.ones((1, 10, 12), np.float32), np.zeros((1, 10, 12), np.int64))
    x, _ = PatchDataset([pair], [16, 16], 1, None)[0]
    assert x.shape == (1, 16, 16)


def test_labels_out_of_range_are_refused(data_2d):
    entry = load_entry("nuclei_semseg_2d", ["data.labels=classes"])
    p = sorted((data_2d / "images").iterdir())[0]
    with pytest.raises(DataError, match="label values"):
        load_pair(Pair(p, data_2d / "labels" / p.name), entry)


def test_read_formats(tmp_path):
    """TIFF, OME-TIFF, PNG and OME-Zarr all come back as (C, [Z], Y, X) with pixel sizes."""
    from bioio.writers import OMEZarrWriter  # noqa: F401 - presence of the writer plugin
    from skimage.io import imsave

    from mmv_zoo.io.write import write_ome_tiff

    img = (np.arange(24 * 20) % 251).reshape(24, 20).astype(np.uint8)
    imsave(tmp_path / "a.png", img, check_contrast=False)
    assert read_image(tmp_path / "a.png", 2).data.shape == (1, 24, 20)
    vol = np.random.default_rng(0).integers(0, 1000, (1, 5, 24, 20)).astype(np.uint16)
    write_ome_tiff(tmp_path / "v.ome.tiff", vol, {"z": 2.0, "y": 0.5, "x": 0.5}, ["dna"])
    back = read_image(tmp_path / "v.ome.tiff", 3)
    np.testing.assert_array_equal(back.data, vol)
    assert back.pixel_sizes == {"z": 2.0, "y": 0.5, "x": 0.5}
    _write_zarr(tmp_path / "v.ome.zarr", vol)
    np.testing.assert_array_equal(read_image(tmp_path / "v.ome.zarr", 3).data, vol)


def _write_zarr(path, vol):
    from bioio.writers import OMEZarrWriter

    w = OMEZarrWriter(store=str(path), level_shapes=[(1, *vol.shape)], dtype=vol.dtype,
                      axes_names=["t", "c", "z", "y", "x"], axes_types=["time", "channel", "space", "space", "space"])
    w.write_full_volume(vol[None])


def test_3d_image_for_2d_entry_is_refused(data_3d):
    with pytest.raises(DataError, match="is 3D"):
        read_image(data_3d / "low" / "stack0.tif", 2)
    with pytest.raises(DataError, match="single 2D plane"):
        tifffile.imwrite(data_3d.parent / "plane.tif", np.zeros((8, 8), np.uint8))
        read_image(data_3d.parent / "plane.tif", 3)


def test_a_grey_image_saved_as_rgb_trains_as_one_channel(tmp_path):
    grey = np.random.default_rng(0).integers(0, 255, (16, 20)).astype(np.uint8)
    rgba = Image(np.stack([grey, grey, grey, np.full_like(grey, 255)]), tmp_path / "g.png", {}, [])
    np.testing.assert_array_equal(select_channels(rgba, 1), grey[None])
    colour = Image(np.stack([grey, grey[::-1], grey]), tmp_path / "c.png", {}, [])
    with pytest.raises(DataError, match=r"c.png: has 3 channel\(s\) but the entry's inputs\[0\] takes 1"):
        select_channels(colour, 1)


def test_one_labelled_image_is_split_into_a_training_and_a_validation_region(data_2d, tmp_path):
    """One image with its labels (e.g. two napari layers): the last fifth of its longest axis is held
    back for validation; source, labels and their crops stay aligned."""
    from mmv_zoo.data.pairs import split_pairs

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        first = sorted((data_2d / sub).iterdir())[0]
        tifffile.imwrite(tmp_path / sub / first.name, tifffile.imread(first)[:, :80])  # 96 x 80
    entry = load_entry("nuclei_semseg_2d", ["data.patch=[16,16]"])
    (train,), (val,) = split_pairs(tmp_path, entry.mmv.data)
    assert train.region == ((0, 77), (0, 80)) and val.region == ((77, 96), (0, 80))
    assert train.name.endswith("_train_region") and val.target == train.target is not None
    whole, part = load_pair(Pair(train.source, train.target), entry), load_pair(val, entry)
    np.testing.assert_array_equal(part.source, whole.source[:, 77:])
    np.testing.assert_array_equal(part.target, whole.target[:, 77:])
