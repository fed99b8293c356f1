"""Recipes on the Allen Cell hiPSC single-cell image dataset, against its stand-in
(`tests/archives_allen.py`): each row's own channels are written, cells the table does not list
become exclusion masks (`unlisted`), and stacks of few slices stay 3D."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tifffile

from mmv_zoo.entry import load_entry
from mmv_zoo.errors import DataError
from mmv_zoo.recipes.pull import middle_of_foreground, pull_data, read_czyx, write_tiff
from mmv_zoo.settings.recipe import DataRecipe
from tests.archives_allen import CELLS, LEVEL, ORDERS, SHAPE, fov_id, fov_images, metadata


def quiet(_: str) -> None:
    pass


def served(server) -> str:
    """The stand-in served from 127.0.0.1; returns the URL of its metadata.csv."""
    from tests.test_download import serve_bytes

    for name, data in metadata(server.url("/")).items():
        server.routes[f"/{name}"] = serve_bytes(data)
    return server.url("/metadata.csv")


def local(entry, server):
    """The entry with its recipe pointed at the served stand-in."""
    url = served(server)
    for d in entry.mmv.recipe.downloads.values():
        d.url, d.sha256 = url, hashlib.sha256(metadata("")["metadata.csv"]).hexdigest()
    for step in entry.mmv.recipe.steps:
        if getattr(step, "base_url", None):
            step.base_url = server.url("/")
    return entry


def test_labelfree_recipe_writes_each_rows_brightfield_and_structure(server, cache, tmp_path):
    done = pull_data(local(load_entry("labelfree_3d_fbl"), server), tmp_path / "out", report=quiet)
    assert done.files == {"brightfield": 3, "fluorescence": 3, "holdout/brightfield": 1, "holdout/fluorescence": 1}
    out = tmp_path / "out"
    written = sorted(p.name for p in [*(out / "brightfield").iterdir(), *(out / "holdout" / "brightfield").iterdir()])
    assert written == sorted(f"{fov_id('FBL', k)}.tif" for k in range(4))  # one file per FOV, FBL only
    for k in range(4):
        raw = fov_images("FBL", k)["raw"]
        folder = out if (out / "brightfield" / f"{fov_id('FBL', k)}.tif").exists() else out / "holdout"
        for sub, column in (("brightfield", "ChannelNumberBrightfield"), ("fluorescence", "ChannelNumberStruct")):
            got = tifffile.imread(folder / sub / f"{fov_id('FBL', k)}.tif")
            assert got.shape == raw.shape[1:]
            np.testing.assert_array_equal(got, raw[ORDERS[k % 2].index(column)])
            assert LEVEL[column] <= got.min() and got.max() < LEVEL[column] + 100


@pytest.mark.parametrize("slug", ["synthetic_3d_cyclegan", "synthetic_3d_pix2pix"])
def test_synthetic_3d_recipes_pair_nucleus_masks_with_the_structure_channel(slug, server, cache, tmp_path):
    """The paper's coarse-mask synthesis: HIST1H2BJ stacks (the row's structure channel) and the FOV's
    nucleus segmentation (fov_seg_path channel 0), same FOVs and shapes, held back as pairs."""
    done = pull_data(local(load_entry(slug), server), tmp_path / "out", report=quiet)
    assert done.files == {"images": 3, "masks": 3, "holdout/images": 1, "holdout/masks": 1}
    out = tmp_path / "out"
    for folder in (out, out / "holdout"):
        names = [sorted(p.name for p in (folder / sub).iterdir()) for sub in ("images", "masks")]
        assert names[0] == names[1]
    for k in range(4):
        name = f"{fov_id('HIST1H2BJ', k)}.tif"
        folder = out if (out / "images" / name).exists() else out / "holdout"
        images = fov_images("HIST1H2BJ", k)
        np.testing.assert_array_equal(tifffile.imread(folder / "images" / name),
                                      images["raw"][ORDERS[k % 2].index("ChannelNumberStruct")])
        np.testing.assert_array_equal(tifffile.imread(folder / "masks" / name), images["seg"][0])


def test_middle_of_foreground_is_the_middle_of_the_masks_z_extent():
    mask = np.zeros((7, 3, 4), np.uint8)
    assert middle_of_foreground(mask) is None
    mask[5, 1, 2] = 255
    assert middle_of_foreground(mask) == 5
    mask[2, 0, 0] = 1  # slices 2..5 -> (2 + 5) // 2, whatever lies between
    assert middle_of_foreground(mask) == 3
    mask[3:5] = 9
    assert middle_of_foreground(mask) == 3


def test_slice_takes_one_z_per_row_from_another_files_mask(server, cache, tmp_path):
    """`slice`: image and mask of a row take the same slice, the middle of the mask file's foreground."""
    entry = load_entry("synthetic_2d_cyclegan")
    base = server.url("/")
    common = {"kind": "manifest", "source": "metadata", "where": {"structure_name": "LMNB1"}, "unique": "FOVId",
              "base_url": base, "name_column": "FOVId", "limit": 2}
    cut = {"mask_column": "fov_seg_path", "mask_channel": 0}  # nuclei fill slices 1..SHAPE[0] - 2
    entry.mmv.recipe = DataRecipe(description="x", downloads={"metadata": {"url": served(server)}}, steps=[
        {**common, "path_column": "fov_path", "channels": {"images": "ChannelNumberStruct"}, "slice": cut},
        {**common, "path_column": "fov_seg_path", "channels": {"masks": 1}, "slice": cut}])
    pull_data(entry, tmp_path / "out", report=quiet)
    z = (1 + SHAPE[0] - 2) // 2
    for k in range(2):
        images, name = fov_images("LMNB1", k), f"{fov_id('LMNB1', k)}.tif"
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "images" / name),
                                      images["raw"][ORDERS[k % 2].index("ChannelNumberStruct"), z])
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "masks" / name), images["seg"][1, z])


