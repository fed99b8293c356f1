"""The standalone architecture file of `pytorch_state_dict` weights (never imports mmv_zoo).

fnet is copied verbatim (readable source that needs only torch). MONAI and `python`-kind networks
are written as plain torch from a torch.fx trace (`fx_source`), so the file needs only torch too;
a network fx cannot trace (e.g. SwinUNETR, whose forward turns the input size into numpy values)
falls back to importing the network from its package, declared in a conda environment file, with a
note in the package. Either way `ExportedModel` holds the network as `net` and applies the softmax
of a segmentation model, so the state dict of `FCN.inference_model()` loads strictly.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ExportError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..entry import Entry

CALLABLE = "ExportedModel"
FNET_MODULE = "mmv_zoo.nets.fnet"

WRAPPER = '''

class ExportedModel(nn.Module):
    """The exported model: `{callable}(**network_kwargs)` as `net`, plus a softmax over channels for
    segmentation (class probabilities). Written by mmv_zoo's BioImage.IO export."""

    def __init__(self, network_kwargs: dict, softmax: bool = False) -> None:
        super().__init__()
        self.net = {callable}(**network_kwargs)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return torch.softmax(y, dim=1) if self.softmax else y
'''

IMPORTING_HEADER = '''"""Architecture of an mmv_zoo export: {target} wrapped for BioImage.IO.

Needs {requirement} installed next to torch (see the package's environment file).
"""

from __future__ import annotations

import torch
from torch import nn
from {module} import {callable}
'''


LABELS_CALLABLE = "ExportedWithClassLabels"
LABELS_WRAPPER = '''

class ExportedWithClassLabels(ExportedModel):
    """ExportedModel's class probabilities and, as a second output, the class labels (argmax over
    channels): a segmentation package's two outputs. Same arguments and state dict as ExportedModel."""

    def forward(self, x: torch.Tensor):
        y = super().forward(x)
        return y, torch.argmax(y, dim=1, keepdim=True)
'''


@dataclass
class Architecture:
    """The architecture file's text, its callable and kwargs, and the pip packages it needs besides torch."""

    text: str
    callable: str
    kwargs: dict[str, Any]
    requirements: list[str] = field(default_factory=list)
    how: str = ""
    """How the file was made, for the README (e.g. `generated from a torch.fx trace ...`)."""
    note: str | None = None
    """Set when the export had to fall back to an importing file (goes into the package notes)."""


def architecture(entry: Entry, model: nn.Module | None = None) -> Architecture:
    """The standalone architecture of the entry's network; raises ExportError when it cannot be made.

    `model` is the inference model to write (default: the entry's network, untrained); the fx path
    traces it, so its state dict is the one the file loads.
    """
    from ..nets.factory import network_recipe

    mmv = entry.mmv
    recipe = network_recipe(mmv.network, entry.spatial_dims, entry.in_channels, entry.out_channels)
    target = f"{recipe.module}:{recipe.callable}"
    if recipe.module == FNET_MODULE:
        source = Path(importlib.import_module(FNET_MODULE).__file__ or "").read_text()
        if "mmv_zoo" in _import_lines(source):
            raise ExportError(f"{FNET_MODULE}: imports mmv_zoo, so it cannot be copied as a standalone architecture")
        text = source.rstrip() + "\n" + WRAPPER.format(callable=recipe.callable)
        return Architecture(text, CALLABLE, _wrapper_kwargs(entry, recipe.kwargs, target),
                            how="the source of mmv_zoo's fnet; needs only PyTorch")
    from .fx_source import NotTraceable, standalone_source

    try:
        text = standalone_source(export_model(entry, model), example_inputs(entry), CALLABLE,
                                 title=f"Architecture of an mmv_zoo export: {target} ({entry.spatial_dims}D) "
                                       "as plain torch.")
        return Architecture(text, CALLABLE, {},
                            how=f"plain torch generated from a torch.fx trace of {target}; needs only PyTorch")
    except NotTraceable as e:
        reason = str(e)
    top = recipe.module.split(".")[0]
    if top == "mmv_zoo":
        raise ExportError(
            f"network {target} cannot be written as plain torch ({reason}) and lives inside mmv_zoo; "
            "export without pytorch_state_dict (e.g. formats torchscript,onnx)"
        )
    requirement = _requirement(top)
    header = IMPORTING_HEADER.format(target=target, requirement=requirement,
                                     module=recipe.module, callable=recipe.callable)
    note = (f"pytorch_state_dict: {target} could not be written as plain torch ({reason}); its architecture "
            f"file imports {requirement} (declared in environment.yaml)")
    return Architecture(header + WRAPPER.format(callable=recipe.callable), CALLABLE,
                        _wrapper_kwargs(entry, recipe.kwargs, target), [requirement],
                        how=f"imports {target}", note=note)


def with_class_labels(arch: Architecture) -> Architecture:
    """`arch` whose callable also returns the class labels (a subclass of its model: the same kwargs
    and state dict, whichever way the file was made)."""
    return Architecture(arch.text.rstrip() + "\n" + LABELS_WRAPPER, LABELS_CALLABLE, arch.kwargs, arch.requirements,
                        arch.how, arch.note)


def _wrapper_kwargs(entry: Entry, network_kwargs: dict[str, Any], target: str) -> dict[str, Any]:
    return {"network_kwargs": _yaml_safe(network_kwargs, target), "softmax": entry.mmv.task == "segmentation"}


def export_model(entry: Entry, model: nn.Module | None) -> nn.Module:
    """The module the standalone architecture rebuilds: `model` (a trained inference model), or the
    entry's network with its final activation, freshly built."""
    if model is not None:
        return model
    from ..frameworks.fcn import InferenceModel
    from ..nets.factory import build_network

    net = build_network(entry.mmv.network, entry.spatial_dims, entry.in_channels, entry.out_channels)
    return InferenceModel(net, softmax=entry.mmv.task == "segmentation")


def example_inputs(entry: Entry) -> list[Tensor]:
    """Three valid random inputs: batch 1, batch 2 at another size on every variable axis, batch 1 again.

    Sizes start one step above the network's minimum (the deepest level of a U-Net then has more than
    one pixel, which instance normalization needs).
    """
    import torch

    rules = entry.mmv.network.size_rule(entry.spatial_dims)
    shapes = [[r.min + k * r.step for r, k in zip(rules, ks, strict=False)]
              for ks in ([1] * len(rules), [2, 3, 2], [3, 1, 2])]
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, entry.in_channels, *s, generator=g) for b, s in zip((1, 2, 1), shapes, strict=True)]


def environment_yaml(requirements: list[str], pytorch_version: str) -> str:
    """A conda environment file: pytorch (as the weights were saved with) plus pip requirements."""
    lines = [
        "name: mmv_zoo_export",
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        f"  - pytorch=={pytorch_version}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {r}" for r in requirements]
    return "\n".join(lines) + "\n"


def _requirement(package: str) -> str:
    """`dist==version` for an importable top-level package (the name alone if unknown)."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    dist = (packages_distributions().get(package) or [package])[0]
    try:
        return f"{dist}=={version(dist)}"
    except PackageNotFoundError:
        return dist


def _import_lines(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.lstrip().startswith(("import ", "from ")))


def _yaml_safe(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """The kwargs as plain YAML values (tuples become lists); ExportError if they are not serializable."""
    try:
        return json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as e:
        raise ExportError(f"network {where}: keyword arguments cannot be written to rdf.yaml ({e})") from None
