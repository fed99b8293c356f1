"""Every network kind builds in 2D and 3D and accepts the sizes its size rule declares."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter

from mmv_zoo.nets.factory import build_network, network_recipe
from mmv_zoo.settings.networks import NetworkSettings

SMALL = {
    "unet": {"channels": [4, 8, 16]},
    "attention_unet": {"channels": [4, 8, 16]},
    "basic_unet": {"features": [4, 4, 8, 8, 16, 4]},
    "dyn_unet": {"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "filters": [4, 8, 16]},
    "swin_unetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4},
    "unetr": {"img_size": [32, 32], "hidden_size": 32, "mlp_dim": 32, "num_heads": 2, "feature_size": 4},
    "fnet": {"depth": 2, "mult_chan": 4},
}


def _settings(kind: str, dims: int, **extra):
    d = {"kind": kind, **SMALL[kind], **extra}
    if kind == "unetr":
        d["img_size"] = [16] * (dims - 2) + [32, 32] if dims == 3 else [32, 32]
    return TypeAdapter(NetworkSettings).validate_python(d)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", sorted(SMALL))
def test_network_accepts_its_valid_sizes(kind, dims):
    s = _settings(kind, dims)
    net = build_network(s, dims, 2, 3).eval()
    rules = s.size_rule(dims)
    size = [r.min + r.step for r in rules] if kind != "unetr" else [r.min for r in rules]
    if dims == 3 and kind not in ("unetr",):
        size[0] = rules[0].min  # keep 3D cases small
    with torch.no_grad():
        y = net(torch.zeros(1, 2, *size))
    assert tuple(y.shape) == (1, 3, *size)


def test_fnet_anisotropic_z_keeps_z():
    s = TypeAdapter(NetworkSettings).validate_python(
        {"kind": "fnet", "depth": 2, "mult_chan": 2, "anisotropic_z": True})
    assert s.downsampling(3) == [1, 4, 4]
    with torch.no_grad():
        y = build_network(s, 3, 1, 1)(torch.zeros(1, 1, 3, 8, 8))
    assert y.shape == (1, 1, 3, 8, 8)


def test_anisotropic_unet_strides():
    s = TypeAdapter(NetworkSettings).validate_python(
        {"kind": "unet", "channels": [4, 8, 16], "strides": [[1, 2, 2], 2]})
    assert s.downsampling(3) == [2, 4, 4]
    with torch.no_grad():
        y = build_network(s, 3, 1, 2)(torch.zeros(1, 1, 4, 8, 8))
    assert y.shape == (1, 2, 4, 8, 8)


def test_python_kind_builds_any_module():
    s = TypeAdapter(NetworkSettings).validate_python({
        "kind": "python", "target": "torch.nn:Conv3d", "spatial_dims_arg": None, "divisor": 1,
        "kwargs": {"kernel_size": 3, "padding": 1}})
    recipe = network_recipe(s, 3, 2, 5)
    assert recipe.kwargs["in_channels"] == 2 and recipe.kwargs["out_channels"] == 5
    assert build_network(s, 3, 2, 5)(torch.zeros(1, 2, 4, 4, 4)).shape == (1, 5, 4, 4, 4)


def test_size_rule_fit():
    from mmv_zoo.settings.networks import SizeRule

    r = SizeRule(min=16, step=16)
    assert [r.fit(n) for n in (1, 16, 17, 40)] == [16, 16, 32, 48]
    assert [r.fit_down(n) for n in (1, 16, 17, 40)] == [16, 16, 16, 32]
    fixed = SizeRule(min=64, step=0)
    assert fixed.fit(10) == fixed.fit(100) == 64


@pytest.mark.parametrize(("cfg", "dims"), [
    ({"kind": "unet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}, 2),
    ({"kind": "dyn_unet", "kernel_size": [3, 3, 3], "strides": [1, 2, 2], "filters": [4, 8, 16]}, 3),
    ({"kind": "basic_unet", "features": [4, 4, 8, 8, 16, 4]}, 2),
])
def test_instance_normalized_networks_train_at_their_smallest_size(cfg, dims):
    """The smallest size an entry declares (and a package advertises) must train: instance norm needs
    more than one voxel at the bottom level, so it is twice the downsampling."""
    settings = TypeAdapter(NetworkSettings).validate_python(cfg)
    rules = settings.size_rule(dims)
    assert all(r.min == 2 * r.step for r in rules if r.step > 1)
    net = build_network(settings, dims, 1, 1).train()
    net(torch.randn(2, 1, *[r.min for r in rules])).sum().backward()
    with pytest.raises(ValueError, match="more than 1 spatial element"):  # one step less: the bottom is 1 voxel
        net(torch.randn(2, 1, *[r.min - r.step for r in rules]))
