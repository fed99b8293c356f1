"""The standalone architecture file of `pytorch_state_dict` weights (never imports mmv_zoo).

fnet is copied verbatim (it needs only torch); MONAI and `python`-kind networks are imported from
their package, which the consumer must have installed (declared in a conda environment file).
Either way a small `ExportedModel` wrapper holds the network as `net` and applies the softmax of a
segmentation model, so the state dict of `FCN.inference_model()` loads strictly.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ExportError

if TYPE_CHECKING:
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


@dataclass
class Architecture:
    """The architecture file's text, its callable and kwargs, and the pip packages it needs besides torch."""

    text: str
    callable: str
    kwargs: dict[str, Any]
    requirements: list[str] = field(default_factory=list)


def architecture(entry: Entry) -> Architecture:
    """The standalone architecture of the entry's network; raises ExportError when it cannot be made."""
    from ..nets.factory import network_recipe

    mmv = entry.mmv
    recipe = network_recipe(mmv.network, entry.spatial_dims, entry.in_channels, entry.out_channels)
    kwargs = {"network_kwargs": _yaml_safe(recipe.kwargs, f"{recipe.module}:{recipe.callable}"),
              "softmax": mmv.task == "segmentation"}
    if recipe.module == FNET_MODULE:
        source = Path(importlib.import_module(FNET_MODULE).__file__ or "").read_text()
        if "mmv_zoo" in _import_lines(source):
            raise ExportError(f"{FNET_MODULE}: imports mmv_zoo, so it cannot be copied as a standalone architecture")
        text = source.rstrip() + "\n" + WRAPPER.format(callable=recipe.callable)
        return Architecture(text, CALLABLE, kwargs)
    top = recipe.module.split(".")[0]
    if top == "mmv_zoo":
        raise ExportError(
            f"network {recipe.module}:{recipe.callable} lives inside mmv_zoo and has no standalone source; "
            "export without pytorch_state_dict (e.g. formats torchscript,onnx)"
        )
    requirement = _requirement(top)
    header = IMPORTING_HEADER.format(target=f"{recipe.module}:{recipe.callable}", requirement=requirement,
                                     module=recipe.module, callable=recipe.callable)
    return Architecture(header + WRAPPER.format(callable=recipe.callable), CALLABLE, kwargs, [requirement])


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
