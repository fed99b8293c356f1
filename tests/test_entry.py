"""The entry schema: bundled entries validate; mistakes give one line naming the file and the field."""

from __future__ import annotations

import json

import pytest
import yaml

from mmv_zoo.entry import (
    ZOO_DIR,
    Entry,
    EntryError,
    apply_overrides,
    bundled_entries,
    entry_to_yaml,
    json_schema,
    load_entry,
)


def _error(ref: str, overrides: list[str]) -> str:
    with pytest.raises(EntryError) as info:
        load_entry(ref, overrides)
    return str(info.value)


def test_bundled_entries_validate():
    names = bundled_entries()
    assert {"nuclei_semseg_2d", "labelfree_3d_fnet", "denoise_3d_planaria"} <= set(names)
    for name in names:
        entry = load_entry(name)
        assert entry.slug == name
        assert entry.spatial_dims in (2, 3)


def test_labelfree_uses_fnet_and_center_normalization():
    entry = load_entry("labelfree_3d_fnet")
    assert entry.mmv.network.kind == "fnet"
    assert entry.mmv.data.normalization.source.kind == "center"
    assert entry.spatial_dims == 3


def test_unknown_key_names_field_and_valid_keys():
    msg = _error("nuclei_semseg_2d", ["training.max_epoch=3"])
    assert len(msg.splitlines()) == 1
    assert "rdf.yaml" in msg
    assert "config.mmv_zoo.training.max_epoch: unknown key" in msg
    assert "max_epochs" in msg  # the valid keys are listed


def test_unknown_key_inside_a_kind():
    msg = _error("nuclei_semseg_2d", ["network.depthh=3"])
    assert "config.mmv_zoo.network.depthh: unknown key" in msg
    assert "mult_chan" in msg


def test_wrong_kind_lists_valid_kinds():
    msg = _error("nuclei_semseg_2d", ["network.kind=unett"])
    assert len(msg.splitlines()) == 1
    assert "config.mmv_zoo.network" in msg and "'unett'" in msg
    for kind in ("unet", "attention_unet", "dyn_unet", "swin_unetr", "unetr", "fnet", "python"):
        assert kind in msg


def test_3d_network_with_2d_axes():
    msg = _error("nuclei_semseg_2d", ["network.spatial_dims=3"])
    assert len(msg.splitlines()) == 1
    assert "config.mmv_zoo.network.spatial_dims" in msg and "2 space axes" in msg


def test_anisotropic_strides_need_matching_dims():
    msg = _error("nuclei_semseg_2d", ["network={kind: unet, strides: [[1,2,2],[2,2,2],[2,2,2]]}"])
    assert "config.mmv_zoo.network" in msg and "strides[0]" in msg


def test_patch_must_fit_network():
    msg = _error("nuclei_semseg_2d", ["data.patch=[100,100]"])
    assert "config.mmv_zoo.data.patch" in msg and "[104, 104]" in msg


def test_loss_must_fit_task():
    assert "regression loss" in _error("nuclei_semseg_2d", ["loss.kind=mse"])
    assert "segmentation loss" in _error("denoise_3d_planaria", ["loss.kind=dice"])


def test_python_network_is_checked_at_validation():
    msg = _error("nuclei_semseg_2d", ["network={kind: python, target: 'no_such_pkg.nets:Net'}"])
    assert "cannot import 'no_such_pkg.nets'" in msg
    msg = _error("nuclei_semseg_2d", ["network={kind: python, target: 'torch.nn:Conv2d', kwargs: {kernel_sizee: 3}}"])
    assert "kernel_sizee" in msg
    ok = load_entry("nuclei_semseg_2d", [
        "network={kind: python, target: 'torch.nn:Conv2d', spatial_dims_arg: null, divisor: 1,"
        " kwargs: {kernel_size: 3, padding: 1}}",
    ])
    assert ok.mmv.network.kind == "python"


def test_overrides_parse_yaml_values_and_root_paths():
    data = yaml.safe_load((ZOO_DIR / "nuclei_semseg_2d" / "rdf.yaml").read_text())
    out = apply_overrides(data, ["training.max_epochs=3", "data.patch=[64, 64]", "name=Another name",
                                 "inputs.0.axes.1.channel_names=[dapi]"], Entry.model_fields)
    assert out["config"]["mmv_zoo"]["training"]["max_epochs"] == 3
    assert out["config"]["mmv_zoo"]["data"]["patch"] == [64, 64]
    assert out["name"] == "Another name"
    assert out["inputs"][0]["axes"][1]["channel_names"] == ["dapi"]
    assert data["config"]["mmv_zoo"]["training"]["max_epochs"] != 3  # the original is untouched


@pytest.mark.parametrize("bad", ["training.max_epochs", "inputs.7.id=x", "name.first=x"])
def test_malformed_overrides(bad):
    with pytest.raises(EntryError, match="--set"):
        load_entry("nuclei_semseg_2d", [bad])


def test_invalid_yaml_file(tmp_path):
    p = tmp_path / "rdf.yaml"
    p.write_text("name: [unclosed\n")
    msg = _error(str(p), [])
    assert str(p) in msg and "not valid YAML" in msg


def test_missing_entry_lists_known():
    msg = _error("no_such_entry", [])
    assert "nuclei_semseg_2d" in msg


def test_resolved_yaml_roundtrips(tmp_path):
    entry = load_entry("denoise_3d_planaria", ["training.max_epochs=2"])
    p = tmp_path / "rdf.yaml"
    p.write_text(entry_to_yaml(entry))
    again = load_entry(p)
    assert again.mmv == entry.mmv
    assert again.mmv.training.max_epochs == 2


def test_json_schema_has_kinds():
    text = json.dumps(json_schema())
    for kind in ("fnet", "dyn_unet", "dice_ce", "percentile", "center", "paired_folders"):
        assert kind in text


def test_weights_point_to_pretrained(tmp_path):
    data = yaml.safe_load((ZOO_DIR / "nuclei_semseg_2d" / "rdf.yaml").read_text())
    data["weights"] = {"torchscript": {"source": "w.pt"}}
    (tmp_path / "rdf.yaml").write_text(yaml.safe_dump(data))
    msg = _error(str(tmp_path / "rdf.yaml"), [])
    assert "config.mmv_zoo.pretrained" in msg and len(msg.splitlines()) == 1


@pytest.mark.parametrize("name", ["Denoising 3D, Planaria", "Labelfree 2D (HeLa → H2B)", "LAP2β staining"])
def test_names_bioimageio_would_refuse_are_refused_at_validation(name):
    msg = _error("nuclei_semseg_2d", [f"name={name}"])
    assert "name:" in msg and "letters, digits, spaces" in msg and len(msg.splitlines()) == 1
