"""The browsable zoo: `mmv-zoo list` filters, `mmv-zoo show --card`, the generated zoo/README.md."""

from __future__ import annotations

import yaml

from mmv_zoo.catalog.listing import card, catalog, data_label, zoo_readme
from mmv_zoo.entry import ZOO_DIR, bundled_entries, load_entry

from .test_cli import assert_clean_error, run_cli


def test_zoo_readme_is_current():
    committed = (ZOO_DIR / "README.md").read_text() if (ZOO_DIR / "README.md").is_file() else ""
    assert committed == zoo_readme(), (
        "zoo/README.md is stale (an entry was added or changed): regenerate it with `make zoo-readme` "
        "(python scripts/zoo_readme.py) and commit it")


def test_zoo_readme_links_every_entry_and_each_has_a_readme():
    text = zoo_readme()
    for slug in bundled_entries():
        assert f"[{slug}]({slug}/)" in text
        entry = load_entry(slug)
        assert entry.documentation == "README.md" and (ZOO_DIR / slug / "README.md").is_file(), slug


def test_list_filters(capsys):
    threes = catalog(dims=3)
    assert threes and all(r.dims == "3D" for r in threes)
    assert {r.entry for r in catalog(task="segmentation")} >= {"nuclei_semseg_2d"}
    assert all(r.task == "segmentation" for r in catalog(task="segmentation"))
    both = catalog(dims=2, framework="embedseg")
    assert {r.entry for r in both} >= {"nuclei_instance_2d", "instance_seg_2d_embedseg"}
    assert all(r.framework == "embedseg" and r.dims == "2D" for r in both)
    code, out, _ = run_cli(["list", "--dims", "3"], capsys)
    assert code == 0 and "denoise_3d_planaria" in out and "nuclei_semseg_2d" not in out
    code, out, _ = run_cli(["list", "--framework", "no_such_framework"], capsys)
    assert code == 0 and "no entries match" in out and "embedseg" in out
    code, _, err = run_cli(["list", "--task", "segmentaton"], capsys)
    assert_clean_error(code, err, "--task 'segmentaton'", "segmentation, regression, instance")


def test_list_shows_weights_and_data():
    rows = {r.entry: r for r in catalog()}
    assert rows["nuclei_semseg_2d"].weights == "bundled" and rows["nuclei_semseg_2d"].data == "bundled"
    assert rows["labelfree_3d_fnet"].weights == "train first"
    assert rows["denoise_3d_planaria"].weights.startswith("DOI")
    assert rows["instance_seg_3d_embedseg"].data == "recipe"  # training_data and a recipe
    assert rows["semantic_seg_3d_fibrillarin"].data == "recipe"
    entry = load_entry("semantic_seg_3d_fibrillarin")
    entry.mmv.recipe = None  # no zoo entry is left with only a description
    assert data_label(entry) == "described"  # training_data, nothing shipped


def test_card(capsys):
    code, out, _ = run_cli(["show", "nuclei_semseg_2d", "--card"], capsys)
    assert code == 0
    assert out.startswith("# nuclei_semseg_2d: Nuclei semantic segmentation 2D")
    assert "segmentation (fcn framework)" in out and "fnet, 2D" in out
    assert "doi:10.1093/gigascience/giad120" in out  # citations
    assert "bundled: mmv_zoo/sample_data/bbbc007/train" in out and "layout: `DATA/images/" in out  # data
    assert "holdout_foreground_f1: 0.9842" in out  # metrics recorded with the weights
    assert "Weights: bundled" in out and "sha256: abca1b9180bcc7aa" in out
    assert "max_epochs" not in out  # the card, not the YAML
    untrained = card(load_entry("labelfree_3d_fnet"))
    assert "Weights: train first" in untrained and "none recorded yet" in untrained


def test_data_label_needs_the_bundled_folder(tmp_path):
    data = yaml.safe_load((ZOO_DIR / "nuclei_semseg_2d" / "rdf.yaml").read_text())
    data["training_data"] = {"description": "images in mmv_zoo/sample_data/no_such_set/train"}
    del data["config"]["mmv_zoo"]["pretrained"]
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "rdf.yaml").write_text(yaml.safe_dump(data))
    assert data_label(load_entry(tmp_path / "e")) == "described"
    del data["training_data"]
    (tmp_path / "e" / "rdf.yaml").write_text(yaml.safe_dump(data))
    assert data_label(load_entry(tmp_path / "e")) == "-"


def test_validate_zoo_glob_skips_the_zoo_readme(capsys):
    code, out, _ = run_cli(["validate", str(ZOO_DIR / "README.md"), "nuclei_semseg_2d"], capsys)
    assert code == 0 and "skipped" in out and "valid" in out
