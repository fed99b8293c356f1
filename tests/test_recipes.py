"""`mmv-zoo data pull`: every kind of recipe step against small archives served from 127.0.0.1, every
zoo entry's recipe against a stand-in of its real download, and the failure cases (nothing half-written)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from mmv_zoo.entry import load_entry
from mmv_zoo.errors import DataError, DownloadError
from mmv_zoo.recipes.pull import RECORD, pull_data
from mmv_zoo.settings.recipe import DataRecipe
from tests.archive_bytes import tar_gz, tif, zip_bytes
from tests.data_archives import BUILDERS
from tests.test_download import serve_bytes

ZOO = Path(__file__).resolve().parents[1] / "mmv_zoo" / "zoo"
RECIPE_ENTRIES = sorted(p.parent.name for p in ZOO.glob("*/rdf.yaml") if load_entry(p.parent).mmv.recipe)





def quiet(_: str) -> None:
    pass


def with_recipe(recipe: dict, slug: str = "nuclei_semseg_2d"):
    entry = load_entry(slug)
    entry.mmv.recipe = DataRecipe(**recipe)
    return entry


def host(server, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        server.routes[f"/{name}"] = serve_bytes(data)


def bmp(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="BMP")
    return buf.getvalue()


def glas_like(n: int = 4) -> bytes:
    """GlaS-like zip: `train_k.bmp` with `train_k_anno.bmp` label images in one folder (grey here, so
    that the result fits nuclei_semseg_2d; the GlaS entry's own RGB stand-in is tested below)."""
    rng = np.random.default_rng(0)
    members = {}
    for k in range(1, n + 1):
        members[f"Warwick QU Dataset (Released 2016_07_08)/train_{k}.bmp"] = bmp(
            (rng.random((40, 48)) * 255).astype(np.uint8))
        members[f"Warwick QU Dataset (Released 2016_07_08)/train_{k}_anno.bmp"] = bmp(
            (rng.random((40, 48)) > 0.5).astype(np.uint8) * k)
    return zip_bytes(members)


def test_files_step_converts_strips_names_and_splits(server, cache, tmp_path):
    host(server, {"glas.zip": glas_like()})
    folder = "Warwick QU Dataset (Released 2016_07_08)"
    entry = with_recipe({
        "description": "GlaS-like", "downloads": {"glas": {"url": server.url("/glas.zip")}},
        "steps": [{"kind": "files", "source": "glas", "glob": f"{folder}/train_*[0-9].bmp", "to": "images"},
                  {"kind": "files", "source": "glas", "glob": f"{folder}/train_*_anno.bmp", "to": "labels",
                   "strip": "_anno"},
                  {"kind": "split", "folders": ["images", "labels"], "count": 1}]})
    done = pull_data(entry, tmp_path / "out", report=quiet)
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in (out / "labels").iterdir())
    assert len(list((out / "images").iterdir())) == 3 and len(list((out / "holdout" / "images").iterdir())) == 1
    assert done.files == {"images": 3, "labels": 3, "holdout/images": 1, "holdout/labels": 1}
    image = tifffile.imread(out / "images" / "train_2.tif")
    assert image.shape == (40, 48) and image.dtype == np.uint8  # BMP converted to TIFF
    label = tifffile.imread(out / "labels" / "train_2.tif")
    assert set(np.unique(label)) <= {0, 2}
    record = json.loads((out / RECORD).read_text())
    assert record["downloads"][0]["trusted_on_first_use"] is True and len(record["downloads"][0]["sha256"]) == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folder left


def test_channel_and_max_projection(server, cache, tmp_path):
    stack = np.arange(2 * 5 * 6 * 7, dtype=np.uint16).reshape(5, 2, 6, 7)  # Z, C, Y, X
    host(server, {"fov.tar.gz": tar_gz({"fov/a.ome.tif": tif(stack, metadata={"axes": "ZCYX"}, ome=True)})})
    entry = with_recipe({
        "description": "channels", "downloads": {"fov": {"url": server.url("/fov.tar.gz")}},
        "steps": [{"kind": "files", "source": "fov", "glob": "fov/*.tif", "to": "images", "channel": 1,
                   "project": "max"},
                  {"kind": "files", "source": "fov", "glob": "fov/*.tif", "to": "labels", "channel": 0,
                   "project": "max"}]})
    pull_data(entry, tmp_path / "out", report=quiet)
    got = tifffile.imread(tmp_path / "out" / "images" / "a.tif")
    np.testing.assert_array_equal(got, stack[:, 1].max(axis=0))