def pulled_fovs(out, structure: str, n: int = 4):
    """(k, folder holding it: out or out/holdout, file name, the stand-in's images) per FOV of a pull."""
    for k in range(n):
        name = f"{fov_id(structure, k)}.tif"
        yield k, out if (out / "images" / name).exists() else out / "holdout", name, fov_images(structure, k)


def test_synthetic_2d_recipe_takes_the_middle_slice_of_the_npm1_segmentation(server, cache, tmp_path):
    """The paper's 2D pairs: per NPM1 FOV, z = (first + last slice of struct_seg's foreground) // 2 of
    the structure channel and of the segmentation; 20 % held back as pairs."""
    done = pull_data(local(load_entry("synthetic_2d_cyclegan"), server), tmp_path / "out", report=quiet)
    assert done.files == {"images": 3, "masks": 3, "holdout/images": 1, "holdout/masks": 1}
    for k, folder, name, images in pulled_fovs(tmp_path / "out", "NPM1"):
        on = np.flatnonzero(images["struct_seg"].any(axis=(1, 2)))
        z = (on[0] + on[-1]) // 2
        image, mask = tifffile.imread(folder / "images" / name), tifffile.imread(folder / "masks" / name)
        assert image.shape == mask.shape == SHAPE[1:]
        np.testing.assert_array_equal(image, images["raw"][ORDERS[k % 2].index("ChannelNumberStruct"), z])
        np.testing.assert_array_equal(mask, images["struct_seg"][z])  # that slice, not a projection
        np.testing.assert_array_equal(mask, images["struct_seg"][z])


def test_slice_is_not_with_project():
    step = {"kind": "manifest", "source": "m", "path_column": "p", "name_column": "n", "channels": {"a": 0},
            "slice": {"mask_column": "p"}}
    DataRecipe(description="x", downloads={"m": {"url": "https://x/m.csv"}}, steps=[step])
    with pytest.raises(ValueError, match="slice or project"):
        DataRecipe(description="x", downloads={"m": {"url": "https://x/m.csv"}}, steps=[{**step, "project": "max"}])


def test_unlisted_cells_become_exclusion_masks(server, cache, tmp_path):
    entry = load_entry("instance_seg_3d_embedseg")
    base = server.url("/")
    common = {"kind": "manifest", "source": "metadata", "where": {"structure_name": "LMNB1"}, "unique": "FOVId",
              "base_url": base, "name_column": "FOVId", "limit": 2}
    entry.mmv.recipe = DataRecipe(description="x", downloads={"metadata": {"url": served(server)}}, steps=[
        {**common, "path_column": "fov_path", "channels": {"images": "ChannelNumber405"}},
        {**common, "path_column": "fov_seg_path", "channels": {"labels": 0},
         "unlisted": {"to": "costmaps", "channel": 1, "id_column": "this_cell_index"}}])
    done = pull_data(entry, tmp_path / "out", report=quiet)
    assert done.files == {"images": 2, "labels": 2, "costmaps": 2}
    for k in range(2):
        seg = fov_images("LMNB1", k)["seg"]
        mask = tifffile.imread(tmp_path / "out" / "costmaps" / f"{fov_id('LMNB1', k)}.tif")
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, (seg[1] == CELLS).astype(np.uint8))  # the one cell no row lists
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "labels" / f"{fov_id('LMNB1', k)}.tif"),
                                      seg[0])


def test_unlisted_needs_unique_and_ids():
    step = {"kind": "manifest", "source": "m", "path_column": "p", "name_column": "n", "channels": {"a": 0},
            "unlisted": {"to": "costmaps", "channel": 1, "id_column": "this_cell_index"}}
    with pytest.raises(ValueError, match="unlisted needs `unique`"):
        DataRecipe(description="x", downloads={"m": {"url": "https://x/m.csv"}}, steps=[step])
    with pytest.raises(ValueError, match="must be >= 0"):
        DataRecipe(description="x", downloads={"m": {"url": "https://x/m.csv"}},
                   steps=[{**step, "unique": "n", "unlisted": {**step["unlisted"], "channel": -1}}])


