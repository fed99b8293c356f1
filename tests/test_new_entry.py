"""`mmv-zoo new ENTRY --from TEMPLATE`: a valid entry folder without the template's own weights and
data, a README saying what to edit, and clear refusals that leave nothing behind."""

from __future__ import annotations

import pytest
import yaml

from mmv_zoo.entry import bundled_entries, load_entry

from .test_cli import _tree, assert_clean_error, run_cli

DROPPED = ("pretrained", "recipe", "paper")


@pytest.mark.parametrize("template", bundled_entries())
def test_every_entry_scaffolds_a_valid_entry(template, tmp_path):
    from mmv_zoo.catalog.scaffold import new_entry

    done = new_entry("mine", template, tmp_path)
    entry = load_entry(done.folder)
    data = yaml.safe_load((done.folder / "rdf.yaml").read_text())
    assert entry.slug == "mine" and entry.name == "mine entry" and entry.documentation == "README.md"
    assert not set(DROPPED) & set(data["config"]["mmv_zoo"]) and "training_data" not in data
    original = load_entry(template)
    assert entry.mmv.model_dump(exclude=set(DROPPED)) == original.mmv.model_dump(exclude=set(DROPPED))
    assert entry.inputs == original.inputs and entry.outputs == original.outputs
    assert sorted(p.name for p in done.folder.iterdir()) == ["README.md", "rdf.yaml"]


def test_cli_new_then_validate(capsys, tmp_path):
    zoo = tmp_path / "lab_zoo"
    code, out, err = run_cli(["new", "lab_nuclei", "--from", "nuclei_semseg_2d", "--zoo", str(zoo)], capsys)
    assert code == 0, err
    folder = zoo / "lab_nuclei"
    assert f"mmv-zoo train {folder} --data DIR" in out and "config.mmv_zoo.pretrained" in out
    text = (folder / "rdf.yaml").read_text()
    assert "name: lab_nuclei\n" in text and "pretrained:" not in text and "covers:" not in text
    assert "network: {kind: fnet, spatial_dims: 2, depth: 3, mult_chan: 16}" in text  # the template's own lines
    readme = (folder / "README.md").read_text()
    for needle in ("`nuclei_semseg_2d`", "`config.mmv_zoo.pretrained`", "`training_data`", "`images/` (inputs)",
                   "`labels/` (targets)", "['dna']", "`percentile`", f"mmv-zoo train {folder} --data DIR"):
        assert needle in readme, needle
    code, out, _ = run_cli(["validate", str(folder)], capsys)
    assert code == 0 and "valid" in out


def test_template_by_path_keeps_comments_and_drops_its_id(capsys, tmp_path):
    source = load_entry("nuclei_semseg_2d").source.read_text()
    assert "loss: {kind: dice_ce}\n" in source and "pretrained:" in source
    template = tmp_path / "templates" / "nuclei"
    template.mkdir(parents=True)
    (template / "rdf.yaml").write_text("id: lab-nuclei\n" + source.replace(
        "loss: {kind: dice_ce}", "loss: {kind: dice_ce}   # as in the demo"))
    code, out, err = run_cli(["new", "nuclei-mine", "--from", str(template), "--zoo", str(tmp_path / "zoo")], capsys)
    assert code == 0, err
    text = (tmp_path / "zoo" / "nuclei-mine" / "rdf.yaml").read_text()
    assert "loss: {kind: dice_ce}   # as in the demo" in text and "lab-nuclei" not in text and "sha256" not in text
    assert "description: >-\n  Adapted from the zoo entry nuclei:" in text
    assert load_entry(tmp_path / "zoo" / "nuclei-mine").mmv.pretrained is None


@pytest.mark.parametrize(("name", "template", "needles"), [
    ("bad name", "nuclei_semseg_2d", ("'bad name'", "letters, digits")),
    ("../escape", "nuclei_semseg_2d", ("'../escape'",)),
    (".hidden", "nuclei_semseg_2d", ("'.hidden'",)),
    ("fine_name", "no_such_entry", ("no_such_entry", "no such file, folder or zoo entry")),
])
def test_refusals_write_nothing(capsys, tmp_path, name, template, needles):
    zoo = tmp_path / "zoo"
    code, _, err = run_cli(["new", name, "--from", template, "--zoo", str(zoo)], capsys)
    assert_clean_error(code, err, *needles)
    assert not zoo.exists() and not (tmp_path / "escape").exists()


def test_refuses_an_existing_folder(capsys, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    before = _tree(tmp_path)
    code, _, err = run_cli(["new", "mine", "--from", "nuclei_semseg_2d", "--zoo", str(tmp_path)], capsys)
    assert_clean_error(code, err, str(tmp_path / "mine"), "already exists")
    assert _tree(tmp_path) == before and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_refuses_an_invalid_template(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(load_entry("nuclei_semseg_2d").source.read_text().replace("kind: fnet", "kind: fnett"))
    code, _, err = run_cli(["new", "mine", "--from", str(bad), "--zoo", str(tmp_path / "zoo")], capsys)
    assert_clean_error(code, err, "fnett")
    assert not (tmp_path / "zoo").exists()
