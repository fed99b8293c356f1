"""Kind -> implementation tables, resolved lazily (dotted paths, no heavy imports here).

A framework is registered by one line naming its `FrameworkSpec` (`mmv_zoo.settings.framework`), which
lives in a torch-free module and names the LightningModule in turn. Outside packages add frameworks
through the `mmv_zoo.frameworks` entry-point group, each entry pointing at such a spec:

    [project.entry-points."mmv_zoo.frameworks"]
    my_gan = "my_package.spec:MY_GAN"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

FRAMEWORKS: dict[str, str] = {
    "fcn": "mmv_zoo.settings.framework:FCN",
    "pix2pix": "mmv_zoo.settings.gan:PIX2PIX",
    "cyclegan": "mmv_zoo.settings.gan:CYCLEGAN",
    "embedseg": "mmv_zoo.settings.embedseg:EMBEDSEG",
    "n2v": "mmv_zoo.settings.n2v:N2V",
}
"""Built-in framework kind -> its FrameworkSpec (`module:NAME`)."""

ENTRY_POINT_GROUPS = {"frameworks": "mmv_zoo.frameworks"}


def _plugins(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


def resolve(target: str) -> Any:
    """The object a `module:name` path names (the module is imported)."""
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def framework_targets() -> dict[str, str]:
    """Framework kind -> `module:NAME` of its spec, plugins first (a plugin cannot replace a built-in)."""
    return {**_plugins(ENTRY_POINT_GROUPS["frameworks"]), **FRAMEWORKS}


def framework_kinds() -> list[str]:
    """Every framework kind, built in or from a plugin (nothing is imported)."""
    return sorted(framework_targets())


def resolve_framework(kind: str) -> Any:
    """The spec object a framework kind is registered with; KeyError naming the known kinds."""
    table = framework_targets()
    if kind not in table:
        raise KeyError(f"unknown framework {kind!r}; known: {sorted(table)}")
    return resolve(table[kind])


def frameworks() -> dict[str, str]:
    """Framework kind -> `module:Class` of its LightningModule (each spec is resolved; torch is not)."""
    out = {}
    for kind in framework_kinds():
        try:
            out[kind] = resolve_framework(kind).model
        except Exception:  # noqa: BLE001 - a broken plugin is listed by name only
            out[kind] = framework_targets()[kind]
    return out


def framework_class(kind: str) -> Any:
    """The LightningModule class of a framework kind (built-in or plugin)."""
    return resolve(resolve_framework(kind).model)
