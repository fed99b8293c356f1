"""The tiler and the receptive-field probe, on small pure-torch networks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmv_zoo.predict.halo import halo_from_radius, receptive_radius
from mmv_zoo.predict.tiler import plan_tiles, predict_tiled, window
from mmv_zoo.settings.networks import SizeRule


def convs(n: int, dims: int = 2, norm: bool = True) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [conv(1 if i == 0 else 4, 4, 3, padding=1), bn(4) if norm else nn.Identity(), nn.ReLU()]
    return nn.Sequential(*layers, conv(4, 2, 1))


def test_receptive_radius_of_a_conv_stack():
    assert receptive_radius(convs(3), 1, [1, 1], [1, 1]) == [3, 3]
    assert receptive_radius(convs(5, dims=3), 1, [1, 1, 1], [1, 1, 1]) == [5, 5, 5]


def test_receptive_radius_with_downsampling_and_softmax():
    class Down(nn.Module):  # 3x3 conv, 2x down, 3x3 conv, 2x up, softmax: field 1 + 2*1 + ... per side
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 3, 3, padding=1)
            self.down = nn.Conv2d(3, 3, 2, stride=2)
            self.b = nn.Conv2d(3, 3, 3, padding=1)
            self.up = nn.ConvTranspose2d(3, 3, 2, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.up(self.b(self.down(self.a(x)))), dim=1)

    r = receptive_radius(Down(), 1, [2, 2], [2, 2])
    # output pair [2k, 2k+1] <- coarse k-1..k+1 <- a-outputs 2k-2..2k+3 <- inputs 2k-3..2k+4: 3 per side
    assert r == [3, 3]


def test_receptive_radius_stops_at_the_limit_for_global_networks():
    class Global(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + x.mean(dim=(2, 3), keepdim=True)

    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), Global())
    assert receptive_radius(net, 1, [1, 1], [1, 1], limit=40) == [40, 40]


def test_halo_rounding_and_caps():
    assert halo_from_radius(46, 8, 128) == 48  # a multiple of step/2, so 2*halo keeps sizes valid
    assert halo_from_radius(46, 8, 32) == 16  # at most half the training patch
    assert halo_from_radius(200, 16, 512) == 64  # and at most HALO_CAP
    assert halo_from_radius(5, 0, 64) == 0  # fixed-size axes are not tiled


@pytest.mark.parametrize("shape", [(5, 7), (40, 33), (64, 64)])
def test_tiles_reproduce_the_whole_image(shape):
    """Any image size, tiny ones included: cropped tiles equal one pass over the mirrored image."""
    torch.manual_seed(0)
    net = convs(3).eval()
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    rules = [SizeRule(min=4, step=4)] * 2
    halo = [4, 4]

    def forward(b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(b)).numpy()

    one = predict_tiled(forward, x, plan_tiles(shape, rules, halo, budget=10**6))
    plan = plan_tiles(shape, rules, halo, budget=16 * 16)
    many = predict_tiled(forward, x, plan, batch_size=2)
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4)], mode="symmetric")
    direct = forward(padded[None])[0][:, 4:4 + shape[0], 4:4 + shape[1]]
    assert one.shape == many.shape == (2, *shape)
    np.testing.assert_allclose(one, direct, atol=1e-5)
    np.testing.assert_allclose(many, direct, atol=1e-5)
    assert all(t <= 16 for t in plan.tile) and all((t - 4) % 4 == 0 for t in plan.tile)


def test_plan_is_bounded_by_the_budget():
    rules = [SizeRule(min=16, step=16)] * 3
    plan = plan_tiles((32, 256, 256), rules, [8, 16, 16], budget=64 * 128 * 128)
    import math

    assert math.prod(plan.tile) <= 64 * 128 * 128
    assert len(plan) > 1 and plan.work < 2.9  # z: 1.5 (halo 8 around 32 slices), y: 1.5, x: 1.25
    whole = plan_tiles((32, 256, 256), rules, [8, 16, 16], budget=10**9)
    assert len(whole) == 1 and whole.tile == (48, 288, 288)


def test_blend_windows_are_positive():
    for blend in ("cosine", "gaussian", "flat"):
        w = window(blend, 20, 6)
        assert w.shape == (20,) and (w > 0).all() and w.max() <= 1
    assert window("cosine", 20, 6)[0] < 0.1 and window("cosine", 20, 6)[10] == 1


def test_tiles_stay_on_the_downsampling_grid():
    """A strided network (fnet): every tile starts on the network's grid, so the last tile of an
    image whose size is not a multiple of the step is exact too, and the result's interior equals an
    unpadded whole-image forward pass."""
    from mmv_zoo.nets.fnet import FNet

    torch.manual_seed(0)
    net = FNet(2, 1, 1, depth=3, mult_chan=4).eval()
    radius = receptive_radius(net, 1, [8, 8], [8, 8])
    halo = [halo_from_radius(r, 8, 10**6) for r in radius]
    assert halo == [48, 48] and radius == [46, 46]

    def forward(b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(b)).numpy()

    x = np.random.default_rng(0).random((1, 100, 90), dtype=np.float32)
    rules = [SizeRule(min=8, step=8)] * 2
    one = predict_tiled(forward, x, plan_tiles(x.shape[1:], rules, halo, budget=10**7))
    plan = plan_tiles(x.shape[1:], rules, halo, budget=(2 * 48 + 16) ** 2)
    assert all(s % 8 == 0 for s in plan.starts(1)) and plan.starts(1)[-1] + plan.core[1] >= 90
    many = predict_tiled(forward, x, plan)
    scale = np.abs(one).max()
    assert np.abs(one - many).max() <= 1e-5 * scale
    # an unpadded pass on a crop sees the same grid: equal wherever the crop's border is out of reach
    # rows 47-48 of a 96-row crop are 47 rows from both borders; columns mirrored by the halo as the tiler does
    crop = np.pad(x[:, :96], [(0, 0), (0, 0), (48, 54)], mode="symmetric")
    direct = forward(crop[None])[0][:, 47:49, 48:138]
    assert np.abs(one[:, 47:49] - direct).max() <= 1e-5 * scale
    shifted = forward(np.ascontiguousarray(crop[None, :, :, 2:-6]))[0][:, 47:49, 46:136]  # off the grid by 2
    assert np.abs(one[:, 47:49] - shifted).max() > 1e-4 * scale


def test_measured_field_is_remembered_across_processes(monkeypatch):
    """A later process reads the field from the cache instead of probing again; a `python`-kind
    network (a user's module that may change) is never remembered."""
    from mmv_zoo.predict import halo as rf

    net = convs(3)
    key = "test-network-settings"
    first = rf.network_halo(net, 1, [1, 1], [1, 1], [64, 64], key=key)
    rf._CACHE.clear()  # a new process

    def no_probe(*args, **kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(rf, "receptive_radius", no_probe)
    assert rf.network_halo(net, 1, [1, 1], [1, 1], [64, 64], key=key) == first == ([3, 3], [3, 3])
    with pytest.raises(AssertionError, match="probed again"):
        rf.network_halo(net, 1, [1, 1], [1, 1], [64, 64], key="user-module", persist=False)


@pytest.mark.parametrize("shape", [(100, 90), (30, 200), (8, 8)])
def test_image_border_tiles_reproduce_one_pass_over_the_image(shape):
    """`image` border: tiles stop at the image (no halo padding there), so any tiling equals the
    network's one pass over the image itself, padded only at the far end to a valid size; and the
    network processes fewer voxels than with mirrored borders."""
    from mmv_zoo.nets.fnet import FNet

    torch.manual_seed(0)
    net = FNet(2, 1, 1, depth=3, mult_chan=4).eval()
    halo = [48, 48]

    def forward(b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(b)).numpy()

    x = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    rules = [SizeRule(min=8, step=8)] * 2
    valid = [r.fit(n) for r, n in zip(rules, shape, strict=True)]
    padded = np.pad(x, [(0, 0)] + [(0, v - n) for v, n in zip(valid, shape, strict=True)], mode="symmetric")
    direct = forward(padded[None])[0][:, : shape[0], : shape[1]]
    scale = np.abs(direct).max()
    for budget in (10**7, (2 * 48 + 16) ** 2, (2 * 48 + 40) ** 2):
        plan = plan_tiles(shape, rules, halo, budget=budget, border="image")
        tiled = predict_tiled(forward, x, plan, batch_size=3)
        assert tiled.shape == (1, *shape)
        assert np.abs(tiled - direct).max() <= 1e-5 * scale, (budget, plan)
        mirrored = plan_tiles(shape, rules, halo, budget=budget)
        assert plan.work < mirrored.work
    assert plan_tiles(shape, rules, halo, budget=10**7, border="image").work == pytest.approx(
        np.prod(valid) / np.prod(shape))  # one tile: the image padded to a valid size, nothing more


@pytest.mark.parametrize("shape", [(100, 90), (64, 150)])
def test_image_border_tiles_of_a_fixed_size_cover_a_larger_image(shape):
    """A package whose input has one fixed size (as CAREamics exports them): with the `image` border
    the tiles move inside the image, and with a halo covering the receptive field the result equals
    the network's pass over the whole image."""
    torch.manual_seed(0)
    net = convs(3, norm=False).eval()

    def forward(b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(b)).numpy()

    x = np.random.default_rng(2).random((1, *shape), dtype=np.float32)
    direct = forward(x[None])[0]
    plan = plan_tiles(shape, [SizeRule(min=64, step=0)] * 2, [8, 8], budget=10**7, border="image")
    assert len(plan) > 1
    tiled = predict_tiled(forward, x, plan, batch_size=2)
    np.testing.assert_allclose(tiled, direct, atol=1e-5)


def test_unknown_border_is_refused():
    with pytest.raises(ValueError, match="border 'zero'"):
        plan_tiles((16, 16), [SizeRule(min=8, step=8)] * 2, [8, 8], budget=10**4, border="zero")


@pytest.mark.parametrize(("kind", "settings"), [
    ("fnet", {"kind": "fnet", "depth": 2, "mult_chan": 4}),
    ("unet", {"kind": "unet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "batch"}),
])
def test_cpu_inference_folds_every_batch_norm_and_keeps_the_output(kind, settings):
    """Batch norms after convolutions and after transposed convolutions (upsampling) are folded into
    them; the result equals the network's, and the network itself is left as it was."""
    from pydantic import TypeAdapter

    from mmv_zoo.nets.factory import build_network
    from mmv_zoo.predict.fast import cpu_inference
    from mmv_zoo.settings.networks import NetworkSettings

    torch.manual_seed(0)
    net = build_network(TypeAdapter(NetworkSettings).validate_python(settings), 3, 1, 2).eval()
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert any(isinstance(m, nn.modules.conv._ConvTransposeNd) for m in net.modules()) and bns
    for m in bns:  # statistics that make folding matter
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.data.uniform_(0.5, 1.5)
    fast, fmt = cpu_inference(net, 3)
    assert not [m for m in fast.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    from mmv_zoo.predict.fast import OneDnnConv  # every convolution the graph calls runs in oneDNN
    called = [fast.get_submodule(n.target) for n in fast.graph.nodes if n.op == "call_module"]
    assert not [m for m in called if type(m) is nn.Conv3d] and any(isinstance(m, OneDnnConv) for m in called)
    assert len([m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]) == len(bns)
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.inference_mode():
        a, b = net(x), fast(x.contiguous(memory_format=fmt))
    assert float((a - b).abs().max() / a.abs().max()) < 1e-5


def test_cpu_inference_folds_once_per_network_until_its_weights_change():
    from mmv_zoo.predict.fast import cpu_inference

    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.BatchNorm3d(2)).eval()
    first, _ = cpu_inference(net, 3)
    assert cpu_inference(net, 3)[0] is first  # many files, one model: folded once
    x = torch.randn(1, 1, 4, 8, 8)
    with torch.no_grad():
        net[0].weight.mul_(2.0)  # e.g. training went on
    again, fmt = cpu_inference(net, 3)
    assert again is not first
    with torch.inference_mode():
        assert torch.allclose(again(x.contiguous(memory_format=fmt)), net(x), atol=1e-5)


def test_cpu_inference_convolves_concatenated_parts_without_the_copy():
    """fnet's skip connections: cat([skip, up]) -> conv becomes a sum of two convolutions (CatConv)."""
    from pydantic import TypeAdapter

    from mmv_zoo.nets.factory import build_network
    from mmv_zoo.predict.fast import CatConv, cpu_inference
    from mmv_zoo.settings.networks import NetworkSettings

    torch.manual_seed(0)
    for dims in (2, 3):
        net = build_network(TypeAdapter(NetworkSettings).validate_python({"kind": "fnet", "depth": 2, "mult_chan": 4}),
                            dims, 1, 2).eval()
        fast, fmt = cpu_inference(net, dims)
        graph = fast.graph
        assert not [n for n in graph.nodes if n.op == "call_function" and n.target is torch.cat]
        assert len([m for m in fast.modules() if isinstance(m, CatConv)]) == 2  # one per level
        x = torch.randn(1, 1, *([8] * (dims - 2)), 32, 32) if dims == 3 else torch.randn(1, 1, 32, 32)
        with torch.inference_mode():
            a, b = net(x), fast(x.contiguous(memory_format=fmt))
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5


def test_cpu_inference_keeps_a_network_whose_trace_computes_something_else():
    """MONAI's BasicUNet asks `torch.jit.isinstance(skip, Tensor)`, false for a tracing proxy: its trace
    drops every skip connection. Checked on a probe input, the trace is refused and the network
    runs as it is (channels-last), with its own output."""
    from pydantic import TypeAdapter
    from torch import fx

    from mmv_zoo.nets.factory import build_network
    from mmv_zoo.predict.fast import cpu_inference
    from mmv_zoo.settings.networks import NetworkSettings

    torch.manual_seed(0)
    settings = TypeAdapter(NetworkSettings).validate_python({"kind": "basic_unet", "features": [4, 4, 8, 8, 16, 4]})
    net = build_network(settings, 2, 1, 2).eval()
    fast, fmt = cpu_inference(net, 2, (1, 1, 32, 32))
    assert not isinstance(fast, fx.GraphModule)
    x = torch.randn(1, 1, 48, 64)
    with torch.inference_mode():
        assert torch.allclose(fast(x.contiguous(memory_format=fmt)), net(x), atol=1e-5)
