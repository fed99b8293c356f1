"""Cropped inference (predict/crop.py): each layer computes only the region its consumers keep, and the
kept output equals the whole pass's."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import TypeAdapter
from torch import fx, nn

from mmv_zoo.nets.factory import build_network
from mmv_zoo.predict.crop import SLACK, Cropped, cropped_runner, make_plan, within
from mmv_zoo.predict.fast import cpu_inference
from mmv_zoo.predict.halo import receptive_radius
from mmv_zoo.settings.networks import NetworkSettings


def network(settings: dict, dims: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = build_network(TypeAdapter(NetworkSettings).validate_python(settings), dims, 1, 2).eval()
    for m in net.modules():  # batch statistics that matter
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def whole_then_cropped(net: nn.Module, x: torch.Tensor, keep: tuple[tuple[int, int], ...]) -> torch.Tensor:
    with torch.inference_mode():
        return net(x)[(slice(None), slice(None), *(slice(lo, hi) for lo, hi in keep))]


FNET = {"kind": "fnet", "depth": 2, "mult_chan": 4}
KEEPS_2D = [((0, 40), (0, 40)), ((24, 64), (24, 64)), ((13, 51), (7, 64)), ((0, 64), (31, 32)), ((0, 64), (0, 64))]


@pytest.mark.parametrize("keep", KEEPS_2D)
def test_cropped_fnet_equals_the_whole_pass_where_kept(keep):
    """Corner, far corner, odd interior offsets, one column, everything: the same values as the whole
    pass, on fnet as the engine runs it (folded, concatenations split, channels-last)."""
    fast, fmt = cpu_inference(network(FNET, 2), 2)
    x = torch.randn(1, 1, 64, 64).contiguous(memory_format=fmt)
    with torch.inference_mode():
        got = Cropped(fast)(x, keep)
    ref = whole_then_cropped(fast, x, keep)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5


def test_cropped_fnet_3d_computes_the_decoder_only_near_the_kept_part():
    """The plan runs the first layer on the kept part grown by the receptive field (what the deep path
    needs) and the last
    full-resolution layers on the kept part plus one voxel per remaining 3x3 convolution: fewer
    multiply-adds than the whole pass, same output."""
    net = network(FNET, 3)
    fast, fmt = cpu_inference(net, 3)
    shape, keep = (1, 1, 16, 64, 64), ((0, 16), (0, 40), (24, 64))
    plan = make_plan(fast, shape, keep)
    assert plan is not None
    nodes = list(fast.graph.nodes)
    first_conv = next(n for n in nodes if n.op == "call_module")
    last_conv = [n for n in nodes if n.op == "call_module"][-1]
    radius = receptive_radius(net, 1, [4, 4, 4], [4, 4, 4])
    assert 16 < min(radius) < 24
    field = tuple((max(0, lo - r), min(n, hi + r)) for (lo, hi), r, n in zip(keep, radius, shape[2:], strict=True))
    assert within(field, plan.computed[first_conv])  # the encoder sees what the kept part depends on
    near = tuple((max(0, lo - 1 - SLACK), min(n, hi + 1 + SLACK)) for (lo, hi), n in zip(keep, shape[2:], strict=True))
    assert within(keep, plan.computed[last_conv]) and within(plan.computed[last_conv], near)
    convs = [n for n in nodes if n.op == "call_module" and "conv" in n.target.lower()]
    assert sum(math.prod(b - a for a, b in plan.computed[n]) for n in convs) < 0.85 * len(convs) * 16 * 64 * 64
    x = torch.randn(*shape).contiguous(memory_format=fmt)
    with torch.inference_mode():
        got = Cropped(fast)(x, keep)
    ref = whole_then_cropped(net, x, keep)  # against the unfolded network itself
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5


@pytest.mark.parametrize("settings", [
    {"kind": "unet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "batch"},
    {"kind": "unet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "instance"},
    {"kind": "basic_unet", "features": [4, 4, 8, 8, 16, 4]},
])
def test_other_networks_stay_exact(settings):
    """MONAI U-Nets: strided convolutions with padding, residual additions and (instance norm) statistics
    over the whole tensor, whose layers cannot be cropped: whatever is cropped, the kept output is
    the whole pass's."""
    net = network(settings, 2)
    runner = cropped_runner(net, (1, 1, 32, 32))
    x = torch.randn(1, 1, 64, 64)
    for keep in KEEPS_2D[:3]:
        with torch.inference_mode():
            got = runner(x, keep)
        ref = whole_then_cropped(net, x, keep)
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5, keep


