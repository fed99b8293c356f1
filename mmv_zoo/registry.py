"""Kind -> implementation tables, resolved lazily (dotted paths, no heavy imports here).

Outside packages add frameworks through the `mmv_zoo.frameworks` entry-point group, whose entries
point at a LightningModule class taking the validated entry dict.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

FRAMEWORKS: dict[str, str] = {
    "fcn": "mmv_zoo.frameworks.fcn:FCN",
    "pix2pix": "mmv_zoo.frameworks.pix2pix:Pix2Pix",
    "cyclegan": "mmv_zoo.frameworks.cyclegan:CycleGAN",
    "embedseg": "mmv_zoo.frameworks.embedseg.framework:EmbedSeg",
}

ENTRY_POINT_GROUPS = {"frameworks": "mmv_zoo.frameworks"}


def _plugins(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


def resolve(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def frameworks() -> dict[str, str]:
    """Framework kind -> `module:Class`, built-ins first (a plugin cannot replace a built-in)."""
    return {**_plugins(ENTRY_POINT_GROUPS["frameworks"]), **FRAMEWORKS}


def framework_class(kind: str) -> Any:
    """The LightningModule class for a framework kind (built-in or plugin)."""
    table = frameworks()
    if kind not in table:
        raise KeyError(f"unknown framework {kind!r}; known: {sorted(table)}")
    return resolve(table[kind])
