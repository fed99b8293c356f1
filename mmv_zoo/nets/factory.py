"""Build a `torch.nn.Module` from network settings; also describes it for a standalone export."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .sizes import per_axis


@dataclass
class NetworkRecipe:
    """Everything needed to rebuild a network outside mmv_zoo: `module:callable` and its kwargs."""

    module: str
    callable: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return getattr(importlib.import_module(self.module), self.callable)(**self.kwargs)


def _unet(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    return NetworkRecipe("monai.networks.nets", "UNet", dict(
        spatial_dims=dims, in_channels=cin, out_channels=cout, channels=list(s.channels),
        strides=[per_axis(x, dims) for x in s.resolved_strides()], num_res_units=s.num_res_units,
        norm=s.norm, dropout=s.dropout))


def _attention_unet(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    return NetworkRecipe("monai.networks.nets", "AttentionUnet", dict(
        spatial_dims=dims, in_channels=cin, out_channels=cout, channels=list(s.channels),
        strides=[per_axis(x, dims) for x in s.resolved_strides()], dropout=s.dropout))


def _basic_unet(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    return NetworkRecipe("monai.networks.nets", "BasicUNet", dict(
        spatial_dims=dims, in_channels=cin, out_channels=cout, features=list(s.features),
        norm=s.norm, dropout=s.dropout))


def _dyn_unet(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    strides = [per_axis(x, dims) for x in s.strides]
    kwargs = dict(spatial_dims=dims, in_channels=cin, out_channels=cout,
                  kernel_size=[per_axis(k, dims) for k in s.kernel_size], strides=strides,
                  upsample_kernel_size=strides[1:], norm_name=s.norm_name, res_block=s.res_block)
    if s.filters is not None:
        kwargs["filters"] = list(s.filters)
    return NetworkRecipe("monai.networks.nets", "DynUNet", kwargs)


def _swin_unetr(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    return NetworkRecipe("monai.networks.nets", "SwinUNETR", dict(
        spatial_dims=dims, in_channels=cin, out_channels=cout, feature_size=s.feature_size,
        depths=list(s.depths), num_heads=list(s.num_heads), window_size=s.window_size))


def _unetr(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    return NetworkRecipe("monai.networks.nets", "UNETR", dict(
        spatial_dims=dims, in_channels=cin, out_channels=cout, img_size=per_axis(s.img_size, dims),
        feature_size=s.feature_size, hidden_size=s.hidden_size, mlp_dim=s.mlp_dim, num_heads=s.num_heads))


def _fnet(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    return NetworkRecipe("mmv_zoo.nets.fnet", "FNet", dict(
        spatial_dims=dims, in_channels=cin, out_channels=cout, depth=s.depth, mult_chan=s.mult_chan,
        anisotropic_z=s.anisotropic_z))


def _care_unet(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    return NetworkRecipe("mmv_zoo.nets.care_unet", "CAREUNet", dict(
        spatial_dims=dims, in_channels=cin, out_channels=cout, depth=s.depth, channels=s.channels,
        batch_norm=s.batch_norm, blurpool=s.blurpool, top_skip=s.top_skip))


def _branched_erfnet(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    return NetworkRecipe("mmv_zoo.nets.erfnet", "BranchedERFNet", dict(
        spatial_dims=dims, in_channels=cin, out_channels=cout, channels=list(s.channels), dropout=s.dropout,
        anisotropic_z=s.anisotropic_z))


def _python(s: Any, dims: int, cin: int, cout: int) -> NetworkRecipe:
    module, attr = s.target.split(":")
    kwargs = dict(s.kwargs)
    for arg, value in ((s.in_channels_arg, cin), (s.out_channels_arg, cout), (s.spatial_dims_arg, dims)):
        if arg is not None:
            kwargs[arg] = value
    return NetworkRecipe(module, attr, kwargs)


RECIPES = {
    "unet": _unet,
    "attention_unet": _attention_unet,
    "basic_unet": _basic_unet,
    "dyn_unet": _dyn_unet,
    "swin_unetr": _swin_unetr,
    "unetr": _unetr,
    "fnet": _fnet,
    "care_unet": _care_unet,
    "branched_erfnet": _branched_erfnet,
    "python": _python,
}


def network_recipe(settings: Any, spatial_dims: int, in_channels: int, out_channels: int) -> NetworkRecipe:
    return RECIPES[settings.kind](settings, spatial_dims, in_channels, out_channels)


def build_network(settings: Any, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """The network an entry's `config.mmv_zoo.network` describes."""
    net = network_recipe(settings, spatial_dims, in_channels, out_channels).build()
    if not isinstance(net, nn.Module):
        raise TypeError(f"network {settings.kind}: {type(net).__name__} is not a torch.nn.Module")
    return net