def test_a_layer_of_unknown_reach_stops_cropping_upstream():
    """Instance norm takes statistics over the whole tensor: nothing before it is cropped (it would
    change them); what follows is."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3, padding=1)
            self.norm = nn.InstanceNorm2d(4)
            self.b = nn.Conv2d(4, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.norm(self.a(x))))

    net = fx.symbolic_trace(Net().eval())
    keep = ((10, 20), (30, 40))
    plan = make_plan(net, (1, 1, 64, 64), keep)
    computed = {n.target: plan.computed[n] for n in net.graph.nodes if n.op == "call_module"}
    assert computed["a"] == computed["norm"] == ((0, 64), (0, 64))
    assert computed["b"] == ((9, 21), (29, 41))
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(Cropped(net)(x, keep), whole_then_cropped(net, x, keep), atol=1e-6)


def test_an_in_place_op_on_a_shared_value_is_not_cropped():
    """relu_ on a value two layers read: cropping the relu would leave the other reader half the
    values un-rectified; the plan computes it whole and the output stays exact."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(2, 1, 3, padding=1)
            self.c = nn.Conv2d(2, 1, 5, padding=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            z = self.b(y.relu_())
            return z + self.c(y)

    net = fx.symbolic_trace(Net().eval())
    x = torch.randn(1, 1, 32, 32)
    keep = ((8, 12), (20, 30))
    with torch.inference_mode():
        got = Cropped(net)(x, keep)
    assert torch.allclose(got, whole_then_cropped(net, x, keep), atol=1e-6)


def test_runners_are_made_once_and_untraceable_networks_run_whole():
    class Branchy(nn.Module):  # data-dependent control flow: fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if float(x.mean()) > -10 else x

    net = Branchy().eval()
    runner = cropped_runner(net)
    assert cropped_runner(net) is runner
    x = torch.randn(1, 1, 16, 16)
    with torch.inference_mode():
        assert torch.equal(runner(x, ((2, 5), (0, 16))), net(x)[:, :, 2:5])


def _zoo_networks() -> list:
    from pathlib import Path

    from mmv_zoo.entry import load_entry

    seen, out = set(), []
    for rdf in sorted((Path(__file__).parent.parent / "mmv_zoo" / "zoo").glob("*/rdf.yaml")):
        entry = load_entry(rdf.parent)
        key = (entry.mmv.network.model_dump_json(), entry.spatial_dims)
        if key not in seen:
            seen.add(key)
            out.append(pytest.param(rdf.parent.name, id=rdf.parent.name))
    return out


@pytest.mark.parametrize("name", _zoo_networks())
def test_every_zoo_network_runs_fast_and_cropped_as_itself(name):
    """Each distinct network of the zoo, as the engine runs it (folded, oneDNN, cropped to a kept part
    that is not the whole tile), gives the network's own output there."""
    from mmv_zoo.entry import load_entry
    from mmv_zoo.predict.memory import probe_size
    from mmv_zoo.registry import framework_class

    entry = load_entry(name)
    torch.manual_seed(0)
    net = framework_class(entry.mmv.framework)(entry.model_dump(mode="json"), slug=entry.slug).inference_model().eval()
    probe = (1, entry.in_channels, *probe_size(entry))
    fast, fmt = cpu_inference(net, entry.spatial_dims, probe)
    assert isinstance(fast, fx.GraphModule)  # traced and checked: the fast form is used
    rules = entry.mmv.network.size_rule(entry.spatial_dims)
    shape = [r.fit(max(r.min, 2 * r.step, 32 if entry.spatial_dims == 3 else 64)) for r in rules]
    keep = tuple((n // 4, n) if i else (0, n // 2) for i, n in enumerate(shape))
    x = torch.randn(1, entry.in_channels, *shape)
    with torch.inference_mode():
        got = cropped_runner(fast, probe)(x.contiguous(memory_format=fmt), keep)
    ref = whole_then_cropped(net, x, keep)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4