def test_manifest_rows_are_filtered_and_their_channels_written(server, cache, tmp_path):
    rng = np.random.default_rng(1)
    images = {f"cells/{i}.ome.tiff": (rng.random((4, 3, 8, 8)) * 100).astype(np.uint16) for i in range(4)}
    rows = ["CellId,FOVId,structure_name,crop_raw,ChannelNumberStruct"] + [
        f"{i},{i},{'FBL' if i % 2 else 'NPM1'},cells/{i}.ome.tiff,2" for i in range(4)] + ["9,3,FBL,cells/3.ome.tiff,2"]
    host(server, {"metadata.csv": "\n".join(rows).encode(),
                  **{k: tif(v, metadata={"axes": "ZCYX"}, ome=True) for k, v in images.items()}})
    entry = with_recipe({
        "description": "manifest", "downloads": {"manifest": {"url": server.url("/metadata.csv")}},
        "steps": [{"kind": "manifest", "source": "manifest", "where": {"structure_name": "FBL"}, "unique": "FOVId",
                   "path_column": "crop_raw", "base_url": server.url("/"), "name_column": "CellId",
                   "channels": {"images": "ChannelNumberStruct", "labels": 1}, "project": "max"}]})
    done = pull_data(entry, tmp_path / "out", report=quiet)
    assert done.files == {"images": 2, "labels": 2}
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["1.tif", "3.tif"]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "images" / "3.tif"),
                                  images["cells/3.ome.tiff"][:, 2].max(axis=0))
    assert server.hits["/cells/0.ome.tiff"] == 0  # rows not selected are never downloaded
    # a manifest whose channel column holds no index: the file, the column, the value and the field
    host(server, {"bad.csv": "\n".join([rows[0], "1,1,FBL,cells/1.ome.tiff,n/a"]).encode()})
    recipe = entry.mmv.recipe.model_dump()
    recipe["downloads"]["manifest"]["url"] = server.url("/bad.csv")
    with pytest.raises(DataError, match=r"ChannelNumberStruct='n/a' is not a channel index .*channels\.images"):
        pull_data(with_recipe(recipe), tmp_path / "bad", report=quiet)
    assert not (tmp_path / "bad").exists()


def test_second_pull_uses_the_cache(server, cache, tmp_path):
    host(server, {"glas.zip": glas_like(2)})
    recipe = {"description": "x", "downloads": {"glas": {"url": server.url("/glas.zip")}},
              "steps": [{"kind": "files", "source": "glas", "glob": "*/train_*[0-9].bmp", "to": "images"},
                        {"kind": "files", "source": "glas", "glob": "*/train_*_anno.bmp", "to": "labels",
                         "strip": "_anno"}]}
    pull_data(with_recipe(recipe), tmp_path / "a", report=quiet)
    pull_data(with_recipe(recipe), tmp_path / "b", report=quiet)
    assert server.hits["/glas.zip"] == 1


