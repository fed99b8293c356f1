"""Fast CPU inference: a copy of the network rewritten for oneDNN (torch.fx) - every batch norm folded
into the convolution before it (transposed ones included), each concatenation that only feeds a
convolution replaced by convolutions of its parts summed (no concatenated copy), activations in
channels-last order - made once per network and process. Outputs equal the network's to about 1e-6
relative. On a GPU, or for a network fx cannot trace, the network runs as it is (untraced: unfolded)."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake
from torch.nn import functional


def cpu_inference(net: Any, spatial_dims: int, probe: Sequence[int] | None = None) -> tuple[Any, Any]:
    """(network, input memory format) for fast CPU inference (module notes; fnet 3D on 2 AVX2 cores:
    1.5x). `net` is not modified; a network fx cannot trace is only made channels-last; on a GPU it
    runs as it is. With `probe`, the shape of a valid input (N, C, *space), the rewritten copy must
    give the network's output on it: tracing follows one branch of Python control flow (MONAI's
    BasicUNet drops its skip connections when traced), and a copy that differs is not used."""
    if next(net.parameters()).device.type != "cpu":
        return net, torch.contiguous_format
    versions = tuple(t._version for t in (*net.parameters(), *net.buffers()))  # changed by any in-place update
    known = _FAST.get(net)
    if known is not None and known[0] == versions:  # many files with one model: fold once
        return known[1], known[2]
    fast, fmt = _fast_copy(net, spatial_dims)
    if probe is not None and isinstance(fast, torch.fx.GraphModule) and not same_output(net, fast, probe, fmt):
        fast, fmt = _channels_last(copy.deepcopy(net), spatial_dims)
    _FAST[net] = (versions, fast, fmt)
    return fast, fmt


def same_output(net: Any, other: Any, probe: Sequence[int], fmt: Any = torch.contiguous_format) -> bool:
    """Whether `other` computes `net`'s output (to float32 rounding) on a random input of shape `probe`."""
    param = next(net.parameters())
    x = torch.randn(*probe, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
    try:
        with torch.inference_mode():
            a, b = net(x), other(x.contiguous(memory_format=fmt))
    except Exception:  # noqa: BLE001 - a traced copy that fails where the network runs
        return False
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    scale = float(a.abs().max())
    return bool(torch.isfinite(b).all()) and float((a - b).abs().max()) <= 1e-4 * max(scale, 1e-6)


_FAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""network -> (its parameter versions, folded copy, memory format): cpu_inference's cache."""


def _fast_copy(net: Any, spatial_dims: int) -> tuple[Any, Any]:
    try:
        from torch.fx.experimental.optimization import fuse

        fast = _onednn(_split_concat(_fold_transposed(fuse(net))))  # a folded copy (eval mode)
    except Exception:  # noqa: BLE001 - untraceable (data-dependent control flow): unfolded
        fast = copy.deepcopy(net)
    return _channels_last(fast, spatial_dims)


def _channels_last(net: Any, spatial_dims: int) -> tuple[Any, Any]:
    fmt = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    try:
        return net.to(memory_format=fmt), fmt
    except RuntimeError:  # parameters of another rank (a 2D convolution in a 3D network)
        return net, torch.contiguous_format


def _fold_transposed(gm: Any) -> Any:
    """Fold each batch norm that follows a transposed convolution into it (torch.fx's `fuse` folds only
    plain convolutions): the upsampling layers of fnet and UNets."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    modules = dict(gm.named_modules())
    folded = False
    for node in list(gm.graph.nodes):
        prev = node.args[0] if node.op == "call_module" and node.args else None
        if (getattr(prev, "op", None) != "call_module" or len(prev.users) != 1
                or not isinstance(modules[node.target], nn.modules.batchnorm._BatchNorm)
                or not isinstance(modules[prev.target], nn.modules.conv._ConvTransposeNd)
                or not modules[node.target].track_running_stats):
            continue
        fused = fuse_conv_bn_eval(modules[prev.target], modules[node.target], transpose=True)
        parent, _, name = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, fused)
        modules[prev.target] = fused
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded = True
    if folded:
        gm.delete_all_unused_submodules()
        gm.recompile()
    return gm


def _split_concat(gm: Any) -> Any:
    """conv(cat([a, b, ...], dim=1)) -> conv_a(a) + conv_b(b) + ... with the weight split by input
    channels: the same sum, without writing the concatenated tensor (a U-Net's skip connections; the
    copy was 6% of fnet's inference)."""
    modules = dict(gm.named_modules())
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not torch.cat or len(node.users) != 1:
            continue
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        (user,) = node.users
        conv = modules.get(user.target) if user.op == "call_module" else None
        if (dim != 1 or not isinstance(conv, nn.Conv2d | nn.Conv3d) or conv.groups != 1
                or conv.padding_mode != "zeros" or user.args != (node,) or user.kwargs):
            continue
        name = f"_cat_conv_{count}"
        count += 1
        gm.add_submodule(name, CatConv(conv))
        with gm.graph.inserting_after(user):
            new = gm.graph.call_module(name, tuple(node.args[0]))
        user.replace_all_uses_with(new)
        gm.graph.erase_node(user)
        gm.graph.erase_node(node)
    if count:
        gm.delete_all_unused_submodules()
        gm.recompile()
    return gm


def _onednn(gm: Any) -> Any:
    """Every convolution run by oneDNN. PyTorch's backend choice sends some 3D convolutions to its
    generic im2col path (torch._C._select_conv_backend: Slow3d), e.g. fnet's first (1 -> 16 channels)
    below about 64x512x512 voxels and 32 -> 64 channels on 8x64x64: 3x and 6x slower than oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return gm
    for node in gm.graph.nodes:  # the modules the graph calls (not the convolution inside a CatConv)
        if node.op != "call_module":
            continue
        name, module = node.target, gm.get_submodule(node.target)
        if type(module) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and _onednn_ok(module):
            parent, _, attr = name.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, attr, OneDnnConv(module))
        elif type(module) is CatConv and _onednn_ok(module.conv):
            module.fn = _mkldnn_conv
    gm.recompile()
    return gm


def _onednn_ok(conv: nn.Module) -> bool:
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and conv.weight.dtype == torch.float32


def _mkldnn_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: Any, padding: Any,
                 dilation: Any, groups: int = 1) -> torch.Tensor:
    if x.device.type != "cpu" or x.dtype != torch.float32 or is_fake(x):  # fake: crop.py's shape propagation
        fn = {3: functional.conv1d, 4: functional.conv2d, 5: functional.conv3d}[x.dim()]
        return fn(x, w, b, stride, padding, dilation, groups)
    return torch.mkldnn_convolution(x, w, b, padding, stride, dilation, groups)


class OneDnnConv(nn.Module):
    """A convolution computed by oneDNN (see _onednn); its parameters are the convolution's."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return _mkldnn_conv(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)


class CatConv(nn.Module):
    """A convolution of the channel concatenation of its inputs, computed part by part."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d) -> None:
        super().__init__()
        self.conv = conv
        self.fn = functional.conv3d if isinstance(conv, nn.Conv3d) else functional.conv2d
        self._parts: dict[tuple[int, ...], list[torch.Tensor]] = {}

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        c = self.conv
        key = tuple(int(x.shape[1]) for x in xs)
        parts = self._parts.get(key)
        if parts is None:  # the weight split by input channels, once per split, in the weight's layout
            fmt = torch.channels_last_3d if c.weight.dim() == 5 else torch.channels_last
            fmt = fmt if c.weight.is_contiguous(memory_format=fmt) else torch.contiguous_format
            starts = [sum(key[:i]) for i in range(len(key))]
            parts = [c.weight[:, s:s + n].contiguous(memory_format=fmt) for s, n in zip(starts, key, strict=True)]
            if not is_fake(parts[0]):  # shape propagation (crop.py) runs with fake tensors: not kept
                self._parts[key] = parts
        out = self.fn(xs[0], parts[0], c.bias, c.stride, c.padding, c.dilation)
        for x, w in zip(xs[1:], parts[1:], strict=True):
            out = out.add_(self.fn(x, w, None, c.stride, c.padding, c.dilation))
        return out