@pytest.mark.parametrize("shape", [(1, 3, 8, 9), (1, 4, 8, 9), (2, 3, 8, 9), (1, 1, 8, 9)])
def test_written_stacks_keep_their_slices(shape, tmp_path):
    """tifffile alone would store 3 or 4 slices as RGB(A) samples of one plane."""
    data = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    write_tiff(tmp_path / "a.tif", data)
    np.testing.assert_array_equal(read_czyx(tmp_path / "a.tif"), data)


def test_dot_mask_is_the_segmenters_dot_filter_pipeline():
    """recipe_ops.dot_mask against the library calls the paper's notebook made through aicssegmentation:
    norm.fit auto-contrast clipped in the image's dtype, gaussian_filter (nearest, truncate 3), the
    2D LoG response -sigma^2 LoG per slice above the cutoff, skimage's remove_small_objects."""
    from scipy import ndimage as ndi
    from scipy.stats import norm
    from skimage.morphology import remove_small_objects

    from mmv_zoo.recipes.ops import dot_mask

    rng = np.random.default_rng(3)
    img = (ndi.gaussian_filter(rng.random((6, 40, 48)), 1.5) * 4000 + rng.normal(400, 30, (6, 40, 48))).clip(0)
    img = img.astype(np.uint16)
    m, s = norm.fit(img.flat)
    ref = img.copy()
    low, high = max(m - 0.5 * s, ref.min()), min(m + 18 * s, ref.max())
    ref[ref > high] = high
    ref[ref < low] = low
    ref = ndi.gaussian_filter((ref - low + 1e-8) / (high - low + 1e-8), sigma=1, mode="nearest", truncate=3.0)
    response = np.stack([-ndi.gaussian_laplace(ref[z], 1) for z in range(ref.shape[0])]) > 0.01
    # the notebook's remove_small_objects(min_size=5) removed objects of fewer than 5 voxels; skimage
    # 0.26 maps a min_size it deprecates to max_size (objects of up to 5 removed), so: max_size 4
    expected = remove_small_objects(response, max_size=4, connectivity=1)
    got = dot_mask(img, (0.5, 18), 1, 1, 0.01, 5)
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
    assert 0 < got.sum() < got.size and (response & ~expected.astype(bool)).any()  # some objects removed
    np.testing.assert_array_equal(got, expected.astype(np.uint8))


@pytest.mark.parametrize("slug", ["semantic_seg_3d_fibrillarin", "instance_seg_3d_fibrillarin"])
def test_fibrillarin_recipes_compute_the_dot_filter_masks(slug, server, cache, tmp_path):
    from mmv_zoo.recipes.ops import dot_mask

    done = pull_data(local(load_entry(slug), server), tmp_path / "out", report=quiet)
    assert done.files == {"images": 3, "labels": 3, "holdout/images": 1, "holdout/labels": 1}
    for k, folder, name, images in pulled_fovs(tmp_path / "out", "FBL"):
        raw = images["raw"][ORDERS[k % 2].index("ChannelNumberStruct")]
        mask = dot_mask(raw, (0.5, 18), 1, 1, 0.01, 5)
        expected = mask * images["seg"][1].astype(np.uint8) if slug.startswith("instance") else mask
        assert expected.any()
        np.testing.assert_array_equal(tifffile.imread(folder / "images" / name), raw)
        np.testing.assert_array_equal(tifffile.imread(folder / "labels" / name), expected)


def test_mean_between_keeps_rows_by_the_channels_mean_and_limit_counts_them(server, cache, tmp_path):
    means = {fov_id("FBL", k): fov_images("FBL", k)["raw"][ORDERS[k % 2].index("ChannelNumberStruct")].mean()
             for k in range(4)}
    cut = float(np.median(list(means.values())))
    keep = sorted(f for f, m in means.items() if m >= cut)
    entry = load_entry("labelfree_3d_fbl")
    step = {"kind": "manifest", "source": "metadata", "where": {"structure_name": "FBL"}, "unique": "FOVId",
            "base_url": server.url("/"), "name_column": "FOVId", "path_column": "fov_path",
            "channels": {"brightfield": "ChannelNumberBrightfield", "fluorescence": "ChannelNumberStruct"},
            "mean_between": {"channel": "ChannelNumberStruct", "range": [cut, 1000]}}
    entry.mmv.recipe = DataRecipe(description="x", downloads={"metadata": {"url": served(server)}},
                                  steps=[{**step, "limit": len(keep) - 1}])
    done = pull_data(entry, tmp_path / "out", report=quiet)
    assert done.files == {"brightfield": len(keep) - 1, "fluorescence": len(keep) - 1}
    assert sorted(p.name for p in (tmp_path / "out" / "fluorescence").iterdir()) == \
        [f"{f}.tif" for f in keep[: len(keep) - 1]]
    entry.mmv.recipe = DataRecipe(description="x", downloads={"metadata": {"url": served(server)}},
                                  steps=[{**step, "mean_between": {"channel": 0, "range": [0, 1]}}])
    with pytest.raises(DataError, match="no row .* is kept by mean_between"):
        pull_data(entry, tmp_path / "out2", report=quiet)