def test_failures_leave_nothing_and_name_the_field(server, cache, tmp_path):
    host(server, {"glas.zip": glas_like(2)})
    good = server.url("/glas.zip")
    steps = [{"kind": "files", "source": "glas", "glob": "*/train_*[0-9].bmp", "to": "images"},
             {"kind": "files", "source": "glas", "glob": "*/train_*_anno.bmp", "to": "labels", "strip": "_anno"}]
    out = tmp_path / "out"
    # wrong hash: refused, nothing under --out, nothing cached
    bad_hash = {"description": "x", "downloads": {"glas": {"url": good, "sha256": "0" * 64}}, "steps": steps}
    with pytest.raises(DownloadError, match=r"recipe\.downloads\.glas: sha256 mismatch"):
        pull_data(with_recipe(bad_hash), out, report=quiet)
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    # a glob matching nothing names the step and the field
    bad_glob = {"description": "x", "downloads": {"glas": {"url": good}}, "steps": [{**steps[0], "glob": "*.czi"}]}
    with pytest.raises(DataError, match=r"steps\[0\] \(files\)\.glob: no file matches"):
        pull_data(with_recipe(bad_glob), out, report=quiet)
    assert not out.exists()
    # a result that does not fit the entry's layout (nuclei_semseg_2d wants images/ and labels/)
    wrong_folder = {"description": "x", "downloads": {"glas": {"url": good}},
                    "steps": [steps[0], {**steps[1], "to": "masks"}]}
    with pytest.raises(DataError, match="does not fit the entry's data.layout"):
        pull_data(with_recipe(wrong_folder), out, report=quiet)
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    # a 404 download
    missing = {"description": "x", "downloads": {"glas": {"url": server.url("/nope.zip")}}, "steps": steps}
    with pytest.raises(DownloadError, match="downloads.glas"):
        pull_data(with_recipe(missing), out, report=quiet)
    # a non-empty --out is refused, and kept, unless --overwrite
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    ok = {"description": "x", "downloads": {"glas": {"url": good}}, "steps": steps}
    with pytest.raises(DataError, match="is not empty"):
        pull_data(with_recipe(ok), out, report=quiet)
    assert (out / "mine.txt").read_text() == "keep"
    pull_data(with_recipe(ok), out, overwrite=True, report=quiet)
    assert not (out / "mine.txt").exists() and (out / "images").is_dir()


def test_recipe_schema_errors_name_the_field():
    with pytest.raises(ValueError, match="not a download"):
        DataRecipe(description="x", downloads={"a": {"url": "https://x/a.zip"}},
                   steps=[{"kind": "files", "source": "b", "to": "images"}])
    with pytest.raises(ValueError, match="exactly one of url and doi"):
        DataRecipe(description="x", downloads={"a": {}}, steps=[{"kind": "files", "source": "a", "to": "i"}])
    with pytest.raises(ValueError, match="no '..'"):
        DataRecipe(description="x", downloads={"a": {"url": "https://x/a.zip"}},
                   steps=[{"kind": "files", "source": "a", "to": "../outside"}])


def test_every_zoo_recipe_has_a_local_stand_in():
    names = {_download_name(d) for slug in RECIPE_ENTRIES for d in load_entry(slug).mmv.recipe.downloads.values()}
    assert names <= set(BUILDERS), f"no stand-in archive in tests/data_archives.py for {sorted(names - set(BUILDERS))}"


def _download_name(d) -> str:
    return d.file if d.doi else d.url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]


@pytest.mark.parametrize("slug", RECIPE_ENTRIES)
def test_zoo_recipe_runs_against_its_stand_in_and_gives_the_entry_layout(slug, server, cache, tmp_path):
    """The entry's own steps, with each download pointed at a stand-in of the same structure."""
    entry = load_entry(slug)
    recipe = entry.mmv.recipe
    for key, d in recipe.downloads.items():
        name = _download_name(d)
        files = BUILDERS[name](server.url("/"))
        host(server, files)
        recipe.downloads[key] = type(d)(url=server.url(f"/{name}"), sha256=hashlib.sha256(files[name]).hexdigest())
    for step in recipe.steps:
        if getattr(step, "base_url", None):
            step.base_url = server.url("/")
    done = pull_data(entry, tmp_path / "out", report=quiet)  # checks the layout itself
    assert done.files and all(n > 0 for n in done.files.values()), done.files
    from mmv_zoo.data.pairs import find_pairs

    layout = entry.mmv.data.layout
    if layout.layout != "unpaired_folders":
        pairs, _ = find_pairs(done.train, layout)
        assert pairs
        from mmv_zoo.data.loading import check_pair

        for pair in pairs[:2]:  # readable with the entry's dimensionality and channel count
            check_pair(pair, entry)
