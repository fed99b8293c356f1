"""The receptive field of a network, measured per spatial axis (any architecture, no tracing).

Tiled prediction is exact when every tile's output is cropped by at least the receptive-field
radius: then each kept output pixel saw the same input as in a whole-image pass. The radius is
measured, not derived from a formula, so it holds for every registered network: a copy of the
network with every weight set to a positive random value, biases to zero, normalization layers removed
and dropout off sees a positive input; then all activations are positive, every connection carries
gradient, and the support of the gradient of a few central outputs is the theoretical receptive
field. Normalization layers are left out of the probe on purpose: batch normalization is local
at inference, and instance or group normalization statistics are global (no halo can make a tile
see the whole image's statistics); they are the approximation a tiled consumer accepts.

Each axis is probed on its own: long along that axis, the network's minimum size along the others.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..cache import read_record, write_record

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm,
              nn.LocalResponseNorm)


def _probe_copy(net: nn.Module) -> nn.Module:
    """A float32 copy with positive constant weights, zero biases, no normalization, no dropout."""
    probe = copy.deepcopy(net).float().cpu().eval()  # the probe runs on the CPU wherever the net is
    for name, module in list(probe.named_modules()):
        if isinstance(module, NORM_TYPES) and name:
            parent = probe.get_submodule(name.rsplit(".", 1)[0]) if "." in name else probe
            setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in probe.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:  # positive, and not all equal (a softmax over equal logits would pass no gradient)
                scale = 1.0 / max(1, p[0].numel()) if p.ndim > 1 else 1.0
                p.copy_((0.5 + torch.rand(p.shape, generator=gen)) * scale)
    return probe


def receptive_radius(net: nn.Module, in_channels: int, mins: Sequence[int], steps: Sequence[int],
                     limit: int = 256) -> list[int]:
    """Per spatial axis: how many input pixels on each side of an output pixel can change it (at most `limit`).

    `mins`/`steps` are the network's valid sizes (`min + k * step`, step 0: fixed). Probes start short
    and double in length until the measured field ends inside the probe or reaches `limit` (e.g.
    attention over the whole input).
    """
    with torch.inference_mode(False), torch.enable_grad():  # also when called from a predict loop
        return _receptive_radius(net, in_channels, mins, steps, limit)


def _receptive_radius(net: nn.Module, in_channels: int, mins: Sequence[int], steps: Sequence[int],
                      limit: int) -> list[int]:
    probe = _probe_copy(net)
    radii = []
    for axis in range(len(mins)):
        if steps[axis] == 0:
            radii.append(0)  # a fixed-size axis is never tiled
            continue
        reach = min(32, limit)
        while True:
            radius = _probe_axis(probe, in_channels, mins, steps, axis, reach)
            if radius is not None or reach >= limit:
                radii.append(limit if radius is None else radius)
                break
            reach = min(2 * reach, limit)
    return radii


def _probe_axis(probe: nn.Module, in_channels: int, mins: Sequence[int], steps: Sequence[int], axis: int,
                reach: int) -> int | None:
    """The radius along `axis` on a probe reaching `reach` pixels each side; None if it hits the border."""
    step = steps[axis]
    dims = len(mins)
    need = 2 * reach + step
    length = mins[axis] + max(0, -(-(need - mins[axis]) // step)) * step
    shape = list(mins)
    shape[axis] = length
    x = torch.ones((1, in_channels, *shape), requires_grad=True)
    y = probe(x)
    if isinstance(y, (tuple, list)):
        y = y[0]
    start = (length // 2) // step * step
    index = [slice(None)] * (2 + dims)
    index[2 + axis] = slice(start, start + step)
    weights = torch.arange(1, y.shape[1] + 1, dtype=y.dtype).reshape(1, -1, *([1] * dims))
    (y * weights)[tuple(index)].sum().backward()
    other = tuple(i for i in range(x.ndim) if i != 2 + axis)
    support = torch.nonzero(x.grad.abs().sum(dim=other) > 0).flatten()
    lo, hi = int(support.min()), int(support.max())
    if lo == 0 or hi == length - 1:
        return None
    return max(start - lo, hi - (start + step - 1), 0)


HALO_CAP = 64
"""Largest halo (pixels per side): beyond it, tiling costs more than the last bits of context give."""

_CACHE: dict[tuple[Any, ...], list[int]] = {}


def halo_from_radius(radius: int, step: int, patch: int) -> int:
    """The output halo along one axis: the receptive-field radius rounded up to a multiple of the
    network's step (so that padding by it keeps input sizes valid and the image on the network's
    downsampling grid), at most HALO_CAP and half the training patch.

    Up to the cap tiles reproduce a whole-image prediction exactly (up to float rounding); past it,
    the far edge of the field (whose weight in the output is small) is cut. Fixed-size axes
    (step 0) are not tiled: no halo.
    """
    if step == 0 or radius == 0:
        return 0
    unit = step
    cap = max(unit, min(HALO_CAP, patch // 2) // unit * unit)
    return min(-(-radius // unit) * unit, cap)


def network_halo(net: nn.Module, in_channels: int, mins: Sequence[int], steps: Sequence[int],
                 patch: Sequence[int], key: Any = None, persist: bool = True) -> tuple[list[int], list[int]]:
    """(halo, receptive-field radius) per spatial axis; measured once per `key` (e.g. the network settings),
    and with `persist` remembered in the cache folder for later processes (the field depends on the
    architecture only, not the weights)."""
    cache_key = (key, in_channels, tuple(mins), tuple(steps))
    radii = _CACHE.get(cache_key) if key is not None else None
    if radii is None and key is not None and persist:  # measured by an earlier process (fnet-3D: 10-50 s on CPU)

        radii = read_record("receptive_field", _digest(cache_key)).get("radii")
    if radii is None:
        radii = receptive_radius(net, in_channels, mins, steps)
        if key is not None and persist:
            write_record("receptive_field", _digest(cache_key), {"radii": radii})
    if key is not None:
        _CACHE[cache_key] = radii
    return [halo_from_radius(r, s, p) for r, s, p in zip(radii, steps, patch, strict=True)], radii


def _digest(key: Any) -> str:
    import hashlib

    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def entry_halo(entry: Any, net: nn.Module) -> tuple[list[int], list[int]]:
    """(halo, receptive-field radius) per spatial axis (z, y, x order) of an entry's network `net`."""
    rules = entry.mmv.network.size_rule(entry.spatial_dims)
    return network_halo(net, entry.in_channels, [r.min for r in rules], [r.step for r in rules],
                        entry.mmv.data.patch, key=entry.mmv.network.model_dump_json(),
                        persist=entry.mmv.network.kind != "python")  # a user's module may change under one name
